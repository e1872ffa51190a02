"""Which files make up one email for a scope and language: a pure lookup over relative paths."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from streamer.locale import normalize_locale
from streamer.templates.errors import TemplateNotFoundError

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


def scope_segment(value: str | None) -> str | None:
    """A tenant or client id usable as a path segment; anything else (`../x`) means "none"."""
    return value if isinstance(value, str) and _SCOPE_SEGMENT.match(value) else None


def scope_prefixes(tenant: str | None, client_id: str | None) -> list[str]:
    """Directory prefixes to search, most specific first; "" is the default scope."""
    tenant, client_id = scope_segment(tenant), scope_segment(client_id)
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


def locales_of(entries: Mapping[tuple[str, str], Variants], default_locale: str) -> set[str]:
    return {tag or default_locale for key, variants in entries.items() if key in TEMPLATE_FILES
            for tag in variants}


def template_names(files: frozenset[str]) -> list[str]:
    """Names that have a default directory (`<name>/` at the top level)."""
    index = build_index(files)
    return sorted(d for d, entries in index.items()
                  if "/" not in d and is_template_name(d) and any(k in entries for k in TEMPLATE_FILES))
