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
   `v1.<issued>.<nonce>.<HMAC-SHA256(key, tenant|issued|nonce)>` with a per-process random key: a cookie planted from a sibling subdomain cannot be forged, and a token
   of one tenant is not valid for another. Missing, different, forged or expired → 403 page. A
   still-fresh cookie is reused (not rotated) so two open tabs both work. With several replicas
   behind a load balancer, pass the same `csrf_key` to each (or use sticky sessions).
4. Field validation (email shape; with new_password: length `min_length`..256 and both equal)
   → 400 with the form re-rendered: error summary (role=alert, autofocus, links to the fields),
   `aria-invalid` + `aria-describedby` on the fields, the email kept, passwords never echoed.
   The form is `novalidate` so every message comes from here, in the page's language.
5. Rate limits from `password_reset.rate_limit` (`per_ip`, `per_address`), in-memory sliding
   windows; the address is the lower-cased email, the IP is `request.remote` (an IPv6 client is
   keyed by its /64, which one host can rotate through freely). Over → 429 page with
   `Retry-After` (seconds). Only submissions that pass 1-4 are counted.
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

Translations live in `MESSAGES` below, one dict per locale, not in gettext or data files: about
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
event's log_id, for `ttl_s` (15 min): never in the event, the store, a log line or an error
message. The vault is per process; a restart, or an event processed by another replica, finds
nothing there.

Does Auth0 still accept `new_password` on `POST /api/v2/tickets/password-change`?  No, not on a
current tenant. It belonged to the "Change Password flow v1", which Auth0 deprecated as
vulnerable (anyone could pick the password; the victim's click on the confirmation link set
it); only legacy tenants with the `change_pwd_flow_v1` flag still honour it:

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

So with `new_password: true` the form captures and checks the password, parks it in the vault,
and the ticket is, by default, created WITHOUT it: `create_reset_ticket()` below always pops
the vault entry (so it does not linger) and sends it to Auth0 only when called with
`legacy_flow=True`; if Auth0 answers 400 it retries without it. The user then chooses the
password again on Auth0's reset page. Turning `legacy_flow` on re-creates the vulnerable v1 flow
(whoever knows an address can choose its password and only needs one careless click); keep it
off unless the tenant really is a legacy one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import string
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

import jinja2
from aiohttp import web
from babel.dates import format_timedelta
from pydantic import SecretStr

from streamer import metrics
from streamer.auth0.errors import Auth0Error, Auth0Permanent
from streamer.config import Config, TenantConfig, parse_rate
from streamer.inbox import Inbox
from streamer.locale import normalize_locale, parse_accept_language
from streamer.logs import get_logger

log = get_logger(__name__)

EVENT_TYPE = "password_reset_requested"
EVENT_SOURCE = "password_reset_form"
EVENT_DESCRIPTION = "Password reset requested on the hosted form"
SUPPORTED_LOCALES = ("en", "fr", "de", "es")
LANGUAGE_NAMES = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español"}
CSRF_COOKIE = "pr_csrf"
CSRF_FIELD = "csrf_token"
CSRF_TTL_S = 3600.0
MAX_BODY_BYTES = 16 * 1024
MAX_EMAIL_LENGTH = 254
MAX_PASSWORD_LENGTH = 256
MAX_USER_AGENT = 512
DEFAULT_MIN_RESPONSE_S = 0.6

_WEB_DIR = Path(__file__).parent / "web"
_CSS = (_WEB_DIR / "password_reset.css").read_text(encoding="utf-8")
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode("ascii")
CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; img-src data:; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Vary": "Accept-Language, Cookie",
}
_FIELDS = ("email", "password", "password_confirm")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_EMAIL = re.compile(r"^[^\s@<>()\[\],;:\"\\]+@[^\s@<>()\[\],;:\"\\.]+(?:\.[^\s@<>()\[\],;:\"\\.]+)+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# --- translations ---------------------------------------------------------------------------

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title": "Reset your password",
        "intro": "Enter the email address you use to sign in. We'll email you a link to choose a new password.",
        "intro_new_password": "Enter the email address you use to sign in and choose a new password. "
                              "We'll email you a link to finish resetting your password.",
        "email_label": "Email address",
        "password_label": "New password",
        "password_hint": "At least {n} characters.",
        "confirm_label": "Confirm new password",
        "submit": "Send reset link",
        "error_prefix": "Error: ",
        "error_summary": "Please check what you entered",
        "err_email": "Enter a valid email address, like name@example.com.",
        "err_password_short": "Your new password must be at least {n} characters long.",
        "err_password_long": "Your new password must be at most {n} characters long.",
        "err_password_mismatch": "The two passwords don't match. Enter the same password twice.",
        "sent_title": "Check your email",
        "sent_body": "If an account exists for that address, we've sent a link to reset your password.",
        "sent_hint": "It can take a few minutes to arrive. If you don't see it, check your spam folder.",
        "sent_again": "Send another link",
        "rate_title": "Too many attempts",
        "rate_body": "For your security, we limit how often a password reset can be requested. "
                     "Please wait {wait} and try again.",
        "csrf_title": "This page has expired",
        "csrf_body": "For your security, the form can only be used for a limited time. Open it again and resubmit.",
        "csrf_hint": "If this keeps happening, check that your browser accepts cookies.",
        "invalid_title": "We couldn't read that request",
        "invalid_body": "Please open the form again and resubmit it.",
        "back": "Open the form again",
        "notfound_title": "Page not found",
        "notfound_body": "This password reset page doesn't exist or isn't enabled.",
        "language": "Language",
    },
    "fr": {
        "title": "Réinitialiser votre mot de passe",
        "intro": "Saisissez l’adresse e-mail que vous utilisez pour vous connecter. Nous vous enverrons "
                 "un lien pour choisir un nouveau mot de passe.",
        "intro_new_password": "Saisissez l’adresse e-mail que vous utilisez pour vous connecter et choisissez "
                              "un nouveau mot de passe. Nous vous enverrons un lien pour terminer la "
                              "réinitialisation.",
        "email_label": "Adresse e-mail",
        "password_label": "Nouveau mot de passe",
        "password_hint": "Au moins {n} caractères.",
        "confirm_label": "Confirmez le nouveau mot de passe",
        "submit": "Envoyer le lien de réinitialisation",
        "error_prefix": "Erreur : ",
        "error_summary": "Vérifiez les informations saisies",
        "err_email": "Saisissez une adresse e-mail valide, par exemple nom@exemple.fr.",
        "err_password_short": "Le nouveau mot de passe doit contenir au moins {n} caractères.",
        "err_password_long": "Le nouveau mot de passe ne peut pas dépasser {n} caractères.",
        "err_password_mismatch": "Les deux mots de passe ne correspondent pas. Saisissez deux fois le même.",
        "sent_title": "Consultez votre messagerie",
        "sent_body": "Si un compte existe pour cette adresse, nous vous avons envoyé un lien pour "
                     "réinitialiser votre mot de passe.",
        "sent_hint": "Il peut mettre quelques minutes à arriver. Si vous ne le trouvez pas, "
                     "vérifiez vos courriers indésirables.",
        "sent_again": "Envoyer un nouveau lien",
        "rate_title": "Trop de tentatives",
        "rate_body": "Pour votre sécurité, le nombre de demandes de réinitialisation est limité. "
                     "Veuillez patienter {wait} avant de réessayer.",
        "csrf_title": "Cette page a expiré",
        "csrf_body": "Pour votre sécurité, le formulaire n’est valable que pendant une durée limitée. "
                     "Rouvrez-le et envoyez-le de nouveau.",
        "csrf_hint": "Si le problème persiste, vérifiez que votre navigateur accepte les cookies.",
        "invalid_title": "Nous n’avons pas pu lire cette demande",
        "invalid_body": "Veuillez rouvrir le formulaire et l’envoyer de nouveau.",
        "back": "Rouvrir le formulaire",
        "notfound_title": "Page introuvable",
        "notfound_body": "Cette page de réinitialisation du mot de passe n’existe pas ou n’est pas activée.",
        "language": "Langue",
    },
    "de": {
        "title": "Passwort zurücksetzen",
        "intro": "Geben Sie die E-Mail-Adresse ein, mit der Sie sich anmelden. Wir senden Ihnen einen Link, "
                 "über den Sie ein neues Passwort festlegen können.",
        "intro_new_password": "Geben Sie die E-Mail-Adresse ein, mit der Sie sich anmelden, und wählen Sie ein "
                              "neues Passwort. Wir senden Ihnen einen Link, mit dem Sie das Zurücksetzen "
                              "abschließen.",
        "email_label": "E-Mail-Adresse",
        "password_label": "Neues Passwort",
        "password_hint": "Mindestens {n} Zeichen.",
        "confirm_label": "Neues Passwort bestätigen",
        "submit": "Link zum Zurücksetzen senden",
        "error_prefix": "Fehler: ",
        "error_summary": "Bitte überprüfen Sie Ihre Eingaben",
        "err_email": "Geben Sie eine gültige E-Mail-Adresse ein, z. B. name@beispiel.de.",
        "err_password_short": "Das neue Passwort muss mindestens {n} Zeichen lang sein.",
        "err_password_long": "Das neue Passwort darf höchstens {n} Zeichen lang sein.",
        "err_password_mismatch": "Die beiden Passwörter stimmen nicht überein. Geben Sie zweimal dasselbe "
                                 "Passwort ein.",
        "sent_title": "Bitte prüfen Sie Ihr Postfach",
        "sent_body": "Falls ein Konto mit dieser Adresse existiert, haben wir Ihnen einen Link zum "
                     "Zurücksetzen Ihres Passworts gesendet.",
        "sent_hint": "Es kann einige Minuten dauern, bis die E-Mail ankommt. Sehen Sie bitte auch in Ihrem "
                     "Spam-Ordner nach.",
        "sent_again": "Neuen Link anfordern",
        "rate_title": "Zu viele Versuche",
        "rate_body": "Zu Ihrer Sicherheit ist die Zahl der Anfragen zum Zurücksetzen begrenzt. "
                     "Bitte warten Sie {wait} und versuchen Sie es dann erneut.",
        "csrf_title": "Diese Seite ist abgelaufen",
        "csrf_body": "Aus Sicherheitsgründen ist das Formular nur begrenzte Zeit gültig. Öffnen Sie es erneut "
                     "und senden Sie es noch einmal ab.",
        "csrf_hint": "Falls das Problem weiterhin besteht, prüfen Sie, ob Ihr Browser Cookies zulässt.",
        "invalid_title": "Diese Anfrage konnte nicht gelesen werden",
        "invalid_body": "Bitte öffnen Sie das Formular erneut und senden Sie es noch einmal ab.",
        "back": "Formular erneut öffnen",
        "notfound_title": "Seite nicht gefunden",
        "notfound_body": "Diese Seite zum Zurücksetzen des Passworts existiert nicht oder ist nicht aktiviert.",
        "language": "Sprache",
    },
    "es": {
        "title": "Restablecer la contraseña",
        "intro": "Introduce la dirección de correo electrónico con la que inicias sesión. Te enviaremos un "
                 "enlace para elegir una nueva contraseña.",
        "intro_new_password": "Introduce la dirección de correo electrónico con la que inicias sesión y elige "
                              "una nueva contraseña. Te enviaremos un enlace para completar el "
                              "restablecimiento.",
        "email_label": "Correo electrónico",
        "password_label": "Nueva contraseña",
        "password_hint": "Al menos {n} caracteres.",
        "confirm_label": "Confirma la nueva contraseña",
        "submit": "Enviar enlace de restablecimiento",
        "error_prefix": "Error: ",
        "error_summary": "Revisa los datos introducidos",
        "err_email": "Introduce una dirección de correo electrónico válida, por ejemplo, nombre@ejemplo.com.",
        "err_password_short": "La nueva contraseña debe tener al menos {n} caracteres.",
        "err_password_long": "La nueva contraseña no puede tener más de {n} caracteres.",
        "err_password_mismatch": "Las contraseñas no coinciden. Escribe la misma contraseña dos veces.",
        "sent_title": "Revisa tu correo",
        "sent_body": "Si existe una cuenta con esa dirección, te hemos enviado un enlace para restablecer "
                     "tu contraseña.",
        "sent_hint": "Puede tardar unos minutos en llegar. Si no lo ves, revisa también la carpeta de spam.",
        "sent_again": "Enviar otro enlace",
        "rate_title": "Demasiados intentos",
        "rate_body": "Por tu seguridad, limitamos la frecuencia con la que se puede solicitar un "
                     "restablecimiento. Espera {wait} y vuelve a intentarlo.",
        "csrf_title": "Esta página ha caducado",
        "csrf_body": "Por tu seguridad, el formulario solo es válido durante un tiempo limitado. "
                     "Vuelve a abrirlo y envíalo de nuevo.",
        "csrf_hint": "Si el problema continúa, comprueba que tu navegador acepta cookies.",
        "invalid_title": "No hemos podido leer la solicitud",
        "invalid_body": "Vuelve a abrir el formulario y envíalo de nuevo.",
        "back": "Volver a abrir el formulario",
        "notfound_title": "Página no encontrada",
        "notfound_body": "Esta página de restablecimiento de contraseña no existe o no está habilitada.",
        "language": "Idioma",
    },
}


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _check_messages() -> None:
    reference = MESSAGES["en"]
    for locale in SUPPORTED_LOCALES:
        strings = MESSAGES[locale]
        if set(strings) != set(reference):
            raise RuntimeError(f"password reset messages for {locale!r} differ in keys: "
                               f"{sorted(set(strings) ^ set(reference))}")
        for key, text in strings.items():
            if _placeholders(text) != _placeholders(reference[key]):
                raise RuntimeError(f"password reset message {locale}.{key} has other placeholders than en")


_check_messages()


def choose_locale(*candidates: str | None) -> str:
    """The first candidate whose language is supported (`fr-CA` → fr); English if none is."""
    for candidate in candidates:
        tag = normalize_locale(candidate)
        if tag:
            language = tag.split("-", 1)[0]
            if language in SUPPORTED_LOCALES:
                return language
    return "en"


# --- small parts ----------------------------------------------------------------------------


class UserLookup(Protocol):
    """What the form needs from the Management API (`streamer.auth0.ManagementApi` fits)."""

    async def users_by_email(self, email: str) -> list[dict]: ...


class NewPasswordVault:
    """New passwords typed on the form, in memory only, for a short time: log_id → SecretStr.

    Never persisted, never logged (the repr shows a count). `take` pops: the first caller gets the
    password, later ones None; expired entries are gone. When full, the oldest entry is dropped.
    """

    def __init__(self, ttl_s: float = 900.0, *, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, SecretStr]] = {}

    def __repr__(self) -> str:
        return f"NewPasswordVault(entries={len(self._entries)}, ttl_s={self.ttl_s})"

    def __len__(self) -> int:
        self._purge(self._clock())
        return len(self._entries)

    def __contains__(self, log_id: object) -> bool:
        self._purge(self._clock())
        return log_id in self._entries

    def _purge(self, now: float) -> None:
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]

    def put(self, log_id: str, password: str) -> None:
        now = self._clock()
        self._purge(now)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[log_id] = (now + self.ttl_s, SecretStr(password))

    def take(self, log_id: str) -> str | None:
        entry = self._entries.pop(log_id, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1].get_secret_value()


class SlidingWindowLimiter:
    """At most `limit` hits per key in any `window_s` seconds; memory bounded by `max_keys`."""

    def __init__(self, limit: int, window_s: float, *, clock: Callable[[], float], max_keys: int = 100_000):
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        hits = self._hits.get(key)
        if hits is None:
            return None
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return None
        return hits

    def retry_after(self, key: str) -> float:
        """0 when one more hit is allowed now, else the seconds until it will be."""
        now = self._clock()
        hits = self._recent(key, now)
        if hits is None or len(hits) < self.limit:
            return 0.0
        return max(hits[-self.limit] + self.window_s - now, 0.001)

    def hit(self, key: str) -> None:
        now = self._clock()
        hits = self._recent(key, now)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._evict(now)
            hits = self._hits[key] = deque(maxlen=max(self.limit, 1))
        hits.append(now)

    def _evict(self, now: float) -> None:
        for key in list(self._hits):
            self._recent(key, now)
        while len(self._hits) >= self.max_keys:
            del self._hits[next(iter(self._hits))]


class CsrfTokens:
    """Signed double-submit tokens: `v1.<issued ms hex>.<nonce>.<sig>`, bound to a tenant."""

    def __init__(self, key: bytes, *, ttl_s: float = CSRF_TTL_S, clock: Callable[[], float] = time.monotonic):
        self._key = key
        self.ttl_s = ttl_s
        self._clock = clock

    def _sign(self, tenant: str, issued: str, nonce: str) -> str:
        mac = hmac.new(self._key, f"password-reset-csrf|{tenant}|{issued}|{nonce}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode("ascii").rstrip("=")

    def issue(self, tenant: str) -> str:
        issued = format(int(self._clock() * 1000), "x")
        nonce = secrets.token_urlsafe(18)
        return f"v1.{issued}.{nonce}.{self._sign(tenant, issued, nonce)}"

    def age(self, tenant: str, token: str | None) -> float | None:
        """Seconds since issue for a genuine, unexpired token of this tenant; None otherwise."""
        if not token or len(token) > 200 or not token.isascii():
            return None
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "v1":
            return None
        _, issued, nonce, signature = parts
        if not hmac.compare_digest(signature.encode("ascii", "replace"),
                                   self._sign(tenant, issued, nonce).encode("ascii")):
            return None
        try:
            age = self._clock() - int(issued, 16) / 1000
        except ValueError:
            return None
        return age if -5 <= age < self.ttl_s else None

    def valid_pair(self, tenant: str, cookie: str | None, field_value: str | None) -> bool:
        if not cookie or not field_value:
            return False
        same = hmac.compare_digest(cookie.encode("utf-8", "replace"), field_value.encode("utf-8", "replace"))
        return same and self.age(tenant, cookie) is not None


def normalize_email(value: str) -> str:
    return value.strip().lower()


def valid_email(address: str) -> bool:
    return 3 <= len(address) <= MAX_EMAIL_LENGTH and not _CONTROL.search(address) and bool(_EMAIL.match(address))


def new_log_id(now: datetime | None = None) -> str:
    """`streamer-20260301140107398-1a2b3c4d5e6f7081`: time-ordered, unique, never an Auth0 id."""
    now = now or datetime.now(UTC)
    return f"streamer-{now.strftime('%Y%m%d%H%M%S')}{now.microsecond // 1000:03d}-{secrets.token_hex(8)}"


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ip_key(remote: str | None) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by its /64."""
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


def is_database_user(user: Mapping[str, Any]) -> bool:
    identities = user.get("identities")
    if isinstance(identities, list) and identities and isinstance(identities[0], Mapping):
        return identities[0].get("provider") == "auth0"
    return str(user.get("user_id") or "").startswith("auth0|")


@dataclass(frozen=True)
class ClientInfo:
    id: str = ""
    name: str = ""
    locale: str | None = None


def client_info(tenant: TenantConfig, client_id: str | None) -> ClientInfo:
    """`vars.clients[client_id]` → (id, name, locale); unknown or malformed ids → ClientInfo()."""
    if not client_id or not _CLIENT_ID.match(client_id):
        return ClientInfo()
    clients = tenant.vars.get("clients") if isinstance(tenant.vars, Mapping) else None
    if not isinstance(clients, Mapping):
        return ClientInfo(id=client_id)
    entry = clients.get(client_id)
    if entry is None:
        return ClientInfo()
    if not isinstance(entry, Mapping):
        return ClientInfo(id=client_id)
    name = entry.get("name")
    locale = entry.get("locale")
    return ClientInfo(id=client_id, name=str(name) if isinstance(name, str) else "",
                      locale=locale if isinstance(locale, str) else None)


# --- the pages ------------------------------------------------------------------------------

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(_WEB_DIR)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass
class _Form:
    email: str = ""
    password: str = ""
    password_confirm: str = ""
    csrf_token: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)


class PasswordResetPages:
    """State of the hosted form for one process: CSRF key, rate limiters, in-flight work."""

    def __init__(self, config: Config, inbox: Inbox, apis: Mapping[str, UserLookup], *,
                 vault: NewPasswordVault | None = None, clock: Callable[[], float] = time.monotonic,
                 min_response_s: float = DEFAULT_MIN_RESPONSE_S, csrf_key: bytes | None = None):
        self.config = config
        self.settings = config.password_reset
        self.inbox = inbox
        self.apis = apis
        self.vault = vault if vault is not None else NewPasswordVault(clock=clock)
        self.clock = clock
        self.min_response_s = min_response_s
        self._key = csrf_key or secrets.token_bytes(32)
        self.csrf = CsrfTokens(self._key, clock=clock)
        per_ip, per_ip_window = parse_rate(self.settings.rate_limit.per_ip)
        per_address, per_address_window = parse_rate(self.settings.rate_limit.per_address)
        self.ip_limiter = SlidingWindowLimiter(per_ip, per_ip_window, clock=clock)
        self.address_limiter = SlidingWindowLimiter(per_address, per_address_window, clock=clock)
        #: Behind a TLS-terminating proxy request.secure is False: the public URL tells.
        self._public_https = (config.server.public_url or "").lower().startswith("https://")
        self._tasks: set[asyncio.Task] = set()
        self._warned_unrouted: set[str] = set()

    # --- wiring -------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/password-reset/{tenant}", self.get_form),
                web.post("/password-reset/{tenant}", self.post_form)]

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for lookups still running after their answer was sent."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def address_hash(self, address: str) -> str:
        digest = hmac.new(self._key, b"address|" + address.encode("utf-8", "replace"), hashlib.sha256)
        return digest.hexdigest()[:16]

    # --- request context ----------------------------------------------------------------------

    def _tenant(self, request: web.Request) -> TenantConfig | None:
        if not self.settings.enabled:
            return None
        return self.config.tenants.get(request.match_info["tenant"])

    def _locale(self, request: web.Request, tenant: TenantConfig | None, client: ClientInfo) -> str:
        return choose_locale(request.query.get("lang"), client.locale,
                             *parse_accept_language(request.headers.get("Accept-Language")),
                             tenant.default_locale if tenant else None,
                             self.config.templates.default_locale)

    @staticmethod
    def _query(request: web.Request, client: ClientInfo, lang: str | None = None) -> str:
        params = {}
        if client.id:
            params["client_id"] = client.id
        wanted = lang if lang is not None else normalize_locale(request.query.get("lang"))
        if wanted:
            params["lang"] = wanted
        return ("?" + urlencode(params)) if params else ""

    def _page(self, request: web.Request, locale: str, *, status: int, page: str, title_key: str,
              client: ClientInfo, paragraphs: tuple[str, ...] = (), back_text: str = "", form: _Form | None = None,
              csrf_token: str = "", headers: Mapping[str, str] | None = None) -> web.Response:
        t = MESSAGES[locale]
        base = f"/password-reset/{request.match_info['tenant']}"
        context: dict[str, Any] = {
            "css": _CSS, "locale": locale, "t": t, "title": t[title_key], "client_name": client.name,
            "page": page, "errors": [], "field_errors": dict.fromkeys(_FIELDS, ""), "paragraphs": paragraphs,
            "back_text": back_text,
            "back_url": (base + self._query(request, client)) if back_text else "", "languages": [],
            "new_password": self.settings.new_password, "min_length": self.settings.min_length,
            "max_length": MAX_PASSWORD_LENGTH, "csrf_token": csrf_token, "email": "", "action": "",
            "password_hint": t["password_hint"].format(n=self.settings.min_length),
        }
        if page == "form":
            form = form or _Form()
            context.update(
                errors=[{"field": name, "message": message} for name, message in form.errors],
                field_errors={**dict.fromkeys(_FIELDS, ""), **dict(reversed(form.errors))},
                email=form.email[:MAX_EMAIL_LENGTH + 66],
                action=base + self._query(request, client),
                languages=[{"code": code, "name": LANGUAGE_NAMES[code], "current": code == locale,
                            "href": base + self._query(request, client, code)} for code in SUPPORTED_LOCALES])
        body = _templates.get_template("password_reset.html").render(context)
        response = web.Response(status=status, text=body, content_type="text/html", charset="utf-8")
        response.headers.update(SECURITY_HEADERS)
        response.headers["Content-Language"] = locale
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response

    def _not_found(self, request: web.Request) -> web.Response:
        locale = self._locale(request, None, ClientInfo())
        return self._page(request, locale, status=404, page="message", title_key="notfound_title",
                          client=ClientInfo(), paragraphs=(MESSAGES[locale]["notfound_body"],))

    def _set_csrf_cookie(self, request: web.Request, response: web.Response, token: str) -> None:
        expires = (datetime.now(UTC) + timedelta(seconds=CSRF_TTL_S)).strftime("%a, %d %b %Y %H:%M:%S GMT")
        response.set_cookie(CSRF_COOKIE, token, max_age=int(CSRF_TTL_S), expires=expires, httponly=True,
                            samesite="Strict", secure=request.secure or self._public_https,
                            path=f"/password-reset/{request.match_info['tenant']}")

    def _csrf_token_for(self, request: web.Request, tenant_name: str) -> tuple[str, bool]:
        """(token, is_new): the cookie's own token while it is in its first half-life, else a new one."""
        current = request.cookies.get(CSRF_COOKIE)
        age = self.csrf.age(tenant_name, current)
        if current and age is not None and age < CSRF_TTL_S / 2:
            return current, False
        return self.csrf.issue(tenant_name), True

    def _form_page(self, request: web.Request, tenant_name: str, locale: str, client: ClientInfo, *,
                   status: int = 200, form: _Form | None = None) -> web.Response:
        token, is_new = self._csrf_token_for(request, tenant_name)
        response = self._page(request, locale, status=status, page="form", title_key="title", client=client,
                              form=form, csrf_token=token)
        if is_new:
            self._set_csrf_cookie(request, response, token)
        return response

    # --- handlers -----------------------------------------------------------------------------

    async def get_form(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        if tenant is None:
            return self._not_found(request)
        client = client_info(tenant, request.query.get("client_id"))
        locale = self._locale(request, tenant, client)
        return self._form_page(request, request.match_info["tenant"], locale, client)

    async def post_form(self, request: web.Request) -> web.StreamResponse:
        started = asyncio.get_running_loop().time()
        tenant = self._tenant(request)
        if tenant is None:
            return self._not_found(request)
        tenant_name = request.match_info["tenant"]
        client = client_info(tenant, request.query.get("client_id"))
        locale = self._locale(request, tenant, client)
        t = MESSAGES[locale]

        form, problem = await self._read_form(request)
        if problem is not None:
            metrics.EVENTS_REJECTED.labels(tenant_name, "password_reset_bad_request").inc()
            return self._page(request, locale, status=problem, page="message", title_key="invalid_title",
                              client=client, paragraphs=(t["invalid_body"],), back_text=t["back"])
        if not self.csrf.valid_pair(tenant_name, request.cookies.get(CSRF_COOKIE), form.csrf_token):
            metrics.EVENTS_REJECTED.labels(tenant_name, "password_reset_csrf").inc()
            missing = [part for part, present in (("cookie", CSRF_COOKIE in request.cookies),
                                                  ("field", bool(form.csrf_token))) if not present]
            log.info("password_reset_csrf_rejected", tenant=tenant_name, missing=missing or None)
            return self._page(request, locale, status=403, page="message", title_key="csrf_title", client=client,
                              paragraphs=(t["csrf_body"], t["csrf_hint"]), back_text=t["back"])

        address = normalize_email(form.email)
        self._validate(form, address, t)
        if form.errors:
            return self._form_page(request, tenant_name, locale, client, status=400,
                                   form=_Form(email=form.email, errors=form.errors))

        ip = request.remote or ""
        wait = max(self.ip_limiter.retry_after(ip_key(ip)), self.address_limiter.retry_after(address))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            metrics.EVENTS_REJECTED.labels(tenant_name, "password_reset_rate_limited").inc()
            log.info("password_reset_rate_limited", tenant=tenant_name, address_hash=self.address_hash(address),
                     retry_after_s=seconds)
            text = t["rate_body"].format(wait=format_timedelta(timedelta(seconds=seconds), locale=locale,
                                                               granularity="minute", threshold=1))
            return self._page(request, locale, status=429, page="message", title_key="rate_title", client=client,
                              paragraphs=(text,), back_text=t["back"], headers={"Retry-After": str(seconds)})
        self.ip_limiter.hit(ip_key(ip))
        self.address_limiter.hit(address)

        password = form.password if self.settings.new_password else None
        task = asyncio.create_task(
            self._request_reset(tenant_name, address, client, ip,
                                request.headers.get("User-Agent", "")[:MAX_USER_AGENT], password),
            name="password-reset-request")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        del form, password
        remaining = started + self.min_response_s - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.wait({task}, timeout=remaining)
            remaining = started + self.min_response_s - asyncio.get_running_loop().time()
            if remaining > 0:
                await asyncio.sleep(remaining)
        return self._page(request, locale, status=200, page="message", title_key="sent_title", client=client,
                          paragraphs=(t["sent_body"], t["sent_hint"]), back_text=t["sent_again"])

    async def _read_form(self, request: web.Request) -> tuple[_Form, int | None]:
        if request.content_type != "application/x-www-form-urlencoded":
            return _Form(), 400
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _Form(), 413
        size, chunks = 0, []
        while True:
            chunk = await request.content.read(8192)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return _Form(), 413
            chunks.append(chunk)
        try:
            text = b"".join(chunks).decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=32)
        except (UnicodeDecodeError, ValueError):
            return _Form(), 400
        values: dict[str, str] = {}
        for name, value in pairs:
            values.setdefault(name, value)
        return _Form(email=values.get("email", ""), password=values.get("password", ""),
                     password_confirm=values.get("password_confirm", ""),
                     csrf_token=values.get(CSRF_FIELD, "")), None

    def _validate(self, form: _Form, address: str, t: Mapping[str, str]) -> None:
        if not valid_email(address):
            form.errors.append(("email", t["err_email"]))
        if not self.settings.new_password:
            return
        minimum = self.settings.min_length
        if len(form.password) < minimum:
            form.errors.append(("password", t["err_password_short"].format(n=minimum)))
        elif len(form.password) > MAX_PASSWORD_LENGTH:
            form.errors.append(("password", t["err_password_long"].format(n=MAX_PASSWORD_LENGTH)))
        if not hmac.compare_digest(form.password.encode("utf-8", "surrogatepass"),
                                   form.password_confirm.encode("utf-8", "surrogatepass")):
            form.errors.append(("password_confirm", t["err_password_mismatch"]))

    # --- the work behind the generic answer ---------------------------------------------------

    async def _request_reset(self, tenant: str, address: str, client: ClientInfo, ip: str, user_agent: str,
                             password: str | None) -> None:
        address_hash = self.address_hash(address)
        try:
            api = self.apis.get(tenant)
            if api is None:
                log.error("password_reset_no_api_for_tenant", tenant=tenant)
                return
            try:
                users = await api.users_by_email(address)
            except Auth0Error as exc:
                log.warning("password_reset_lookup_failed", tenant=tenant, address_hash=address_hash,
                            error_kind=type(exc).__name__, status=exc.status, error_code=exc.error_code,
                            error=_without(str(exc), address))
                return
            candidates = [u for u in users or [] if isinstance(u, Mapping) and u.get("user_id")]
            database_users = [u for u in candidates if is_database_user(u)]
            if not database_users:
                log.info("password_reset_no_account", tenant=tenant, address_hash=address_hash,
                         reason="no_database_identity" if candidates else "unknown_address")
                return
            user = database_users[0]
            identities = user.get("identities") if isinstance(user.get("identities"), list) else []
            primary = identities[0] if identities and isinstance(identities[0], Mapping) else {}
            connection = primary.get("connection") or ""
            now = datetime.now(UTC)
            event = {
                "log_id": new_log_id(now), "type": EVENT_TYPE, "date": iso_ms(now),
                "user_id": str(user["user_id"]), "client_id": client.id, "client_name": client.name,
                "ip": ip, "user_agent": user_agent, "user_name": address, "connection": str(connection or ""),
                "description": EVENT_DESCRIPTION,
            }
            if password is not None:
                self.vault.put(event["log_id"], password)
            try:
                result = await self.inbox.accept(tenant, [event], source=EVENT_SOURCE)
            except Exception as exc:  # noqa: BLE001 - the user already has the generic answer
                if password is not None:
                    self.vault.take(event["log_id"])
                log.error("password_reset_store_failed", tenant=tenant, log_id=event["log_id"],
                          error_kind=type(exc).__name__)
                return
            if not result.new:
                if password is not None:
                    self.vault.take(event["log_id"])
                if tenant not in self._warned_unrouted:
                    self._warned_unrouted.add(tenant)
                    log.warning("password_reset_event_not_routed", tenant=tenant, event_type=EVENT_TYPE,
                                hint="no rule has `on: [password_reset_requested]`: no email will be sent")
                return
            log.info("password_reset_requested", tenant=tenant, log_id=event["log_id"], user_id=event["user_id"],
                     client_id=client.id or None, database_users=len(database_users))
        except Exception as exc:  # noqa: BLE001 - never let a bug reach the user or leak the input
            log.error("password_reset_failed", tenant=tenant, address_hash=address_hash, error_kind=type(exc).__name__)


def _without(text: str, address: str) -> str:
    return re.sub(re.escape(address), "[address]", text, flags=re.I) if address else text


def password_reset_routes(config: Config, inbox: Inbox, apis: Mapping[str, UserLookup], *,
                          vault: NewPasswordVault | None = None, clock: Callable[[], float] = time.monotonic,
                          min_response_s: float = DEFAULT_MIN_RESPONSE_S) -> list[web.RouteDef]:
    """`GET/POST /password-reset/{tenant}` for `app.add_routes(...)`.

    Pass the `vault` the delivery side will `take()` from when `password_reset.new_password` is on.
    To await in-flight lookups at shutdown, build `PasswordResetPages` yourself and call `drain()`.
    """
    return PasswordResetPages(config, inbox, apis, vault=vault, clock=clock, min_response_s=min_response_s).routes()


# --- delivery side --------------------------------------------------------------------------


class TicketApi(Protocol):
    async def create_password_change_ticket(self, *, user_id: str, result_url: str | None = None,
                                            ttl_sec: int | None = None, new_password: str | None = None) -> str: ...


async def create_reset_ticket(api: TicketApi, vault: NewPasswordVault | None, *, log_id: str, user_id: str,
                              result_url: str | None = None, ttl_sec: int | None = None,
                              legacy_flow: bool = False) -> str:
    """The password-change ticket for a `password_reset_requested` event.

    Always pops the event's new password from the vault. Current Auth0 tenants refuse
    `new_password` (see the module docstring), so it is sent only with `legacy_flow=True`, and
    dropped (one retry without it) if Auth0 answers 400. On a transient error the password is put
    back so that the delivery's retry can use it.
    """
    password = vault.take(log_id) if vault is not None else None
    if password is not None and legacy_flow:
        try:
            return await api.create_password_change_ticket(user_id=user_id, result_url=result_url,
                                                           ttl_sec=ttl_sec, new_password=password)
        except Auth0Permanent as exc:
            if exc.status != 400:
                raise
            log.warning("auth0_refused_new_password", log_id=log_id, error_code=exc.error_code,
                        hint="this tenant uses Change Password flow v2: the ticket is created without it")
        except Exception:
            if vault is not None:
                vault.put(log_id, password)
            raise
    return await api.create_password_change_ticket(user_id=user_id, result_url=result_url, ttl_sec=ttl_sec)
