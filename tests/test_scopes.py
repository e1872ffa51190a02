"""Management API scopes: said at start, per tenant; granting a missing one needs no restart."""

import asyncio

from structlog.testing import capture_logs

from streamer import logs
from streamer.auth0 import ManagementApi
from streamer.auth0.errors import Auth0Permanent
from streamer.auth0.scopes import Need, missing_scopes, needed_scopes, report_access
from streamer.auth0.token import TokenSource
from streamer.config import TenantConfig, parse_config
from streamer.devkit.auth0_standin import SCOPES

from conftest import config_text, sample_event
from support.clock import FakeClock
from support.users import ANA
from support.waiting import awaiting, wait_until


def tenant_for(standin, secret=None) -> TenantConfig:
    return TenantConfig(
        domain=standin.domain,
        api_url=standin.base_url,
        client_id=standin.client_id,
        client_secret=secret or standin.client_secret,
    )


def scopes_of(needs: list[Need]) -> list[tuple[str, ...]]:
    return [need.any_of for need in needs]


def test_needs_follow_the_config(tmp_path, standin, catcher):
    full = parse_config(config_text(tmp_path, standin, catcher), env={})
    assert scopes_of(needed_scopes(full, "acme")) == [
        ("read:users",),
        ("create:user_tickets",),
        ("update:users_app_metadata", "update:users"),
        ("read:log_streams",),
        ("update:log_streams",),
    ]
    polling = parse_config(config_text(tmp_path, standin, catcher, poll="{enabled: true}"), env={})
    assert ("read:logs", "read:logs_users") in scopes_of(needed_scopes(polling, "acme"))
    bare = (
        config_text(tmp_path, standin, catcher)
        .split("rules:")[0]
        .replace('    webhook_token: "test-webhook-token-0123456789"\n', "")
    )
    bare += "rules:\n  - {name: welcome, on: [sv], template: welcome}\n"
    assert scopes_of(needed_scopes(parse_config(bare, env={}), "acme")) == [("read:users",)]
    ticket_only = config_text(tmp_path, standin, catcher) + "password_reset: {enabled: true}\n"
    assert ("update:users",) not in scopes_of(needed_scopes(parse_config(ticket_only, env={}), "acme"))
    confirming = config_text(tmp_path, standin, catcher) + "password_reset: {enabled: true, new_password: true}\n"
    [update] = [
        need for need in needed_scopes(parse_config(confirming, env={}), "acme") if need.any_of == ("update:users",)
    ]
    assert update.required and "new_password" in update.why


def test_one_granted_alternative_is_enough():
    needs = [Need(("update:users_app_metadata", "update:users"), "mark"), Need(("read:users",), "profiles")]
    assert missing_scopes(frozenset({"update:users", "read:users"}), needs) == []
    assert missing_scopes(frozenset({"update:users"}), needs) == [needs[1]]
    assert str(needs[0]) == "update:users_app_metadata or update:users (mark)"


async def test_start_up_report_names_each_missing_scope_and_what_it_is_for(tmp_path, standin, catcher):
    config = parse_config(config_text(tmp_path, standin, catcher), env={})
    standin.granted_scopes = "read:users read:log_streams"
    tokens = TokenSource(tenant_for(standin))
    logs.configure("info")
    try:
        with capture_logs() as lines:
            missing = await report_access("acme", tokens, needed_scopes(config, "acme"))
    finally:
        await tokens.close()
    assert scopes_of(missing) == [
        ("create:user_tickets",),
        ("update:users_app_metadata", "update:users"),
        ("update:log_streams",),
    ]
    (line,) = lines
    assert line["event"] == "auth0_scopes_missing" and line["log_level"] == "warning"
    assert line["missing"][0] == "create:user_tickets (verification and password-change links)"


async def test_refused_credentials_are_an_error_at_start_without_the_secret(standin):
    secret = "not-the-secret-Zq81"
    tokens = TokenSource(tenant_for(standin, secret=secret))
    try:
        with capture_logs() as lines:
            assert await report_access("acme", tokens, [Need(("read:users",), "profiles")]) is None
    finally:
        await tokens.close()
    assert [line["event"] for line in lines] == ["auth0_credentials_refused"]
    assert secret not in str(lines)


async def test_after_a_403_a_token_older_than_a_minute_is_fetched_again_at_most_once_a_minute(standin):
    clock = FakeClock()
    standin.granted_scopes = "read:users"
    tokens = TokenSource(tenant_for(standin), clock=clock)
    api = ManagementApi(tenant_for(standin), token_source=tokens)
    try:
        for _ in range(3):  # a young token: no new one
            try:
                await api.create_email_verification_ticket(user_id=ANA)
            except Auth0Permanent as exc:
                assert exc.status == 403
        assert tokens.fetch_count == 1
        clock.now += 61  # old enough, still not granted: one refetch
        try:
            await api.create_email_verification_ticket(user_id=ANA)
        except Auth0Permanent as exc:
            assert exc.status == 403
        assert tokens.fetch_count == 2
        standin.granted_scopes = SCOPES  # the operator ticks the scope
        clock.now += 61
        assert (await api.create_email_verification_ticket(user_id=ANA)).startswith("http")
        assert tokens.fetch_count == 3 and "create:user_tickets" in tokens.scopes
    finally:
        await api.close()
        await tokens.close()


async def test_granting_the_missing_scope_sends_the_waiting_email_without_a_restart(
    tmp_path, standin, catcher, start_daemon
):
    standin.granted_scopes = SCOPES.replace("create:user_tickets ", "")
    daemon = await start_daemon(
        config_text(tmp_path, standin, catcher).replace("max_attempts: 4", "max_attempts: 100"), scope_recheck_s=0.2
    )
    assert (await daemon.post([sample_event("ss", user_id=ANA)]))[0] == 200
    store = daemon.daemon.store

    async def failed_once():
        return [e for e in await store.list_emails(states=None) if e.state == "failed" and e.attempts >= 1]

    [email] = await wait_until(failed_once, what="the first attempt recorded as failed")
    assert ("POST", "/api/v2/tickets/email-verification", 403) in standin.calls
    assert "credentials or scopes" in email.last_error
    assert catcher.messages == []
    standin.granted_scopes = SCOPES
    (message,) = await catcher.wait_for(1, timeout=10)
    assert message.to == ["ana.silva@example.com"]
    text = daemon.logs.getvalue()
    assert '"auth0_scopes_missing"' in text and "create:user_tickets (verification" in text


async def test_sigterm_right_after_start_does_not_wait_for_a_hanging_auth0(tmp_path, standin, catcher, start_daemon):
    connections = []

    async def never_answer(reader, writer):
        connections.append(writer)
        await asyncio.sleep(3600)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        daemon = await start_daemon(
            config_text(tmp_path, standin, catcher).replace(standin.base_url, f"http://127.0.0.1:{port}")
        )
        # The start-up check and the stream watch's first look (after its first wait): both hang.
        await wait_until(lambda: connections, what="the start-up check's token request")
        await wait_until(lambda: awaiting("StreamWatch.check"), timeout=15, what="the stream watch's first look")
        started = asyncio.get_running_loop().time()
        await daemon.stop()
        assert asyncio.get_running_loop().time() - started < 3
    finally:
        server.close()
