"""Hostile input for a real daemon: Hypothesis strategies per input class, and the target they hit.

Shared by tests/test_fuzz.py (a bounded run in CI) and bench/fuzz.py (a long run that prints the
counts). The daemon runs in-process on its own thread and event loop, with the Auth0 stand-in and
the aiosmtpd mail catcher; requests are raw bytes on a socket, so that nothing a client library
refuses to send (bytes that are not Latin-1 in a header, a bad chunked encoding) is left untried.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

from hypothesis import strategies as st

from conftest import FIXTURES, WEBHOOK_TOKEN, config_text, sample_event

RESET_RULE = """\
  - name: password-reset
    on: [password_reset_requested]
    once: {cooldown: 5m}
    ticket: {kind: password_change, result_url: "{{ tenant.vars.app_url }}/login", ttl_sec: 3600}
    template: password_change
"""
#: Short deadlines so that a half-sent request costs the run a second, not half a minute.
SERVER = 'server: {listen: "127.0.0.1:0", header_timeout_s: 2, body_timeout_s: 2, max_body_bytes: 200000}'


class Raw:
    """A JSON literal written as is (a 5,000-digit number, NaN, 1e400)."""

    def __init__(self, text: str):
        self.text = text


def to_json(value: Any) -> str:
    """JSON text of `value`; strings are escaped as json.dumps does, so lone surrogates come out
    as `\\ud800` escapes (valid JSON) exactly as a careless producer would write them."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


# --- strategies -------------------------------------------------------------------------------

_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_odd_text = st.text(st.one_of(st.characters(), _surrogates, st.sampled_from('\x00\n\r"\\<>&%{}')), max_size=12)
_numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(1, 6000).map(lambda n: Raw("9" * n)),
    st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-0")]),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _odd_text)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_odd_text, inner, max_size=4), max_leaves=16
)
_types = st.one_of(
    st.sampled_from(["ss", "s", "sv", "scp", "svr", "fp", "sapi", "password_reset_requested"]), _odd_text
)
_events = st.fixed_dictionaries(
    {"log_id": st.one_of(st.text(min_size=1, max_size=20), _odd_text, _numbers), "type": _types},
    optional={
        "user_id": st.one_of(_odd_text, st.just("auth0|65f0c0ffee0000000000a001")),
        "date": _values,
        "client_id": _values,
        "description": _values,
        "details": _values,
        "user_name": _odd_text,
        "ip": _odd_text,
        "user_agent": _odd_text,
    },
)


@st.composite
def webhook_json(draw) -> bytes:
    """Well-formed JSON in every shape Auth0 sends (array, lines, object, envelopes), odd values."""
    entries = draw(st.lists(st.one_of(_events, _values), max_size=8))
    if draw(st.booleans()):
        entries = [{"log_id": draw(_values), "data": e} if draw(st.booleans()) else e for e in entries]
    shape = draw(st.sampled_from(["array", "lines", "logs", "one"]))
    if shape == "lines":
        return "\n".join(to_json(e) for e in entries).encode()
    if shape == "logs":
        return to_json({"logs": entries}).encode()
    if shape == "one" and entries:
        return to_json(entries[0]).encode()
    return to_json(entries).encode()


@st.composite
def webhook_deep(draw) -> bytes:
    """Nesting and numbers beyond what parsers and stores take, alone or inside an event."""
    depth = draw(st.integers(1, 6000))
    inner = draw(
        st.sampled_from(
            [
                "[" * depth + "]" * depth,
                '{"a": ' * depth + "1" + "}" * depth,
                "9" * depth,
                "-" + "1" * depth,
                "0." + "5" * depth + "e99999",
            ]
        )
    )
    if draw(st.booleans()):
        return inner.encode()
    return f'[{{"log_id": "deep", "type": "ss", "details": {inner}}}, {{"log_id": "ok", "type": "s"}}]'.encode()


_FIXTURE_BODIES = [
    (FIXTURES / "webhook" / name).read_bytes()
    for name in ("body_JSONARRAY.json", "body_JSONLINES.jsonl", "body_JSONOBJECT.json")
]


@st.composite
def webhook_mutated(draw) -> bytes:
    """Auth0's own bodies with bytes changed, inserted or cut."""
    body = bytearray(draw(st.sampled_from(_FIXTURE_BODIES)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["insert", "replace", "cut", "escape"]))
        if action == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif action == "replace" and at < len(body):
            body[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del body[at : at + draw(st.integers(1, 40))]
        else:
            body[at:at] = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\u0000", b"\\", b'"', b"\xed\xa0\x80"]))
    return bytes(body)


_header_value = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_token = st.text("abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789", min_size=1, max_size=20)


def http_request(
    method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes, *, chunked: bool = False
) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: streamer.test", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:]) if part) + b"0\r\n\r\n"
    else:
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def _auth(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", value)]


GOOD_AUTH = b"Bearer " + WEBHOOK_TOKEN.encode()


@st.composite
def webhook_headers(draw) -> bytes:
    """A small valid body with odd methods, paths, Authorization and other headers."""
    body = json.dumps([sample_event("ss", user_id="auth0|nobody-fuzz")]).encode()
    auth = draw(
        st.one_of(
            st.just(GOOD_AUTH),
            st.just(WEBHOOK_TOKEN.encode()),
            _header_value,
            _header_value.map(lambda v: b"Bearer " + v),
            st.just(GOOD_AUTH + b"\xff"),
        )
    )
    headers = _auth(auth) if draw(st.integers(0, 5)) else []  # mostly with one
    headers += draw(st.lists(st.tuples(_token.map(str.encode), _header_value), max_size=4))
    if draw(st.booleans()):
        headers.append((b"Content-Type", draw(st.one_of(_header_value, st.just(b"application/json; charset=latin-1")))))
    if draw(st.booleans()):
        headers.append((b"Content-Encoding", draw(st.sampled_from([b"gzip", b"deflate", b"br", b"x-bogus"]))))
    method = draw(st.sampled_from([b"POST", b"POST", b"GET", b"PUT", b"DELETE", b"OPTIONS", b"HEAD"]))
    tenant = draw(st.one_of(st.just(b"acme"), st.binary(max_size=12).map(lambda b: quote_from_bytes(b).encode())))
    return http_request(method, b"/logs/" + tenant, headers, body, chunked=draw(st.booleans()))


@st.composite
def reset_get(draw) -> bytes:
    """The reset form's page with odd queries, languages and cookies."""
    query = draw(st.binary(max_size=60).map(lambda b: quote_from_bytes(b, safe=b"=&").encode()))
    keys = draw(st.lists(st.sampled_from([b"lang", b"client_id", b"token", b"ticket"]), max_size=3))
    query += b"".join(b"&" + key + b"=" + quote_from_bytes(draw(st.binary(max_size=20))).encode() for key in keys)
    headers = [(b"Accept-Language", draw(_header_value)), (b"Cookie", b"pr_csrf=" + draw(_header_value))]
    tenant = draw(st.sampled_from([b"acme", b"nope", b"%ff", b"acme/confirm"]))
    return http_request(b"GET", b"/password-reset/" + tenant + b"?" + query, headers, b"")


def reset_post_strategy(csrf: tuple[str, str] | None):
    """The reset form posted with odd fields; with `csrf` (cookie, field) often a genuine pair."""

    @st.composite
    def reset_post(draw) -> bytes:
        fields = []
        email = draw(
            st.one_of(
                st.emails().map(str.encode),
                st.just(b"ana.silva@example.com"),
                st.binary(max_size=40),
                _odd_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
            )
        )
        fields.append(b"email=" + quote_from_bytes(email).encode())
        genuine = csrf is not None and draw(st.booleans())
        token = csrf[1].encode() if genuine else draw(st.binary(max_size=30))
        fields.append(b"csrf_token=" + quote_from_bytes(token).encode())
        fields += [
            quote_from_bytes(k).encode() + b"=" + quote_from_bytes(v).encode()
            for k, v in draw(st.lists(st.tuples(st.binary(max_size=10), st.binary(max_size=20)), max_size=4))
        ]
        body = b"&".join(draw(st.permutations(fields)))
        if draw(st.integers(0, 4)) == 0:
            body = draw(st.binary(max_size=200))
        headers = [
            (
                b"Content-Type",
                draw(
                    st.sampled_from(
                        [b"application/x-www-form-urlencoded"] * 4
                        + [b"multipart/form-data; boundary=x", b"application/json", b"text/plain"]
                    )
                ),
            )
        ]
        cookie = csrf[0].encode() if genuine else draw(_header_value)
        headers.append((b"Cookie", b"pr_csrf=" + cookie))
        headers.append((b"Accept-Language", draw(_header_value)))
        tenant = draw(st.sampled_from([b"acme", b"nope", b"acme/confirm"]))
        return http_request(b"POST", b"/password-reset/" + tenant, headers, body, chunked=draw(st.booleans()))

    return reset_post()


CONFIG_KEYS = [
    "server",
    "store",
    "smtp",
    "delivery",
    "templates",
    "redirects",
    "tenants",
    "rules",
    "password_reset",
    "listen",
    "max_body_bytes",
    "on",
    "if",
    "once",
    "ticket",
    "template",
    "mark",
    "header_timeout_s",
    "body_timeout_s",
    "max_connections",
    "poll",
    "domain",
    "webhook_token",
]


@st.composite
def config_texts(draw, base: str) -> str:
    """YAML: the test config with lines cut, swapped or changed, or YAML-ish noise."""
    if draw(st.integers(0, 5)) == 0:
        words = st.one_of(
            st.sampled_from(
                CONFIG_KEYS
                + [
                    ":",
                    "- ",
                    "{",
                    "}",
                    "[",
                    "]",
                    "\n",
                    "  ",
                    "${X}",
                    "${",
                    "!!python/object:os.system",
                    "&a",
                    "*a",
                    "'",
                    '"',
                ]
            ),
            st.text(max_size=6),
        )
        return "".join(draw(st.lists(words, max_size=40)))
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["cut", "dup", "edit", "value", "indent"]))
        if action == "cut":
            del lines[at]
        elif action == "dup":
            lines.insert(at, lines[at])
        elif action == "indent":
            lines[at] = draw(st.sampled_from(["", " ", "    ", "\t"])) + lines[at].lstrip()
        elif action == "edit":
            line = lines[at]
            cut = draw(st.integers(0, len(line)))
            lines[at] = line[:cut] + draw(st.text(max_size=8)) + line[cut:]
        else:
            key = lines[at].split(":")[0]
            odd = st.sampled_from(
                [
                    "-1",
                    "0",
                    "1e999",
                    "null",
                    "[]",
                    "{}",
                    "yes",
                    "'x'",
                    "${NOPE}",
                    "${NOPE:-}",
                    "~",
                    ".inf",
                    "0x10",
                    '"\\ud800"',
                ]
            )
            value = draw(st.one_of(odd, st.text(max_size=8)))
            lines[at] = f"{key}: {value}"
        if not lines:
            lines = [""]
    return "\n".join(lines)


# --- the target -------------------------------------------------------------------------------


def status_class(status: int | None) -> str:
    return "no answer" if status is None else f"{status // 100}xx"


class FuzzTarget:
    """A running daemon (webhook, reset form) with the Auth0 stand-in and a real SMTP catcher."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.counts: Counter[tuple[str, str]] = Counter()
        self.examples: dict[tuple[str, str], bytes] = {}  # the first request of each (class, 5xx/no answer)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-target", daemon=True)

    def run(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def __enter__(self) -> FuzzTarget:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        from streamer import logs
        from streamer.config import load_config
        from streamer.daemon import Daemon
        from streamer.devkit.auth0_standin import Auth0StandIn, load_sample_users
        from streamer.devkit.mailcatcher import MailCatcher

        self.standin = Auth0StandIn(users=load_sample_users())
        await self.standin.start()
        self.catcher = MailCatcher()
        await self.catcher.start()
        text = config_text(self.workdir, self.standin, self.catcher, extra_rules=RESET_RULE)
        text = text.replace('server: {listen: "127.0.0.1:0"}', SERVER)
        text += 'password_reset: {enabled: true, rate_limit: {per_ip: "1000000/hour", per_address: "1000000/hour"}}\n'
        self.config_text = text
        path = self.workdir / "streamer.yaml"
        path.write_text(text)
        self.logs = io.StringIO()
        logs.configure("info", stream=self.logs)
        # aiohttp's own reports (a traceback for a request it failed) go to this stdlib logger.
        self._http_log = logging.StreamHandler(self.logs)
        logging.getLogger("streamer.http").addHandler(self._http_log)
        self.daemon = Daemon(load_config(path, env={}))
        ready = asyncio.Event()
        self.task = asyncio.create_task(self.daemon.run(install_signals=False, on_ready=lambda url: ready.set()))
        await asyncio.wait_for(ready.wait(), 20)
        host, port = self.daemon.url.removeprefix("http://").split(":")
        self.address = (host, int(port))

    async def _stop(self) -> None:
        logging.getLogger("streamer.http").removeHandler(self._http_log)
        self.daemon.stop.set()
        await asyncio.wait_for(self.task, 20)
        await self.catcher.stop()
        await self.standin.stop()

    def send(self, request: bytes, timeout: float = 15) -> tuple[int | None, bytes]:
        """Send raw bytes, read the whole answer (Connection: close); (status or None, answer)."""
        with socket.create_connection(self.address, timeout=timeout) as sock:
            try:  # no half-close: asyncio closes a connection whose peer sent EOF, before answering
                sock.sendall(request)
            except OSError:
                pass  # the server may answer (413, 400) and close before all is sent
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except ConnectionResetError:
                pass
        answer = b"".join(chunks)
        match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
        return (int(match.group(1)) if match else None), answer

    def hit(self, kind: str, request: bytes) -> int | None:
        """Send one input of class `kind`; count its answer class; return the status."""
        status, _answer = self.send(request)
        outcome = status_class(status)
        self.counts[(kind, outcome)] += 1
        if outcome in ("5xx", "no answer"):
            self.examples.setdefault((kind, outcome), request[:2000])
        return status

    def csrf_pair(self) -> tuple[str, str]:
        """A genuine (cookie, field) CSRF pair from the form's page."""
        _, answer = self.send(http_request(b"GET", b"/password-reset/acme", [], b""))
        cookie = re.search(rb"pr_csrf=([^;\r\n]+)", answer).group(1).decode()
        field = re.search(rb'name="csrf_token" value="([^"]+)"', answer).group(1).decode()
        return cookie, field

    def healthy(self) -> bool:
        status, _ = self.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return status == 200

    def normal_event_is_mailed(self, timeout: float = 20) -> bool:
        """A fresh unverified user signs up: its verification email arrives."""
        user_id = f"auth0|fuzz-after-{time.monotonic_ns()}"
        address = f"{user_id[6:]}@example.com"
        self.run(self._add_user(user_id, address))
        event = sample_event("ss", log_id=f"after-{time.monotonic_ns()}", user_id=user_id)
        status, _ = self.send(http_request(b"POST", b"/logs/acme", _auth(GOOD_AUTH), json.dumps([event]).encode()))
        if status != 200:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(address in message.to for message in list(self.catcher.messages)):
                return True
            time.sleep(0.05)
        return False

    async def _add_user(self, user_id: str, address: str) -> None:
        self.standin.add_user({"user_id": user_id, "email": address, "email_verified": False, "logins_count": 1})

    def tracebacks(self) -> list[str]:
        """Tracebacks in the daemon's log (structlog's exception field, or a plain one), a few lines each."""
        lines = self.logs.getvalue().splitlines()
        return ["\n".join(lines[max(0, i - 2) : i + 25]) for i, line in enumerate(lines) if "Traceback" in line][:5]
