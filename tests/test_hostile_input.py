"""Hostile and odd input at the edge (issue 8): nothing poisons a batch, nothing stalls the daemon.

Real parts: the daemon in-process with its aiohttp server and SQLite store, the aiosmtpd catcher,
the Auth0 stand-in.
"""

import asyncio
import contextlib
import io
import json

import aiohttp

from streamer import metrics
from streamer.auth0 import ManagementApi
from streamer.config import parse_config
from streamer.inbox import Inbox
from streamer.sources.poller import Poller

from conftest import WEBHOOK_TOKEN, config_text, sample_event


def envelope(event: dict) -> dict:
    return {"log_id": event["log_id"], "data": event}


def log_lines(daemon, name: str) -> list[dict]:
    return [entry for entry in map(json.loads, daemon.logs.getvalue().splitlines()) if entry.get("event") == name]


async def get(daemon, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}{path}") as response:
        return response.status, await response.text()


async def raw_request(daemon, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are (aiohttp's client would refuse to send some of them); read the answer."""
    host, port = daemon.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def rejected(reason: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("streamer_events_rejected_total", {"tenant": "acme", "reason": reason}) or 0.0
    )


async def test_a_lone_surrogate_quarantines_its_event_and_the_rest_of_the_batch_is_sent(
    tmp_path, standin, catcher, start_daemon
):
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    before = rejected("quarantined")
    good = sample_event("ss")
    poison = sample_event("ss", log_id="poison-1", user_id="auth0|other")
    poisoned = json.dumps(envelope(poison)).replace('"user_agent": "Mozilla', '"user_agent": "\\ud800Mozilla')
    body = f"[{json.dumps(envelope(good))}, {poisoned}]".encode()
    assert b"\\ud800" in body

    status, answer = await daemon.post(None, raw=body)

    assert status == 200, answer
    assert answer["stored"] == 1 and answer["quarantined"] == 1
    assert "poison-1: user_agent: a lone UTF-16 surrogate" in answer["quarantined_reasons"][0]
    [message] = await catcher.wait_for(1)
    assert message.to == ["ana.silva@example.com"]
    [logged] = log_lines(daemon, "event_quarantined")
    assert logged["log_id"] == "poison-1" and logged["tenant"] == "acme" and logged["source"] == "webhook"
    assert rejected("quarantined") == before + 1
    assert (await get(daemon, "/metrics"))[0] == 200
    assert (await get(daemon, "/healthz"))[0] == 200


async def test_an_odd_event_type_keeps_metrics_working_and_bounded(tmp_path, standin, catcher, start_daemon):
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))

    def ignored(label: str) -> float:  # the registry is the process's: compare with before
        return (
            metrics.REGISTRY.get_sample_value("streamer_events_ignored_total", {"tenant": "acme", "type": label}) or 0.0
        )

    other, fp = ignored("other"), ignored("fp")
    body = (
        b'[{"log_id": "t1", "type": "\\ud800"}, {"log_id": "t2", "type": "made-up-type-1"}, '
        b'{"log_id": "t3", "type": "made-up-type-2"}, {"log_id": "t4", "type": "fp"}]'
    )

    status, answer = await daemon.post(None, raw=body)

    assert status == 200 and answer["quarantined"] == 1 and answer["ignored"] == 3
    status, page = await get(daemon, "/metrics")
    assert status == 200
    assert "made-up-type" not in page
    assert ignored("other") == other + 2 and ignored("fp") == fp + 1


async def test_the_poller_quarantines_a_poison_event_and_moves_its_checkpoint_on(
    tmp_path, standin, catcher, sqlite_store
):
    config = parse_config(config_text(tmp_path, standin, catcher, poll="{enabled: true, start: oldest}"), env={})
    tenant = config.tenants["acme"]
    api = ManagementApi(tenant, name="acme")
    poller = Poller("acme", tenant.poll, api, Inbox(sqlite_store, config.listened_types()))
    standin.add_log(sample_event("ss", user_id="auth0|before"))
    poison = standin.add_log(sample_event("ss", user_id="auth0|poison", description="\ud800"))
    # Python's json writes Infinity for it, as a careless producer might: not JSON, still one event only.
    infinite = standin.add_log(sample_event("ss", user_id="auth0|infinite", details={"n": float("inf")}))
    after = standin.add_log(sample_event("ss", user_id="auth0|after"))
    before = rejected("quarantined")
    async with api:
        checkpoint, count = await poller.poll_once(None)
        assert count == 4
        checkpoint, count = await poller.poll_once(checkpoint)
    assert checkpoint == after["log_id"] == await sqlite_store.get_checkpoint("acme")
    events = await sqlite_store.claim_events(limit=10, now=10**10, lease_s=1)
    assert [e.user_id for e in events] == ["auth0|before", "auth0|after"]
    assert rejected("quarantined") == before + 2
    assert {poison["log_id"], infinite["log_id"]} <= {e["log_id"] for e in standin.logs}


async def test_an_authorization_header_that_is_not_latin_1_gets_a_clean_401(tmp_path, standin, catcher, start_daemon):
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    odd = (b"Bearer \xff\xfe\xfd", "Bearer jeton-été-😀".encode(), b"\xc3\x28", WEBHOOK_TOKEN.encode() + b"\xff")
    for value in odd:
        answer = await raw_request(
            daemon,
            b"POST /logs/acme HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + value
            + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]",
        )
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert "Traceback" not in daemon.logs.getvalue()
    assert (await daemon.post([envelope(sample_event("ss"))]))[0] == 200


async def test_deep_nesting_and_huge_numbers_get_clear_answers_not_500s(tmp_path, standin, catcher, start_daemon):
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    status, answer = await daemon.post(None, raw=b"[" * 5000 + b"]" * 5000)
    assert status == 400 and "nested too deeply" in answer["error"]
    status, answer = await daemon.post(
        None, raw=b'{"log_id": "x", "type": "ss", "details": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    )
    assert status == 400 and "nested too deeply" in answer["error"]
    huge = json.dumps([envelope(sample_event("ss"))])[:-3] + ', "n": ' + "1" * 5000 + "}}]"
    status, answer = await daemon.post(None, raw=huge.encode())
    assert status == 200 and answer["quarantined"] == 1 and "number out of range" in answer["quarantined_reasons"][0]
    status, answer = await daemon.post(
        None, raw=b'[{"log_id": "y", "type": "ss", "n": ' + b"[" * 600 + b"]" * 600 + b"}]"
    )
    assert status == 200 and "nested deeper than 254 levels" in answer["quarantined_reasons"][0]
    assert "Traceback" not in daemon.logs.getvalue()
    assert (await get(daemon, "/healthz"))[0] == 200


# --- slow clients: header and body deadlines, a bounded number of connections -----------------

SLOW = 'server: {listen: "127.0.0.1:0", header_timeout_s: 3, body_timeout_s: 3, max_connections: 400}'


async def open_slow(daemon, first_bytes: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = daemon.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(first_bytes)
    await writer.drain()
    return reader, writer


async def closed_after(reader: asyncio.StreamReader, limit: float, since: float | None = None) -> tuple[float, bytes]:
    """Seconds from `since` (default: now) until the server closed the connection, and what it
    said; failing after `limit`."""
    started = asyncio.get_running_loop().time() if since is None else since
    answer = await asyncio.wait_for(reader.read(), limit)
    return asyncio.get_running_loop().time() - started, answer


async def test_half_sent_requests_are_closed_after_their_timeouts_while_others_are_served(
    tmp_path, standin, catcher, start_daemon
):
    text = config_text(tmp_path, standin, catcher).replace('server: {listen: "127.0.0.1:0"}', SLOW)
    daemon = await start_daemon(text)
    n = 50
    opened = asyncio.get_running_loop().time()
    headers = [await open_slow(daemon, b"POST /logs/acme HTTP/1.1\r\nHost: x\r\nAuthoriz") for _ in range(n)]
    idle = [await open_slow(daemon, b"") for _ in range(n)]
    bodies = [
        await open_slow(
            daemon,
            b"POST /logs/acme HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + WEBHOOK_TOKEN.encode()
            + b'\r\nContent-Length: 100000\r\n\r\n[{"log_id"',
        )
        for _ in range(n)
    ]

    status, answer = await daemon.post([envelope(sample_event("ss"))])  # served meanwhile …
    assert status == 200 and answer["stored"] == 1
    assert (await get(daemon, "/healthz"))[0] == 200
    assert not any(reader.at_eof() for reader, _ in headers + idle + bodies)  # … while they were all open

    outcomes = await asyncio.gather(*(closed_after(reader, 20, opened) for reader, _ in headers + idle + bodies))
    assert all(answer == b"" for _, answer in outcomes[: 2 * n])  # header timeout: closed, nothing to say
    assert all(answer.startswith(b"HTTP/1.1 408") for _, answer in outcomes[2 * n :])
    assert min(seconds for seconds, _ in outcomes) >= 2.9  # closed by the 3 s deadlines, not before
    for _, writer in headers + idle + bodies:
        writer.close()
    await catcher.wait_for(1)
    assert metrics.REGISTRY.get_sample_value("streamer_http_read_timeouts_total") >= n
    assert "Traceback" not in daemon.logs.getvalue()


async def test_connections_over_the_cap_get_a_503_and_the_daemon_keeps_serving(
    tmp_path, standin, catcher, start_daemon
):
    cap = 'server: {listen: "127.0.0.1:0", header_timeout_s: 30, max_connections: 20}'
    daemon = await start_daemon(config_text(tmp_path, standin, catcher).replace('server: {listen: "127.0.0.1:0"}', cap))
    held = [await open_slow(daemon, b"GET /heal") for _ in range(20)]
    reader, writer = await open_slow(daemon, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    seconds, answer = await closed_after(reader, 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 503") and seconds < 2
    for _, slow in held:
        slow.close()
    for _ in range(100):  # until the server has seen the closes
        with contextlib.suppress(aiohttp.ClientError):
            if (await get(daemon, "/healthz"))[0] == 200:
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("still refusing connections after the held ones closed")
    assert (await daemon.post([envelope(sample_event("ss"))]))[0] == 200


async def test_healthz_says_broken_when_a_background_task_has_died(tmp_path, standin, catcher, start_daemon):
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    assert (await get(daemon, "/healthz"))[0] == 200
    [processor] = [task for task in daemon.daemon._tasks if task.get_name() == "processor"]
    processor.cancel()  # as if an exception had escaped its loop
    with contextlib.suppress(asyncio.CancelledError):
        await processor
    status, text = await get(daemon, "/healthz")
    assert status == 503 and json.loads(text) == {"status": "broken", "stopped": ["processor"]}


async def test_a_body_that_cannot_be_decoded_is_a_400_with_one_log_line_not_a_500(
    tmp_path, standin, catcher, start_daemon
):
    import logging

    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    http_log = io.StringIO()
    handler = logging.StreamHandler(http_log)
    logging.getLogger("streamer.http").addHandler(handler)
    try:
        for token in (WEBHOOK_TOKEN, "wrong"):  # read by the handler, or left unread after the 401
            answer = await raw_request(
                daemon,
                b"POST /logs/acme HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + token.encode()
                + b"\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n"
                b"Connection: close\r\n\r\nnot gzip!",
            )
            assert answer.startswith(b"HTTP/1.1 400" if token == WEBHOOK_TOKEN else b"HTTP/1.1 401"), answer[:300]
        answer = await raw_request(
            daemon,
            b"POST /logs/acme HTTP/1.1\r\nHost: x\r\nContent-Type: \x04<\xff\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n[]",
        )
        assert answer.split(b" ", 2)[1] == b"400", answer[:300]  # aiohttp's own answer, in HTTP/1.0
    finally:
        logging.getLogger("streamer.http").removeHandler(handler)
    assert "Traceback" not in http_log.getvalue() and "Traceback" not in daemon.logs.getvalue()
    assert len(log_lines(daemon, "http_bad_request")) >= 1


async def test_what_parsing_keeps_every_store_can_store_and_give_back(store):
    """The other side of quarantine: each value parse_body() lets through is stored and read back
    unchanged by both stores (SQLite, PostgreSQL), through the raw-body path and the encoded one."""
    from streamer.events import parse_body

    deep: object = "bottom"
    for _ in range(240):
        deep = [deep]
    tricky = {
        "nul": "a\u0000b",
        "emoji": "😀 e\u0301",
        "separators": "\u2028\u2029",
        "u64": 18446744073709551615,
        "i64": -9223372036854775808,
        "big": 1e308,
        "tiny": 5e-324,
        "deep": deep,
        "ключ": {"": None},
    }
    events = [{"log_id": f"tricky-{i}", "type": "ss", "user_id": f"auth0|t{i}", **tricky} for i in range(2)]
    body = json.dumps(events).encode()
    batch = parse_body(body)
    assert batch.quarantined == [] and len(batch.events) == 2

    await store.add_events("acme", batch.events[:1], now=1.0, raw=json.dumps(events[:1]).encode())
    await store.add_events("acme", batch.events[1:], now=1.0)
    claimed = await store.claim_events(limit=10, now=10**10, lease_s=60)

    assert sorted(e.log_id for e in claimed) == ["tricky-0", "tricky-1"]
    for event in claimed:
        for key, value in tricky.items():
            assert event.event[key] == value, key
