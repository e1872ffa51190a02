"""The sandbox's web page for caught mail: a live list, one view per email, and a fake application.

`mail_page_app(catcher)` is an aiohttp application over a `MailCatcher`:

    /                   caught emails, newest first; live through Server-Sent Events, works without JS
    /events             the SSE stream (`event: mail`, JSON data), fed by `catcher.subscribe()`
    /mail/{id}          one email: headers (List-Unsubscribe as links), HTML / text / source tabs
                        (?view=), links found in it
    /mail/{id}/html     the HTML part, for a sandboxed iframe, under a CSP that runs no script
    /mail/{id}/raw      the message source as text/plain
    /mail/{id}.eml      the message as a download
    /verified, /login   "you landed on the result_url" pages: where the sandbox's tickets lead

Every value that comes from an email is escaped; the email's own HTML is only ever served from
its own URL with `Content-Security-Policy: sandbox`, and shown in an iframe without
`allow-scripts` or `allow-same-origin`, so it can neither run code nor reach this page.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from streamer.devkit.mailcatcher import CaughtMessage, MailCatcher

__all__ = ["IFRAME_SANDBOX", "mail_page_app"]

#: What the email's HTML may do inside the view: open links (in a new, unsandboxed tab), nothing else.
IFRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation"
#: The email's HTML: no script, no plugin, no form, no frame; images and styles as a mail client shows them.
EMAIL_CSP = (
    "default-src 'none'; img-src http: https: data: cid:; style-src 'unsafe-inline' http: https:; "
    "font-src http: https: data:; media-src http: https: data:; base-uri 'none'; form-action 'none'; "
    f"frame-ancestors 'self'; sandbox {IFRAME_SANDBOX}"
)
#: Our own pages: our script and inline CSS only.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; frame-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
RAW_CSP = "default-src 'none'; sandbox"
MAX_LISTED = 500
HEARTBEAT_S = 15.0

_CATCHER = web.AppKey("catcher", MailCatcher)
_OPTIONS = web.AppKey("options", dict)
_CLOSING = web.AppKey("closing", asyncio.Event)
_ID = r"{id:[A-Za-z0-9_-]{1,64}}"
_HEAD_TAG = re.compile(r"<head(?:\s[^>]*)?>", re.I)
_HTML_TAG = re.compile(r"<html(?:\s[^>]*)?>", re.I)
_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"'()\[\]]+")


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# --- reading a caught message safely ----------------------------------------------------------


def _safe(read: Any, default: Any = None) -> Any:
    """A property of a message that may be malformed: its value, or `default`."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - a broken email must not break the page
        return default


def _header(message: CaughtMessage, name: str) -> str:
    return _safe(lambda: str(message.parsed.get(name, "") or ""), "")


def _summary(message: CaughtMessage) -> dict[str, str]:
    """What the list shows of one email (also the SSE payload)."""
    to = _safe(lambda: ", ".join(message.to), "") or ", ".join(message.rcpt_tos)
    return {
        "id": message.id,
        "url": f"/mail/{message.id}",
        "time": message.received_at.strftime("%H:%M:%S"),
        "received_at": message.received_at.isoformat(timespec="seconds"),
        "to": to,
        "from": _safe(lambda: message.from_, "") or message.mail_from,
        "subject": _safe(lambda: message.subject, ""),
        "locale": _header(message, "content-language"),
    }


def _links(message: CaughtMessage) -> list[str]:
    """The email's links; a URL seen in the text without its last `.` (the catcher trims trailing
    punctuation there) is the same link as the HTML's, so it is listed once, as the HTML has it."""
    seen: set[str] = set()
    found = []
    for url in _safe(lambda: message.links, []):
        key = url.rstrip(".,;:!?")
        if key not in seen:
            seen.add(key)
            found.append(url)
    return found


def _clickable(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https", "mailto") if url else False


def _unsubscribe_html(message: CaughtMessage) -> str:
    """The List-Unsubscribe targets as links, as a webmail's "Unsubscribe" button would use them
    (a link opens the daemon's page, whose button POSTs); "" when the email has none."""
    targets = re.findall(r"<([^<>\s]+)>", _header(message, "list-unsubscribe"))
    if not targets:
        return ""
    links = " · ".join(
        f'<a href="{_e(url)}" rel="noreferrer" class="unsubscribe">{_e(url)}</a>' if _clickable(url) else _e(url)
        for url in targets
    )
    one_click = _header(message, "list-unsubscribe-post").replace(" ", "").lower() == "list-unsubscribe=one-click"
    note = " (one-click, RFC 8058: a mailbox provider POSTs to the link)" if one_click else ""
    return f"<dt>Unsubscribe</dt><dd>{links}{_e(note)}</dd>"


# --- layout -----------------------------------------------------------------------------------

_CSS = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f6f7f9; --card: #fff; --accent: #2563eb;
        --accent-bg: #eff6ff; --ok: #059669; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
header.top { display: flex; align-items: center; gap: 24px; padding: 14px 28px; background: var(--card);
             border-bottom: 1px solid var(--line); }
header.top h1 { margin: 0; font-size: 17px; }
header.top h1 a { color: inherit; text-decoration: none; }
header.top nav { display: flex; gap: 16px; font-size: 14px; margin-left: auto; }
header.top nav a { text-decoration: none; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
.bar { display: flex; align-items: center; gap: 12px; margin-bottom: 12px; color: var(--muted); font-size: 14px; }
.bar .spacer { flex: 1; }
.live { display: inline-flex; align-items: center; gap: 6px; }
.live::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: #d1d5db; }
.live.on::before { background: var(--ok); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow: hidden; }
table.mails { width: 100%; border-collapse: collapse; }
table.mails th, table.mails td { padding: 10px 14px; text-align: left; border-bottom: 1px solid var(--line);
                                 font-size: 14px; vertical-align: top; }
table.mails thead th { white-space: nowrap; background: #f3f4f6; font-size: 12px; font-weight: 600;
                       text-transform: uppercase; letter-spacing: .03em; color: #4b5563; }
table.mails tbody tr:last-child td { border-bottom: 0; }
table.mails tbody tr:hover { background: #fafafa; }
table.mails td.time { white-space: nowrap; color: var(--muted); font-variant-numeric: tabular-nums; width: 90px; }
table.mails td.subject a { color: var(--fg); font-weight: 600; text-decoration: none; }
table.mails td.subject a:hover { color: var(--accent); text-decoration: underline; }
table.mails td.to { color: #374151; word-break: break-all; width: 28%; }
.tag { display: inline-block; padding: 1px 8px; border-radius: 10px; background: var(--accent-bg); color: var(--accent);
       font-size: 12px; font-weight: 600; }
.empty td { padding: 36px; text-align: center; color: var(--muted); }
tr.new { animation: flash 2s ease-out; }
@keyframes flash { from { background: #fef9c3; } to { background: transparent; } }
.back { display: inline-block; margin-bottom: 12px; font-size: 14px; text-decoration: none; }
h2.subject { margin: 0 0 14px; font-size: 21px; line-height: 1.3; }
dl.headers { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0 0 18px; font-size: 14px; }
dl.headers dt { color: var(--muted); }
dl.headers dd { margin: 0; word-break: break-all; }
.tabs { display: flex; gap: 4px; align-items: flex-end; border-bottom: 1px solid var(--line); padding: 0 12px;
        background: #f9fafb; }
.tabs a { padding: 10px 14px; font-size: 14px; text-decoration: none; color: #4b5563;
          border-bottom: 2px solid transparent; margin-bottom: -1px; }
.tabs a[aria-current="page"] { color: var(--accent); border-bottom-color: var(--accent); font-weight: 600; }
.tabs .spacer { flex: 1; }
.tabs .minor { font-size: 13px; }
.pane { padding: 16px; }
.pane iframe { display: block; width: 100%; height: 70vh; min-height: 420px; border: 1px solid var(--line);
               border-radius: 6px; background: #fff; resize: vertical; margin: 0 auto; }
.pane iframe.narrow { width: 390px; }
.pane pre { margin: 0; padding: 14px; background: #f9fafb; border: 1px solid var(--line); border-radius: 6px;
            white-space: pre-wrap; word-break: break-word; font: 13px/1.55 ui-monospace, Menlo, Consolas, monospace; }
.pane .note { margin: 0 0 10px; font-size: 13px; color: var(--muted); }
section.links { margin-top: 20px; }
section.links h3 { margin: 0 0 8px; font-size: 15px; }
section.links ol { margin: 0; padding-left: 22px; font-size: 14px; }
section.links li { margin: 4px 0; word-break: break-all; }
.landing { max-width: 720px; margin: 48px auto; }
.landing .card { padding: 28px 32px; }
.landing h2 { margin: 0 0 12px; font-size: 20px; }
.landing code.url { display: block; padding: 12px 14px; background: #f9fafb; border: 1px solid var(--line);
                    border-radius: 6px; word-break: break-all; font: 14px/1.5 ui-monospace, Menlo, monospace; }
.landing table { margin-top: 16px; border-collapse: collapse; font-size: 14px; }
.landing th, .landing td { padding: 6px 12px 6px 0; text-align: left; vertical-align: top; word-break: break-all; }
.landing th { color: var(--muted); font-weight: 500; }
"""

_JS = r"""
(function () {
  "use strict";
  var body = document.getElementById("mails");
  if (!body || !window.EventSource) return;
  var live = document.getElementById("live");
  var count = document.getElementById("count");
  var baseTitle = document.title;
  var unseen = 0;

  function cell(cls, text) {
    var td = document.createElement("td");
    td.className = cls;
    if (text !== undefined) td.textContent = text;
    return td;
  }
  function add(mail) {
    if (document.getElementById("mail-" + mail.id)) return;
    var empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    var tr = document.createElement("tr");
    tr.id = "mail-" + mail.id;
    tr.className = "new";
    var time = cell("time", mail.time);
    time.title = mail.received_at;
    var subject = cell("subject");
    var a = document.createElement("a");
    a.href = mail.url;
    a.textContent = mail.subject || "(no subject)";
    subject.appendChild(a);
    var locale = cell("locale");
    if (mail.locale) {
      var tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = mail.locale;
      locale.appendChild(tag);
    }
    tr.appendChild(time);
    tr.appendChild(cell("to", mail.to));
    tr.appendChild(subject);
    tr.appendChild(locale);
    body.insertBefore(tr, body.firstChild);
    body.setAttribute("data-newest", mail.id);
    if (count) count.textContent = String(body.querySelectorAll("tr[id^='mail-']").length);
    if (document.hidden) { unseen += 1; document.title = "(" + unseen + ") " + baseTitle; }
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { unseen = 0; document.title = baseTitle; }
  });
  function connect() {
    var after = body.getAttribute("data-newest") || "";
    var source = new EventSource("/events?after=" + encodeURIComponent(after));
    source.addEventListener("open", function () {
      live.classList.add("on"); live.textContent = "live"; document.body.setAttribute("data-live", "on");
    });
    source.addEventListener("mail", function (event) { add(JSON.parse(event.data)); });
    source.addEventListener("error", function () {
      live.classList.remove("on"); live.textContent = "reconnecting…"; document.body.setAttribute("data-live", "off");
    });
  }
  connect();
})();
"""


def _page(request: web.Request, title: str, content: str, *, script: bool = False) -> web.Response:
    options = request.app[_OPTIONS]
    links = "".join(f'<a href="{_e(url)}">{_e(label)}</a>' for label, url in options["extra_links"].items())
    document = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>{_e(title)}</title>\n<link rel="icon" href="data:,">\n<style>{_CSS}</style>\n</head>\n'
        f'<body>\n<header class="top"><h1><a href="/">{_e(options["title"])}</a></h1>'
        f'<nav><a href="/">Inbox</a>{links}</nav></header>\n<main>\n{content}\n</main>\n'
        + ('<script src="/mailpage.js" defer></script>\n' if script else "")
        + "</body>\n</html>\n"
    )
    return web.Response(text=document, content_type="text/html", charset="utf-8", headers=_headers(PAGE_CSP))


def _headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _message(request: web.Request) -> CaughtMessage:
    message = request.app[_CATCHER].get(request.match_info["id"])
    if message is None:
        raise web.HTTPNotFound(text="No such email (the catcher keeps mail in memory: was it restarted?)\n")
    return message


# --- the list ---------------------------------------------------------------------------------


def _row(summary: Mapping[str, str]) -> str:
    locale = f'<span class="tag">{_e(summary["locale"])}</span>' if summary["locale"] else ""
    return (
        f'<tr id="mail-{_e(summary["id"])}"><td class="time" title="{_e(summary["received_at"])}">'
        f'{_e(summary["time"])}</td><td class="to">{_e(summary["to"])}</td>'
        f'<td class="subject"><a href="{_e(summary["url"])}">{_e(summary["subject"] or "(no subject)")}</a></td>'
        f'<td class="locale">{locale}</td></tr>'
    )


async def _index(request: web.Request) -> web.Response:
    messages = list(request.app[_CATCHER].messages)
    shown = messages[::-1][:MAX_LISTED]
    rows = "\n".join(_row(_summary(m)) for m in shown) or (
        '<tr class="empty"><td colspan="4">No mail caught yet. Emails sent to the catcher appear here as they '
        "arrive.</td></tr>"
    )
    more = (
        f'<p class="note">Showing the newest {MAX_LISTED} of {len(messages)}.</p>' if len(messages) > MAX_LISTED else ""
    )
    newest = _e(messages[-1].id) if messages else ""
    catcher = request.app[_CATCHER]
    where = f"SMTP {catcher.host}:{catcher.port}" if catcher.port else "SMTP catcher"
    content = (
        f'<div class="bar"><span><strong id="count">{len(messages)}</strong> caught · {_e(where)}</span>'
        '<span class="spacer"></span><span id="live" class="live">not live</span>'
        '<a href="/">Refresh</a></div>\n'
        '<div class="card"><table class="mails"><thead><tr><th>Received (UTC)</th><th>To</th><th>Subject</th>'
        f'<th>Locale</th></tr></thead>\n<tbody id="mails" data-newest="{newest}">\n{rows}\n</tbody></table></div>'
        f"{more}"
    )
    return _page(request, request.app[_OPTIONS]["title"], content, script=True)


async def _script(request: web.Request) -> web.Response:
    return web.Response(
        text=_JS,
        content_type="application/javascript",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


def _sse(message: CaughtMessage) -> bytes:
    data = json.dumps(_summary(message), ensure_ascii=False)
    return f"id: {message.id}\nevent: mail\ndata: {data}\n\n".encode()


async def _events(request: web.Request) -> web.StreamResponse:
    """New emails as Server-Sent Events; those caught after `?after=ID` (or Last-Event-ID) first."""
    catcher = request.app[_CATCHER]
    closing = request.app[_CLOSING]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
            "X-Content-Type-Options": "nosniff",
        }
    )
    queue = catcher.subscribe()  # before the snapshot, so nothing falls in between
    sent: set[str] = set()
    stop = asyncio.ensure_future(closing.wait())
    get: asyncio.Future[CaughtMessage] | None = None
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        after = request.query.get("after", request.headers.get("Last-Event-ID", ""))
        snapshot = list(catcher.messages)
        ids = [m.id for m in snapshot]
        if after in ids:
            backlog = snapshot[ids.index(after) + 1 :]
        else:
            backlog = snapshot if not after else []  # an unknown id: the catcher was cleared or restarted
        for message in backlog:
            sent.add(message.id)
            await response.write(_sse(message))
        while not closing.is_set():
            get = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({get, stop}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                if not closing.is_set():
                    await response.write(b": keep-alive\n\n")
                continue
            message = get.result()
            if message.id not in sent:
                sent.add(message.id)
                await response.write(_sse(message))
        await response.write_eof()
    except ConnectionResetError:  # the browser went away (closed tab, reload)
        pass
    finally:
        stop.cancel()
        if get is not None:
            get.cancel()
        catcher.unsubscribe(queue)
    return response


# --- one email --------------------------------------------------------------------------------

_VIEWS = {"html": "HTML", "text": "Text", "source": "Source"}


def _linkify(text: str) -> str:
    """Escaped text whose http(s) URLs are links (the URL text is escaped too)."""
    out, last = [], 0
    for match in _URL_IN_TEXT.finditer(text):
        url = match.group(0).rstrip(".,;:!?")
        out.append(_e(text[last : match.start()]))
        out.append(f'<a href="{_e(url)}" rel="noreferrer">{_e(url)}</a>')
        last = match.start() + len(url)
    out.append(_e(text[last:]))
    return "".join(out)


async def _mail(request: web.Request) -> web.Response:
    message = _message(request)
    summary = _summary(message)
    view = request.query.get("view", "html")
    if view not in _VIEWS:
        view = "html"
    html_part = _safe(lambda: message.html)
    text_part = _safe(lambda: message.text)
    if view == "html" and html_part is None:
        view = "text" if text_part is not None else "source"
    narrow = request.query.get("width") == "narrow"
    base = f"/mail/{quote(message.id)}"

    headers = [
        ("From", summary["from"]),
        ("To", summary["to"]),
        ("Date", _header(message, "date")),
        ("Language", summary["locale"] or "—"),
        ("Message-ID", _header(message, "message-id")),
        ("Envelope", f"MAIL FROM:<{message.mail_from}> RCPT TO:{', '.join(f'<{r}>' for r in message.rcpt_tos)}"),
        (
            "Received",
            f"{message.received_at.strftime('%Y-%m-%d %H:%M:%S')} UTC · {len(message.data):,} bytes"
            + (" · TLS" if message.tls else ""),
        ),
    ]
    header_html = "".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in headers)
    header_html += _unsubscribe_html(message)

    tabs = []
    for key, label in _VIEWS.items():
        available = {"html": html_part is not None, "text": text_part is not None, "source": True}[key]
        if not available:
            continue
        current = ' aria-current="page"' if key == view else ""
        tabs.append(f'<a href="{_e(base)}?view={key}"{current} data-tab="{key}">{label}</a>')
    tabs.append('<span class="spacer"></span>')
    if view == "html":
        other = ("Desktop width", f"{base}?view=html") if narrow else ("Phone width", f"{base}?view=html&width=narrow")
        tabs.append(f'<a class="minor" href="{_e(other[1])}">{other[0]}</a>')
        tabs.append(f'<a class="minor" href="{_e(base)}/html" target="_blank" rel="noopener">Open HTML</a>')
    tabs.append(f'<a class="minor" href="{_e(base)}/raw">Raw</a>')
    tabs.append(f'<a class="minor" href="{_e(base)}.eml" download="{_e(message.filename)}">Download .eml</a>')

    if view == "html":
        pane = (
            f'<iframe src="{_e(base)}/html" sandbox="{IFRAME_SANDBOX}" referrerpolicy="no-referrer" '
            f'title="HTML part of the email"{" class=narrow" if narrow else ""}></iframe>'
        )
    elif view == "text":
        pane = f'<pre class="text-part">{_linkify(text_part or "")}</pre>'
    else:
        pane = (
            f'<p class="note">The message exactly as received ({len(message.data):,} bytes, CRLF line ends).</p>'
            f'<pre class="source">{_e(message.data.decode("utf-8", "replace"))}</pre>'
        )

    links = _links(message)
    if links:
        items = "".join(
            f'<li><a href="{_e(url)}" rel="noreferrer">{_e(url)}</a></li>'
            if _clickable(url)
            else f"<li><code>{_e(url)}</code> (not a web link)</li>"
            for url in links
        )
        links_html = (
            f'<section class="links"><h3>Links in this email ({len(links)})</h3><ol id="links">{items}</ol></section>'
        )
    else:
        links_html = '<section class="links"><h3>Links in this email</h3><p class="note">None.</p></section>'

    content = (
        f'<a class="back" href="/">← All mail</a>\n'
        f'<h2 class="subject">{_e(summary["subject"] or "(no subject)")}</h2>\n'
        f'<dl class="headers">{header_html}</dl>\n'
        f'<div class="card"><nav class="tabs">{"".join(tabs)}</nav><div class="pane">{pane}</div></div>\n'
        f"{links_html}"
    )
    return _page(request, f"{summary['subject'] or '(no subject)'} — {request.app[_OPTIONS]['title']}", content)


def _with_link_target(document: str) -> str:
    """Links in the email open in a new tab (as in a webmail), not inside the small iframe."""
    base = '<base target="_blank">'
    for pattern in (_HEAD_TAG, _HTML_TAG):
        match = pattern.search(document)
        if match:
            return document[: match.end()] + base + document[match.end() :]
    return base + document


async def _mail_html(request: web.Request) -> web.Response:
    message = _message(request)
    part = _safe(lambda: message.html)
    if part is None:
        raise web.HTTPNotFound(text="This email has no HTML part.\n")
    return web.Response(
        text=_with_link_target(part), content_type="text/html", charset="utf-8", headers=_headers(EMAIL_CSP)
    )


async def _mail_raw(request: web.Request) -> web.Response:
    message = _message(request)
    return web.Response(body=message.data, content_type="text/plain", charset="utf-8", headers=_headers(RAW_CSP))


async def _mail_eml(request: web.Request) -> web.Response:
    message = _message(request)
    headers = _headers(RAW_CSP)
    headers["Content-Disposition"] = f'attachment; filename="{message.filename}"'
    return web.Response(body=message.data, content_type="message/rfc822", headers=headers)


# --- the fake application that ticket result_urls lead to ---------------------------------------


async def _landing(request: web.Request) -> web.Response:
    url = str(request.url)
    params = "".join(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>" for key, value in request.query.items())
    what = {"/verified": "after an email verification ticket", "/login": "after a password change ticket"}
    content = (
        '<div class="landing"><div class="card">'
        f"<h2>You landed on the result_url</h2>"
        f"<p>This is the sandbox's stand-in for your application ({_e(what.get(request.path, 'a ticket'))}). "
        f"Auth0 sends the user here once the ticket is used. Full URL:</p>"
        f'<code class="url" id="landed-url">{_e(url)}</code>'
        + (f"<table><caption hidden>Query parameters</caption>{params}</table>" if params else "")
        + '<p><a href="/">← Back to the caught mail</a></p></div></div>'
    )
    return _page(request, "You landed on the result_url", content)


# --- the application ------------------------------------------------------------------------------


def mail_page_app(
    catcher: MailCatcher, *, title: str = "streamer dev — caught mail", extra_links: dict[str, str] | None = None
) -> web.Application:
    """The mail page over `catcher`; `extra_links` (label → URL) are shown in the header."""
    app = web.Application()
    app[_CATCHER] = catcher
    app[_OPTIONS] = {"title": title, "extra_links": dict(extra_links or {})}
    app[_CLOSING] = asyncio.Event()

    async def close_streams(app: web.Application) -> None:
        app[_CLOSING].set()  # SSE handlers return, so shutdown does not wait for them

    app.on_shutdown.append(close_streams)
    app.router.add_get("/", _index)
    app.router.add_get("/mailpage.js", _script)
    app.router.add_get("/events", _events)
    app.router.add_get(f"/mail/{_ID}.eml", _mail_eml)
    app.router.add_get(f"/mail/{_ID}/html", _mail_html)
    app.router.add_get(f"/mail/{_ID}/raw", _mail_raw)
    app.router.add_get(f"/mail/{_ID}", _mail)
    app.router.add_get("/verified", _landing)
    app.router.add_get("/login", _landing)
    return app
