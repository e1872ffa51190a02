"""`streamer preview`: render templates with sample data to .eml, .html and .txt files.

One email (`--template NAME [--tenant T] [--client ID] [--locale L]`) or, with `--all`, every
template × locale × scope (the default templates, each configured tenant, each override
directory) into one folder with an `index.html` to browse them. The locale is chosen as the
daemon chooses it (wanted locale, then `fr-CA` → `fr` → default), and file names carry the
locale actually rendered, so `welcome.fr.html` is French — except for an incomplete set of
variants (a `subject.fr.txt` without its `body.fr.html`), which is named after the locale asked
for and flagged as mixed.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from streamer.config import Config
from streamer.locale import fallback_chain, normalize_locale
from streamer.message import InvalidAddress, build_message
from streamer.password_reset.confirm import confirm_url
from streamer.render import RenderError, render
from streamer.rules import tenant_view
from streamer.sample_context import sample_context
from streamer.templates import ResolvedTemplate, TemplateError, Templates, greeting_name, parse_file_name

__all__ = ["PreviewError", "PreviewResult", "preview", "preview_all", "preview_one", "file_stem"]

_SCOPE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
Scope = tuple[str | None, str | None]  # (tenant, client_id); (None, None) is the default


class PreviewError(Exception):
    """Nothing (more) was written; the message says why, in the command's terms. `written`
    tells what was written before the problem."""

    def __init__(self, message: str, written: list[str] | None = None):
        super().__init__(message)
        self.written = written or []


@dataclass(frozen=True)
class PreviewResult:
    """One rendered preview: where it came from and the files written."""

    name: str
    tenant: str | None
    client_id: str | None
    wanted: str  # the locale asked for (after normalisation and defaults)
    locale: str  # the locale actually rendered, after fallback
    directory: str  # template directory used, relative to the templates dir
    subject: str
    files: dict[str, Path] = field(default_factory=dict)  # "html" / "txt" / "eml" → path
    sources: tuple[str, ...] = ()  # the template files used (subject, body.html[, body.txt]), relative
    mixed: bool = False  # subject and body in different languages (a variant is missing)


def _file_locale(path: str, default: str) -> str:
    parsed = parse_file_name(path.rpartition("/")[2])
    return (parsed[1] if parsed else None) or default


def _is_mixed(resolved: ResolvedTemplate, default: str) -> bool:
    """Subject and body come from different locale variants (one file of a language is missing)."""
    return _file_locale(resolved.subject_path, default) != _file_locale(resolved.html_path, default)


def _stem_locale(resolved: ResolvedTemplate, wanted: str, default: str) -> str:
    return wanted if _is_mixed(resolved, default) else resolved.locale_used


def file_stem(name: str, tenant: str | None, client_id: str | None, locale: str) -> str:
    """`welcome.tenant-acme.client-XYZ.fr`: template, scope, then the locale rendered."""
    parts = [name]
    if tenant:
        parts.append(f"tenant-{tenant}")
    if client_id:
        parts.append(f"client-{client_id}")
    parts.append(locale)
    return ".".join(parts)


def scope_label(tenant: str | None, client_id: str | None) -> str:
    if tenant and client_id:
        return f"tenant {tenant}, client {client_id}"
    if tenant:
        return f"tenant {tenant}"
    if client_id:
        return f"client {client_id}"
    return "default templates"


# --- rendering one preview --------------------------------------------------------------------


def _ticket_flag(config: Config, name: str) -> bool | None:
    """Does the template get a `ticket_url`? As its rules say; the sample default if no rule uses it."""
    rules = [rule for rule in config.rules if rule.template == name]
    if not rules:
        return None
    return any(rule.ticket is not None for rule in rules)


def _context(config: Config, name: str, tenant: str | None, client_id: str | None, locale: str) -> dict[str, Any]:
    """Sample data as a real event would give it; a configured tenant brings its domain and vars."""
    configured = config.tenants.get(tenant) if tenant else None
    context = sample_context(
        name,
        locale,
        tenant_name=tenant or "acme",
        client_id=client_id,
        tenant_vars=configured.vars if configured else None,
        ticket=_ticket_flag(config, name),
    )
    if configured is not None:
        sample_domain = context["tenant"]["domain"]
        context["tenant"] = tenant_view(tenant, configured)
        context["event"]["hostname"] = configured.domain
        if "ticket_url" in context:  # a fake ticket, on the tenant's own domain
            context["ticket_url"] = context["ticket_url"].replace(
                f"https://{sample_domain}/", f"https://{configured.domain}/", 1
            )
    if "ticket_url" in context and _confirms_password(config, name):
        # What users get with password_reset.new_password: a link to the daemon's confirmation page.
        context["password_confirmation"] = True
        context["ticket_url"] = confirm_url(
            config.server.public_url or "https://streamer.example", tenant or "acme", "SAMPLE-ONLY", locale
        )
    return context


def _confirms_password(config: Config, name: str) -> bool:
    settings = config.password_reset
    return (
        settings.enabled
        and settings.new_password
        and any(
            rule.template == name
            and rule.ticket is not None
            and rule.ticket.kind == "password_change"
            and "password_reset_requested" in rule.on
            for rule in config.rules
        )
    )


def _render_files(
    config: Config,
    templates: Templates,
    name: str,
    tenant: str | None,
    client_id: str | None,
    wanted: str,
    out: Path,
    *,
    stem_locale: str | None = None,
) -> PreviewResult:
    """Render one email and write its three files (see `_stem_locale` for their name, unless
    `stem_locale` is given). Raises TemplateError / InvalidAddress."""
    default = templates.default_locale
    chain = fallback_chain(wanted, default)
    resolved = templates.resolve(name, tenant, client_id, chain)
    context = _context(config, name, tenant, client_id, wanted)
    rendered = render(templates, name, tenant=tenant, client_id=client_id, locale_chain=chain, context=context)
    user = context["user"]
    message = build_message(
        from_addr=config.smtp.from_,
        to_addr=user["email"],
        to_name=greeting_name(user) or None,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        locale=rendered.locale,
        message_id_key=f"preview:{name}:{tenant or ''}:{client_id or ''}:{rendered.locale}",
        reply_to=config.reply_to(tenant) if tenant else config.smtp.reply_to,
    )
    stem = file_stem(name, tenant, client_id, stem_locale or _stem_locale(resolved, wanted, default))
    out.mkdir(parents=True, exist_ok=True)
    files = {"html": out / f"{stem}.html", "txt": out / f"{stem}.txt", "eml": out / f"{stem}.eml"}
    files["html"].write_text(rendered.html, encoding="utf-8")
    files["txt"].write_text(rendered.text, encoding="utf-8")
    files["eml"].write_bytes(message)
    sources = tuple(p for p in (resolved.subject_path, resolved.html_path, resolved.text_path) if p)
    return PreviewResult(
        name,
        tenant,
        client_id,
        wanted,
        rendered.locale,
        resolved.dir,
        rendered.subject,
        files,
        sources,
        _is_mixed(resolved, default),
    )


def _describe_error(exc: Exception, templates: Templates) -> str:
    """A render error with the template's absolute `file:line` when known."""
    if isinstance(exc, RenderError) and exc.where:
        message = str(exc)[len(exc.where) + 2 :]
        return f"{templates.root / exc.where}: {message}"
    if isinstance(exc, InvalidAddress):
        return f"smtp.from: {exc}"
    return str(exc)


def _segment_arg(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not _SCOPE_SEGMENT.match(value):
        raise PreviewError(f"{what} {value!r} is not valid (letters, digits, '_', '.', '-'; at most 128)")
    return value


def _templates(config: Config) -> Templates:
    if not config.templates_dir.is_dir():
        raise PreviewError(f"{config.source}: templates.dir: {config.templates_dir} is not a directory")
    templates = Templates.from_config(config)
    if not templates.template_names():
        raise PreviewError(f"no templates in {config.templates_dir} (expected <name>/subject.txt and body.html)")
    return templates


def _check_template(templates: Templates, name: str) -> None:
    names = templates.template_names()
    if name not in names:
        raise PreviewError(f"no template {name!r} in {templates.root}; templates: {', '.join(names)}")


def preview_one(
    config: Config,
    name: str,
    *,
    tenant: str | None = None,
    client_id: str | None = None,
    locale: str | None = None,
    out: str | Path = "preview",
    templates: Templates | None = None,
) -> PreviewResult:
    """Render template `name` for one scope and locale into `out`; PreviewError on any problem."""
    templates = templates or _templates(config)
    _check_template(templates, name)
    tenant = _segment_arg(tenant, "tenant")
    client_id = _segment_arg(client_id, "client id")
    if tenant is not None and tenant not in config.tenants:
        raise PreviewError(f"unknown tenant {tenant!r}; the config has: {', '.join(sorted(config.tenants))}")
    tenant_default = config.tenants[tenant].default_locale if tenant else None
    wanted = normalize_locale(locale) or normalize_locale(tenant_default) or templates.default_locale
    try:
        return _render_files(config, templates, name, tenant, client_id, wanted, Path(out))
    except (TemplateError, InvalidAddress) as exc:
        raise PreviewError(
            f"cannot render {name} ({scope_label(tenant, client_id)}, {wanted}): {_describe_error(exc, templates)}"
        ) from None


def _locale_note(asked: str | None, result: PreviewResult, tenant_default: str | None) -> str:
    if asked is None:
        source = (
            "the tenant's default_locale"
            if tenant_default and normalize_locale(tenant_default)
            else "templates.default_locale"
        )
        note = f"no --locale: {source}"
    elif normalize_locale(asked) is None:
        note = f"asked for {asked!r}, not a known language tag: the default is used"
    elif result.wanted != result.locale:
        note = f"asked for {result.wanted}: this template has no {result.wanted} variant here, so it fell back"
    else:
        return result.locale
    return f"{result.locale} ({note})"


# --- every template, locale and scope --------------------------------------------------------


@dataclass
class _Cell:
    locale: str  # the column: the locale a user asks for
    used: str | None = None  # the locale rendered
    stem: str | None = None
    subject: str = ""
    error: str | None = None
    mixed: bool = False
    sources: tuple[str, ...] = ()


@dataclass
class _Row:
    name: str
    directory: str = ""
    cells: list[_Cell] = field(default_factory=list)


def _scopes(config: Config, templates: Templates, names: list[str]) -> list[tuple[Scope, list[str]]]:
    """Each scope with the templates worth showing in it, default first."""
    per_scope: dict[Scope, list[str]] = {}
    for name in names:
        scopes = set(templates.scopes(name)) | {(tenant, None) for tenant in config.tenants}
        for scope in scopes:
            per_scope.setdefault(scope, []).append(name)

    def order(item: tuple[Scope, list[str]]) -> tuple:
        (tenant, client), _ = item
        return (tenant is not None or client is not None, tenant is None, tenant or "", client or "")

    return sorted(per_scope.items(), key=order)


def preview_all(
    config: Config, out: str | Path = "preview", *, only: str | None = None, templates: Templates | None = None
) -> tuple[Path, int, list[str]]:
    """Render everything into `out` with an index.html; return (index, emails written, errors)."""
    templates = templates or _templates(config)
    out = Path(out)
    names = templates.template_names()
    if only is not None:
        _check_template(templates, only)
        names = [only]
    columns = sorted(
        set().union(*(templates.locales(n) for n in names)), key=lambda tag: (tag != templates.default_locale, tag)
    )
    sections: list[tuple[Scope, list[_Row]]] = []
    errors: list[str] = []
    written = 0
    for (tenant, client), scope_names in _scopes(config, templates, names):
        rows = []
        for name in scope_names:
            row = _Row(name)
            done: dict[tuple, _Cell] = {}  # files used → the cell that rendered them: fallbacks link to it
            stems: set[str] = set()
            for column in columns:
                cell = _Cell(column)
                row.cells.append(cell)
                chain = fallback_chain(column, templates.default_locale)
                try:
                    resolved = templates.resolve(name, tenant, client, chain)
                    row.directory = resolved.dir
                    cell.used = resolved.locale_used
                    key = (resolved.subject_path, resolved.html_path, resolved.text_path)
                    if key in done:
                        same = done[key]
                        cell.stem, cell.subject, cell.mixed, cell.sources = (
                            same.stem,
                            same.subject,
                            same.mixed,
                            same.sources,
                        )
                        continue
                    stem_locale = _stem_locale(resolved, column, templates.default_locale)
                    if file_stem(name, tenant, client, stem_locale) in stems:  # never overwrite a sibling
                        stem_locale = f"{column}-as-{stem_locale}"
                    result = _render_files(
                        config, templates, name, tenant, client, column, out, stem_locale=stem_locale
                    )
                    written += 1
                    cell.stem = file_stem(name, tenant, client, stem_locale)
                    cell.subject, cell.mixed, cell.sources = result.subject, result.mixed, result.sources
                    stems.add(cell.stem)
                    done[key] = cell
                except (TemplateError, InvalidAddress) as exc:
                    cell.error = _describe_error(exc, templates)
                    message = f"{name} ({scope_label(tenant, client)}, {column}): {cell.error}"
                    if message not in errors and not any(cell.error in e for e in errors):
                        errors.append(message)
            rows.append(row)
        sections.append(((tenant, client), rows))
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    index.write_text(_index_html(config, templates, columns, sections, written, errors), encoding="utf-8")
    return index, written, errors


# --- index.html ---------------------------------------------------------------------------------

_INDEX_CSS = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f9fafb; --accent: #2563eb;
        --warn-bg: #fffbeb; --warn: #b45309; --err-bg: #fef2f2; --err: #b91c1c; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
header { padding: 20px 32px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 20px; }
header p { margin: 0; color: var(--muted); font-size: 14px; }
main { padding: 8px 32px 40px; }
section { margin-top: 28px; }
h2 { margin: 0 0 2px; font-size: 17px; }
h2 + p { margin: 0 0 10px; color: var(--muted); font-size: 13px; }
table { width: 100%; table-layout: fixed; border-collapse: separate; border-spacing: 0; background: #fff;
        border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
thead th:first-child { width: 240px; }
th, td { padding: 10px 14px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
tr:last-child > * { border-bottom: 0; }
thead th { background: #f3f4f6; font-size: 13px; font-weight: 600; color: #374151; }
tbody th { font-weight: 600; overflow-wrap: anywhere; }
tbody th small { display: block; font-weight: 400; color: var(--muted); font-family: ui-monospace, Menlo, monospace;
                 font-size: 12px; }
.scroll { overflow-x: auto; }
.scroll > table { min-width: 720px; }
td .subject { font-size: 13px; color: #374151; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
              margin-bottom: 4px; }
td a { color: var(--accent); text-decoration: none; font-size: 13px; margin-right: 8px; }
td a:hover { text-decoration: underline; }
td.fallback { background: var(--warn-bg); }
td.error { background: var(--err-bg); color: var(--err); font-size: 13px; }
.badge { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 12px; background: #fde68a;
         color: var(--warn); }
.errors { margin: 20px 0 0; padding: 12px 16px; background: var(--err-bg); color: var(--err);
          border: 1px solid #fecaca; border-radius: 8px; font-size: 14px; }
.errors ul { margin: 4px 0 0; padding-left: 20px; }
code { font-family: ui-monospace, Menlo, monospace; font-size: 13px; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _href(filename: str) -> str:
    return _e(quote(filename))


def _index_html(
    config: Config,
    templates: Templates,
    columns: list[str],
    sections: list[tuple[Scope, list[_Row]]],
    written: int,
    errors: list[str],
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>streamer preview</title>\n<style>",
        _INDEX_CSS,
        "</style>\n</head>\n<body>\n<header>\n",
        "<h1>streamer preview</h1>\n",
        f"<p>{written} email(s) rendered with sample data from <code>{_e(templates.root)}</code> "
        f"(config <code>{_e(config.source)}</code>), {_e(now)}. Default locale: "
        f"<strong>{_e(templates.default_locale)}</strong>. A highlighted cell lacks a variant for its "
        f"locale (\u2192 the locale its users get instead; <em>mixed</em>: subject and body in different "
        f"languages; <code>streamer check</code> lists the missing files).</p>\n</header>\n<main>\n",
    ]
    if errors:
        parts.append(f'<div class="errors"><strong>{len(errors)} error(s)</strong><ul>')
        parts += [f"<li><code>{_e(error)}</code></li>" for error in errors]
        parts.append("</ul></div>\n")
    for (tenant, client), rows in sections:
        if tenant and tenant in config.tenants:
            data = f"tenant vars from the config ({_e(', '.join(sorted(config.tenants[tenant].vars)) or 'none')})"
        elif tenant:
            data = "this tenant is not in the config: sample tenant vars"
        else:
            data = "sample tenant vars"
        section_id = "scope-" + re.sub(r"[^A-Za-z0-9_.-]", "-", f"{tenant or ''}--{client or ''}")
        parts.append(
            f'<section id="{_e(section_id)}">\n<h2>{_e(_upper_first(scope_label(tenant, client)))}</h2>\n'
            f'<p>{data}</p>\n<div class="scroll"><table>\n<thead><tr><th>template</th>'
        )
        parts += [f"<th>{_e(column)}</th>" for column in columns]
        parts.append("</tr></thead>\n<tbody>\n")
        for row in rows:
            override = " (override)" if row.directory != row.name else ""
            parts.append(f"<tr><th>{_e(row.name)}<small>{_e(row.directory)}/{_e(override)}</small></th>")
            for cell in row.cells:
                parts.append(_cell_html(cell))
            parts.append("</tr>\n")
        parts.append("</tbody>\n</table></div>\n</section>\n")
    parts.append("</main>\n</body>\n</html>\n")
    return "".join(parts)


def _cell_html(cell: _Cell) -> str:
    if cell.error or not cell.stem:
        return f'<td class="error" title="{_e(cell.error)}">error: {_e(cell.error or "not rendered")}</td>'
    fallback = cell.used != cell.locale or cell.mixed
    links = (
        f'<a href="{_href(cell.stem + ".html")}">HTML</a>'
        f'<a href="{_href(cell.stem + ".txt")}">text</a>'
        f'<a href="{_href(cell.stem + ".eml")}">.eml</a>'
    )
    badge = ""
    if cell.mixed:
        files = ", ".join(path.rpartition("/")[2] for path in cell.sources)
        badge = f' <span class="badge" title="subject and body in different languages: {_e(files)}">mixed</span>'
    elif fallback:
        badge = (
            f' <span class="badge" title="no {_e(cell.locale)} variant: users who want {_e(cell.locale)} '
            f'get {_e(cell.used)}">→ {_e(cell.used)}</span>'
        )
    css = ' class="fallback"' if fallback else ""
    return f'<td{css}><div class="subject" title="{_e(cell.subject)}">{_e(cell.subject)}</div>{links}{badge}</td>'


# --- the command ----------------------------------------------------------------------------------


def preview(
    config: Config,
    *,
    template: str | None,
    tenant: str | None = None,
    client_id: str | None = None,
    locale: str | None = None,
    out: str | Path | None = None,
    every: bool = False,
) -> list[str]:
    """`streamer preview`: one email, or with `every` (`--all`) every variant and an index.html.
    Returns the lines that tell what was written; PreviewError on any problem."""
    out = Path(out or "preview")
    if every:
        extra = [flag for flag, value in (("--tenant", tenant), ("--client", client_id), ("--locale", locale)) if value]
        if extra:
            raise PreviewError(
                f"--all renders every tenant, client and locale; drop {', '.join(extra)} "
                "(--template NAME limits it to one template)"
            )
        try:
            index, written, errors = preview_all(config, out, only=template)
        except OSError as exc:
            raise PreviewError(f"cannot write the preview to {out}: {exc.strerror or exc}") from None
        lines = [f"wrote {written} email(s) ({written * 3} files) to {out}/", f"open {index}"]
        if errors:
            raise PreviewError(
                f"{len(errors)} variant(s) could not be rendered (see {index}):\n  " + "\n  ".join(errors),
                written=lines,
            )
        return lines
    if not template:
        raise PreviewError("pass --template NAME (or --all for every template)")
    templates = _templates(config)
    try:
        result = preview_one(
            config, template, tenant=tenant, client_id=client_id, locale=locale, out=out, templates=templates
        )
    except OSError as exc:
        raise PreviewError(f"cannot write the preview to {out}: {exc.strerror or exc}") from None
    tenant_default = config.tenants[tenant].default_locale if tenant else None
    override = "" if result.directory == result.name else " (override)"
    lines = [
        f"template: {result.name} from {templates.root / result.directory}/{override}: "
        + ", ".join(path.rpartition("/")[2] for path in result.sources),
        f"scope:    {scope_label(result.tenant, result.client_id)}"
        + ("" if result.tenant else "; sample tenant vars (pass --tenant T for T's overrides and vars)"),
        f"locale:   {_locale_note(locale, result, tenant_default)}",
        f"subject:  {result.subject}",
    ]
    if result.mixed:
        lines.append(
            "warning:  the subject and the body are in different languages (a locale variant is missing; "
            "`streamer check` lists them)"
        )
    lines.extend(f"wrote     {result.files[kind]}" for kind in ("html", "txt", "eml"))
    return lines
