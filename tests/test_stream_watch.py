"""The log-stream watch: a stream Auth0 suspended while streamer was down is made active again,
and the events Auth0 kept arrive; a paused stream is reported, never touched."""

import asyncio
import socket

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from streamer import logs, metrics
from streamer.auth0 import ManagementApi
from streamer.auth0.log_streams import find_stream, missing_categories
from streamer.config import TenantConfig
from streamer.sources.stream_watch import StreamWatch

from conftest import WEBHOOK_TOKEN, config_text, sample_event

URL = "https://mail.acme.test"


def stream(name="other", endpoint="https://elsewhere.test/hook", kind="http", status="active", stream_id="lst_1"):
    return {"id": stream_id, "name": name, "type": kind, "status": status, "sink": {"httpEndpoint": endpoint}}


def test_the_stream_posting_to_our_url_wins_over_the_one_named_after_us():
    ours = stream(endpoint=f"{URL}/logs/acme", stream_id="lst_url")
    named = stream(name="streamer-acme", stream_id="lst_name")
    assert find_stream([named, ours], "acme", URL) is ours
    assert find_stream([named, ours], "acme", URL + "/") is ours
    assert find_stream([named, stream()], "acme", URL) is named
    assert find_stream([named], "acme", None) is named  # no public_url: by name only
    assert find_stream([stream(endpoint=f"{URL}/logs/acme", kind="datadog"), stream()], "acme", URL) is None
    assert find_stream([stream(endpoint=f"{URL}/logs/other")], "acme", URL) is None
    assert find_stream([], "acme", URL) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
STREAMISH = st.dictionaries(
    st.sampled_from(["id", "name", "type", "status", "sink", "filters"]),
    JSON | st.just("http") | st.just("streamer-acme"),
    max_size=6,
)


@given(st.lists(STREAMISH | JSON, max_size=5))
def test_any_answer_shape_finds_a_stream_or_none_never_crashes(streams):
    """Whatever GET /log-streams returns, the watch and `check --online` get an answer, not a traceback."""
    found = find_stream(streams, "acme", URL)
    assert found is None or (found in streams and found.get("type") == "http")
    if found is not None:
        assert all(isinstance(c, str) for c in missing_categories(found, {"ss", "s", "sv"}))


class AlwaysLead:
    async def try_lead(self, name: str) -> bool:
        return True

    async def release_lead(self, name: str) -> None:
        pass


def reactivations() -> float:
    return metrics.REGISTRY.get_sample_value("streamer_log_stream_reactivations_total", {"tenant": "acme"}) or 0.0


def active_gauge() -> float | None:
    return metrics.REGISTRY.get_sample_value("streamer_log_stream_active", {"tenant": "acme"})


@pytest.fixture
async def watch(standin):
    logs.configure("info")  # the watch's info lines are part of what is tested
    tenant = TenantConfig(
        domain=standin.domain,
        api_url=standin.base_url,
        client_id=standin.client_id,
        client_secret=standin.client_secret,
    )
    async with ManagementApi(tenant, name="acme") as api:
        yield StreamWatch("acme", api, URL, AlwaysLead(), types={"ss", "s", "sv"})


def add_stream(standin, status: str) -> str:
    standin.log_streams["lst_9"] = {
        "id": "lst_9",
        "name": "streamer-acme",
        "type": "http",
        "status": status,
        "sink": {"httpEndpoint": f"{URL}/logs/acme"},
    }
    return "lst_9"


async def test_a_suspended_stream_is_made_active_again(standin, watch):
    stream_id = add_stream(standin, "suspended")
    before = reactivations()
    with capture_logs() as logs:
        assert await watch.check() is True
    assert standin.log_streams[stream_id]["status"] == "active"
    assert ("PATCH", f"/api/v2/log-streams/{stream_id}", 200) in standin.calls
    assert reactivations() == before + 1 and active_gauge() == 1
    assert [entry["event"] for entry in logs] == ["log_stream_reactivated"]


async def test_a_paused_stream_is_reported_once_and_left_alone(standin, watch):
    stream_id = add_stream(standin, "paused")
    with capture_logs() as logs:
        for _ in range(3):
            assert await watch.check() is True
    assert standin.log_streams[stream_id]["status"] == "paused"
    assert not [call for call in standin.calls if call[0] == "PATCH"]
    assert [entry["event"] for entry in logs] == ["log_stream_paused"] and active_gauge() == 0
    standin.log_streams[stream_id]["status"] = "active"  # resumed by a person
    with capture_logs() as logs:
        await watch.check()
    assert [entry["event"] for entry in logs] == ["log_stream_active"] and active_gauge() == 1


async def test_without_the_scope_the_watch_says_so_once_and_stops(standin, watch):
    standin.fail_next("/api/v2/log-streams", 403)
    with capture_logs() as logs:
        stop = asyncio.Event()
        await asyncio.wait_for(watch.run(stop, first_s=0, every_s=0.01), 5)  # returns by itself
    assert [entry["event"] for entry in logs] == ["log_stream_watch_off"]
    assert "read:log_streams" in logs[0]["hint"]


async def test_a_refused_reactivation_is_an_error_naming_the_scope(standin, watch):
    stream_id = add_stream(standin, "suspended")
    standin.fail_next(f"/api/v2/log-streams/{stream_id}", 403)
    with capture_logs() as logs:
        assert await watch.check() is True
    assert standin.log_streams[stream_id]["status"] == "suspended" and active_gauge() == 0
    assert logs[0]["event"] == "log_stream_suspended" and logs[0]["log_level"] == "error"
    assert "update:log_streams" in logs[0]["hint"]


async def test_no_stream_is_said_once_and_an_outage_is_not_fatal(standin, watch):
    with capture_logs() as logs:
        await watch.check()
        await watch.check()
        standin.fail_next("/api/v2/log-streams", 503, count=10)
        assert await watch.check() is True  # Auth0 down: try again later
    assert [entry["event"] for entry in logs] == ["log_stream_not_found", "log_stream_check_failed"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_events_auth0_kept_while_streamer_was_down_arrive_once_it_is_back(
    tmp_path, standin, catcher, start_daemon
):
    """The outage story end to end: streamer is down, Auth0's deliveries fail until it suspends
    the stream; streamer starts, re-activates it, and the signups Auth0 kept get their emails."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/logs/acme"
    async with httpx.AsyncClient(
        base_url=standin.base_url, headers={"Authorization": f"Bearer {standin.issue_token()}"}
    ) as http:
        created = await http.post(
            "/api/v2/log-streams",
            json={
                "name": "streamer-acme",
                "type": "http",
                "sink": {
                    "httpEndpoint": endpoint,
                    "httpContentFormat": "JSONARRAY",
                    "httpAuthorization": f"Bearer {WEBHOOK_TOKEN}",
                },
            },
        )
    stream_id = created.json()["id"]
    standin.stream_suspend_after = 2
    users = [standin.add_user({"email": f"outage{i}@example.com", "email_verified": False}) for i in range(5)]
    for user in users:
        standin.add_log(sample_event("ss", user_id=user["user_id"], log_id=None))
    for _ in range(200):
        if standin.log_streams[stream_id]["status"] == "suspended":
            break
        await asyncio.sleep(0.05)
    assert standin.log_streams[stream_id]["status"] == "suspended"
    assert not any(200 <= status < 300 for _, status, _ in standin.stream_deliveries)

    text = config_text(tmp_path, standin, catcher).replace(
        'server: {listen: "127.0.0.1:0"}',
        f'server: {{listen: "127.0.0.1:{port}", public_url: "http://127.0.0.1:{port}"}}',
    )
    daemon = await start_daemon(text)
    await catcher.wait_for(5, timeout=20)
    assert sorted(m.to[0] for m in catcher.messages) == sorted(u["email"] for u in users)
    assert standin.log_streams[stream_id]["status"] == "active"
    assert '"log_stream_reactivated"' in daemon.logs.getvalue()
    assert WEBHOOK_TOKEN not in daemon.logs.getvalue()  # the stream listing carries it: never logged


async def test_filters_that_leave_out_what_rules_listen_to_are_said_once(standin, watch):
    stream_id = add_stream(standin, "active")
    standin.log_streams[stream_id]["filters"] = [{"type": "category", "name": "auth.login.success"}]
    with capture_logs() as lines:
        await watch.check()
        await watch.check()
    assert [line["event"] for line in lines] == ["log_stream_filters_leave_out_events"]
    assert lines[0]["categories"] == ["auth.signup.success", "user.success"]
    assert "streamer register" in lines[0]["hint"]
    standin.log_streams[stream_id]["filters"] = []  # no filters: Auth0 sends everything
    with capture_logs() as lines:
        await watch.check()
    assert lines == []
