"""The command line as a user runs it: exit codes, messages, and effects on the store."""

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from dns_server import dns_server

from streamer.cli import main

from conftest import FIXTURES, REPO, config_text, sample_event


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def config_file(tmp_path, standin, catcher) -> Path:
    path = tmp_path / "streamer.yaml"
    path.write_text(config_text(tmp_path, standin, catcher))
    return path


def test_help_for_every_command():
    for command in (
        [],
        ["run"],
        ["check"],
        ["replay"],
        ["outbox"],
        ["outbox", "list"],
        ["resend"],
        ["dev"],
        ["preview"],
        ["register"],
    ):
        result = run_cli(*command, "--help")
        assert result.returncode == 0 and "usage: streamer" in result.stdout


def test_usage_error_exits_2():
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("replay").returncode == 2  # --tenant and FILE are required


def test_example_config_passes_check(tmp_path):
    """As the README says: copy it to streamer.yaml beside templates/, set the env, check."""
    (tmp_path / "streamer.yaml").write_text((REPO / "config/streamer.example.yaml").read_text())
    (tmp_path / "templates").symlink_to(REPO / "templates")
    env = {"ACME_CLIENT_ID": "x", "ACME_CLIENT_SECRET": "y", "ACME_WEBHOOK_TOKEN": "z", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "streamer", "check", "-c", str(tmp_path / "streamer.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("ok:")


def test_check_reports_problems_with_file_line_and_exits_1(tmp_path, config_file):
    config_file.write_text(
        config_file.read_text()
        .replace("max_attempts: 4", "max_attempts: lots")
        .replace('["app.acme.test"]', '["elsewhere.test"]')
    )
    result = run_cli("check", "-c", str(config_file))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = next(n for n, text in enumerate(config_file.read_text().splitlines(), 1) if "max_attempts: lots" in text)
    assert f"{config_file}:{line}: delivery.max_attempts:" in result.stderr


def test_check_refuses_result_url_outside_allowed_hosts_and_run_refuses_to_start(tmp_path, config_file):
    config_file.write_text(config_file.read_text().replace('["app.acme.test"]', '["elsewhere.test"]'))
    result = run_cli("check", "-c", str(config_file))
    assert result.returncode == 1
    assert "host 'app.acme.test' is not in redirects.allowed_hosts" in result.stdout
    started = run_cli("run", "-c", str(config_file))
    assert started.returncode == 1 and "redirects.allowed_hosts" in started.stderr


def test_check_reports_a_broken_template_with_file_and_line(tmp_path, config_file):
    templates = tmp_path / "templates"
    subprocess.run(["cp", "-r", str(REPO / "templates"), str(templates)], check=True)
    (templates / "welcome" / "subject.fr.txt").write_text("Bienvenue {{ user.name \n")
    config_file.write_text(config_file.read_text().replace(f'dir: "{REPO / "templates"}"', f'dir: "{templates}"'))
    result = run_cli("check", "-c", str(config_file))
    assert result.returncode == 1
    assert f"{templates}/welcome/subject.fr.txt:1" in result.stdout


def test_missing_config_is_a_clear_error(tmp_path):
    result = run_cli("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "config file not found" in result.stderr and "Traceback" not in result.stderr


def test_replay_stores_each_event_once(tmp_path, config_file, capsys):
    body = FIXTURES / "webhook" / "body_JSONLINES.jsonl"
    assert main(["replay", "-c", str(config_file), "--tenant", "acme", str(body)]) == 0
    first = capsys.readouterr().out
    assert "3 stored" in first and "1 ignored" in first  # ss, s, sv stored; svr has no rule
    assert (
        main(
            [
                "replay",
                "-c",
                str(config_file),
                "--tenant",
                "acme",
                str(body),
                str(FIXTURES / "mgmt" / "GET_logs_checkpoint_page.json"),
            ]
        )
        == 0
    )
    assert "0 stored, 6 already in the inbox" in capsys.readouterr().out


def test_replay_quarantines_an_event_no_store_can_keep_and_stores_the_rest(tmp_path, config_file, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"log_id": "poison", "type": "ss", "user_id": "auth0|x", "user_agent": "\\ud800"}\n'
        '{"log_id": "fine", "type": "ss", "user_id": "auth0|y"}\n'
    )
    assert main(["replay", "-c", str(config_file), "--tenant", "acme", str(events)]) == 0
    out, err = capsys.readouterr()
    assert "1 stored" in out
    assert "events.jsonl: poison: quarantined: user_agent: a lone UTF-16 surrogate" in err


def test_replay_bad_input_is_a_clear_error(tmp_path, config_file, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert main(["replay", "-c", str(config_file), "--tenant", "acme", str(bad)]) == 1
    assert "bad.json: body is not JSON" in capsys.readouterr().err
    assert main(["replay", "-c", str(config_file), "--tenant", "nobody", str(bad)]) == 1
    assert main(["replay", "-c", str(config_file), "--tenant", "acme", str(tmp_path / "missing.json")]) == 1


async def test_outbox_list_show_retry_cancel(tmp_path, config_file, capsys):
    from streamer.outbox import DueEmail
    from streamer.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "streamer.db")
    await store.open()
    emails = [
        DueEmail(
            tenant="acme",
            rule="verify-email",
            template="verify_email",
            once_key=f"k{i}",
            cooldown_s=None,
            key=f"k{i}",
            user_id=f"auth0|{i}",
            log_id=f"L{i}",
            recipient=f"user{i}@example.com",
            locale="en",
            accepted_at=0,
            context={"user": {}},
        )
        for i in range(3)
    ]
    await store.settle_events([], emails, now=1000)
    claimed = await store.claim_emails(limit=3, now=1000, lease_s=60)
    await store.mark_dead(claimed[0].id, error="550 5.1.1 unknown user", now=1001)
    await store.mark_sent(claimed[1].id, now=1001)
    await store.mark_failed(claimed[2].id, error="451 later", next_attempt_at=5000, now=1001)
    await store.close()
    dead, sent, failed = (c.id for c in claimed)

    def cli(*args):
        code = asyncio.get_running_loop().run_in_executor(None, main, list(args))
        return code

    assert await cli("outbox", "list", "-c", str(config_file)) == 0
    listing = capsys.readouterr().out
    assert "550 5.1.1 unknown user" in listing and "user1@example.com" not in listing  # sent is hidden
    assert await cli("outbox", "list", "--all", "--json", "-c", str(config_file)) == 0
    assert {e["state"] for e in json.loads(capsys.readouterr().out)} == {"dead", "sent", "failed"}
    assert await cli("outbox", "show", str(dead), "-c", str(config_file)) == 0
    assert json.loads(capsys.readouterr().out)["last_error"] == "550 5.1.1 unknown user"
    assert await cli("outbox", "retry", str(dead), "-c", str(config_file)) == 0
    assert await cli("outbox", "cancel", str(failed), "-c", str(config_file)) == 0
    assert await cli("outbox", "retry", str(sent), "-c", str(config_file)) == 1
    assert "it is sent" in capsys.readouterr().err
    assert await cli("outbox", "show", "999", "-c", str(config_file)) == 1
    assert await cli("outbox", "list", "--state", "queued", "--json", "-c", str(config_file)) == 0
    [queued] = json.loads(capsys.readouterr().out)
    assert queued["id"] == dead and queued["attempts"] == 0
    # Support: "did user1 get it?" shows the sent email without --all; --user works alike.
    assert await cli("outbox", "list", "--to", "USER1@example.com", "--json", "-c", str(config_file)) == 0
    assert [(e["id"], e["state"]) for e in json.loads(capsys.readouterr().out)] == [(sent, "sent")]
    assert await cli("outbox", "list", "--user", "auth0|2", "--json", "-c", str(config_file)) == 0
    assert [e["id"] for e in json.loads(capsys.readouterr().out)] == [failed]
    assert await cli("outbox", "list", "--to", "user1@example.com", "-c", str(config_file)) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert "SENT (UTC)" in header and "1970-01-01 00:16:41" in row  # when it left (mark_sent at 1001)


def test_run_refuses_to_start_with_one_clear_line(tmp_path, config_file):
    """Store unreachable, port taken, a second run on the same SQLite file: exit 1, no traceback."""
    import socket

    text = config_file.read_text()
    config_file.write_text(
        text.replace(f'store: "sqlite:///{tmp_path}/streamer.db"', 'store: "postgresql://u:hunter2@127.0.0.1:1/db"')
    )
    result = run_cli("run", "-c", str(config_file))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot open the store" in result.stderr and "hunter2" not in result.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config_file.write_text(text.replace('listen: "127.0.0.1:0"', f'listen: "127.0.0.1:{port}"'))
        result = run_cli("run", "-c", str(config_file))
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_second_run_on_the_same_sqlite_store_is_refused(tmp_path, config_file):
    from support.ports import free_port
    from support.processes import start_run

    port = free_port()
    config_file.write_text(config_file.read_text().replace('listen: "127.0.0.1:0"', f'listen: "127.0.0.1:{port}"'))
    first = await start_run(config_file, port)
    try:
        second = await asyncio.to_thread(run_cli, "run", "-c", str(config_file))
        assert second.returncode == 1 and "another `streamer run` is using" in second.stderr
    finally:
        first.terminate()
        await first.wait()


def test_check_warns_when_the_reset_form_has_no_rule(tmp_path, config_file):
    config_file.write_text(config_file.read_text() + "password_reset: {enabled: true}\n")
    result = run_cli("check", "-c", str(config_file))
    assert result.returncode == 0
    assert "no rule listens to password_reset_requested" in result.stdout


async def test_check_online_tries_smtp_credentials_scopes_and_the_log_stream(config_file, standin, capsys):
    config_file.write_text(
        config_file.read_text().replace(
            'server: {listen: "127.0.0.1:0"}', 'server: {listen: "127.0.0.1:0", public_url: "https://mail.acme.test"}'
        )
    )
    standin.log_streams["lst_1"] = {
        "id": "lst_1",
        "name": "streamer-acme",
        "type": "http",
        "status": "suspended",
        "sink": {"httpEndpoint": "https://mail.acme.test/logs/acme"},
        "filters": [{"type": "category", "name": "auth.signup.success"}, {"type": "category", "name": "user.success"}],
    }
    records = {"acme.test": ["v=spf1 include:relay.test -all"]}
    with dns_server(records) as dns_port:
        assert (
            await asyncio.to_thread(
                main, ["check", "--online", "-c", str(config_file), "--dns-server", f"127.0.0.1:{dns_port}"]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "warning: DKIM acme.test: streamer does not sign (no dkim keys)" in out
    [spf] = [line for line in out.splitlines() if line.startswith("ok: SPF acme.test (")]
    assert "MAIL FROM is smtp.from" in spf and spf.endswith(
        ': "v=spf1 include:relay.test -all" (check that it covers your SMTP relay)'
    )
    assert "warning: DMARC acme.test: no DMARC record at _dmarc.acme.test" in out
    assert "ok: SMTP 127.0.0.1:" in out and "the server answers" in out
    assert "ok: Auth0 acme (acme-test.us.auth0.com): credentials accepted, 5 of 5 needed scopes granted" in out
    assert "warning: log stream lst_1 of acme → https://mail.acme.test/logs/acme: suspended by Auth0" in out
    assert "its filters leave out auth.login.success, which rules listen to" in out  # the `s` of both rules
    assert standin.log_streams["lst_1"]["status"] == "suspended"  # looked at, not changed
    assert not [call for call in standin.calls if call[0] != "GET" and call[1] != "/oauth/token"]


async def test_check_online_fails_on_a_dead_smtp_server_and_a_missing_scope(tmp_path, standin, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]

    class Closed:
        port = closed_port

    path = tmp_path / "streamer.yaml"
    path.write_text(config_text(tmp_path, standin, Closed()))
    standin.granted_scopes = "read:users update:users"
    with dns_server({}) as dns_port:
        assert (
            await asyncio.to_thread(
                main, ["check", "--online", "-c", str(path), "--dns-server", f"127.0.0.1:{dns_port}"]
            )
            == 1
        )
    captured = capsys.readouterr()
    assert f"error: SMTP 127.0.0.1:{closed_port} (none)" in captured.out
    assert (
        "error: Auth0 acme (acme-test.us.auth0.com): missing scope create:user_tickets (verification and "
        "password-change links)"
    ) in captured.out
    assert "warning: Auth0 acme (acme-test.us.auth0.com): missing scope read:log_streams" in captured.out
    assert "2 error(s)" in captured.err and "Traceback" not in captured.err


async def test_outbox_retry_and_cancel_by_state_tenant_and_rule(tmp_path, config_file, capsys):
    """After an SMTP outage: every dead email of one rule queued again in one command."""
    from streamer.outbox import DueEmail, EmailState
    from streamer.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "streamer.db")
    await store.open()
    rules = ["welcome", "welcome", "welcome", "verify-email"]
    await store.settle_events(
        [],
        [
            DueEmail(
                tenant="acme",
                rule=rule,
                template=rule,
                once_key=f"k{i}",
                cooldown_s=None,
                key=f"k{i}",
                user_id=f"auth0|{i}",
                log_id=f"L{i}",
                recipient=f"user{i}@example.com",
                locale="en",
                accepted_at=0,
                context={"user": {}},
            )
            for i, rule in enumerate(rules)
        ],
        now=1000,
    )
    claimed = await store.claim_emails(limit=4, now=1000, lease_s=60)
    for email in claimed:
        await store.mark_dead(email.id, error="421 outage", now=1001)
    await store.close()

    async def cli(*args):
        return await asyncio.to_thread(main, ["outbox", *args, "-c", str(config_file)])

    assert await cli("retry", "--state", "dead", "--rule", "welcome") == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "3 of 3 dead emails queued again"
    assert await cli("retry", "--state", "dead", "--rule", "welcome") == 0
    assert "no dead emails of rule welcome" in capsys.readouterr().out
    assert await cli("cancel", "--state", "queued", "--tenant", "acme") == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "3 of 3 queued emails cancelled"
    store = SqliteStore(tmp_path / "streamer.db")
    await store.open()
    try:
        states = {e.rule: set() for e in claimed}
        for email in await store.list_emails(states=None):
            states[email.rule].add(email.state)
    finally:
        await store.close()
    assert states == {"welcome": {EmailState.CANCELLED}, "verify-email": {EmailState.DEAD}}
    assert await cli("retry") == 2 and await cli("retry", "1", "--state", "dead") == 2
    assert await cli("cancel", "--rule", "welcome") == 2
    assert "--tenant and --rule narrow --state" in capsys.readouterr().err


async def test_resend_queues_the_rules_email_again_with_a_fresh_link(tmp_path, standin, catcher, start_daemon, capsys):
    """Support's "send it again": past the rule's once, through the running daemon, a new ticket."""
    from support.mail import ticket_link

    ana, bruno = "auth0|65f0c0ffee0000000000a001", "google-oauth2|104203384937812345678"  # unverified, verified
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    assert (await daemon.post([sample_event("ss", user_id=ana)]))[0] == 200
    [first] = await catcher.wait_for(1)

    def resend(*args: str) -> int:
        return main(["resend", "-c", str(daemon.config_path), "--tenant", "acme", *args])

    assert await asyncio.to_thread(resend, "--rule", "verify-email", "--user", ana) == 0
    assert "queued email" in capsys.readouterr().out
    second = (await catcher.wait_for(2))[1]
    assert second.to == first.to == ["ana.silva@example.com"]
    assert second.parsed["Content-Language"] == "fr-CA"  # her language, as the first
    assert ticket_link(second) != ticket_link(first)  # a new ticket, made at send time

    assert await asyncio.to_thread(resend, "--rule", "verify-email", "--user", bruno) == 1
    assert "add --force" in capsys.readouterr().err  # verified: the rule's if says no
    assert await asyncio.to_thread(resend, "--rule", "verify-email", "--user", "auth0|nobody") == 1
    assert "user not found in Auth0" in capsys.readouterr().err
    assert await asyncio.to_thread(resend, "--rule", "nope", "--user", ana) == 1
    assert "the config has: verify-email, welcome" in capsys.readouterr().err
    assert await asyncio.to_thread(resend, "--rule", "welcome", "--to", "Bruno.Costa@example.com", "--force") == 0
    assert (await catcher.wait_for(3))[2].to == ["bruno.costa@example.com"]  # found by address
    assert await asyncio.to_thread(resend, "--rule", "welcome", "--to", "nobody@example.com") == 1
    assert "no Auth0 user has the address nobody@example.com" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # --user or --to
        await asyncio.to_thread(resend, "--rule", "welcome")
    assert usage.value.code == 2


def test_check_online_refuses_a_dns_server_that_is_not_an_address(config_file, capsys):
    assert main(["check", "--online", "-c", str(config_file), "--dns-server", "dns.example"]) == 2
    assert "--dns-server: 'dns.example' is not an IP address" in capsys.readouterr().err


NEW_DEVICE_WITH_A_BROKEN_KEY = """\
  - name: new-device
    on: [s]
    once: {key: "{{ event.ip | int // 0 }}"}
    template: new_device
"""


def test_check_evaluates_every_rules_if_and_result_url_on_sample_events_with_file_line(tmp_path, config_file):
    """A rule whose `if` fails on every event compiles fine and would never send: check runs it."""
    text = config_file.read_text().replace(
        'if: "not user.email_verified"', '''if: "not user.email_verified and user.logins_count + 'x'"'''
    )
    text = text.replace("/verified?lang={{ locale }}", "/verified?lang={{ tenant.vars.lang }}")
    text += NEW_DEVICE_WITH_A_BROKEN_KEY
    config_file.write_text(text)
    lines = text.splitlines()

    def line_of(start: str) -> int:
        return next(number for number, line in enumerate(lines, 1) if line.strip().startswith(start))

    result = run_cli("check", "-c", str(config_file))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = result.stderr + result.stdout
    if_line = line_of('if: "not user')
    assert (
        f"{config_file}:{if_line}: rules.0 (verify-email).if: fails on the sample context "
        "for event type s, ss: `if` failed: TypeError"
    ) in errors
    assert (
        f"{config_file}:{line_of('ticket:')}: rules.0 (verify-email).ticket.result_url: fails on the sample "
        "context for event type s, ss: ticket.result_url failed: 'dict object' has no attribute 'lang'"
    ) in errors
    assert (
        f"{config_file}:{line_of('once: {key')}: rules.2 (new-device).once.key: fails on the sample context "
        "for event type s: ZeroDivisionError"
    ) in errors
    assert "rules.1 (welcome)" not in errors  # a sound rule is not reported
    started = run_cli("run", "-c", str(config_file))
    assert started.returncode == 1 and "rules.0 (verify-email).if: fails" in started.stderr


def test_rule_evaluation_in_check_uses_a_sample_event_of_each_type_it_listens_to():
    """A login rule may read what real logins carry (location_info), whatever its template."""
    from streamer.check import evaluate_rules
    from streamer.config import parse_config
    from streamer.rules import compile_rules

    config = parse_config(
        """\
smtp: {from: "Acme <no-reply@acme.test>"}
tenants: {acme: {domain: acme.auth0.com, client_id: x, client_secret: y}}
rules:
  - name: montreal-welcome
    on: [s, ss]
    if: "event.type == 'ss' or event.location_info.city_name.startswith('Mont')"
    once: per_user
    template: welcome
  - name: broken
    on: [scp]
    if: "user.logins_count / 0"
    once: per_user
    template: password_changed
""",
        source="rules.yaml",
        env={},
    )
    assert evaluate_rules(config, compile_rules(config.rules)) == [
        "rules.yaml:11: rules.1 (broken).if: fails on the sample context for event type scp: `if` failed: "
        "ZeroDivisionError: division by zero"
    ]
