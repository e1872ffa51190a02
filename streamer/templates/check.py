"""What `streamer check` reports about templates: structure, compilation and sample renders."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jinja2
from jinja2 import nodes

from streamer.locale import fallback_chain
from streamer.sample_context import sample_context
from streamer.templates.environment import State, error_location, split_virtual_name
from streamer.templates.errors import TemplateNotFoundError
from streamer.templates.lookup import (
    TEMPLATE_EXTENSIONS,
    TEMPLATE_FILES,
    build_index,
    is_template_name,
    locales_of,
    pick_variant,
    resolve_shared,
    split_scope,
    template_names,
)

if TYPE_CHECKING:
    from streamer.templates.directory import Templates


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
        locales = locales_of(entries, default_locale)
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
            for tag in sorted(locales_of(index.get(name, {}), default_locale) - locales):
                fallback = pick_variant(html_variants, fallback_chain(tag, default_locale))
                problems.append(Problem("warning", f"{directory}/", None,
                                        f"no {tag} variant although {name}/ has one: {tag} users in this scope get "
                                        f"this override in {fallback[1] if fallback else default_locale} "
                                        f"(an override wins as a whole)"))
    return problems


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


def check_templates(templates: Templates, state: State, *, required: Iterable[str] = (),
                    tenant_vars: Mapping[str, Mapping[str, Any]] | None = None,
                    ticket_templates: Collection[str] | None = None, render: bool = True) -> list[Problem]:
    """What `Templates.check` reports for one scan (`state`) of `templates`, errors first."""
    if not templates.root.is_dir():
        return [Problem("error", str(templates.root), None, "the templates directory does not exist")]
    problems = check_files(state.files, templates.default_locale, required=required,
                           tenants=None if tenant_vars is None else set(tenant_vars))
    problems += _compile_problems(state, templates.root, templates.default_locale)
    if render:
        problems += _render_problems(templates, state, tenant_vars or {}, ticket_templates)
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.level != "error", p.path, p.line or 0))


def _compile_problems(state: State, root: Path, default_locale: str) -> list[Problem]:
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
            tree = state.env.parse(source, path, str(root / path))
            state.env.compile(source, path, str(root / path))
        except jinja2.TemplateSyntaxError as exc:
            problems.append(Problem("error", path, exc.lineno, exc.message or str(exc)))
            continue
        tenant, client, _ = split_scope(path.rpartition("/")[0])
        for ref, line in _references(tree):
            if ref.split("/", 1)[0].startswith("_"):
                found = resolve_shared(state.files, ref, tenant, client, (default_locale,))
            else:
                found = ref if ref in state.files else None
            if found is None:
                problems.append(Problem("error", path, line, f"{ref} does not exist"
                                        + (f" for tenant {tenant}" if tenant else "")))
    return problems


def _render_problems(templates: Templates, state: State, tenant_vars: Mapping[str, Mapping[str, Any]],
                     ticket_templates: Collection[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    done: set[tuple[str, ...]] = set()
    tenants = [None, *sorted(tenant_vars)]
    for name in template_names(state.files):
        scopes = set(templates.scopes(name)) | {(t, None) for t in tenants}
        for tenant, client in sorted(scopes, key=lambda s: (s[0] or "", s[1] or "")):
            for locale in templates.locales(name):
                chain = tuple(fallback_chain(locale, templates.default_locale))
                try:
                    compiled = state.compiled(name, tenant, client, chain)
                except TemplateNotFoundError:
                    continue                                  # reported by check_files
                except Exception as exc:  # noqa: BLE001 - reported, not raised
                    problems.append(_problem(exc, f"{name}/", templates.root))
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
                # A ticket email may also confirm a password typed on the hosted form
                # (password_reset.new_password): check that branch too.
                variants = [context] + ([{**context, "password_confirmation": True}] if "ticket_url" in context else [])
                for part in parts:
                    for variant in variants:
                        try:
                            part.render(variant)
                        except Exception as exc:  # noqa: BLE001 - reported, not raised
                            problems.append(_problem(exc, split_virtual_name(part.name or "")[0], templates.root))
                            break
    return problems


def _problem(exc: Exception, fallback_path: str, root: Path) -> Problem:
    where = error_location(exc, root)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if where:
        return Problem("error", where[0], where[1], message)
    return Problem("error", fallback_path, None, message)
