"""Plain text for templates: safe display strings, the name to greet a user by, their device."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Unicode categories Cc (controls), Cs (surrogates), Zl and Zp (line and paragraph separators),
#: spelled out: one regex pass instead of a category lookup per character.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def clean_text(value: str) -> str:
    """Drop control characters and line/paragraph separators; collapse runs of whitespace."""
    return " ".join(_CONTROL.sub(" ", value).split())


def greeting_name(user: Mapping[str, Any] | None) -> str:
    """The name to greet the user by, or "" for a neutral greeting.

    given_name, then name, then nickname (also from user_metadata, where signup forms put them).
    Auth0 fills `name` with the email and `nickname` with its local part for database users:
    those are not names, and an address or a link in a greeting is a phishing vector, so they
    are skipped; over-long values are too.
    """
    if not isinstance(user, Mapping):
        return ""
    metadata = user.get("user_metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    email = user.get("email") if isinstance(user.get("email"), str) else ""
    local_part = email.partition("@")[0].casefold()
    candidates = (
        ("given_name", user.get("given_name")), ("given_name", metadata.get("given_name")),
        ("given_name", metadata.get("first_name")), ("name", user.get("name")),
        ("name", metadata.get("name")), ("nickname", user.get("nickname")),
    )
    for key, value in candidates:
        if not isinstance(value, str):
            continue
        text = clean_text(value)
        if not text or len(text) > 64 or "@" in text or "://" in text or "www." in text.casefold():
            continue
        if key == "nickname" and text.casefold() == local_part:
            continue
        return text
    return ""


_BROWSERS = [  # order matters: Edge and Opera also say "Chrome", Chrome also says "Safari"
    (re.compile(r"\bEdg(?:e|A|iOS)?/"), "Microsoft Edge"),
    (re.compile(r"\b(?:OPR|Opera)/"), "Opera"),
    (re.compile(r"\bSamsungBrowser/"), "Samsung Internet"),
    (re.compile(r"\b(?:Firefox|FxiOS)/"), "Firefox"),
    (re.compile(r"\b(?:CriOS|Chrome|Chromium)/"), "Chrome"),
    (re.compile(r"\bVersion/[\d.]+.*\bSafari/"), "Safari"),
]
_SYSTEMS = [
    (re.compile(r"\biPhone\b"), "iPhone"),
    (re.compile(r"\biPad\b"), "iPad"),
    (re.compile(r"\bAndroid\b"), "Android"),
    (re.compile(r"\bCrOS\b"), "ChromeOS"),
    (re.compile(r"\bWindows\b"), "Windows"),
    (re.compile(r"\b(?:Mac OS X|Macintosh|macOS)\b"), "macOS"),
    (re.compile(r"\biOS\b"), "iOS"),
    (re.compile(r"\bLinux\b"), "Linux"),
]
_ANDROID_MODEL = re.compile(r"Android [\d.]+; ([^;)]{2,40}?)(?: Build/[^;)]*)?[;)]")
_SHORT_UA = re.compile(r"^([A-Za-z][A-Za-z ]{1,30}?) [\d.]+ / (.+)$")   # Auth0: "Chrome 128.0.0 / Mac OS X 10.15.7"


def describe_device(user_agent: Any) -> str:
    """A readable device from a User-Agent: `Chrome (Android, Pixel 8)`, `Safari (macOS)`, or ""."""
    if not isinstance(user_agent, str) or not user_agent.strip() or user_agent.strip() == "unknown":
        return ""
    ua = clean_text(user_agent)[:512]
    short = _SHORT_UA.match(ua)
    browser = next((label for pattern, label in _BROWSERS if pattern.search(ua)), None)
    if short and browser is None:
        browser = short.group(1).strip()
    system = next((label for pattern, label in _SYSTEMS if pattern.search(short.group(2) if short else ua)), None)
    details = [system] if system else []
    model = _ANDROID_MODEL.search(ua)
    if system == "Android" and model and model.group(1).strip() not in ("K", "Linux"):
        details.append(model.group(1).strip())
    if browser and details:
        return f"{browser} ({', '.join(details)})"
    return browser or ", ".join(details)
