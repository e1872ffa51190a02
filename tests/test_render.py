"""Rendering: the shipped templates in every locale, escaping, the sandbox and `check`."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError

from streamer.locale import locale_chain
from streamer.render import RenderError, html_to_text, render
from streamer.sample_context import TICKET_TEMPLATES, sample_context
from streamer.templates import Templates, describe_device, greeting_name

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
NAMES = ["verify_email", "welcome", "password_change", "password_changed", "new_device"]
LOCALES = ["en", "fr", "de", "es"]
#: A word each language's version must contain, so a wrong fallback cannot pass unnoticed.
GREETING = {"en": "Hello", "fr": "Bonjour", "de": "Hallo", "es": "Hola"}


@pytest.fixture(scope="module")
def shipped() -> Templates:
    return Templates(SHIPPED, "en")


def _render(templates: Templates, name: str, locale: str, *, tenant: str | None = "acme",
            client_id: str | None = None, context: dict | None = None):
    context = context or sample_context(name, locale)
    return render(templates, name, tenant=tenant, client_id=client_id,
                  locale_chain=templates.chain(locale), context=context)


def test_ships_every_template_in_every_locale(shipped: Templates) -> None:
    assert sorted(shipped.template_names()) == sorted(NAMES)
    for name in NAMES:
        assert set(LOCALES) <= set(shipped.locales(name)), name


def test_shipped_templates_pass_check(shipped: Templates) -> None:
    assert [str(p) for p in shipped.check(required=NAMES, tenant_vars={"acme": {}})] == []


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", NAMES)
def test_every_default_renders(shipped: Templates, name: str, locale: str) -> None:
    context = sample_context(name, locale)
    email = _render(shipped, name, locale, context=context)
    assert email.locale == locale
    assert email.subject and "\n" not in email.subject and email.subject == email.subject.strip()
    assert "Acme" in email.subject
    assert f'<html lang="{locale}"' in email.html
    assert email.text.strip() and "None" not in email.text and "None" not in email.html
    assert GREETING[locale] in email.text
    assert "Chloé" in email.text or locale != "fr"
    if name in TICKET_TEMPLATES:
        url = context["ticket_url"]
        assert url in email.html
        assert any(line.endswith(f"({url})") for line in email.text.splitlines())   # whole, on one line
    # the preheader is for the inbox list, not for the text part
    assert "\u034f" not in email.text


@pytest.mark.parametrize("name", NAMES)
def test_renders_with_minimal_data(shipped: Templates, name: str) -> None:
    """No tenant vars, no names, no metadata, no IP/UA: still a complete email."""
    context = sample_context(name, "de", tenant_vars={})
    context["user"] = {"email": "x@example.com", "user_id": "auth0|1"}
    context["client"] = {"id": "c", "name": None}
    context["event"] = {"type": "s", "date": "2026-03-04T21:17:42.031Z"}
    email = _render(shipped, name, "de", context=context)
    assert "Guten Tag," in email.text
    assert "None" not in email.text


def test_locale_choice_end_to_end(shipped: Templates) -> None:
    def for_user(profile: dict) -> str:
        context = sample_context("welcome", "en")
        context["user"] = {**context["user"], **profile}
        return render(shipped, "welcome", tenant="acme", client_id=None,
                      locale_chain=locale_chain(context["user"], None, "en"), context=context).locale

    assert for_user({"user_metadata": {"locale": "fr"}}) == "fr"         # a French user gets French
    assert for_user({"user_metadata": {"locale": "fr_CA"}}) == "fr"      # fr-CA falls back to fr
    assert for_user({"user_metadata": {}, "locale": "de-AT"}) == "de"    # social profile locale
    assert for_user({"user_metadata": {"locale": "ja"}}) == "en"         # unknown → default
    assert for_user({"user_metadata": {"locale": "<b>"}}) == "en"        # garbage → default


def test_locale_in_context_is_the_one_used(tmp_path: Path) -> None:
    (tmp_path / "hi").mkdir()
    (tmp_path / "hi" / "subject.txt").write_text("{{ locale }}")
    (tmp_path / "hi" / "body.html").write_text("<p>{{ locale }}</p>")
    (tmp_path / "hi" / "subject.fr.txt").write_text("{{ locale }}")
    (tmp_path / "hi" / "body.fr.html").write_text("<p>{{ locale }}</p>")
    templates = Templates(tmp_path)
    email = render(templates, "hi", tenant=None, client_id=None, locale_chain=["fr-CA", "fr", "en"],
                   context={"user": {}})
    assert (email.subject, email.locale, email.text) == ("fr", "fr", "fr\n")


def test_user_controlled_values_are_escaped_in_html(shipped: Templates) -> None:
    context = sample_context("password_changed", "en")
    context["user"]["given_name"] = "<script>alert(1)</script>"
    context["event"]["user_agent"] = 'Evil"/><img src=x onerror=alert(1)>'
    context["event"]["ip"] = "<b>1.2.3.4</b>"
    email = _render(shipped, "password_changed", "en", context=context)
    assert "<script>alert" not in email.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "<b>1.2.3.4" not in email.html and "onerror=alert" not in email.html.replace("onerror=alert(1)&gt;", "")
    assert "<img src=x" not in email.html


def _tree(tmp_path: Path, files: dict[str, str]) -> Templates:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Templates(tmp_path, "en")


@pytest.mark.parametrize("expression", [
    "''.__class__.__mro__",
    "user.__class__",
    "cycler.__init__.__globals__",
    "self._TemplateReference__context",
    "user.app_metadata.clear()",          # the profile is shared and cached: no mutation
    "event.update({'x': 1})",
])
def test_sandbox_blocks_escapes(tmp_path: Path, expression: str) -> None:
    templates = _tree(tmp_path, {"t/subject.txt": "s", "t/body.html": f"{{{{ {expression} }}}}"})
    with pytest.raises(RenderError) as info:
        render(templates, "t", tenant=None, client_id=None, locale_chain=["en"],
               context={"user": {"app_metadata": {}}, "event": {}})
    assert isinstance(info.value.__cause__, SecurityError)
    assert info.value.where == "t/body.html:1"


def test_undefined_names_are_errors_with_file_and_line(tmp_path: Path) -> None:
    templates = _tree(tmp_path, {"t/subject.txt": "s", "t/body.html": "<p>ok</p>\n<p>{{ user.nope }}</p>"})
    with pytest.raises(RenderError) as info:
        render(templates, "t", tenant=None, client_id=None, locale_chain=["en"], context={"user": {}})
    assert info.value.where == "t/body.html:2"
    assert "nope" in str(info.value)


def test_tenant_layout_override_and_shared_locale_variant(tmp_path: Path) -> None:
    body = '{% extends "_layout/base.html" %}{% block content %}body{% endblock %}'
    templates = _tree(tmp_path, {
        "t/subject.txt": "s", "t/body.html": body, "t/subject.fr.txt": "s", "t/body.fr.html": body,
        "_layout/base.html": "<div>default {% block content %}{% endblock %}</div>",
        "_layout/base.fr.html": "<div>défaut {% block content %}{% endblock %}</div>",
        "tenants/acme/_layout/base.html": "<div>acme {% block content %}{% endblock %}</div>",
    })

    def text(tenant: str | None, locale: str) -> str:
        return render(templates, "t", tenant=tenant, client_id=None, locale_chain=templates.chain(locale),
                      context={}).text.strip()

    assert text(None, "en") == "default body"
    assert text(None, "fr") == "défaut body"
    assert text("other", "fr") == "défaut body"
    assert text("acme", "fr") == "acme body"        # the tenant's layout wins as a whole
    assert text("acme", "en") == "acme body"


def test_css_is_inlined_and_media_queries_kept(shipped: Templates) -> None:
    html = _render(shipped, "verify_email", "en").html
    assert '<h1 style="' in html
    assert "@media only screen and (max-width: 620px)" in html
    assert ".card {" not in html.split("@media")[0]         # plain rules were inlined, not kept


def test_body_txt_wins_over_generated_text(tmp_path: Path) -> None:
    templates = _tree(tmp_path, {"t/subject.txt": "s", "t/body.html": "<p>html</p>",
                                 "t/body.txt": "Hello {{ user.name }} & <co>\r\n  \n"})
    email = render(templates, "t", tenant=None, client_id=None, locale_chain=["en"],
                   context={"user": {"name": "A&B"}})
    assert email.text == "Hello A&B & <co>\n"            # text templates are not HTML-escaped


def test_subject_is_one_clean_line(tmp_path: Path) -> None:
    templates = _tree(tmp_path, {"t/subject.txt": "  Hi {{ user.name }}\n\n  there  ", "t/body.html": "x"})
    email = render(templates, "t", tenant=None, client_id=None, locale_chain=["en"],
                   context={"user": {"name": "A\r\nBcc: x@y\u2028z\u00a0!"}})
    assert email.subject == "Hi A Bcc: x@y z\u00a0! there"


def test_html_to_text_keeps_long_links_whole() -> None:
    url = "https://tenant.eu.auth0.com/u/email-verification?ticket=" + "A" * 300 + "#"
    html = (f'<p>Click <a href="{url}">Verify my address</a> now, or <a href="mailto:s@x.test">s@x.test</a>.</p>'
            f'<p data-text="skip">hidden</p><div style="display:none">also hidden</div>'
            f'<p><a href="{url}">{url}</a></p><h1>Title</h1><table><tr><td>When:</td><td>today</td></tr></table>')
    text = html_to_text(html)
    assert f"Click Verify my address ({url}) now, or s@x.test." in text.splitlines()
    assert url in text.splitlines()                       # a bare link stays bare
    assert "hidden" not in text
    assert "Title" in text.splitlines() and "#" not in text.replace(url, "")
    assert "When: today" in text.splitlines()


def test_check_reports_broken_template_with_file_and_line(tmp_path: Path) -> None:
    templates = _tree(tmp_path, {
        "t/subject.txt": "s", "t/body.html": "<p>one</p>\n<p>two</p>\n{% if %}\n",
        "t/subject.fr.txt": "s",                                      # but no body.fr.html
        "u/subject.txt": "s", "u/body.html": "<p>{{ not_defined_anywhere }}</p>",
        "v/subject.txt": "s", "v/body.html": '{% extends "_layout/missing.html" %}',
    })
    problems = [str(p) for p in templates.check()]
    assert any(p.startswith("t/body.html:3: error:") for p in problems), problems
    assert any(p.startswith("t/body.fr.html: warning: missing") for p in problems), problems
    assert any(p.startswith("u/body.html:1: error:") and "not_defined_anywhere" in p for p in problems), problems
    assert any(p.startswith("v/body.html:1: error: _layout/missing.html does not exist") for p in problems), problems


def test_check_warns_when_override_lacks_a_locale(tmp_path: Path) -> None:
    templates = _tree(tmp_path, {
        "t/subject.txt": "s", "t/body.html": "b", "t/subject.de.txt": "s", "t/body.de.html": "b",
        "tenants/acme/t/subject.txt": "s", "tenants/acme/t/body.html": "b",
    })
    problems = [str(p) for p in templates.check()]
    assert any(p.startswith("tenants/acme/t/: warning: no de variant") for p in problems), problems


def test_reload_picks_up_changes(tmp_path: Path) -> None:
    templates = _tree(tmp_path, {"t/subject.txt": "one", "t/body.html": "b"})
    assert render(templates, "t", tenant=None, client_id=None, locale_chain=["en"], context={}).subject == "one"
    (tmp_path / "t" / "subject.txt").write_text("two")
    templates.reload()
    assert render(templates, "t", tenant=None, client_id=None, locale_chain=["en"], context={}).subject == "two"


@pytest.mark.parametrize(("user", "expected"), [
    ({"given_name": "Ana", "name": "Ana Silva"}, "Ana"),
    ({"name": "ana.silva@example.com", "nickname": "ana.silva", "email": "ana.silva@example.com"}, ""),
    ({"name": "Bruno Costa", "email": "b@example.com"}, "Bruno Costa"),
    ({"nickname": "bruno", "email": "b.costa@example.com"}, "bruno"),
    ({"user_metadata": {"first_name": "Zoé"}, "name": "z@x.com"}, "Zoé"),
    ({"given_name": "Visit https://evil.test now"}, ""),
    ({"given_name": "Line\r\nBreak"}, "Line Break"),
    ({}, ""),
])
def test_greeting_name(user: dict, expected: str) -> None:
    assert greeting_name(user) == expected


@pytest.mark.parametrize(("ua", "expected"), [
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/128.0.0.0 Mobile Safari/537.36", "Chrome (Android, Pixel 8)"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Safari/605.1.15", "Safari (macOS)"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
     "Safari/537.36 Edg/120.0", "Microsoft Edge (Windows)"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Mobile/15E148 Safari/604.1", "Safari (iPhone)"),
    ("Chrome 128.0.0 / Mac OS X 10.15.7", "Chrome (macOS)"),
    ("unknown", ""),
    (None, ""),
])
def test_describe_device(ua: str | None, expected: str) -> None:
    assert describe_device(ua) == expected
