"""Render one email: subject, HTML with its CSS inlined, and a plain-text alternative.

Mail clients ignore or strip <style> (Gmail in many cases, Outlook partly), so the CSS written
once in the layout is inlined here on every render by `css_inline` (Rust, fast; @media rules stay
in a <style> block for the clients that honour them). The text part is the template's body.txt
when it has one, otherwise it is derived from the inlined HTML (parsed by lxml/libxml2, walked
by `_TextWriter`), with links kept whole (`Label (https://…)`, never wrapped) since a broken link
in a plain-text email is useless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import css_inline
from lxml import etree

from streamer.message import clean_header_text
from streamer.templates import TemplateError, TemplateNotFoundError, Templates

_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all")  # on .lower()
_WS = " \t\n\r\f"  # what HTML collapses; not U+00A0 and friends
_SPACES = re.compile(f"[{_WS}]+")
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


class _TextWriter:
    """Walks the tree parsed by lxml (libxml2) and writes the text part of an email.

    Text is collapsed like a browser does (runs of ASCII whitespace become one space, nothing at
    the start or end of a line; non-breaking spaces are kept). Breaks are requested rather than
    written: `need` is the number of newlines owed before the next word (2 after a block, 1 after
    a table row or list item, +1 per <br>), so empty elements never add blank lines. `prefix`
    starts every new line (list-item continuation, "> " in quotes); `marker` replaces it on the
    first line of a list item.
    """

    __slots__ = ("out", "need", "space", "gap", "prefix", "marker", "pre", "rows", "lists")

    def __init__(self) -> None:
        self.out: list[str] = []
        self.need = 0
        self.space = False
        self.gap = 2  # newlines around a block: 1 inside a list item (tight lists)
        self.prefix = ""
        self.marker: str | None = None
        self.pre = 0  # inside <pre>: whitespace kept as written
        self.rows: list[int] = []  # cells seen so far in each open <tr>
        self.lists: list[list[int]] = []  # [ordered, next number] of each open <ul>/<ol>

    def _put(self, word: str) -> None:
        """Write `word` (no leading/trailing collapsible space) after whatever break or space is owed."""
        out = self.out
        if self.need or self.marker is not None:
            head = self.prefix if self.marker is None else self.marker
            out.append("\n" * min(self.need, 2) + head if out else head)
            self.need = 0
            self.marker = None
        elif self.space and out:
            out.append(" ")
        self.space = False
        out.append(word)

    def text(self, text: str) -> None:
        """Write a text node (never empty), whitespace collapsed unless inside <pre>."""
        if self.pre:
            self._put(text.replace("\n", "\n" + self.prefix) if self.prefix else text)
            return
        word = text.strip(_WS)
        if not word:
            self.space = True
            return
        if text[0] in _WS:
            self.space = True
        if "  " in word or "\n" in word or "\t" in word or "\r" in word or "\f" in word:
            word = _SPACES.sub(" ", word)
        self._put(word)
        if text[-1] in _WS:
            self.space = True

    def block(self) -> None:
        if self.need < self.gap and self.marker is None:  # a list item's first block stays on its line
            self.need = self.gap

    def line(self) -> None:
        if not self.need:
            self.need = 1

    def run(self, root: Any) -> None:
        """Walk the tree without recursion (libxml2 nests up to 255 levels: too deep for Python).

        A start handler (from `_START`) opens an element and returns what closes it, or None.
        """
        walker = etree.iterwalk(root, events=("start", "end"))
        ends: list[Any] = []
        text = self.text
        for event, el in walker:
            if event == "start":
                tag = el.tag
                style = el.get("style")
                if (
                    tag.__class__ is not str
                    or tag in _DROP
                    or el.get("data-text") == "skip"
                    or el.get("hidden") is not None
                    or (style and _hidden(style))
                ):
                    walker.skip_subtree()
                    ends.append(None)
                    continue
                start = _START.get(tag)  # None: inline (span, strong, img, …)
                ends.append(None if start is None else start(self, el))
                content = el.text
            else:
                end = ends.pop()
                if end is not None:
                    end()
                content = el.tail
            if content:
                if self.pre or content.strip(_WS):
                    text(content)
                else:  # most text nodes: the newlines between tags
                    self.space = True

    def _block(self, el: Any) -> Any:  # p, div, h1…h6, table, …
        self.block()
        return self.block

    def _line(self, el: Any) -> Any:  # dt, dd, caption
        self.line()
        return self.line

    def _br(self, el: Any) -> None:
        self.need += 1

    def _hr(self, el: Any) -> None:
        self.block()
        self._put("* * *")
        self.block()

    def _a(self, el: Any) -> Any:
        href = (el.get("href") or "").strip()
        if not href or href[0] == "#":
            return None
        target = href[7:] if href[:7].lower() == "mailto:" else href
        mark = len(self.out)

        def end() -> None:
            label = "".join(self.out[mark:]).strip()
            if not label:
                self._put(target)  # a link with no text (an image): the url
            elif target not in label:  # not when the label shows the url already
                self.out.append(f" ({target})")

        return end

    def _tr(self, el: Any) -> Any:
        self.line()
        self.rows.append(0)
        return self._end_tr

    def _end_tr(self) -> None:
        self.rows.pop()
        self.line()

    def _td(self, el: Any) -> None:
        rows = self.rows
        if rows:
            if rows[-1]:
                self.space = True  # cells of one row: separated by a space
            rows[-1] += 1

    def _list(self, el: Any) -> Any:  # ul, ol (a sub-list: no blank lines, see _li)
        self.block()
        ordered = el.tag == "ol"
        try:
            start = int(el.get("start") or 1) if ordered else 0
        except ValueError:
            start = 1
        self.lists.append([ordered, start])
        return self._end_list

    def _end_list(self) -> None:
        self.lists.pop()
        self.block()

    def _li(self, el: Any) -> Any:
        self.line()
        outer, gap = self.prefix, self.gap
        if self.lists:
            state = self.lists[-1]
            marker = f"{state[1]}. " if state[0] else "- "
            state[1] += 1
        else:
            marker = "- "
        self.marker = outer + marker
        self.prefix = outer + " " * len(marker)
        self.gap = 1

        def end() -> None:
            self.prefix, self.gap, self.marker = outer, gap, None
            self.line()

        return end

    def _blockquote(self, el: Any) -> Any:
        self.block()
        outer = self.prefix
        self.prefix = outer + "> "

        def end() -> None:
            self.prefix = outer
            self.block()

        return end

    def _pre(self, el: Any) -> Any:
        self.block()
        self.pre += 1
        return self._end_pre

    def _end_pre(self) -> None:
        self.pre -= 1
        self.block()


def _hidden(style: str) -> bool:
    """An inline style that hides the element (css_inline puts one on almost every element)."""
    style = style.lower()  # cheap filter first: the regex is the slow part
    return ("none" in style or "hidden" in style or "mso-hide" in style) and bool(_HIDDEN_STYLE.search(style))


#: Elements whose content is never text: the head, code, styles, embedded objects.
_DROP = frozenset(
    {
        "head",
        "title",
        "meta",
        "link",
        "base",
        "script",
        "style",
        "template",
        "noscript",
        "iframe",
        "object",
        "embed",
        "svg",
        "math",
        "noembed",
        "noframes",
    }
)
_BLOCKS = (
    "p",
    "div",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "dl",
    "address",
    "article",
    "aside",
    "center",
    "details",
    "fieldset",
    "figure",
    "figcaption",
    "footer",
    "form",
    "header",
    "main",
    "nav",
    "section",
    "summary",
)
_START: dict[str, Any] = {
    **dict.fromkeys(_BLOCKS, _TextWriter._block),
    **dict.fromkeys(("dt", "dd", "caption"), _TextWriter._line),
    **dict.fromkeys(("ul", "ol", "menu"), _TextWriter._list),
    **dict.fromkeys(("td", "th"), _TextWriter._td),
    "tr": _TextWriter._tr,
    "li": _TextWriter._li,
    "a": _TextWriter._a,
    "br": _TextWriter._br,
    "hr": _TextWriter._hr,
    "blockquote": _TextWriter._blockquote,
    "pre": _TextWriter._pre,
}
_PARSER = etree.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True)


def html_to_text(html: str) -> str:
    """The plain-text alternative of an HTML email: links intact and unwrapped.

    Links become `label (url)`, or the bare url when the label is (or contains) the url;
    `mailto:` is shown without the scheme and `#` anchors not at all. Elements marked
    data-text="skip" or `hidden`, or styled display:none / visibility:hidden / mso-hide:all
    (the preheader) are left out, as are the <head>, scripts, styles and images. Headings,
    paragraphs, divs and tables are paragraphs of their own, separated by one blank line; <br>
    is a newline; list items start with "- " (or "1. "); the cells of a table row are joined
    by a space, one row per line. Nothing is wrapped; lines are right-stripped.
    """
    body = html.find("<body")  # the <head> holds nothing for the text part
    root = etree.fromstring((html[body:] if body > 0 else html).encode("utf-8", "replace"), _PARSER)
    if root is None:  # empty, or only comments
        return "\n"
    writer = _TextWriter()
    writer.run(root)
    lines = [line.rstrip() for line in "".join(writer.out).split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"


def clean_subject(subject: str) -> str:
    """One line, no control characters, no surrounding blanks (it becomes a header)."""
    return clean_header_text(subject)


def _with_profile_defaults(context: Mapping[str, Any]) -> dict[str, Any]:
    """Auth0 omits empty user_metadata/app_metadata; templates may rely on them (SPEC)."""
    result = dict(context)
    user = result.get("user")
    if isinstance(user, Mapping) and not (
        isinstance(user.get("user_metadata"), Mapping) and isinstance(user.get("app_metadata"), Mapping)
    ):
        user = dict(user)
        for key in ("user_metadata", "app_metadata"):
            if not isinstance(user.get(key), Mapping):
                user[key] = {}
        result["user"] = user
    return result


_CHARSET = re.compile(r"<meta\s+charset=[\"']?[\w-]+[\"']?\s*/?>", re.IGNORECASE)
_HEAD = re.compile(r"<head(\s[^>]*)?>", re.IGNORECASE)


def _charset_first(html: str) -> str:
    """Put `<meta charset>` back at the start of <head>: css_inline writes the kept @media rules
    into a <style> before it, and a browser only honours a charset declared early."""
    charset, head = _CHARSET.search(html), _HEAD.search(html)
    if not charset or not head or charset.start() == head.end():
        return html
    tag = charset.group(0)
    without = html[: charset.start()] + html[charset.end() :]
    return without[: head.end()] + tag + without[head.end() :]


def render(
    templates: Templates,
    name: str,
    *,
    tenant: str | None,
    client_id: str | None,
    locale_chain: list[str] | tuple[str, ...],
    context: Mapping[str, Any],
) -> RenderedEmail:
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
        html = _charset_first(_INLINER.inline(raw_html))
    except css_inline.InlineError as exc:
        raise RenderError(f"cannot inline the CSS: {exc}", compiled.resolved.html_path) from exc
    if text is None:
        text = html_to_text(html)
    else:
        text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip() + "\n"
    return RenderedEmail(subject=subject, html=html, text=text, locale=compiled.locale)
