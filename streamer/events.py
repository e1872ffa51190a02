"""Auth0 log-stream bodies → log events (pure; no I/O).

Auth0's custom webhook sends JSONARRAY, JSONLINES or JSONOBJECT (`{"logs": [...]}`) bodies whose
entries are `{"log_id", "data": {...}}` envelopes; `GET /api/v2/logs` pages and hand-made files
hold bare events. We accept all of them, and report entries that are not log events instead of
failing the whole batch: Auth0 would otherwise retry the batch forever.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


class BodyError(ValueError):
    """The body as a whole is not JSON (nothing in it may be stored)."""


@dataclass
class ParsedBatch:
    events: list[dict[str, Any]] = field(default_factory=list)
    #: One short reason per entry that was skipped (not an object, no log_id, no type …).
    skipped: list[str] = field(default_factory=list)


#: Keys whose values are credentials (ticket links, passwords) and must never reach the store.
_CREDENTIAL_KEYS = frozenset({
    "ticket", "verificationUrl", "resetUrl", "ticket_url", "password", "newPassword", "confirmNewPassword",
    "new_password", "client_secret", "access_token", "id_token", "refresh_token", "otp",
})

#: A credential key with a value scrub() would remove (not null, "" or Auth0's "*****" mask). The
#: lookahead on first letters skips most quotes at once; possessive spaces cannot back off a null.
_KEY_ALTERNATIVES = b"|".join(re.escape(key.encode()) for key in sorted(_CREDENTIAL_KEYS))
_FIRST_LETTERS = "".join(sorted({key[0] for key in _CREDENTIAL_KEYS})).encode()
_CREDENTIAL_IN_JSON = re.compile(
    b'"(?=[' + _FIRST_LETTERS + b'])(?:' + _KEY_ALTERNATIVES + rb')"\s*+:\s*+(?!null\b|""|"\*+")')


def may_hold_credentials(raw: bytes) -> bool:
    """Cheap test on a raw JSON body: False guarantees scrub() changes none of its events, so the
    bytes may be stored as they came. A `\\u` escape could spell a key, so it counts as a maybe."""
    return (b"\\" in raw and b"\\u" in raw) or _CREDENTIAL_IN_JSON.search(raw) is not None


def _is_credential(key: str, value: Any) -> bool:
    if key not in _CREDENTIAL_KEYS or value in (None, ""):
        return False
    return not (isinstance(value, str) and not value.strip("*"))  # Auth0's own "*****" mask is none


def parse_body(body: bytes | str) -> ParsedBatch:
    """Parse a webhook/replay body; raise BodyError when it is not JSON at all."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BodyError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    else:
        text = body
    if not text.strip():
        raise BodyError("body is empty")
    try:
        document: Any = json.loads(text)
        entries = _entries_of(document)
    except json.JSONDecodeError as whole_error:
        entries = _json_lines(text, whole_error)
    batch = ParsedBatch()
    for index, entry in enumerate(entries):
        event, reason = unwrap(entry)
        if event is None:
            batch.skipped.append(f"entry {index}: {reason}")
        else:
            batch.events.append(event)
    return batch


def _entries_of(document: Any) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and isinstance(document.get("logs"), list) and "type" not in document:
        entries: list[Any] = document["logs"]
        return entries
    return [document]


def _json_lines(text: str, whole_error: json.JSONDecodeError) -> list[Any]:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise BodyError(f"body is not JSON: {whole_error.msg} at line {whole_error.lineno} column {whole_error.colno}")
    entries = []
    for number, line in enumerate(lines, 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise BodyError(f"body is neither JSON nor JSON lines: line {number}: {exc.msg}") from None
    return entries


def unwrap(entry: Any) -> tuple[dict[str, Any] | None, str]:
    """An envelope or bare event → (event, "") or (None, reason). The entry is freshly parsed
    JSON that nobody else holds, so its dicts are reused (and given a log_id), not copied."""
    if not isinstance(entry, dict):
        return None, f"not an object but {type(entry).__name__}"
    envelope_id = entry.get("log_id")
    if isinstance(entry.get("data"), dict):
        event = entry["data"]
        event.setdefault("log_id", envelope_id)
    else:
        event = entry
    log_id = event.get("log_id") or event.get("_id")
    if not isinstance(log_id, str) or not log_id.strip() or len(log_id) > 128:
        return None, "no log_id"
    event["log_id"] = log_id
    if not isinstance(event.get("type"), str) or not event["type"]:
        return None, "no type"
    return event, ""


def scrub(value: Any) -> Any:
    """`value` without credential values (ticket ids, reset links, passwords) at any depth.

    Copies only the containers on the way to a removed value; the input is never modified,
    and an event without credentials is returned as it is (the common, fast case).
    """
    if isinstance(value, dict):
        changed = None
        for key, item in value.items():
            if _is_credential(key, item):
                cleaned: Any = "[removed]"
            elif isinstance(item, (dict, list)):
                cleaned = scrub(item)
            else:
                continue
            if cleaned is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = cleaned
        return value if changed is None else changed
    if isinstance(value, list):
        items = [scrub(v) if isinstance(v, (dict, list)) else v for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def user_id_of(event: dict[str, Any]) -> str | None:
    """The user an event is about; failures may carry "" (then look in details)."""
    user_id = event.get("user_id")
    if not user_id:
        details = event.get("details")
        body = details.get("body") if isinstance(details, dict) else None
        user_id = body.get("user_id") if isinstance(body, dict) else None
    return user_id if isinstance(user_id, str) and user_id else None
