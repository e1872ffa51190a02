"""The templates directory: scanned once, compiled on first use, reloadable."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2

from streamer.locale import fallback_chain, normalize_locale
from streamer.templates.check import Problem, check_templates
from streamer.templates.environment import CompiledTemplate, State, error_location, scan
from streamer.templates.lookup import (
    ResolvedTemplate,
    is_template_name,
    locales_of,
    resolve,
    scope_segment,
    split_scope,
    template_names,
)


class Templates:
    """The templates directory, scanned once (`reload()` rescans) and compiled on first use.

    Thread-safe for rendering: a reload swaps the whole state at once.
    """

    def __init__(self, root: str | Path, default_locale: str = "en"):
        self.root = Path(root).resolve()
        self.default_locale = normalize_locale(default_locale) or default_locale
        self._lock = threading.Lock()
        self._state = State(self.root, scan(self.root) if self.root.is_dir() else frozenset())

    @classmethod
    def from_config(cls, config: Any) -> Templates:
        """From a `Config` (templates dir relative to the config file)."""
        return cls(config.templates_dir, config.templates.default_locale)

    def reload(self) -> None:
        """Rescan the directory and drop every compiled template."""
        with self._lock:
            self._state = State(self.root, scan(self.root) if self.root.is_dir() else frozenset())

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
        return self._state.compiled(name, scope_segment(tenant), scope_segment(client_id), tuple(locale_chain))

    def locales(self, name: str | None = None) -> list[str]:
        """Every locale that has a variant (of `name`, or of any template), default included."""
        found = {self.default_locale}
        for directory, entries in self._state.index.items():
            tenant, client, rest = split_scope(directory)
            if rest == name or (name is None and is_template_name(rest)):
                found |= locales_of(entries, self.default_locale)
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
        return check_templates(self, self._state, required=required, tenant_vars=tenant_vars,
                               ticket_templates=ticket_templates, render=render)
