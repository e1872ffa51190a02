"""Render one email: subject, HTML with its CSS inlined, and a plain-text alternative.

Mail clients ignore or strip <style> (Gmail in many cases, Outlook partly), so the CSS written
once in the layout is inlined here on every render by `css_inline` (Rust, fast; @media rules stay
in a <style> block for the clients that honour them). The text part is the template's body.txt
when it has one, otherwise it is derived from the inlined HTML with html2text, with links kept
whole (`Label (https://…)`, never wrapped) since a broken link in a plain-text email is useless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import css_inline
import html2text

from streamer.message import clean_header_text
from streamer.templates import TemplateError, TemplateNotFoundError, Templates

_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|mso-hide\s*:\s*all", re.I)
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_BLANK_LINES = re.compile(r"\n{3,}")


class RenderError(TemplateError):
    """A template failed to render; `where` is `file:line` when known."""

    def __init__(self, message: str, where: str | None = None):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    locale: str


class _TextConverter(html2text.HTML2Text):
    """html2text tuned for the text part of an email rather than for Markdown.

    Links become `label (url)` (or the bare url when the label is the url), hidden elements
    (the preheader, anything marked data-text="skip") are left out, headings lose their `#`,
    table cells of a row are separated by a space, and Markdown escaping is off.
    """

    def __init__(self) -> None:
        super().__init__(bodywidth=0)
        self.unicode_snob = True          # keep é, ’ and non-breaking spaces as they are
        self.ignore_images = True
        self.ignore_emphasis = True
        self.ignore_tables = True
        self.single_line_break = False
        self.ul_item_mark = "-"
        self.tag_callback = _TextConverter._on_tag
        self._links: list[tuple[str, int]] = []
        self._skip: list[list[Any]] = []  # [tag, depth] of the hidden element being skipped
        self._cells = 0

    def handle_data(self, data: str, entity_char: bool = False) -> None:
        super().handle_data(data, entity_char=True)       # entity_char=True: no Markdown escaping

    @staticmethod
    def _on_tag(self: _TextConverter, tag: str, attrs: dict[str, str | None], start: bool) -> bool:
        if self._skip:
            top = self._skip[-1]
            if tag == top[0]:
                top[1] += 1 if start else -1
                if top[1] == 0:
                    self._skip.pop()
                    self.quiet -= 1
            return True
        if start and (attrs.get("data-text") == "skip" or _HIDDEN_STYLE.search(attrs.get("style") or "")):
            if tag not in _VOID:
                self._skip.append([tag, 1])
                self.quiet += 1
            return True
        if tag == "a":
            if start:
                self._links.append((attrs.get("href") or "", len(self.outtextlist)))
            elif self._links:
                href, mark = self._links.pop()
                label = "".join(self.outtextlist[mark:]).strip()
                target = href[7:] if href.startswith("mailto:") else href
                if href and not href.startswith("#") and label != target and target not in label:
                    self.o(f" ({target})" if label else target)
            return True
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.p()
            return True
        if tag == "tr":
            self._cells = 0
            if start:
                self.soft_br()
            return True
        if tag == "table":
            self.p()
            return True
        if tag in ("td", "th") and start:
            if self._cells:
                self.o(" ")
            self._cells += 1
            return True
        return False


def html_to_text(html: str) -> str:
    """The plain-text alternative of an HTML email: links intact and unwrapped."""
    body = html.find("<body")                 # the <head> holds nothing for the text part
    converter = _TextConverter()
    text = converter.handle(html[body:] if body >= 0 else html)
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"


def clean_subject(subject: str) -> str:
    """One line, no control characters, no surrounding blanks (it becomes a header)."""
    return clean_header_text(subject)


def _with_profile_defaults(context: Mapping[str, Any]) -> dict[str, Any]:
    """Auth0 omits empty user_metadata/app_metadata; templates may rely on them (SPEC)."""
    result = dict(context)
    user = result.get("user")
    if isinstance(user, Mapping) and not (isinstance(user.get("user_metadata"), Mapping)
                                          and isinstance(user.get("app_metadata"), Mapping)):
        user = dict(user)
        for key in ("user_metadata", "app_metadata"):
            if not isinstance(user.get(key), Mapping):
                user[key] = {}
        result["user"] = user
    return result


def render(templates: Templates, name: str, *, tenant: str | None, client_id: str | None,
           locale_chain: list[str] | tuple[str, ...], context: Mapping[str, Any]) -> RenderedEmail:
    """Render template `name` for one tenant/application/locale chain.

    `context` holds event, user, client, tenant and, for ticket emails, ticket_url; `locale` is
    set here to the locale actually used. Raises TemplateNotFoundError or RenderError (with
    the template's file:line).
    """
    try:
        compiled = templates.compiled(name, tenant, client_id, locale_chain)
        values = _with_profile_defaults(context)
        values["locale"] = compiled.locale
        subject = clean_subject(compiled.subject.render(values))
        raw_html = compiled.html.render(values)
        text = compiled.text.render(values) if compiled.text else None
    except TemplateNotFoundError:
        raise
    except Exception as exc:
        where = templates.error_location(exc)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise RenderError(message, f"{where[0]}:{where[1]}" if where else None) from exc
    try:
        html = _INLINER.inline(raw_html)
    except css_inline.InlineError as exc:
        raise RenderError(f"cannot inline the CSS: {exc}", compiled.resolved.html_path) from exc
    if text is None:
        text = html_to_text(html)
    else:
        text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip() + "\n"
    return RenderedEmail(subject=subject, html=html, text=text, locale=compiled.locale)
