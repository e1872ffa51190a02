"""The HTML pages a ticket link leads to (the stand-in's own, plain and accessible; Auth0's
Universal Login pages are not emulated), and the redirects to a ticket's `result_url`."""

from __future__ import annotations

import html
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from streamer.devkit.auth0_standin.state import JSON

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5}label{display:block;margin-top:1rem}input{width:100%;padding:.5rem;font-size:1rem}"
    "button{margin-top:1.5rem;padding:.6rem 1.2rem;font-size:1rem}[role=alert]{color:#a00}"
)


def page(title: str, body: str, status: int = 200) -> web.Response:
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f"</head><body><main><h1>{html.escape(title)}</h1>{body}"
        "<p><small>Auth0 stand-in (local development)</small></p></main></body></html>"
    )
    return web.Response(text=document, status=status, content_type="text/html", charset="utf-8")


def alert_page(title: str, message: str, status: int) -> web.Response:
    return page(title, f'<p role="alert">{html.escape(message)}</p>', status)


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def with_query(url: str, params: dict[str, str]) -> str:
    """`url` with `params` appended to its query string."""
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _password_inputs(described: str) -> str:
    return (
        '<label for="newPassword">New password</label>'
        '<input id="newPassword" name="newPassword" type="password" autocomplete="new-password" '
        f'required minlength="8"{described}>'
        '<label for="confirmNewPassword">Confirm new password</label>'
        '<input id="confirmNewPassword" name="confirmNewPassword" type="password" '
        f'autocomplete="new-password" required minlength="8"{described}>'
    )


def reset_page(ticket_id: str, ticket: JSON, user: JSON, error: str | None = None, status: int = 200) -> web.Response:
    """The password-change form; with a ticket's `new_password` (legacy flow) only a confirmation."""
    action = html.escape(f"/u/reset-verify?ticket={ticket_id}", quote=True)
    alert = f'<p role="alert" id="form-error">{html.escape(error)}</p>' if error else ""
    intro = f"<p>Change the password of {html.escape(user.get('email') or user['user_id'])}.</p>"
    if "new_password" in ticket:
        form = (
            f'{alert}<form method="post" action="{action}"><p>Confirm to set the password you chose.</p>'
            '<button type="submit">Confirm new password</button></form>'
        )
    else:
        inputs = _password_inputs(' aria-describedby="form-error"' if error else "")
        form = (
            f'{alert}<form method="post" action="{action}" novalidate>{inputs}'
            '<button type="submit">Reset password</button></form>'
        )
    return page("Change your password", intro + form, status)
