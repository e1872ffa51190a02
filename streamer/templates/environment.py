"""The Jinja2 sandbox for email templates and one scan's compiled-template cache."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from streamer.templates.filters import FILTERS, GLOBALS
from streamer.templates.lookup import ResolvedTemplate, build_index, resolve, resolve_shared, scope_segment, split_scope

_VIRTUAL_SEP = "@@"   # never in a tenant, client id or locale tag

Scope = tuple[str, str, tuple[str, ...]]      # tenant, client id ("" for none), locale chain


def virtual_name(path: str, scope: Scope) -> str:
    """A template name that carries the scope, so {% extends %} can resolve per tenant/locale."""
    tenant, client, chain = scope
    return f"{path}{_VIRTUAL_SEP}{tenant}:{client}:{','.join(chain)}"


def split_virtual_name(name: str) -> tuple[str, Scope]:
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
        path, _ = split_virtual_name(template)
        if path not in self.files:
            raise jinja2.TemplateNotFound(path, f"template file {path} does not exist")
        return self.source(path), str(self.root / path), lambda: True


def _autoescape(name: str | None) -> bool:
    return name is not None and split_virtual_name(name)[0].endswith(".html")


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
        _, scope = split_virtual_name(parent)
        if template.split("/", 1)[0].startswith("_"):
            resolved = self._shared(template, scope)
            return virtual_name(resolved or template, scope)
        return virtual_name(template, scope)


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


class State:
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
        tenant, client_id = scope_segment(tenant), scope_segment(client_id)
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
            get(virtual_name(resolved.subject_path, scope)),
            get(virtual_name(resolved.html_path, scope)),
            get(virtual_name(resolved.text_path, scope)) if resolved.text_path else None,
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
