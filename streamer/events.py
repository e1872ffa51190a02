"""Auth0 log-stream bodies → log events (pure; no I/O).

Auth0's custom webhook sends JSONARRAY, JSONLINES or JSONOBJECT (`{"logs": [...]}`) bodies whose
entries are `{"log_id", "data": {...}}` envelopes; `GET /api/v2/logs` pages and hand-made files
hold bare events. We accept all of them, and report entries that are not log events instead of
failing the whole batch: Auth0 would otherwise retry the batch forever. For the same reason an
event holding a value no store can keep (a lone UTF-16 surrogate, a number out of range, deep
nesting: valid JSON all of them) is quarantined alone, here, once, before anything stores it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
import re2

#: Auth0's log event type codes (FACTS.md §b) and streamer's own: a type outside these is counted
#: as "other" in metrics, so that made-up types cannot grow the metrics without bound.
KNOWN_EVENT_TYPES = frozenset(
    {
        "ss",
        "fs",
        "s",
        "f",
        "fp",
        "fu",
        "w",
        "scoa",
        "fcoa",
        "sens",
        "fens",
        "ssa",
        "fsa",
        "slo",
        "flo",
        "sv",
        "fv",
        "svr",
        "fvr",
        "scpr",
        "fcpr",
        "scp",
        "fcp",
        "sce",
        "fce",
        "scu",
        "fcu",
        "scpn",
        "fcpn",
        "sdu",
        "fdu",
        "du",
        "sapi",
        "fapi",
        "mgmt_api_read",
        "limit_wc",
        "limit_mu",
        "limit_sul",
        "pwd_leak",
        "signup_pwd_leak",
        "reset_pwd_leak",
        "api_limit",
        "api_limit_warning",
        "sepft",
        "fepft",
        "seacft",
        "feacft",
        "sertft",
        "fertft",
        "seccft",
        "feccft",
        "gd_enrollment_complete",
        "gd_start_enroll",
        "gd_unenroll",
        "gd_send_sms",
        "gd_auth_succeed",
        "gd_auth_failed",
        "gd_send_email",
        "gd_recovery_succeed",
        "cs",
        "cls",
        "password_reset_requested",
    }
)


class BodyError(ValueError):
    """The body as a whole is not JSON (nothing in it may be stored)."""


@dataclass(frozen=True)
class Quarantined:
    """A log event no store can keep as it is (a lone UTF-16 surrogate, a number out of range, too
    deep): set aside on its own so that the rest of its batch goes on."""

    log_id: str
    reason: str

    @classmethod
    def of(cls, event: dict[str, Any], reason: str) -> Quarantined:
        return cls(_printable(event["log_id"]), reason)


@dataclass
class ParsedBatch:
    events: list[dict[str, Any]] = field(default_factory=list)
    #: One short reason per entry that was skipped (not an object, no log_id, no type …).
    skipped: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)


#: Deepest nesting of an event: orjson, which encodes events for the stores, refuses deeper ones.
MAX_EVENT_DEPTH = 254


class _Unstorable:
    """Stands in for a number no store can keep, so that only its own event is quarantined."""

    def __init__(self, literal: str):
        self.literal = literal

    def __repr__(self) -> str:
        return f"<number {self.literal[:12]}… ({len(self.literal)} characters)>"


def _parse_int(literal: str) -> int | float | _Unstorable:
    """As orjson reads integers: exact within 64 bits, else as a float (and never int() on
    thousands of digits, which Python refuses over 4,300 and which costs quadratic time)."""
    if len(literal) <= 20:
        value = int(literal)
        if -(2**63) <= value < 2**64:
            return value
    return _parse_float(literal)


def _parse_float(literal: str) -> float | _Unstorable:
    value = float(literal)
    return value if math.isfinite(value) else _Unstorable(literal)


def _unstorable_constant(name: str) -> _Unstorable:
    return _Unstorable(name)  # NaN, Infinity: not JSON, but no reason to refuse the other entries


def load_json(text: str | bytes) -> Any:
    """Parse one JSON document; raise BodyError when it is not JSON or too deep to parse at all.

    orjson first (fast and strict). What it refuses may still be valid JSON with one bad value in
    it (`"\\ud800"`, a 5,000-digit number, deep nesting): the standard parser then reads it, with
    such numbers, NaN and Infinity replaced by placeholders, so that problem_of() can quarantine
    only the events that hold them.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_unstorable_constant)
    except json.JSONDecodeError:
        raise  # not one document: parse_body() tries JSON lines next
    except RecursionError:
        raise BodyError("body is nested too deeply (log events nest a few levels)") from None
    except ValueError as exc:
        raise BodyError(f"body is not JSON: {exc}") from None


def problem_of(event: Any) -> str | None:
    """Why no store could keep `event` (None: it can be stored). The stores encode with orjson,
    which refuses exactly these: lone surrogates, integers beyond 64 bits, nesting beyond
    MAX_EVENT_DEPTH (and our placeholders for numbers the parser could not keep)."""
    try:
        orjson.dumps(event)
    except TypeError:
        return _explain(event)
    return None


def _explain(event: Any) -> str:
    """Where in `event` the first unstorable value is, as a readable path (iterative: may be deep)."""
    stack: list[tuple[Any, str, int]] = [(event, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                return f"{_printable(path) or 'value'}: a lone UTF-16 surrogate (not valid Unicode)"
        elif isinstance(value, (_Unstorable, int)) and not isinstance(value, bool):
            literal = value.literal if isinstance(value, _Unstorable) else str(value)
            if isinstance(value, _Unstorable) or not -(2**63) <= value < 2**64:
                shown = literal if len(literal) <= 24 else f"{literal[:12]}… ({len(literal)} characters)"
                return f"{_printable(path) or 'value'}: number out of range ({shown})"
        elif isinstance(value, (dict, list)) and depth >= MAX_EVENT_DEPTH:
            top = path.split("[")[0].split(".")[0]
            return f"{_printable(top) or 'value'}: nested deeper than {MAX_EVENT_DEPTH} levels"
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and _has_surrogate(key):
                    return f"{_printable(path) or 'the event'}: a key with a lone UTF-16 surrogate (not valid Unicode)"
                stack.append((item, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))
    return "cannot be stored as JSON"


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


#: A key names a credential when it begins or ends with one of these words, in any case
#: (`Ticket`, `authorization`, `newPassword`, `client_secret`, `x-api-key`, `ticket_url` …), or
#: is `otp` as a word (`otp`, `otp_code`, `mfa_otp`). Begins or ends, not contains: the raw
#: check below can then test each key once, at its quotes, instead of at every character.
_KEY_WORDS = (
    "password",
    "passwd",
    "secret",
    "ticket",
    "token",
    "authorization",
    "authorisation",
    "cookie",
    "credential",
    "apikey",
    "api_key",
    "api-key",
    "verificationurl",
    "verification_url",
    "reseturl",
    "reset_url",
)
_WORDS = "|".join(_KEY_WORDS)
_CREDENTIAL_KEY = re.compile(f"^(?:{_WORDS})|(?:{_WORDS})$|^otp(?:$|[_-])|[_-]otp$", re.I)
#: What scrub() puts in place of a credential.
REMOVED = "[removed]"
#: Keys the words match that carry no credential, and that rules may read.
_NOT_CREDENTIALS = frozenset({"token_type", "password_set_date"})

#: Credentials inside free text (a `description`, a URL in any field): query parameters that
#: carry one (`?ticket=`, `&access_token=`, `?code=` …), bearer tokens and JWTs. Each pattern
#: needs one of _TEXT_TRIGGERS, so text without them is left alone at the cost of one search.
_TEXT_TRIGGERS = ("ticket=", "token=", "code=", "password=", "passwd=", "secret=", "key=", "bearer", "eyj")
_TEXT_TRIGGER = re.compile("|".join(re.escape(t) for t in _TEXT_TRIGGERS), re.I)
_TEXT_CREDENTIALS = (
    (
        re.compile(
            r"([?&#;](?:ticket|[a-z0-9_]*token|code|password|passwd|[a-z0-9_]*secret|api_?key)=)[^&#\s\"'<>]+", re.I
        ),
        r"\1[removed]",
    ),
    (re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}", re.I), r"\1 [removed]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[removed]"),
)


def _latin1_options() -> Any:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    return options


#: The raw check: one linear-time RE2 scan (no backtracking, whatever the body) for what scrub()
#: would act on. A string followed by `:` is a key (escaped quotes, which could end a string early,
#: are ruled out first); a key that begins or ends with a word (before `$`'s optional trailing
#: newline, written `\\n` in JSON), then a value scrub() would remove: not null, "", Auth0's
#: "*****" mask or exactly "[removed]" (what scrub() left). Or a free-text trigger anywhere.
#: Latin-1 mode: every byte is a character.
#: search(), not re2.Set: a Set answers "no match" when its DFA runs out of memory.
_KEY_WORD_ALTERNATIVES = b"|".join(re.escape(word.encode()) for word in _KEY_WORDS)
_REMOVABLE_VALUE = (
    rb'\s*:\s*(?:"(?:\*+[^*"]|[^*"\[]|\[(?-i:[^r]|r[^e]|re[^m]|rem[^o]|remo[^v]|remov[^e]|remove[^d]|removed[^\]]'
    rb'|removed\][^"]))|[^"\sn]|n(?:[^u]|u[^l]|ul[^l]|ull\w))'
)
_EQUALS_WORDS = tuple(t[:-1].encode() for t in _TEXT_TRIGGERS if t.endswith("="))
_RAW_CREDENTIAL = re2.compile(
    b"(?i)"
    + b"|".join(
        (
            rb'"(?:' + _KEY_WORD_ALTERNATIVES + rb'|otp[_-])[^"]*"' + _REMOVABLE_VALUE,  # begins with a word
            rb'(?:"otp|' + _KEY_WORD_ALTERNATIVES + rb'|[_-]otp)(?:\\n)?"' + _REMOVABLE_VALUE,  # ends with one
            rb"(?:" + b"|".join(_EQUALS_WORDS) + rb")=|bearer|eyj",  # free text
        )
    ),
    _latin1_options(),
)
#: Non-ASCII letters that Python's case-insensitive matching (credential_key, scrub_text) takes for
#: ASCII ones: İ ı → i, ſ → s, K (Kelvin) → k. A body holding one is always a maybe.
_FOLDS_TO_ASCII = tuple(letter.encode() for letter in "\u0130\u0131\u017f\u212a")


def may_hold_credentials(raw: bytes) -> bool:
    """Cheap test on a raw JSON body: False guarantees scrub() changes none of its events, so the
    bytes may be stored as they came. A `\\u` escape could spell a word and an escaped quote
    could hide a string's end, so both count as a maybe; other escapes make no letter or `=`."""
    if b"\\" in raw and (b"\\u" in raw or b'\\"' in raw):
        return True
    if not raw.isascii() and any(letter in raw for letter in _FOLDS_TO_ASCII):
        return True
    return _RAW_CREDENTIAL.search(raw) is not None


def credential_key(key: str) -> bool:
    """Whether a key's value is a credential, by name: any case, any word of _KEY_WORDS."""
    return _short_credential_key(key) if len(key) <= 64 else _key_names_credential(key)


def _key_names_credential(key: str) -> bool:
    return key.lower() not in _NOT_CREDENTIALS and _CREDENTIAL_KEY.search(key) is not None


_short_credential_key = lru_cache(maxsize=4096)(_key_names_credential)  # the same few keys, event after event


def _is_credential(key: object, value: Any) -> bool:
    if value in (None, "") or not isinstance(key, str) or not credential_key(key):
        return False
    # Auth0's own "*****" mask is none, and what scrub() left is none either (scrubbing scrubbed data
    # changes nothing: a stored event's context is encoded as it is, see scrubbed_json).
    return not (isinstance(value, str) and (not value.strip("*") or value == REMOVED))


def _may_hold_trigger(text: str) -> bool:
    """Whether _TEXT_TRIGGER could match: every trigger but two ends with `=`, and those two
    (bearer, eyj) have no letter that case-insensitive matching takes from outside ASCII (only
    i, k and s have such twins), so lower() finds them. Much cheaper than the regex on most text."""
    if "=" in text:
        return True
    low = text.lower()
    return "bearer" in low or "eyj" in low


def scrub_text(text: str) -> str:
    """`text` with credential-looking URL parameters, bearer tokens and JWTs replaced by
    `[removed]`; the same object when there is none (the common case: C-speed scans only)."""
    if not _may_hold_trigger(text) or _TEXT_TRIGGER.search(text) is None:
        return text
    for pattern, replacement in _TEXT_CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


def parse_body(body: bytes | str) -> ParsedBatch:
    """Parse a webhook/replay body; raise BodyError when it is not JSON at all."""
    try:  # the common case: one strict JSON document, its bytes read as they came (no decoded copy)
        entries = _entries_of(orjson.loads(body))
    except orjson.JSONDecodeError:  # a BOM, JSON lines, a value only the standard parser reads, an error
        entries = _entries_of_text(body)
    batch = ParsedBatch()
    for index, entry in enumerate(entries):
        event, reason = unwrap(entry)
        if event is None:
            batch.skipped.append(f"entry {index}: {reason}")
        else:
            batch.events.append(event)
    if problem_of(batch.events) is not None:  # rare: find the culprits one by one
        batch.events, kept = [], batch.events
        for event in kept:
            problem = problem_of(event)
            if problem is None:
                batch.events.append(event)
            else:
                batch.quarantined.append(Quarantined.of(event, problem))
    return batch


def _entries_of_text(body: bytes | str) -> list[Any]:
    """The entries of a body that orjson refused, or the BodyError saying why there are none."""
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
        return _entries_of(load_json(text))
    except json.JSONDecodeError as whole_error:
        return _json_lines(text, whole_error)


def _printable(text: str) -> str:
    """`text` safe to log and store: lone surrogates shown as \\udXXX escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _has_surrogate(text) else text


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
            entries.append(load_json(line))
        except json.JSONDecodeError as exc:
            raise BodyError(f"body is neither JSON nor JSON lines: line {number}: {exc.msg}") from None
        except BodyError as exc:
            raise BodyError(f"line {number}: {exc}") from None
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
    if not log_id.isascii() and _has_surrogate(log_id):
        return None, "log_id is not valid Unicode"
    event["log_id"] = log_id
    if not isinstance(event.get("type"), str) or not event["type"]:
        return None, "no type"
    return event, ""


def scrub(value: Any) -> Any:
    """`value` without credentials (ticket ids, reset links, passwords, tokens) at any depth:
    values of credential keys (credential_key) and credentials inside text (scrub_text).

    Copies only the containers on the way to a removed value; the input is never modified,
    and an event without credentials is returned as it is (the common, fast case).
    """
    if isinstance(value, dict):
        changed = None
        for key, item in value.items():
            if _is_credential(key, item):
                cleaned: Any = REMOVED
            elif isinstance(item, (dict, list)):
                cleaned = scrub(item)
            elif isinstance(item, str):
                cleaned = scrub_text(item)
            else:
                continue
            if cleaned is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = cleaned
        return value if changed is None else changed
    if isinstance(value, list):
        items = [scrub(v) if isinstance(v, (dict, list)) else scrub_text(v) if isinstance(v, str) else v for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, str):
        return scrub_text(value)
    return value


def scrubbed_json(value: Any) -> bytes:
    """`value` as JSON (orjson, non-JSON values as `str()`), without credentials. Walking a few KB of
    email context with scrub() costs ~50 times more than encoding it and scanning the bytes, and
    almost never finds anything: encoded as it is when `may_hold_credentials` clears the bytes,
    else scrubbed first."""
    try:
        raw = orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, which scrub() may remove
        return orjson.dumps(scrub(value), default=str)
    return orjson.dumps(scrub(value), default=str) if may_hold_credentials(raw) else raw


def user_id_of(event: dict[str, Any]) -> str | None:
    """The user an event is about; failures may carry "" (then look in details)."""
    user_id = event.get("user_id")
    if not user_id:
        details = event.get("details")
        body = details.get("body") if isinstance(details, dict) else None
        user_id = body.get("user_id") if isinstance(body, dict) else None
    return user_id if isinstance(user_id, str) and user_id else None
