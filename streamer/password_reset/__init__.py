"""The hosted "forgot your password?" form: `GET/POST /password-reset/{tenant}` (SPEC, HTTP table).

The form asks for an email address (and, with `password_reset.new_password: true`, a new password
twice). For an account that exists it emits a `password_reset_requested` event into the inbox,
exactly as if Auth0 had logged it, and the rules (`on: [password_reset_requested]`) send the
ticket email. It always answers with the same generic page, so it cannot be used to find out
which addresses have accounts.

Behaviour, in the order a POST is checked:

1. Unknown tenant or `password_reset.enabled: false` → 404 page (same for both).
2. Body over 16 KiB → 413; not `application/x-www-form-urlencoded` UTF-8 → 400 page.
3. CSRF: signed double-submit token. The GET sets a cookie (`pr_csrf`, HttpOnly, SameSite=Strict,
   Path=/password-reset/<tenant>, Max-Age 1 h, Secure over HTTPS or when `server.public_url` is
   https) and puts the same value in a hidden field. The token is
   `v1.<issued>.<nonce>.<HMAC-SHA256(key, tenant|issued|nonce)>` with a per-process random key:
   a cookie planted from a sibling subdomain cannot be forged, and a token of one tenant is not
   valid for another. Missing, different, forged or expired → 403 page. A still-fresh cookie is
   reused (not rotated) so two open tabs both work. With several replicas behind a load
   balancer, pass the same `csrf_key` to each (or use sticky sessions).
4. Field validation (email shape; with new_password: length `min_length`..256 and both equal)
   → 400 with the form re-rendered: error summary (role=alert, autofocus, links to the fields),
   `aria-invalid` + `aria-describedby` on the fields, the email kept, passwords never echoed.
   The form is `novalidate` so every message comes from here, in the page's language.
5. Rate limits from `password_reset.rate_limit` (`per_ip`, `per_address`), in-memory sliding
   windows. The IP is `request.remote`: the socket peer, or the client named by a proxy in
   `server.trusted_proxies` (an IPv6 client is keyed by its /64, which one host can rotate
   through freely). `per_address` counts the lower-cased email *per client IP*, so a stranger
   asking for someone else's reset fills only their own bucket and cannot lock the owner out
   (see ratelimit.address_key). Over → 429 page with `Retry-After` (seconds). Only
   submissions that pass 1-4 are counted.
6. Accepted: the Auth0 lookup and the inbox write run in a task; the answer is sent exactly
   `min_response_s` (default 0.6 s) after the request started, whatever the lookup did, so
   timing does not tell accounts apart either. The body is the same bytes for every address
   (it neither echoes the address nor carries a token), and no cookie is set. Work that
   outlives the deadline (slow Auth0) finishes in the background; `PasswordResetPages.drain()`
   awaits it at shutdown.

Lookup: `users_by_email(lower-cased address)`; among the users returned, the first whose
primary identity is a database connection (provider `auth0`) is used; social-only addresses
get nothing. Unknown addresses store nothing and log `password_reset_no_account` with an
`address_hash` (HMAC-SHA256 with the per-process key, 16 hex: lines about the same address
correlate within one process, the address cannot be recovered by hashing guesses offline).
Auth0 errors are logged (`password_reset_lookup_failed`) and the user still sees the generic
page. The event::

    {"log_id": "streamer-<yyyyMMddHHmmssSSS UTC>-<16 hex>", "type": "password_reset_requested",
     "date": ISO-8601 ms Z, "user_id", "client_id", "client_name", "ip", "user_agent",
     "user_name": <address>, "connection", "description": "Password reset requested on the hosted form"}

log_ids sort by time among themselves and never collide with Auth0's 56-digit ids.

Branding and language. `?client_id=` names the application: the page shows its name when the
tenant declares it in `vars.clients`, a mapping `client_id → {name, locale}`::

    tenants: {acme: {vars: {clients: {"Xy7p…": {name: "Acme Shop", locale: fr}}}}}

When `vars.clients` is present, client ids it does not list are ignored (the event gets
`client_id: ""`), so a crafted link cannot pick another application's email template; without
it any well-formed id (`[A-Za-z0-9_-]{1,128}`) is passed on with an empty name. The page
language is the first supported one of `?lang=`, the client's `locale`, the `Accept-Language`
entries in order, the tenant's `default_locale`, `templates.default_locale`, then English;
supported: en, fr, de, es; regional tags fall back to their language (`fr-CA` → fr). `lang` and
`client_id` are carried through the form's action and the language links.

Translations live in `MESSAGES` (`messages.py`), one dict per locale, not in gettext or data files: about
thirty short strings, reviewed next to the code that uses them, with an import-time check that
every locale has exactly the same keys and placeholders (a missing string fails at start-up,
not in front of a user), and nothing to compile or package besides the template and CSS.
fr/de use the formal address (vous/Sie), es the informal tú usual in web forms. Durations
("5 minutes", "50 Minuten") are formatted by Babel.

The page: semantic HTML, every input labelled, `lang` on <html> and `Content-Language`, visible
focus rings, no JavaScript, no external resource (the CSS file is inlined and allowed by its
sha256 in the CSP). Every answer carries `Content-Security-Policy` (default-src 'none'),
`Cache-Control: no-store`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`,
`X-Content-Type-Options: nosniff`.

New passwords (`new_password: true`) are kept only in `NewPasswordVault`, in memory, keyed by the
event's log_id, for `ttl_s` (15 min): never in the event, a log line or an error message. When
the email is sent, the delivery seals the password under a random key that only the emailed
link carries (`sealed.py`, `confirm.py`) and stores the ciphertext (`pending_passwords`); the
link opens `GET/POST /password-reset/{tenant}/confirm` (`confirm_pages.py`), whose POST sets it
with `PATCH /api/v2/users/{id}`. The vault is per process: a restart between the form and the
send, or an email sent by another replica, finds nothing there, and the email then carries an
ordinary Auth0 reset ticket.

Why not `new_password` on `POST /api/v2/tickets/password-change`?  Current tenants refuse it.
It belonged to the "Change Password flow v1", which Auth0 deprecated as vulnerable (anyone
could pick the password; the victim's click on the confirmation link set it); only legacy
tenants with the `change_pwd_flow_v1` flag still honour it:

- The Management API reference for the endpoint (auth0.com/docs/api/management/v2/tickets/
  post-password-change) and its OpenAPI schema `ChangePasswordTicketRequestContent`
  (`additionalProperties: false`) list result_url, user_id, client_id, organization_id,
  connection_id, email, ttl_sec, mark_email_as_verified, includeEmailInRedirect, identity; no
  new_password. An unknown property is a 400 "Payload validation error".
- auth0-python 6.8.0 `tickets.change_password` has no such parameter and its raw client sends
  exactly the keys above; node-auth0 v4 `PostPasswordChangeRequest` and auth0.net
  `PasswordChangeTicketRequest` have none either, while older SDKs did (ruby-auth0 4.x/5.x
  `post_password_change(new_password:)`, auth0-java `PasswordChangeTicket.newPassword`).
- auth0/ruby-auth0 PR #297 (2021): the password argument "was only supported on legacy tenants
  with the flag change_pwd_flow_v1 enabled"; auth0/auth0.js #926 and node-auth0 #364 report the
  field as ignored/invalid; auth0.com/docs/connections/database/password-change: "We strongly
  encourage you to enable Change Password flow v2" (see "Vulnerable Password Flow").

This mode keeps v1's inherent risk, by design of the flow: whoever knows an address can type a
password on the form, and the owner's click on the confirmation button sets it. What limits it:
only the button's POST acts (scanners and previews do nothing), the email and the page say to
ignore a request one did not make, the form is rate-limited per address, and the `scp` notice
follows every change. `create_reset_ticket()`
(`tickets.py`) still pops the vault and sends `new_password` only with `legacy_flow=True`.
"""

from streamer.password_reset.clients import ClientInfo, client_info
from streamer.password_reset.csrf import CSRF_COOKIE, CSRF_FIELD, CSRF_TTL_S, CsrfTokens
from streamer.password_reset.event import (
    EVENT_DESCRIPTION,
    EVENT_SOURCE,
    EVENT_TYPE,
    UserLookup,
    is_database_user,
    iso_ms,
    new_log_id,
)
from streamer.password_reset.form import (
    MAX_BODY_BYTES,
    MAX_EMAIL_LENGTH,
    MAX_PASSWORD_LENGTH,
    normalize_email,
    valid_email,
)
from streamer.password_reset.messages import LANGUAGE_NAMES, MESSAGES, SUPPORTED_LOCALES, choose_locale
from streamer.password_reset.pages import (
    CONTENT_SECURITY_POLICY,
    DEFAULT_MIN_RESPONSE_S,
    MAX_USER_AGENT,
    SECURITY_HEADERS,
    PasswordResetPages,
    ResetPageSettings,
    password_reset_routes,
)
from streamer.password_reset.ratelimit import SlidingWindowLimiter, ip_key
from streamer.password_reset.tickets import TicketApi, create_reset_ticket
from streamer.password_reset.vault import NewPasswordVault

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_TTL_S",
    "DEFAULT_MIN_RESPONSE_S",
    "EVENT_DESCRIPTION",
    "EVENT_SOURCE",
    "EVENT_TYPE",
    "LANGUAGE_NAMES",
    "MAX_BODY_BYTES",
    "MAX_EMAIL_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "MAX_USER_AGENT",
    "MESSAGES",
    "SECURITY_HEADERS",
    "SUPPORTED_LOCALES",
    "ClientInfo",
    "CsrfTokens",
    "NewPasswordVault",
    "PasswordResetPages",
    "ResetPageSettings",
    "SlidingWindowLimiter",
    "TicketApi",
    "UserLookup",
    "choose_locale",
    "client_info",
    "create_reset_ticket",
    "ip_key",
    "is_database_user",
    "iso_ms",
    "new_log_id",
    "normalize_email",
    "password_reset_routes",
    "valid_email",
]
