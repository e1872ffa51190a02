"""The submitted form: reading the urlencoded body and validating its fields."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from aiohttp import web

from streamer.password_reset.csrf import CSRF_FIELD

MAX_BODY_BYTES = 16 * 1024
MAX_EMAIL_LENGTH = 254
MAX_PASSWORD_LENGTH = 256
FIELDS = ("email", "password", "password_confirm")
_EMAIL = re.compile(r"^[^\s@<>()\[\],;:\"\\]+@[^\s@<>()\[\],;:\"\\.]+(?:\.[^\s@<>()\[\],;:\"\\.]+)+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Form:
    email: str = ""
    password: str = ""
    password_confirm: str = ""
    csrf_token: str = ""
    #: The confirmation link's `<id>.<key>` (the confirm page's hidden field).
    ticket: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)


def normalize_email(value: str) -> str:
    return value.strip().lower()


def valid_email(address: str) -> bool:
    return 3 <= len(address) <= MAX_EMAIL_LENGTH and not _CONTROL.search(address) and bool(_EMAIL.match(address))


async def read_form(request: web.Request) -> tuple[Form, int | None]:
    """The posted fields, or an empty form and the HTTP status to answer (400, 413)."""
    if request.content_type != "application/x-www-form-urlencoded":
        return Form(), 400
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return Form(), 413
    size, chunks = 0, []
    while True:
        chunk = await request.content.read(8192)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return Form(), 413
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        return Form(), 400
    values: dict[str, str] = {}
    for name, value in pairs:
        values.setdefault(name, value)
    return Form(
        email=values.get("email", ""),
        password=values.get("password", ""),
        password_confirm=values.get("password_confirm", ""),
        csrf_token=values.get(CSRF_FIELD, ""),
        ticket=values.get("ticket", ""),
    ), None


def validate_form(
    form: Form, address: str, t: Mapping[str, str], *, new_password: bool, min_length: int
) -> list[tuple[str, str]]:
    """(field, message) for each invalid field, in page order; passwords only with `new_password`."""
    errors: list[tuple[str, str]] = []
    if not valid_email(address):
        errors.append(("email", t["err_email"]))
    if not new_password:
        return errors
    if len(form.password) < min_length:
        errors.append(("password", t["err_password_short"].format(n=min_length)))
    elif len(form.password) > MAX_PASSWORD_LENGTH:
        errors.append(("password", t["err_password_long"].format(n=MAX_PASSWORD_LENGTH)))
    if not hmac.compare_digest(
        form.password.encode("utf-8", "surrogatepass"), form.password_confirm.encode("utf-8", "surrogatepass")
    ):
        errors.append(("password_confirm", t["err_password_mismatch"]))
    return errors
