"""`streamer dev` as a newcomer uses it: sample emails arrive, the link verifies, welcome follows."""

import asyncio
import contextlib
import email
import email.policy
import io
import re

import aiohttp
import pytest

from streamer import bundled
from streamer.devkit.sandbox import find_templates, run_sandbox

from conftest import REPO
from support.ports import free_port_block
from support.waiting import wait_until


def saved_mail(workdir) -> list:
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted((workdir / "mail").glob("*.eml"))
    ]


def to(message) -> str:
    return message["To"].addresses[0].addr_spec


async def test_sandbox_sends_sample_emails_and_the_verification_link_brings_the_welcome(tmp_path):
    port = free_port_block()
    out = io.StringIO()
    task = asyncio.create_task(run_sandbox(port=port, workdir=tmp_path / "dev", open_for_s=60, out=out))
    workdir = tmp_path / "dev"
    for _ in range(200):
        if len(saved_mail(workdir)) >= 7:
            break
        await asyncio.sleep(0.05)
    messages = saved_mail(workdir)
    subjects = {to(m): m["Subject"] for m in messages}
    assert "ana.silva@example.com" in subjects and "bruno.costa@example.com" in subjects
    erik = sorted(m["Subject"] for m in messages if to(m) == "erik.schmidt@example.com")
    assert erik == ["Ihr Passwort für Acme wurde geändert", "Neue Anmeldung in Ihrem Konto bei Acme"]  # scp, new device
    assert subjects["chloe.tremblay@example.com"] == "Nouvelle connexion à votre compte Acme"
    assert f"http://127.0.0.1:{port + 2}/" in out.getvalue()  # the mail page URL is printed
    assert re.search(r"Posted [1-9]\d* sample log events", out.getvalue())  # and what the daemon accepted
    ana = next(m for m in messages if to(m) == "ana.silva@example.com")
    assert ana["Content-Language"] == "fr-CA"
    text = ana.get_body(("plain",)).get_content()
    link = re.search(r"https?://\S+ticket=[^\s)]+", text).group()
    async with aiohttp.ClientSession() as session:
        async with session.get(link) as landing:  # follows the redirect to the sandbox's /verified page
            assert landing.status == 200 and str(landing.url).startswith(f"http://127.0.0.1:{port + 2}/verified")
        async with session.get(f"http://127.0.0.1:{port + 2}/") as page:
            assert "ana.silva@example.com" in await page.text()
    for _ in range(200):  # the poller reads the stand-in's `sv` log; the welcome rule fires
        welcome = [m for m in saved_mail(workdir) if to(m) == "ana.silva@example.com"]
        if len(welcome) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(welcome) == 2, [m["Subject"] for m in welcome]
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def test_templates_default_to_the_local_folder_else_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_templates() == bundled.TEMPLATES  # nothing here: the package's own
    assert (find_templates() / "verify_email" / "body.html").is_file()
    (tmp_path / "templates" / "verify_email").mkdir(parents=True)
    assert find_templates() == tmp_path / "templates"  # a full set here: the user's edits win
    assert find_templates(tmp_path / "templates") == tmp_path / "templates"


def test_a_templates_folder_that_is_not_one_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no verify_email"):
        find_templates(tmp_path)
    assert asyncio.run(run_sandbox(workdir=tmp_path / "dev", templates=tmp_path)) == 2
    assert f"{tmp_path} is not a templates folder" in capsys.readouterr().err


def test_shipped_templates_are_the_repository_ones():
    shipped = sorted(p.relative_to(bundled.TEMPLATES) for p in bundled.TEMPLATES.rglob("*") if p.is_file())
    assert shipped and shipped == sorted(
        p.relative_to(REPO / "templates") for p in (REPO / "templates").rglob("*") if p.is_file()
    )
    assert bundled.EXAMPLE_CONFIG.read_bytes() == (REPO / "config" / "streamer.example.yaml").read_bytes()


def test_a_second_streamer_dev_in_the_same_folder_says_so_in_one_line_and_exits_1(tmp_path):
    """A real second process (the CLI), while a first sandbox holds the folder."""
    import os
    import subprocess
    import sys
    import time

    first_port, second_port = free_port_block(), None
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(
        [sys.executable, "-m", "streamer", "dev", "--port", str(first_port), "--dir", "dev", "--exit-after", "60"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "dev" / "streamer.yaml").exists():  # the first one holds the folder by now
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        config_before = (tmp_path / "dev" / "streamer.yaml").read_text()
        second_port = free_port_block()
        second = subprocess.run(
            [sys.executable, "-m", "streamer", "dev", "--port", str(second_port), "--dir", "dev", "--exit-after", "1"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"error: another `streamer dev` is running in {tmp_path / 'dev'}; stop it first, or give this one its "
            "own folder with --dir"
        ]
        assert "Traceback" not in second.stderr and second.stdout == ""
        assert (tmp_path / "dev" / "streamer.yaml").read_text() == config_before  # the first one's, untouched
    finally:
        first.terminate()
        first.wait(timeout=30)


async def test_sandbox_new_device_notices_carry_a_working_unsubscribe_link(tmp_path):
    """The optional notices show List-Unsubscribe (header and mail page); the link's page and its
    POST work against the sandbox daemon, and the next new-device notice to that user is not sent."""
    port = free_port_block()
    out = io.StringIO()
    workdir = tmp_path / "dev"
    task = asyncio.create_task(run_sandbox(port=port, workdir=workdir, open_for_s=120, out=out))
    daemon, page = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 2}"

    def new_device_notices(address: str) -> list:
        return [m for m in saved_mail(workdir) if to(m) == address and m["List-Unsubscribe"] is not None]

    try:
        await wait_until(
            lambda: new_device_notices("erik.schmidt@example.com") and new_device_notices("chloe.tremblay@example.com"),
            timeout=20,
            interval=0.05,
            what="a new-device notice to Erik and to Chloé",
        )
        [notice] = new_device_notices("erik.schmidt@example.com")
        assert notice["Subject"] == "Neue Anmeldung in Ihrem Konto bei Acme"
        assert notice["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = re.fullmatch(r"<(\S+)>", str(notice["List-Unsubscribe"])).group(1)
        assert link.startswith(f"{daemon}/unsubscribe/") and link.endswith("?lang=de")
        transactional = [m for m in saved_mail(workdir) if m["List-Unsubscribe"] is None]
        assert {m["Subject"] for m in transactional} >= {"Ihr Passwort für Acme wurde geändert"}  # scp: none
        assert "List-Unsubscribe" in out.getvalue() and "Unsubscribe link" in out.getvalue()  # the welcome says so

        [eml] = [p for p in (workdir / "mail").glob("*.eml") if b"Neue Anmeldung" in p.read_bytes()]
        mail_id = eml.stem.rpartition("-")[2]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{page}/mail/{mail_id}") as response:
                shown = await response.text()
            assert response.status == 200 and "<dt>Unsubscribe</dt>" in shown
            assert f'<a href="{link.replace("&", "&amp;")}" rel="noreferrer" class="unsubscribe">' in shown
            assert "one-click" in shown
            async with session.get(link) as response:  # clicking it: the daemon's page, with a button
                assert response.status == 200 and "<form" in await response.text()
            async with session.post(link, data="List-Unsubscribe=One-Click") as response:  # the button / one-click
                assert response.status == 200

            # Erik and Chloé log in from yet another device: only Chloé (still subscribed) is told.
            token = re.search(r'webhook_token: "([^"]+)"', (workdir / "streamer.yaml").read_text()).group(1)
            events = [
                {**event, "log_id": "901" + event["log_id"][3:], "ip": "192.0.2.99", "user_agent": "Other/1.0"}
                for event in _sample_logins(workdir)
            ]
            async with session.post(
                f"{daemon}/logs/acme", json=events, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 200

            async def unsubscribed_dropped() -> float:
                async with session.get(f"{daemon}/metrics") as response:
                    metrics = await response.text()
                found = re.search(r'streamer_emails_dropped_total\{[^}]*reason="unsubscribed"[^}]*\} (\S+)', metrics)
                return float(found[1]) if found else 0.0

            await wait_until(
                lambda: len(new_device_notices("chloe.tremblay@example.com")) == 2,
                timeout=20,
                interval=0.05,
                what="Chloé's second new-device notice",
            )
            await wait_until(unsubscribed_dropped, timeout=20, interval=0.05, what="Erik's notice counted as dropped")
        assert [m["Message-ID"] for m in new_device_notices("erik.schmidt@example.com")] == [notice["Message-ID"]]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _sample_logins(workdir) -> list[dict]:
    """The sandbox's sample `s` events of Erik and Chloé (returning users on a phone)."""
    from streamer.devkit.auth0_standin import load_sample_users
    from streamer.devkit.sandbox import sample_events

    wanted = {"erik.schmidt@example.com", "chloe.tremblay@example.com"}
    return [e for e in sample_events(load_sample_users()) if e["type"] == "s" and e["user_name"] in wanted]
