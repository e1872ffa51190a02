"""Structured JSON logs (structlog) with secrets and ticket URLs redacted before they are written.

Redaction is a processor, so it applies to every log line whatever the caller passes: keys that
name a secret are masked, and any string that looks like an Auth0 ticket link or a bearer token
is masked too.
"""

from __future__ import annotations

import logging
import re
import sys
from functools import lru_cache
from typing import Any

import structlog

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"(secret|password|token|authorization|ticket|credential|api_key|cookie)", re.I)
_SAFE_KEYS = {"ticket_kind", "token_type", "webhook_token_set"}
_SECRET_TEXT = [
    re.compile(r"https?://[^\s\"'<>]*[?&]ticket=[^\s\"'<>]*", re.I),  # Auth0 ticket links
    re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=-]{8,}", re.I),  # bearer tokens
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # JWTs
]


def redact_text(text: str) -> str:
    """Mask ticket URLs, bearer tokens and JWTs inside free text (error messages, reprs)."""
    lowered = text.lower()
    if "ticket=" not in lowered and "bearer" not in lowered and "eyj" not in lowered:
        return text  # the common case: nothing any pattern could match
    for pattern in _SECRET_TEXT:
        text = pattern.sub(lambda m: (m.group(1) + " " + REDACTED) if m.lastindex else REDACTED, text)
    return text


@lru_cache(maxsize=2048)
def _is_secret_key(key: str) -> bool:
    return key not in _SAFE_KEYS and bool(_SECRET_KEY.search(key))


def redact(value: Any, key: str | None = None) -> Any:
    if key is not None and _is_secret_key(key):
        return REDACTED if value not in (None, "", False) else value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


#: Keys structlog fills in: never masked by name (only a ticket link in their text would be).
_META_KEYS = frozenset(("event", "level", "timestamp", "logger"))
#: Values with nothing inside to redact (unless their key names a secret).
_SCALARS = frozenset((int, float, type(None)))


def _redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """In place (structlog hands each line its own dict): most values are ids and counts, so
    they are passed over with one type check."""
    for key, value in event_dict.items():
        if key in _META_KEYS:
            if isinstance(value, str):
                event_dict[key] = redact_text(value)
        elif value.__class__ not in _SCALARS or _is_secret_key(key):
            event_dict[key] = redact(value, key)
    return event_dict


def configure(level: str = "info", stream: Any = None) -> None:
    """JSON lines on stderr (or `stream`); call once at process start."""
    logging.basicConfig(level=level.upper(), stream=stream or sys.stderr, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line (PrintLogger's print() makes two: the line, then its newline).
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
