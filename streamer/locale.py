"""Which locale an email is written in: pure functions over profiles, tags and headers.

Locale tags come from user-editable metadata, social profiles and browsers, so anything that is
not a recognisable language tag is ignored rather than trusted; every tag leaves this module in
one canonical BCP 47 shape (`fr-CA`, `zh-Hant-TW`) so that template file names, `Content-Language`
and Babel all agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Protocol

from babel import localedata

_MAX_TAG = 35  # RFC 5646 recommends supporting at least 35 characters
_MAX_ACCEPT_HEADER = 4096
_MAX_ACCEPT_ENTRIES = 32
_SUBTAG = re.compile(r"^[A-Za-z0-9]{1,8}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}$")
_SCRIPT = re.compile(r"^[A-Za-z]{4}$")
_REGION = re.compile(r"^(?:[A-Za-z]{2}|[0-9]{3})$")
#: Deprecated ISO 639 codes still sent by old Java/Android stacks.
_LEGACY = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"}


def normalize_locale(value: Any) -> str | None:
    """`fr_CA`, `FR-ca`, `fr_CA.UTF-8` → `fr-CA`; None for anything that is not a known language.

    Extra subtags (variants, extensions such as `-u-ca-gregory`) are dropped: templates are
    only ever keyed by language, script and region.
    """
    return _normalize(value) if isinstance(value, str) else None


@lru_cache(maxsize=1024)
def _normalize(value: str) -> str | None:
    text = value.strip().split(".", 1)[0].split("@", 1)[0]  # POSIX forms: fr_FR.UTF-8@euro
    if not text or len(text) > _MAX_TAG:
        return None
    parts = re.split(r"[-_]", text)
    if not all(_SUBTAG.match(p) for p in parts) or not _LANGUAGE.match(parts[0]):
        return None
    language = _LEGACY.get(parts[0].lower(), parts[0].lower())
    if not localedata.exists(language):
        return None
    out = [language]
    rest = parts[1:]
    if rest and _SCRIPT.match(rest[0]):
        out.append(rest.pop(0).title())
    if rest and _REGION.match(rest[0]):
        out.append(rest.pop(0).upper())
    return "-".join(out)


def wanted_locale(user: Mapping[str, Any], tenant_default: str | None, global_default: str) -> str:
    """The locale the user should get, before any fallback to what templates exist.

    Order (SPEC): user_metadata.locale, app_metadata.locale, the profile's own `locale` (social
    identity providers fill it), the tenant default, the global default. Garbage is skipped.
    """
    user_metadata = user.get("user_metadata") if isinstance(user, Mapping) else None
    app_metadata = user.get("app_metadata") if isinstance(user, Mapping) else None
    candidates = (
        user_metadata.get("locale") if isinstance(user_metadata, Mapping) else None,
        app_metadata.get("locale") if isinstance(app_metadata, Mapping) else None,
        user.get("locale") if isinstance(user, Mapping) else None,
        tenant_default,
        global_default,
    )
    for candidate in candidates:
        tag = normalize_locale(candidate)
        if tag:
            return tag
    return global_default


def _ancestors(tag: str) -> list[str]:
    """`zh-Hant-TW` → [zh-Hant-TW, zh-Hant, zh]: drop one subtag at a time."""
    parts = tag.split("-")
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]


def fallback_chain(locale: str, default: str, *, tenant_default: str | None = None) -> list[str]:
    """Locales to try, most specific first; the last one is always `default`.

    `fr-CA` with default `en` → [fr-CA, fr, en]. With `tenant_default`, the tenant's language is
    tried before the global default ([it, fr, en] for an Italian user of a French tenant). The
    last element names the locale of the unsuffixed template files (`subject.txt`).
    """
    default_tag = normalize_locale(default) or default
    chain: list[str] = []
    for source in (locale, tenant_default):
        tag = normalize_locale(source)
        if tag:
            chain.extend(t for t in _ancestors(tag) if t not in chain and t != default_tag)
    chain.append(default_tag)
    return chain


def locale_chain(user: Mapping[str, Any], tenant_default: str | None, global_default: str) -> list[str]:
    """`fallback_chain(wanted_locale(...))`: what render() needs for one user."""
    return fallback_chain(wanted_locale(user, tenant_default, global_default), global_default)


class _Resolved(Protocol):
    @property
    def locale_used(self) -> str: ...


class TemplateSet(Protocol):
    """What locale resolution needs of the templates: which variant a fallback chain lands on."""

    def resolve(self, name: str, tenant: str | None, client_id: str | None, locale_chain: list[str]) -> _Resolved: ...


#: (tenant, client_id, template, user profile) → the locale the email will render in.
LocaleResolver = Callable[[str, "str | None", str, Mapping[str, Any]], str]


def make_locale_resolver(
    templates: TemplateSet, default_locale: str, tenant_defaults: Mapping[str, str | None]
) -> LocaleResolver:
    """The locale each email renders in: the user's wanted locale, down its fallback chain to
    the first variant the templates have. Lookups are memoised (the template set is fixed
    while running)."""

    @lru_cache(maxsize=4096)
    def used(template: str, tenant: str, client_id: str | None, wanted: str) -> str:
        chain = fallback_chain(wanted, default_locale)
        return templates.resolve(template, tenant, client_id, chain).locale_used

    def resolve(tenant: str, client_id: str | None, template: str, user: Mapping[str, Any]) -> str:
        return used(template, tenant, client_id, wanted_locale(user, tenant_defaults.get(tenant), default_locale))

    return resolve


def parse_accept_language(header: str | None) -> list[str]:
    """`fr-CH, fr;q=0.9, en;q=0.8, *;q=0.5` → [fr-CH, fr, en], best first.

    Entries with q=0, `*`, malformed weights and unknown languages are dropped; the header is
    truncated so a hostile client cannot make us parse megabytes.
    """
    if not header:
        return []
    weighted: list[tuple[float, int, str]] = []
    for position, entry in enumerate(header[:_MAX_ACCEPT_HEADER].split(",")[:_MAX_ACCEPT_ENTRIES]):
        tag, _, params = entry.strip().partition(";")
        quality = 1.0
        if params:
            name, _, raw = params.strip().partition("=")
            if name.strip().lower() != "q":
                continue
            try:
                quality = float(raw.strip())
            except ValueError:
                continue
            if not 0.0 <= quality <= 1.0:
                continue
        normalized = normalize_locale(tag.strip())
        if normalized and quality > 0:
            weighted.append((-quality, position, normalized))
    result: list[str] = []
    for _, _, tag in sorted(weighted):
        if tag not in result:
            result.append(tag)
    return result
