"""Template lookup as a pure function over a set of relative paths: overrides × locales."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.locale import fallback_chain
from streamer.templates import (
    TemplateNotFoundError,
    check_files,
    override_dirs,
    resolve,
    resolve_shared,
    template_names,
)

FILES = frozenset(
    {
        # default: en (unsuffixed), fr, fr-CA (body only), de; text parts for en and fr only
        "welcome/subject.txt",
        "welcome/body.html",
        "welcome/body.txt",
        "welcome/subject.fr.txt",
        "welcome/body.fr.html",
        "welcome/body.fr.txt",
        "welcome/body.fr-CA.html",
        "welcome/subject.de.txt",
        "welcome/body.de.html",
        # tenant acme: en and fr only
        "tenants/acme/welcome/subject.txt",
        "tenants/acme/welcome/body.html",
        "tenants/acme/welcome/subject.fr.txt",
        "tenants/acme/welcome/body.fr.html",
        # one application, any tenant: en only
        "clients/C1/welcome/subject.txt",
        "clients/C1/welcome/body.html",
        # one application of acme: en and es
        "tenants/acme/clients/C2/welcome/subject.txt",
        "tenants/acme/clients/C2/welcome/body.html",
        "tenants/acme/clients/C2/welcome/subject.es.txt",
        "tenants/acme/clients/C2/welcome/body.es.html",
        # a broken override: French only
        "tenants/frenchonly/welcome/subject.fr.txt",
        "tenants/frenchonly/welcome/body.fr.html",
        # another template, default only
        "verify_email/subject.txt",
        "verify_email/body.html",
        # shared files
        "_layout/base.html",
        "_layout/base.fr.html",
        "tenants/acme/_layout/base.html",
        "README.md",
    }
)


def chain(locale: str) -> list[str]:
    return fallback_chain(locale, "en")


@pytest.mark.parametrize(
    ("tenant", "client", "locale", "directory", "html", "subject", "used"),
    [
        # default directory: each locale and its fallbacks
        (None, None, "en", "welcome", "body.html", "subject.txt", "en"),
        (None, None, "fr", "welcome", "body.fr.html", "subject.fr.txt", "fr"),
        (None, None, "fr-CA", "welcome", "body.fr-CA.html", "subject.fr.txt", "fr-CA"),  # subject falls back to fr
        (None, None, "fr-BE", "welcome", "body.fr.html", "subject.fr.txt", "fr"),
        (None, None, "de-AT", "welcome", "body.de.html", "subject.de.txt", "de"),
        (None, None, "ja", "welcome", "body.html", "subject.txt", "en"),  # unknown → default
        # tenant override wins as a whole: no German there, so the override's default
        ("acme", None, "de", "tenants/acme/welcome", "body.html", "subject.txt", "en"),
        ("acme", None, "fr-CA", "tenants/acme/welcome", "body.fr.html", "subject.fr.txt", "fr"),
        ("acme", None, "en", "tenants/acme/welcome", "body.html", "subject.txt", "en"),
        ("other", None, "fr", "welcome", "body.fr.html", "subject.fr.txt", "fr"),
        # client override (beats the tenant one: an application is more specific than a tenant)
        (None, "C1", "fr", "clients/C1/welcome", "body.html", "subject.txt", "en"),
        ("acme", "C1", "fr", "clients/C1/welcome", "body.html", "subject.txt", "en"),
        # tenant + client
        ("acme", "C2", "es", "tenants/acme/clients/C2/welcome", "body.es.html", "subject.es.txt", "es"),
        ("acme", "C2", "fr", "tenants/acme/clients/C2/welcome", "body.html", "subject.txt", "en"),
        ("other", "C2", "es", "welcome", "body.html", "subject.txt", "en"),  # C2 override is acme's only
        ("acme", "C3", "fr", "tenants/acme/welcome", "body.fr.html", "subject.fr.txt", "fr"),
    ],
)
def test_lookup_matrix(
    tenant: str | None, client: str | None, locale: str, directory: str, html: str, subject: str, used: str
) -> None:
    resolved = resolve(FILES, "welcome", tenant, client, chain(locale))
    assert resolved.dir == directory
    assert resolved.html_path == f"{directory}/{html}"
    assert resolved.subject_path == f"{directory}/{subject}"
    assert resolved.locale_used == used


@pytest.mark.parametrize(
    ("locale", "text"),
    [
        ("en", "welcome/body.txt"),
        ("fr", "welcome/body.fr.txt"),
        ("fr-CA", None),  # HTML is fr-CA, body.fr.txt would be another locale: generate instead
        ("de", None),  # no German body.txt: generate from the German HTML, never the English text
    ],
)
def test_text_part_only_in_the_html_locale(locale: str, text: str | None) -> None:
    assert resolve(FILES, "welcome", None, None, chain(locale)).text_path == text


def test_override_without_default_locale_files_fails_loudly() -> None:
    assert (
        resolve(FILES, "welcome", "frenchonly", None, chain("fr")).html_path
        == "tenants/frenchonly/welcome/body.fr.html"
    )
    with pytest.raises(TemplateNotFoundError, match="replaces the default as a whole"):
        resolve(FILES, "welcome", "frenchonly", None, chain("en"))


@pytest.mark.parametrize("name", ["nope", "../welcome", "_layout", "tenants", "welcome/..", ""])
def test_unknown_or_invalid_names(name: str) -> None:
    with pytest.raises(TemplateNotFoundError):
        resolve(FILES, name, None, None, chain("en"))


@pytest.mark.parametrize("tenant", ["../acme", "acme/../acme", ".", "", "a/b"])
def test_path_like_scopes_are_ignored(tenant: str) -> None:
    assert resolve(FILES, "welcome", tenant, tenant, chain("en")).dir == "welcome"


def test_override_dirs_order() -> None:
    assert override_dirs("welcome", "acme", "C2") == [
        "tenants/acme/clients/C2/welcome",
        "clients/C2/welcome",
        "tenants/acme/welcome",
        "welcome",
    ]
    assert override_dirs("welcome", None, None) == ["welcome"]


@pytest.mark.parametrize(
    ("tenant", "locale", "expected"),
    [
        (None, "fr-CA", "_layout/base.fr.html"),
        (None, "de", "_layout/base.html"),
        ("acme", "fr", "tenants/acme/_layout/base.html"),  # the tenant's layout wins as a whole
        ("other", "fr", "_layout/base.fr.html"),
    ],
)
def test_shared_files(tenant: str | None, locale: str, expected: str) -> None:
    assert resolve_shared(FILES, "_layout/base.html", tenant, None, chain(locale)) == expected


def test_shared_missing_and_explicit_variant() -> None:
    assert resolve_shared(FILES, "_layout/nope.html", "acme", None, chain("en")) is None
    assert resolve_shared(FILES, "_layout/base.fr.html", None, None, chain("de")) == "_layout/base.fr.html"


def test_template_names() -> None:
    assert template_names(FILES) == ["verify_email", "welcome"]


def _problems(files: frozenset[str], **kwargs: object) -> list[str]:
    return [str(p) for p in check_files(files, "en", **kwargs)]


def test_check_files_reports_structure() -> None:
    problems = _problems(FILES, required=["welcome", "goodbye"], tenants={"acme"})
    assert "goodbye/: error: template 'goodbye' is used by a rule but has no default directory goodbye/" in problems
    assert any(p.startswith("tenants/frenchonly/: warning: no tenant 'frenchonly' in the config") for p in problems)
    assert any(
        p.startswith("tenants/frenchonly/welcome/: error: no subject.txt for the default locale en") for p in problems
    )
    # the acme override has no German although the default has
    assert any(
        p.startswith("tenants/acme/welcome/: warning: no de variant although welcome/ has one") for p in problems
    )
    # a variant present for one file but missing for another in the same directory
    assert any(p.startswith("welcome/subject.fr-CA.txt: warning: missing") for p in problems)
    assert any(p.startswith("welcome/body.de.txt: warning: missing") for p in problems)
    assert not any(p.startswith("welcome/body.fr.txt") for p in problems)


def test_check_files_unknown_override_and_stray_files() -> None:
    files = FILES | {
        "tenants/acme/welcom/subject.txt",
        "tenants/acme/welcom/body.html",
        "welcome/bodyy.html",
        "welcome/body.french.html",
    }
    problems = _problems(files)
    assert any(p.startswith("tenants/acme/welcom/: error: override of unknown template 'welcom'") for p in problems)
    assert any(p.startswith("welcome/bodyy.html: warning: unrecognised file name") for p in problems)
    assert any(p.startswith("welcome/body.french.html: warning: unrecognised file name") for p in problems)


def test_clean_tree_has_no_problems() -> None:
    files = frozenset(
        {
            "welcome/subject.txt",
            "welcome/body.html",
            "welcome/subject.fr.txt",
            "welcome/body.fr.html",
            "tenants/acme/welcome/subject.txt",
            "tenants/acme/welcome/body.html",
            "tenants/acme/welcome/subject.fr.txt",
            "tenants/acme/welcome/body.fr.html",
            "_layout/base.html",
        }
    )
    assert _problems(files, required=["welcome"], tenants={"acme"}) == []


# --- properties over random trees ---------------------------------------------------------------

_UNIVERSE = sorted(
    f"{prefix}welcome/{stem}{suffix}.{ext}"
    for prefix in ("", "tenants/acme/", "clients/C1/", "tenants/acme/clients/C1/")
    for stem, ext in (("subject", "txt"), ("body", "html"), ("body", "txt"))
    for suffix in ("", ".fr", ".fr-CA", ".de")
)


@given(
    st.frozensets(st.sampled_from(_UNIVERSE)),
    st.sampled_from([None, "acme", "other"]),
    st.sampled_from([None, "C1", "C9"]),
    st.sampled_from(["en", "fr", "fr-CA", "de-CH", "ja"]),
)
def test_lookup_properties(files: frozenset[str], tenant: str | None, client: str | None, locale: str) -> None:
    wanted = chain(locale)
    holders = [d for d in override_dirs("welcome", tenant, client) if any(f.startswith(d + "/") for f in files)]
    try:
        resolved = resolve(files, "welcome", tenant, client, wanted)
    except TemplateNotFoundError:
        # only when no directory holds it, or the one that does lacks a file for this chain
        assert not holders or not all(
            any(
                f.startswith(f"{holders[0]}/{stem}")
                and f.endswith(ext)
                and (f.count(".") == 1 or f.split(".")[-2] in wanted)
                for f in files
            )
            for stem, ext in (("subject", ".txt"), ("body", ".html"))
        )
        return
    assert resolved.dir == holders[0]  # the most specific holder, as a whole
    for path in (resolved.subject_path, resolved.html_path, resolved.text_path):
        assert path is None or (path in files and path.startswith(resolved.dir + "/"))
    assert resolved.locale_used in wanted
    suffix = resolved.html_path.split("/")[-1].split(".")
    assert (suffix[1] if len(suffix) == 3 else "en") == resolved.locale_used
    better = wanted[: wanted.index(resolved.locale_used)]  # no more specific HTML variant exists
    assert not any(f"{resolved.dir}/body.{tag}.html" in files for tag in better)
