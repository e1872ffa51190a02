"""Locale choice: which language a user gets, and what we fall back to."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.locale import (
    fallback_chain,
    locale_chain,
    normalize_locale,
    parse_accept_language,
    wanted_locale,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("fr", "fr"),
        ("fr_CA", "fr-CA"),
        ("FR-ca", "fr-CA"),
        ("fr-ca", "fr-CA"),
        (" de-DE ", "de-DE"),
        ("fr_CA.UTF-8@euro", "fr-CA"),  # POSIX locale names
        ("zh_hant_tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("en-US-u-ca-gregory", "en-US"),  # extensions dropped
        ("iw", "he"),  # deprecated code
        ("pt-BR", "pt-BR"),
    ],
)
def test_normalize_canonical_forms(raw: str, expected: str) -> None:
    assert normalize_locale(raw) == expected


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        42,
        {},
        [],
        "",
        "   ",
        "xx",
        "zz-ZZ",
        "C",
        "english",
        "fr--CA",
        "<script>",
        "fr;DROP TABLE",
        "a" * 100,
        "12",
        "fr-CA-" + "x" * 40,
        "é",
    ],
)
def test_normalize_rejects_garbage(garbage: object) -> None:
    assert normalize_locale(garbage) is None


@given(st.text(max_size=40))
def test_normalize_is_total_and_idempotent(text: str) -> None:
    tag = normalize_locale(text)
    assert tag is None or normalize_locale(tag) == tag


def _user(meta: object = None, app: object = None, profile: object = None) -> dict:
    user: dict = {"user_metadata": {}, "app_metadata": {}}
    if meta is not None:
        user["user_metadata"] = {"locale": meta}
    if app is not None:
        user["app_metadata"] = {"locale": app}
    if profile is not None:
        user["locale"] = profile
    return user


@pytest.mark.parametrize(
    ("user", "tenant", "expected"),
    [
        (_user("fr_CA", "de", "es"), "it", "fr-CA"),  # user_metadata first
        (_user(None, "de", "es"), "it", "de"),  # then app_metadata
        (_user(None, None, "es"), "it", "es"),  # then the profile (social)
        (_user(), "it", "it"),  # then the tenant default
        (_user(), None, "en"),  # then the global default
        (_user("xx", 17, "es-MX"), None, "es-MX"),  # garbage is skipped
        (_user("", "", ""), "nonsense", "en"),
        ({"locale": "de"}, None, "de"),  # metadata missing entirely
        ({"user_metadata": "oops", "app_metadata": None, "locale": "fr"}, None, "fr"),
    ],
)
def test_wanted_locale_order(user: dict, tenant: str | None, expected: str) -> None:
    assert wanted_locale(user, tenant, "en") == expected


@pytest.mark.parametrize(
    ("locale", "default", "tenant_default", "expected"),
    [
        ("fr-CA", "en", None, ["fr-CA", "fr", "en"]),
        ("fr", "en", None, ["fr", "en"]),
        ("en", "en", None, ["en"]),
        ("en-GB", "en", None, ["en-GB", "en"]),
        ("zh-Hant-TW", "en", None, ["zh-Hant-TW", "zh-Hant", "zh", "en"]),
        ("garbage", "en", None, ["en"]),
        ("it", "en", "fr-CA", ["it", "fr-CA", "fr", "en"]),
        ("fr-BE", "fr", None, ["fr-BE", "fr"]),
    ],
)
def test_fallback_chain(locale: str, default: str, tenant_default: str | None, expected: list[str]) -> None:
    assert fallback_chain(locale, default, tenant_default=tenant_default) == expected


@given(st.text(max_size=20), st.sampled_from(["en", "fr", "de-DE"]))
def test_fallback_chain_ends_with_default_without_duplicates(locale: str, default: str) -> None:
    chain = fallback_chain(locale, default)
    assert chain[-1] == default
    assert len(chain) == len(set(chain))


def test_locale_chain_for_a_user() -> None:
    assert locale_chain(_user("fr_ca"), None, "en") == ["fr-CA", "fr", "en"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", ["fr-CH", "fr", "en", "de"]),
        ("de;q=0.5, es", ["es", "de"]),
        ("en;q=0, fr", ["fr"]),  # q=0 means "not this one"
        ("fr, fr-FR, fr", ["fr", "fr-FR"]),  # duplicates once, first position kept
        ("en;q=abc, de;q=2, it;level=1, pt", ["pt"]),
        ("xx, zz-ZZ, es_mx", ["es-MX"]),
        ("", []),
        (None, []),
        (",,,;;;q=", []),
    ],
)
def test_parse_accept_language(header: str | None, expected: list[str]) -> None:
    assert parse_accept_language(header) == expected


def test_parse_accept_language_bounds_hostile_headers() -> None:
    header = ", ".join(["en"] * 100_000)
    assert parse_accept_language(header) == ["en"]
