"""Email templates on disk: which files make up one email, compiled in a Jinja2 sandbox.

Layout (SPEC "Templates"), relative to the templates directory::

    <name>/subject.txt body.html [body.txt]        defaults; locale variants subject.fr.txt, body.fr-CA.html
    tenants/<tenant>/<name>/                        one tenant
    clients/<client_id>/<name>/                     one application (Auth0 client ids are global)
    tenants/<tenant>/clients/<client_id>/<name>/    one application of one tenant
    _layout/base.html, _layout/ui.html …            shared files used via {% extends %} / {% import %};
                                                    any directory starting with "_" is shared and can
                                                    be overridden in the same three scopes

The most specific directory that holds the template wins as a whole (its files are never mixed
with the default's); inside it each file takes its most specific locale variant. Shared files
are resolved the same way, file by file, for the tenant, client and language of the email that
uses them. The lookup is a pure function over a set of relative paths (`resolve`), so it can be
tested exhaustively without a disk; `Templates` adds the scan, the cache and the sandbox.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import jinja2
from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from jinja2 import nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from streamer.locale import fallback_chain, normalize_locale

#: (stem, extension) of the files that make up one email, and their role.
TEMPLATE_FILES: dict[tuple[str, str], str] = {
    ("subject", "txt"): "subject",
    ("body", "html"): "html",
    ("body", "txt"): "text",
}
TEMPLATE_EXTENSIONS = ("html", "txt")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_SCOPE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_RESERVED = {"tenants", "clients"}
_VIRTUAL_SEP = "@@"   # never in a tenant, client id or locale tag


class TemplateError(Exception):
    """A template that cannot be found, compiled or rendered; the message says where."""


class TemplateNotFoundError(TemplateError, LookupError):
    """No directory holds the template, or the chosen one lacks a required file."""


# --- pure lookup over a set of relative paths -------------------------------------------------


@dataclass(frozen=True)
class ResolvedTemplate:
    """The files that make up one email, and the locale they are written in."""

    dir: str
    subject_path: str
    html_path: str
    text_path: str | None
    locale_used: str


def parse_file_name(filename: str) -> tuple[str, str | None, str] | None:
    """`body.fr_ca.html` → ("body", "fr-CA", "html"); `subject.txt` → ("subject", None, "txt")."""
    parts = filename.split(".")
    if len(parts) < 2 or not parts[0]:
        return None
    if len(parts) >= 3:
        tag = normalize_locale(parts[-2])
        if tag:
            return ".".join(parts[:-2]), tag, parts[-1]
    return ".".join(parts[:-1]), None, parts[-1]


def split_scope(directory: str) -> tuple[str | None, str | None, str]:
    """`tenants/acme/clients/X/welcome` → ("acme", "X", "welcome"); a default dir has no scope."""
    parts = directory.split("/") if directory else []
    tenant = client = None
    if len(parts) >= 3 and parts[0] == "tenants":
        tenant, parts = parts[1], parts[2:]
        if len(parts) >= 3 and parts[0] == "clients":
            client, parts = parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "clients":
        client, parts = parts[1], parts[2:]
    return tenant, client, "/".join(parts)


def _segment(value: str | None) -> str | None:
    """A tenant or client id usable as a path segment; anything else (`../x`) means "none"."""
    return value if isinstance(value, str) and _SCOPE_SEGMENT.match(value) else None


def scope_prefixes(tenant: str | None, client_id: str | None) -> list[str]:
    """Directory prefixes to search, most specific first; "" is the default scope."""
    tenant, client_id = _segment(tenant), _segment(client_id)
    prefixes = []
    if tenant and client_id:
        prefixes.append(f"tenants/{tenant}/clients/{client_id}/")
    if client_id:
        prefixes.append(f"clients/{client_id}/")
    if tenant:
        prefixes.append(f"tenants/{tenant}/")
    prefixes.append("")
    return prefixes


def override_dirs(name: str, tenant: str | None, client_id: str | None) -> list[str]:
    """Directories that may hold template `name`, most specific first."""
    return [prefix + name for prefix in scope_prefixes(tenant, client_id)]


Variants = Mapping[str | None, str]          # locale (None: unsuffixed) → path
Index = Mapping[str, Mapping[tuple[str, str], Variants]]


@lru_cache(maxsize=16)
def build_index(files: frozenset[str]) -> Index:
    """dir → (stem, ext) → locale → path. Cached: a frozenset's hash is computed once."""
    index: dict[str, dict[tuple[str, str], dict[str | None, str]]] = {}
    for path in files:
        directory, _, filename = path.rpartition("/")
        parsed = parse_file_name(filename)
        if parsed is None or parsed[2] not in TEMPLATE_EXTENSIONS:
            continue
        stem, tag, ext = parsed
        index.setdefault(directory, {}).setdefault((stem, ext), {})[tag] = path
    return index


def pick_variant(variants: Variants | None, chain: list[str] | tuple[str, ...]) -> tuple[str, str] | None:
    """(path, locale) of the most specific variant; unsuffixed files are in `chain[-1]`."""
    if not variants:
        return None
    for tag in chain:
        if tag in variants:
            return variants[tag], tag
    if None in variants:
        return variants[None], chain[-1]
    return None


def is_template_name(name: str) -> bool:
    return bool(_NAME.match(name)) and name not in _RESERVED


def resolve(files: frozenset[str], name: str, tenant: str | None, client_id: str | None,
            locale_chain: list[str] | tuple[str, ...]) -> ResolvedTemplate:
    """Pick the directory and files of one email. Pure: `files` are paths relative to the root.

    The first directory of `override_dirs` holding any template file wins as a whole. Subject
    and HTML take their most specific variant along `locale_chain` (whose last element is the
    locale of the unsuffixed files); `locale_used` is the HTML's. A body.txt is used only in
    that same locale, otherwise the text part is generated from the HTML, so both parts of
    the email are always in the same language.
    """
    if not locale_chain:
        raise ValueError("locale_chain must end with the default locale")
    if not is_template_name(name):
        raise TemplateNotFoundError(f"{name!r} is not a template name (letters, digits, '_', '-')")
    index = build_index(files)
    dirs = override_dirs(name, tenant, client_id)
    for directory in dirs:
        entries = index.get(directory)
        if not entries or not any(key in entries for key in TEMPLATE_FILES):
            continue
        subject = pick_variant(entries.get(("subject", "txt")), locale_chain)
        html = pick_variant(entries.get(("body", "html")), locale_chain)
        if subject is None or html is None:
            missing = " and ".join(f for f, got in (("subject.txt", subject), ("body.html", html)) if got is None)
            raise TemplateNotFoundError(
                f"{directory}/ has no {missing} for locale {locale_chain[0]} (nor its fallbacks "
                f"{', '.join(locale_chain[1:]) or 'none'}); an override directory replaces the default as a whole")
        text = pick_variant(entries.get(("body", "txt")), locale_chain)
        text_path = text[0] if text and text[1] == html[1] else None
        return ResolvedTemplate(directory, subject[0], html[0], text_path, html[1])
    raise TemplateNotFoundError(f"no template {name!r}: none of {', '.join(d + '/' for d in dirs)} exists")


def resolve_shared(files: frozenset[str], ref: str, tenant: str | None, client_id: str | None,
                   locale_chain: list[str] | tuple[str, ...]) -> str | None:
    """Path of a shared file such as `_layout/base.html` for this scope and language, or None.

    Each scope directory is tried from the most specific; in the first that has the file, the
    most specific locale variant wins. An explicit variant (`_layout/base.fr.html`) is taken as is.
    """
    directory, _, filename = ref.rpartition("/")
    parsed = parse_file_name(filename)
    if parsed is None:
        return None
    stem, tag, ext = parsed
    index = build_index(files)
    for prefix in scope_prefixes(tenant, client_id):
        scoped_dir = prefix + directory if directory else prefix.rstrip("/")
        if tag is not None:
            candidate = f"{scoped_dir}/{filename}" if scoped_dir else filename
            if candidate in files:
                return candidate
            continue
        picked = pick_variant(index.get(scoped_dir, {}).get((stem, ext)), locale_chain)
        if picked:
            return picked[0]
    return None


# --- checks that need only the file set -------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One finding of `check`, printable as `path:line: level: message`."""

    level: Literal["error", "warning"]
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.level}: {self.message}"

    def with_root(self, root: str | Path) -> Problem:
        """The same problem with `path` prefixed by the templates directory, for printing."""
        return Problem(self.level, str(Path(root) / self.path), self.line, self.message)


def _locales_of(entries: Mapping[tuple[str, str], Variants], default_locale: str) -> set[str]:
    return {tag or default_locale for key, variants in entries.items() if key in TEMPLATE_FILES
            for tag in variants}


def template_names(files: frozenset[str]) -> list[str]:
    """Names that have a default directory (`<name>/` at the top level)."""
    index = build_index(files)
    return sorted(d for d, entries in index.items()
                  if "/" not in d and is_template_name(d) and any(k in entries for k in TEMPLATE_FILES))


def check_files(files: frozenset[str], default_locale: str, *, required: Iterable[str] = (),
                tenants: Collection[str] | None = None) -> list[Problem]:
    """Structural problems: missing defaults and files, unknown names, uneven locale coverage.

    `required` are template names the rules use; `tenants`, when given, are the configured tenant
    names (an override for another tenant is probably a typo).
    """
    index = build_index(files)
    names = set(template_names(files))
    problems: list[Problem] = []
    for name in sorted(set(required) - names):
        problems.append(Problem("error", f"{name}/", None,
                                f"template {name!r} is used by a rule but has no default directory {name}/"))
    seen_tenant_dirs: set[str] = set()
    for directory in sorted(index):
        entries = index[directory]
        tenant, client, rest = split_scope(directory)
        if tenant and tenants is not None and tenant not in tenants and tenant not in seen_tenant_dirs:
            seen_tenant_dirs.add(tenant)
            problems.append(Problem("warning", f"tenants/{tenant}/", None,
                                    f"no tenant {tenant!r} in the config; these overrides are never used"))
        if not rest or rest.startswith("_") or "/" in rest and rest.split("/", 1)[0].startswith("_"):
            continue                                           # root files and shared directories
        if "/" in rest or not is_template_name(rest):
            for stem_ext, variants in entries.items():
                for path in variants.values():
                    problems.append(Problem("warning", path, None,
                                            "not inside a template directory; ignored"))
            continue
        name = rest
        for (stem, ext), variants in sorted(entries.items(), key=lambda kv: kv[0]):
            if (stem, ext) not in TEMPLATE_FILES:
                for path in sorted(variants.values()):
                    problems.append(Problem("warning", path, None,
                                            "unrecognised file name, ignored (expected subject[.LOCALE].txt, "
                                            "body[.LOCALE].html or body[.LOCALE].txt, LOCALE such as fr or fr-CA)"))
        if not any(key in entries for key in TEMPLATE_FILES):
            continue
        if (tenant or client) and name not in names:
            problems.append(Problem("error", f"{directory}/", None,
                                    f"override of unknown template {name!r}: there is no default directory {name}/"))
        for key, label in ((("subject", "txt"), "subject.txt"), (("body", "html"), "body.html")):
            if pick_variant(entries.get(key), [default_locale]) is None:
                problems.append(Problem("error", f"{directory}/", None,
                                        f"no {label} for the default locale {default_locale}"
                                        + ("; an override replaces the default as a whole" if tenant or client else "")))
        locales = _locales_of(entries, default_locale)
        for key, variants in sorted(entries.items()):
            if key not in TEMPLATE_FILES:
                continue
            stem, ext = key
            for tag in sorted(locales - {t or default_locale for t in variants}):
                if key == ("body", "txt"):
                    effect = f"{tag} emails get a text part generated from the HTML instead"
                else:
                    fallback = pick_variant(variants, fallback_chain(tag, default_locale))
                    effect = (f"{tag} emails mix languages ({fallback[0].rpartition('/')[2]} is used)"
                              if fallback else f"{tag} emails cannot be rendered")
                problems.append(Problem("warning", f"{directory}/{stem}.{tag}.{ext}", None,
                                        f"missing while other files here have a {tag} variant: {effect}"))
        if tenant or client:
            html_variants = entries.get(("body", "html"))
            for tag in sorted(_locales_of(index.get(name, {}), default_locale) - locales):
                fallback = pick_variant(html_variants, fallback_chain(tag, default_locale))
                problems.append(Problem("warning", f"{directory}/", None,
                                        f"no {tag} variant although {name}/ has one: {tag} users in this scope get "
                                        f"this override in {fallback[1] if fallback else default_locale} "
                                        f"(an override wins as a whole)"))
    return problems


# --- filters and helpers available to templates -----------------------------------------------

_CONTROL_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}


def clean_text(value: str) -> str:
    """Drop control characters and line/paragraph separators; collapse runs of whitespace."""
    return " ".join("".join(" " if unicodedata.category(ch) in _CONTROL_CATEGORIES else ch
                            for ch in value).split())


def greeting_name(user: Mapping[str, Any] | None) -> str:
    """The name to greet the user by, or "" for a neutral greeting.

    given_name, then name, then nickname (also from user_metadata, where signup forms put them).
    Auth0 fills `name` with the email and `nickname` with its local part for database users:
    those are not names, and an address or a link in a greeting is a phishing vector, so they
    are skipped; over-long values are too.
    """
    if not isinstance(user, Mapping):
        return ""
    metadata = user.get("user_metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    email = user.get("email") if isinstance(user.get("email"), str) else ""
    local_part = email.partition("@")[0].casefold()
    candidates = (
        ("given_name", user.get("given_name")), ("given_name", metadata.get("given_name")),
        ("given_name", metadata.get("first_name")), ("name", user.get("name")),
        ("name", metadata.get("name")), ("nickname", user.get("nickname")),
    )
    for key, value in candidates:
        if not isinstance(value, str):
            continue
        text = clean_text(value)
        if not text or len(text) > 64 or "@" in text or "://" in text or "www." in text.casefold():
            continue
        if key == "nickname" and text.casefold() == local_part:
            continue
        return text
    return ""


_BROWSERS = [  # order matters: Edge and Opera also say "Chrome", Chrome also says "Safari"
    (re.compile(r"\bEdg(?:e|A|iOS)?/"), "Microsoft Edge"),
    (re.compile(r"\b(?:OPR|Opera)/"), "Opera"),
    (re.compile(r"\bSamsungBrowser/"), "Samsung Internet"),
    (re.compile(r"\b(?:Firefox|FxiOS)/"), "Firefox"),
    (re.compile(r"\b(?:CriOS|Chrome|Chromium)/"), "Chrome"),
    (re.compile(r"\bVersion/[\d.]+.*\bSafari/"), "Safari"),
]
_SYSTEMS = [
    (re.compile(r"\biPhone\b"), "iPhone"),
    (re.compile(r"\biPad\b"), "iPad"),
    (re.compile(r"\bAndroid\b"), "Android"),
    (re.compile(r"\bCrOS\b"), "ChromeOS"),
    (re.compile(r"\bWindows\b"), "Windows"),
    (re.compile(r"\b(?:Mac OS X|Macintosh|macOS)\b"), "macOS"),
    (re.compile(r"\biOS\b"), "iOS"),
    (re.compile(r"\bLinux\b"), "Linux"),
]
_ANDROID_MODEL = re.compile(r"Android [\d.]+; ([^;)]{2,40}?)(?: Build/[^;)]*)?[;)]")
_SHORT_UA = re.compile(r"^([A-Za-z][A-Za-z ]{1,30}?) [\d.]+ / (.+)$")   # Auth0: "Chrome 128.0.0 / Mac OS X 10.15.7"


def describe_device(user_agent: Any) -> str:
    """A readable device from a User-Agent: `Chrome (Android, Pixel 8)`, `Safari (macOS)`, or ""."""
    if not isinstance(user_agent, str) or not user_agent.strip() or user_agent.strip() == "unknown":
        return ""
    ua = clean_text(user_agent)[:512]
    short = _SHORT_UA.match(ua)
    browser = next((label for pattern, label in _BROWSERS if pattern.search(ua)), None)
    if short and browser is None:
        browser = short.group(1).strip()
    system = next((label for pattern, label in _SYSTEMS if pattern.search(short.group(2) if short else ua)), None)
    details = [system] if system else []
    model = _ANDROID_MODEL.search(ua)
    if system == "Android" and model and model.group(1).strip() not in ("K", "Linux"):
        details.append(model.group(1).strip())
    if browser and details:
        return f"{browser} ({', '.join(details)})"
    return browser or ", ".join(details)


def to_datetime(value: Any) -> datetime | None:
    """ISO-8601 strings (Auth0's `2026-03-04T21:17:42.031Z`), datetimes, dates, epoch seconds."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        text = value.strip()
        text = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


@lru_cache(maxsize=256)
def babel_locale(tag: str | None) -> Locale:
    """A Babel Locale for a tag, falling back to its language, then to English."""
    for candidate in (tag, (tag or "").split("-")[0], "en"):
        if candidate:
            try:
                return Locale.parse(candidate, sep="-")
            except (ValueError, UnknownLocaleError):
                continue
    return Locale("en")


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):   # ZoneInfoNotFoundError is a KeyError
        return None


def _context_zone(context: Context, tz: str | None) -> tzinfo:
    """Explicit `tz`, else the user's (user_metadata.timezone, zoneinfo), the tenant's, UTC."""
    user = context.get("user")
    tenant = context.get("tenant")
    metadata = user.get("user_metadata") if isinstance(user, Mapping) else None
    tenant_vars = tenant.get("vars") if isinstance(tenant, Mapping) else None
    for name in (tz,
                 metadata.get("timezone") if isinstance(metadata, Mapping) else None,
                 user.get("zoneinfo") if isinstance(user, Mapping) else None,
                 tenant_vars.get("timezone") if isinstance(tenant_vars, Mapping) else None):
        if isinstance(name, str) and name and len(name) < 64:
            zone = _zone(name)
            if zone:
                return zone
    return timezone.utc


def _zone_label(moment: datetime, locale: Locale) -> str:
    if str(moment.tzinfo) in ("UTC", "Etc/UTC"):
        return "UTC"
    label = babel_dates.format_time(moment, "z", locale=locale)
    return label if label[:1] not in "+-" else babel_dates.format_time(moment, "O", locale=locale)


@pass_context
def format_datetime_filter(context: Context, value: Any, format: str | None = None, tz: str | None = None) -> str:
    """Date and time in the email's locale and the user's zone: `4 mars 2026, 22:17 CET`.

    Without `format`: the long date, the short time and the zone; otherwise a Babel format name
    (short, medium, long, full) or pattern. Unparseable values are shown as given.
    """
    moment = to_datetime(value)
    if moment is None:
        return "" if value is None else str(value)
    locale = babel_locale(context.get("locale"))
    moment = moment.astimezone(_context_zone(context, tz))
    if format is not None:
        return babel_dates.format_datetime(moment, format, tzinfo=moment.tzinfo, locale=locale)
    day = babel_dates.format_date(moment, "long", locale=locale)
    clock = babel_dates.format_time(moment, "short", tzinfo=moment.tzinfo, locale=locale)
    pattern = babel_dates.get_datetime_format("long", locale=locale).replace("'", "")
    return pattern.replace("{1}", day).replace("{0}", f"{clock} {_zone_label(moment, locale)}")


@pass_context
def format_date_filter(context: Context, value: Any, format: str = "long", tz: str | None = None) -> str:
    """A date in the email's locale: `4 mars 2026` (the day as seen in the user's zone)."""
    moment = to_datetime(value)
    if moment is None:
        return "" if value is None else str(value)
    moment = moment.astimezone(_context_zone(context, tz))
    return babel_dates.format_date(moment, format, locale=babel_locale(context.get("locale")))


@pass_context
def format_time_filter(context: Context, value: Any, format: str = "short", tz: str | None = None) -> str:
    moment = to_datetime(value)
    if moment is None:
        return "" if value is None else str(value)
    moment = moment.astimezone(_context_zone(context, tz))
    return babel_dates.format_time(moment, format, tzinfo=moment.tzinfo, locale=babel_locale(context.get("locale")))


@pass_context
def country_name_filter(context: Context, code: Any) -> str:
    """`CA` → `Canada` / `Kanada`, in the email's locale; unknown codes are shown as given."""
    if not isinstance(code, str) or not code.strip():
        return ""
    return babel_locale(context.get("locale")).territories.get(code.strip().upper(), code)


@pass_context
def place_filter(context: Context, location: Any) -> str:
    """An Auth0 `location_info` as `Montréal, Canada`; "" when unknown."""
    if not isinstance(location, Mapping):
        return ""
    city = location.get("city_name")
    country = country_name_filter(context, location.get("country_code")) or location.get("country_name")
    return ", ".join(clean_text(str(part)) for part in (city, country) if part)


@pass_context
def app_name(context: Context) -> str:
    """What to call the product: tenant.vars.app_name, else the application's name, else the tenant's."""
    tenant = context.get("tenant")
    client = context.get("client")
    tenant_vars = tenant.get("vars") if isinstance(tenant, Mapping) else None
    for value in (tenant_vars.get("app_name") if isinstance(tenant_vars, Mapping) else None,
                  client.get("name") if isinstance(client, Mapping) else None,
                  tenant.get("name") if isinstance(tenant, Mapping) else None):
        if isinstance(value, str) and value.strip():
            return clean_text(value)
    return ""


FILTERS: dict[str, Callable[..., Any]] = {
    "format_datetime": format_datetime_filter,
    "format_date": format_date_filter,
    "format_time": format_time_filter,
    "country_name": country_name_filter,
    "place": place_filter,
    "default_name": greeting_name,
    "device": describe_device,
}
GLOBALS: dict[str, Any] = {"app_name": app_name}


# --- the Jinja2 environment ------------------------------------------------------------------

Scope = tuple[str, str, tuple[str, ...]]      # tenant, client id ("" for none), locale chain


def _virtual(path: str, scope: Scope) -> str:
    """A template name that carries the scope, so {% extends %} can resolve per tenant/locale."""
    tenant, client, chain = scope
    return f"{path}{_VIRTUAL_SEP}{tenant}:{client}:{','.join(chain)}"


def _split_virtual(name: str) -> tuple[str, Scope]:
    path, sep, scope = name.rpartition(_VIRTUAL_SEP)
    if not sep:
        return name, ("", "", ())
    tenant, _, rest = scope.partition(":")
    client, _, chain = rest.partition(":")
    return path, (tenant, client, tuple(c for c in chain.split(",") if c))


class _Loader(jinja2.BaseLoader):
    """Serves only the scanned files (no path escapes), reading each once."""

    def __init__(self, root: Path, files: frozenset[str]):
        self.root = root
        self.files = files
        self._sources: dict[str, str] = {}

    def source(self, path: str) -> str:
        if path not in self._sources:
            self._sources[path] = (self.root / path).read_text(encoding="utf-8")
        return self._sources[path]

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        path, _ = _split_virtual(template)
        if path not in self.files:
            raise jinja2.TemplateNotFound(path, f"template file {path} does not exist")
        return self.source(path), str(self.root / path), lambda: True


def _autoescape(name: str | None) -> bool:
    return name is not None and _split_virtual(name)[0].endswith(".html")


def _finalize(value: Any) -> Any:
    """`{{ user.given_name }}` on a null must not print "None" in an email."""
    return "" if value is None else value


class _Environment(ImmutableSandboxedEnvironment):
    """Sandboxed (no attribute escapes, no mutation of the shared profile dicts), strict."""

    def __init__(self, loader: _Loader, shared: Callable[[str, Scope], str | None]):
        super().__init__(loader=loader, undefined=jinja2.StrictUndefined, autoescape=_autoescape,
                         auto_reload=False, cache_size=2000, trim_blocks=True, lstrip_blocks=True,
                         finalize=_finalize)
        self._shared = shared
        self.filters.update(FILTERS)
        self.globals.update(GLOBALS)

    def join_path(self, template: str, parent: str) -> str:
        _, scope = _split_virtual(parent)
        if template.split("/", 1)[0].startswith("_"):
            resolved = self._shared(template, scope)
            return _virtual(resolved or template, scope)
        return _virtual(template, scope)


@dataclass(frozen=True)
class CompiledTemplate:
    """The compiled parts of one email for one scope and locale chain."""

    resolved: ResolvedTemplate
    subject: jinja2.Template
    html: jinja2.Template
    text: jinja2.Template | None

    @property
    def locale(self) -> str:
        return self.resolved.locale_used


class _State:
    """One scan of the templates directory: files, index, environment and compiled cache."""

    def __init__(self, root: Path, files: frozenset[str]):
        self.root = root
        self.files = files
        self.index = build_index(files)
        self.loader = _Loader(root, files)
        self.env = _Environment(self.loader, self.shared)
        shared_dirs = [split_scope(d) for d in self.index if split_scope(d)[2].split("/", 1)[0].startswith("_")]
        self.shared_tenants = {t for t, _, _ in shared_dirs if t}
        self.shared_clients = {c for _, c, _ in shared_dirs if c}
        self.shared_locales = {tag for d in self.index if split_scope(d)[2].split("/", 1)[0].startswith("_")
                               for variants in self.index[d].values() for tag in variants if tag}
        self.compiled = lru_cache(maxsize=4096)(self._compile)

    def shared(self, ref: str, scope: Scope) -> str | None:
        tenant, client, chain = scope
        return resolve_shared(self.files, ref, tenant or None, client or None, chain or ("en",))

    def scope(self, tenant: str | None, client_id: str | None, chain: tuple[str, ...]) -> Scope:
        """Only what changes shared-file lookup, so equal scopes share compiled templates."""
        tenant, client_id = _segment(tenant), _segment(client_id)
        return (tenant if tenant in self.shared_tenants else "",
                client_id if client_id in self.shared_clients else "",
                tuple(tag for tag in chain[:-1] if tag in self.shared_locales) + chain[-1:])

    def _compile(self, name: str, tenant: str | None, client_id: str | None,
                 chain: tuple[str, ...]) -> CompiledTemplate:
        resolved = resolve(self.files, name, tenant, client_id, chain)
        scope = self.scope(tenant, client_id, chain[chain.index(resolved.locale_used):])
        get = self.env.get_template
        return CompiledTemplate(
            resolved,
            get(_virtual(resolved.subject_path, scope)),
            get(_virtual(resolved.html_path, scope)),
            get(_virtual(resolved.text_path, scope)) if resolved.text_path else None,
        )


def scan(root: Path) -> frozenset[str]:
    """Relative POSIX paths of the files under root, hidden files and directories excluded."""
    found = set()
    for directory, subdirs, filenames in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        rel = Path(directory).relative_to(root).as_posix()
        for filename in filenames:
            if not filename.startswith(".") and not filename.endswith("~"):
                found.add(filename if rel == "." else f"{rel}/{filename}")
    return frozenset(found)


def error_location(exc: BaseException, root: Path) -> tuple[str, int | None] | None:
    """(relative path, line) of the template line that raised, from Jinja's rewritten traceback."""
    prefix = str(root) + os.sep
    if isinstance(exc, jinja2.TemplateSyntaxError) and exc.filename:
        filename = exc.filename
        return (filename[len(prefix):] if filename.startswith(prefix) else filename), exc.lineno
    found = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(prefix):
            found = (filename[len(prefix):].replace(os.sep, "/"), tb.tb_lineno)
        tb = tb.tb_next
    return found


def _references(tree: nodes.Template) -> Iterable[tuple[str, int]]:
    """Constant template names used by extends/include/import, with their line."""
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        target = node.template
        if isinstance(target, nodes.Const) and isinstance(target.value, str):
            yield target.value, node.lineno
        elif isinstance(target, (nodes.List, nodes.Tuple)):
            for item in target.items:
                if isinstance(item, nodes.Const) and isinstance(item.value, str):
                    yield item.value, node.lineno


class Templates:
    """The templates directory, scanned once (`reload()` rescans) and compiled on first use.

    Thread-safe for rendering: a reload swaps the whole state at once.
    """

    def __init__(self, root: str | Path, default_locale: str = "en"):
        self.root = Path(root).resolve()
        self.default_locale = normalize_locale(default_locale) or default_locale
        self._lock = threading.Lock()
        self._state = _State(self.root, scan(self.root) if self.root.is_dir() else frozenset())

    @classmethod
    def from_config(cls, config: Any) -> Templates:
        """From a `Config` (templates dir relative to the config file)."""
        return cls(config.templates_dir, config.templates.default_locale)

    def reload(self) -> None:
        """Rescan the directory and drop every compiled template."""
        with self._lock:
            self._state = _State(self.root, scan(self.root) if self.root.is_dir() else frozenset())

    @property
    def files(self) -> frozenset[str]:
        return self._state.files

    @property
    def env(self) -> jinja2.Environment:
        return self._state.env

    def template_names(self) -> list[str]:
        return template_names(self._state.files)

    def chain(self, locale: str | None) -> list[str]:
        """The fallback chain for a wanted locale, ending with this store's default locale."""
        return fallback_chain(locale or self.default_locale, self.default_locale)

    def resolve(self, name: str, tenant: str | None, client_id: str | None,
                locale_chain: list[str] | tuple[str, ...]) -> ResolvedTemplate:
        return resolve(self._state.files, name, tenant, client_id, tuple(locale_chain))

    def compiled(self, name: str, tenant: str | None, client_id: str | None,
                 locale_chain: list[str] | tuple[str, ...]) -> CompiledTemplate:
        """Resolve and compile, cached per (name, tenant, client, chain)."""
        return self._state.compiled(name, _segment(tenant), _segment(client_id), tuple(locale_chain))

    def locales(self, name: str | None = None) -> list[str]:
        """Every locale that has a variant (of `name`, or of any template), default included."""
        found = {self.default_locale}
        for directory, entries in self._state.index.items():
            tenant, client, rest = split_scope(directory)
            if rest == name or (name is None and is_template_name(rest)):
                found |= _locales_of(entries, self.default_locale)
        return sorted(found)

    def scopes(self, name: str | None = None) -> list[tuple[str | None, str | None]]:
        """(tenant, client_id) pairs with an override (of `name`, or of anything), default first."""
        found: set[tuple[str | None, str | None]] = set()
        for directory in self._state.index:
            tenant, client, rest = split_scope(directory)
            if (tenant or client) and (name is None or rest == name or rest.startswith("_")):
                found.add((tenant, client))
        return [(None, None)] + sorted(found, key=lambda s: (s[0] or "", s[1] or ""))

    def error_location(self, exc: BaseException) -> tuple[str, int | None] | None:
        return error_location(exc, self.root)

    # -- check --------------------------------------------------------------------------------

    def check(self, *, required: Iterable[str] = (), tenant_vars: Mapping[str, Mapping[str, Any]] | None = None,
              ticket_templates: Collection[str] | None = None, render: bool = True) -> list[Problem]:
        """Everything `streamer check` reports about templates, errors first.

        Structure (see `check_files`), then every file compiled (`file:line` for syntax errors,
        references to shared files that do not exist), then, with `render`, every template in
        every locale and scope rendered with sample data (undefined names, runtime errors).
        `tenant_vars` maps configured tenants to their vars; `ticket_templates` are the templates
        whose rules create a ticket (they get `ticket_url`).
        """
        state = self._state
        if not self.root.is_dir():
            return [Problem("error", str(self.root), None, "the templates directory does not exist")]
        problems = check_files(state.files, self.default_locale, required=required,
                               tenants=None if tenant_vars is None else set(tenant_vars))
        problems += self._compile_problems(state)
        if render:
            problems += self._render_problems(state, tenant_vars or {}, ticket_templates)
        unique = list(dict.fromkeys(problems))
        return sorted(unique, key=lambda p: (p.level != "error", p.path, p.line or 0))

    def _compile_problems(self, state: _State) -> list[Problem]:
        problems = []
        for path in sorted(state.files):
            if path.rpartition(".")[2] not in TEMPLATE_EXTENSIONS:
                continue
            try:
                source = state.loader.source(path)
            except UnicodeDecodeError as exc:
                problems.append(Problem("error", path, None, f"not UTF-8: {exc.reason} at byte {exc.start}"))
                continue
            except OSError as exc:
                problems.append(Problem("error", path, None, f"cannot read: {exc.strerror}"))
                continue
            try:
                tree = state.env.parse(source, path, str(self.root / path))
                state.env.compile(source, path, str(self.root / path))
            except jinja2.TemplateSyntaxError as exc:
                problems.append(Problem("error", path, exc.lineno, exc.message or str(exc)))
                continue
            tenant, client, _ = split_scope(path.rpartition("/")[0])
            for ref, line in _references(tree):
                if ref.split("/", 1)[0].startswith("_"):
                    found = resolve_shared(state.files, ref, tenant, client, (self.default_locale,))
                else:
                    found = ref if ref in state.files else None
                if found is None:
                    problems.append(Problem("error", path, line, f"{ref} does not exist"
                                            + (f" for tenant {tenant}" if tenant else "")))
        return problems

    def _render_problems(self, state: _State, tenant_vars: Mapping[str, Mapping[str, Any]],
                         ticket_templates: Collection[str] | None) -> list[Problem]:
        from streamer.sample_context import sample_context   # sample data only matters to check

        problems: list[Problem] = []
        done: set[tuple[str, ...]] = set()
        tenants = [None, *sorted(tenant_vars)]
        for name in template_names(state.files):
            scopes = set(self.scopes(name)) | {(t, None) for t in tenants}
            for tenant, client in sorted(scopes, key=lambda s: (s[0] or "", s[1] or "")):
                for locale in self.locales(name):
                    chain = tuple(fallback_chain(locale, self.default_locale))
                    try:
                        compiled = state.compiled(name, tenant, client, chain)
                    except TemplateNotFoundError:
                        continue                                  # reported by check_files
                    except Exception as exc:  # noqa: BLE001 - reported, not raised
                        problems.append(self._problem(exc, f"{name}/"))
                        continue
                    parts = [compiled.subject, compiled.html] + ([compiled.text] if compiled.text else [])
                    key = (name, tenant if tenant in tenant_vars else "", *(p.name or "" for p in parts))
                    if key in done:
                        continue
                    done.add(key)
                    context = sample_context(
                        name, compiled.locale, tenant_name=tenant or "acme", client_id=client,
                        tenant_vars=tenant_vars.get(tenant) if tenant else None,
                        ticket=None if ticket_templates is None else name in ticket_templates)
                    for part in parts:
                        try:
                            part.render(context)
                        except Exception as exc:  # noqa: BLE001 - reported, not raised
                            problems.append(self._problem(exc, _split_virtual(part.name or "")[0]))
        return problems

    def _problem(self, exc: Exception, fallback_path: str) -> Problem:
        where = error_location(exc, self.root)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if where:
            return Problem("error", where[0], where[1], message)
        return Problem("error", fallback_path, None, message)
