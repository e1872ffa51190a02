"""`password_reset.new_password: true` end to end: the form, the confirmation email, the link's
pages, Auth0's PATCH, the `scp` notice. Real daemon over real HTTP, real SQLite, the SMTP
catcher, the Auth0 stand-in (polled, so the `scp` it logs comes back as an event)."""

from __future__ import annotations

import re
import signal
import sqlite3
from html import unescape
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from browser import chromium
from conftest import config_text
from support.ports import free_port
from support.processes import start_run
from support.waiting import wait_until

ANA = "auth0|65f0c0ffee0000000000a001"
ANA_EMAIL = "ana.silva@example.com"
NEW_PASSWORD = "Tr0ub4dor&3-Zebra-Quartz-91"
OTHER_PASSWORD = "Correct-Horse-Battery-77"

RULES = """\
  - name: password-reset
    on: [password_reset_requested]
    once: per_event
    ticket: {kind: password_change, result_url: "{{ tenant.vars.app_url }}/login", ttl_sec: 3600}
    template: password_change
  - name: password-changed
    on: [scp]
    once: per_event
    template: password_changed
"""


def confirm_config(tmp_path, standin, catcher, port: int) -> str:
    text = config_text(
        tmp_path, standin, catcher, extra_rules=RULES, poll="{enabled: true, interval_s: 0.2, start: now}"
    )
    text = text.replace(
        'server: {listen: "127.0.0.1:0"}',
        f'server: {{listen: "127.0.0.1:{port}", public_url: "http://127.0.0.1:{port}"}}',
    )
    return text + (
        "password_reset: {enabled: true, new_password: true, min_length: 10, "
        'rate_limit: {per_ip: "1000/hour", per_address: "1000/hour"}}\n'
    )


@pytest.fixture
async def daemon(tmp_path, standin, catcher, start_daemon):
    port = free_port()
    running = await start_daemon(confirm_config(tmp_path, standin, catcher, port))
    running.base = f"http://127.0.0.1:{port}"
    return running


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} field in the page"
    return unescape(match.group(1))


async def ask_for_reset(base: str, password: str, email: str = ANA_EMAIL) -> None:
    async with session() as http:
        async with http.get(f"{base}/password-reset/acme") as response:
            token = hidden(await response.text(), "csrf_token")
        async with http.post(
            f"{base}/password-reset/acme",
            data={"csrf_token": token, "email": email, "password": password, "password_confirm": password},
        ) as response:
            assert response.status == 200


def confirm_link(message) -> str:
    [link] = [link for link in message.links if "/confirm?" in link]
    return link


async def open_link(link: str) -> tuple[int, str]:
    async with session() as http, http.get(link) as response:
        return response.status, await response.text()


async def press_confirm(link: str, http: aiohttp.ClientSession | None = None) -> tuple[int, str]:
    """GET the link, then POST its form (cookie + hidden fields), like the browser does."""
    own = http is None
    http = http or session()
    try:
        async with http.get(link) as response:
            assert response.status == 200, await response.text()
            page = await response.text()
        action = re.search(r'<form method="post" action="([^"]+)"', page).group(1)
        split = urlsplit(link)
        async with http.post(
            f"{split.scheme}://{split.netloc}{unescape(action)}",
            data={"csrf_token": hidden(page, "csrf_token"), "ticket": hidden(page, "ticket")},
        ) as response:
            return response.status, await response.text()
    finally:
        if own:
            await http.close()


async def post_ticket(link: str, ticket: str) -> tuple[int, str]:
    """A POST with a valid CSRF pair but the ticket given (to replay a used or altered link)."""
    async with session() as http:
        base = link.split("/password-reset/")[0]
        async with http.get(f"{base}/password-reset/acme") as response:
            token = hidden(await response.text(), "csrf_token")
        async with http.post(
            f"{base}/password-reset/acme/confirm?lang=fr", data={"csrf_token": token, "ticket": ticket}
        ) as response:
            return response.status, await response.text()


def ticket_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["ticket"][0]


def confirmations(outcome: str) -> float:
    from streamer.metrics import REGISTRY

    value = REGISTRY.get_sample_value("streamer_password_confirmations_total", {"tenant": "acme", "outcome": outcome})
    return value or 0.0


# --- the whole flow, in a browser ------------------------------------------------------------------


async def test_a_user_confirms_the_new_password_from_the_email_in_a_browser(daemon, standin, catcher, tmp_path):
    async with chromium() as browser:
        page = await (await browser.new_context(locale="fr-CA", java_script_enabled=False)).new_page()
        await page.goto(f"{daemon.base}/password-reset/acme")
        await page.get_by_label("Adresse e-mail").fill(ANA_EMAIL)
        await page.get_by_label("Nouveau mot de passe", exact=True).fill(NEW_PASSWORD)
        await page.get_by_label("Confirmez le nouveau mot de passe").fill(NEW_PASSWORD)
        await page.get_by_role("button", name="Envoyer le lien de réinitialisation").click()
        await page.get_by_role("heading", name="Consultez votre messagerie").wait_for()

        [email] = await catcher.wait_for(1)
        assert email.subject.startswith("Confirmez votre nouveau mot de passe")  # Ana reads French
        link = confirm_link(email)
        assert link.startswith(f"{daemon.base}/password-reset/acme/confirm?ticket=") and "lang=fr" in link
        assert not any("/u/reset-verify" in href for href in email.links)  # no Auth0 ticket

        await page.goto(link)  # what a mail scanner does too: changes nothing
        await page.get_by_role("heading", name="Confirmez votre nouveau mot de passe").wait_for()
        assert standin.password_changes == [] and not standin.password_matches(ANA, NEW_PASSWORD)
        await page.get_by_role("button", name="Définir mon nouveau mot de passe").click()
        await page.get_by_role("heading", name="Votre mot de passe a été modifié").wait_for()
        assert standin.password_matches(ANA, NEW_PASSWORD)
        assert standin.password_changes == [{"user_id": ANA, "connection": "Username-Password-Authentication"}]

        # Auth0 logs `scp`; the poller brings it back and the "password changed" notice goes out.
        messages = await catcher.wait_for(2, timeout=15)
        assert "mot de passe" in messages[1].subject and confirm_link(email) not in (messages[1].html or "")

        await page.goto(link)  # the link worked once
        await page.get_by_role("heading", name="Ce lien a déjà été utilisé").wait_for()
        assert await page.get_by_role("link", name="Remplir de nouveau le formulaire").count() == 1

    # The password and the link's key are in no file, no log line, no store row.
    await daemon.stop()
    key = ticket_of(link).split(".")[1]
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name.startswith("streamer.db") for path in files)
    for path in files:
        data = path.read_bytes()
        assert NEW_PASSWORD.encode() not in data and key.encode() not in data, path
    logs = daemon.logs.getvalue()
    assert "password_confirmed" in logs and "password_confirm_link_issued" in logs
    assert NEW_PASSWORD not in logs and key not in logs and ticket_of(link) not in logs
    with sqlite3.connect(tmp_path / "streamer.db") as db:
        rows = db.execute("SELECT state, sealed FROM pending_passwords").fetchall()
    assert rows == [("used", None)]


# --- over plain HTTP ------------------------------------------------------------------------------


async def test_a_get_changes_nothing_and_the_link_works_once(daemon, standin, catcher, tmp_path):
    await ask_for_reset(daemon.base, NEW_PASSWORD)
    link = confirm_link((await catcher.wait_for(1))[0])
    for _ in range(3):
        status, html = await open_link(link)
        assert status == 200 and "Définir mon nouveau mot de passe" in html
    assert standin.password_changes == []
    with sqlite3.connect(tmp_path / "streamer.db") as db:
        assert db.execute("SELECT state FROM pending_passwords").fetchall() == [("pending",)]
    changed_before, used_before = confirmations("changed"), confirmations("used")
    status, html = await press_confirm(link)
    assert status == 200 and "Votre mot de passe a été modifié" in html
    status, html = await post_ticket(link, ticket_of(link))  # replayed POST
    assert status == 410 and "Ce lien a déjà été utilisé" in html
    status, html = await open_link(link)
    assert status == 410 and "/password-reset/acme" in html
    assert len(standin.password_changes) == 1
    assert confirmations("changed") == changed_before + 1 and confirmations("used") == used_before + 1


async def test_an_altered_or_unknown_link_is_refused_without_spending_the_real_one(daemon, standin, catcher):
    await ask_for_reset(daemon.base, NEW_PASSWORD)
    link = confirm_link((await catcher.wait_for(1))[0])
    ticket = ticket_of(link)
    pending_id, key = ticket.split(".")
    wrong_key = pending_id + "." + ("A" if key[0] != "A" else "B") + key[1:]
    for bad in (wrong_key, pending_id, "x" * 66, ""):
        status, html = await post_ticket(link, bad)
        assert status == 404 and "Ce lien n’est pas valide" in unescape(html), bad
    status, html = await open_link(link.replace(ticket, wrong_key))
    assert status == 404
    assert standin.password_changes == []
    assert (await press_confirm(link))[0] == 200


async def test_a_post_without_the_csrf_pair_is_refused(daemon, standin, catcher):
    await ask_for_reset(daemon.base, NEW_PASSWORD)
    link = confirm_link((await catcher.wait_for(1))[0])
    async with (
        session() as http,
        http.post(f"{daemon.base}/password-reset/acme/confirm", data={"ticket": ticket_of(link)}) as response,
    ):
        assert response.status == 403
    assert standin.password_changes == []
    assert (await press_confirm(link))[0] == 200


async def test_an_expired_link_says_so_and_changes_nothing(daemon, standin, catcher, tmp_path):
    await ask_for_reset(daemon.base, NEW_PASSWORD)
    link = confirm_link((await catcher.wait_for(1))[0])
    with sqlite3.connect(tmp_path / "streamer.db") as db:
        assert db.execute("SELECT expires_at - created_at FROM pending_passwords").fetchone() == (3600.0,)
        db.execute("UPDATE pending_passwords SET expires_at = created_at + 0.001")  # the rule's ttl passed
    status, html = await open_link(link)
    assert status == 410 and "Ce lien a expiré" in unescape(html)
    status, html = await post_ticket(link, ticket_of(link))
    assert status == 410 and "Ce lien a expiré" in unescape(html)
    assert standin.password_changes == []


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("aaaaaaaaaaaa", "trop faible"),  # PasswordStrengthError
        ("Password123!", "trop courant"),  # PasswordDictionaryError
        ("Ana.Silva-Rocks-42", "ni votre nom ni votre adresse"),  # PasswordNoUserInfoError
        (NEW_PASSWORD, "déjà utilisé ce mot de passe"),  # PasswordHistoryError
    ],
)
async def test_auth0_policy_refusals_say_what_to_do(daemon, standin, catcher, password, says):
    if password == NEW_PASSWORD:  # history: set it once, then ask for it again
        await ask_for_reset(daemon.base, NEW_PASSWORD)
        assert (await press_confirm(confirm_link((await catcher.wait_for(1))[0])))[0] == 200
    before = len(catcher.messages)
    await ask_for_reset(daemon.base, password)
    await wait_until(
        lambda: any("/confirm?" in "".join(m.links) for m in catcher.messages[before:]), what="the confirmation email"
    )
    link = confirm_link(next(m for m in catcher.messages[before:] if "/confirm?" in "".join(m.links)))
    changes = list(standin.password_changes)
    status, html = await press_confirm(link)
    html = unescape(html)
    assert status == 400 and "Choisissez un autre mot de passe" in html and says in html
    assert 'href="/password-reset/acme' in html and "Rien n’a été modifié" in html
    assert (
        standin.password_changes == changes and not standin.password_matches(ANA, password) or password == NEW_PASSWORD
    )


async def test_auth0_down_leaves_the_link_working(daemon, standin, catcher):
    await ask_for_reset(daemon.base, NEW_PASSWORD)
    link = confirm_link((await catcher.wait_for(1))[0])
    standin.fail_next("/api/v2/users/", 503, count=10)
    status, html = await press_confirm(link)
    assert status == 503 and "votre lien fonctionne toujours" in unescape(html)
    assert standin.password_changes == []
    standin._failures.clear()  # Auth0 is back
    status, html = await press_confirm(link)
    assert status == 200 and standin.password_matches(ANA, NEW_PASSWORD)


async def test_a_newer_request_replaces_the_older_link(daemon, standin, catcher):
    await ask_for_reset(daemon.base, NEW_PASSWORD)
    first = confirm_link((await catcher.wait_for(1))[0])
    await ask_for_reset(daemon.base, OTHER_PASSWORD)
    second = confirm_link((await catcher.wait_for(2))[1])
    status, html = await open_link(first)
    assert status == 410 and "Un lien plus récent a remplacé celui-ci" in unescape(html)
    status, html = await post_ticket(first, ticket_of(first))
    assert status == 410 and standin.password_changes == []
    assert (await press_confirm(second))[0] == 200
    assert standin.password_matches(ANA, OTHER_PASSWORD) and not standin.password_matches(ANA, NEW_PASSWORD)


# --- a crash between the request and the confirmation ----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_kill_9_after_the_email_loses_nothing(tmp_path, standin, catcher, request, backend):
    port = free_port()
    config_path = tmp_path / "streamer.yaml"
    text = confirm_config(tmp_path, standin, catcher, port)
    if backend == "postgres":
        import pg

        url = await pg.create_database(request.getfixturevalue("postgres_url"))
        text = text.replace(f'store: "sqlite:///{tmp_path}/streamer.db"', f'store: "{url}"')
        assert url in text
    config_path.write_text(text)
    base = f"http://127.0.0.1:{port}"
    process = await start_run(config_path, port)
    try:
        await ask_for_reset(base, NEW_PASSWORD)
        link = confirm_link((await catcher.wait_for(1, timeout=20))[0])
        process.send_signal(signal.SIGKILL)
        await process.wait()
        process = await start_run(config_path, port)
        status, html = await press_confirm(link)
        assert status == 200 and standin.password_matches(ANA, NEW_PASSWORD)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await process.wait()
    log = (tmp_path / "daemon.log").read_bytes()
    assert NEW_PASSWORD.encode() not in log and ticket_of(link).encode() not in log


def test_check_requires_a_public_url_for_the_confirmation_link(tmp_path, standin, catcher):
    from streamer.check import check_config
    from streamer.config import parse_config

    text = confirm_config(tmp_path, standin, catcher, 8080)
    assert not [e for e in check_config(parse_config(text, env={}, base_dir=tmp_path)).errors if "public_url" in e]
    without = text.replace(', public_url: "http://127.0.0.1:8080"', "")
    errors = check_config(parse_config(without, env={}, base_dir=tmp_path)).errors
    assert any("password_reset.new_password: set server.public_url" in e for e in errors)


# --- the pieces ---------------------------------------------------------------------------------------


def test_a_sealed_password_opens_only_with_its_key_row_and_user():
    from streamer.password_reset.sealed import ConfirmToken, new_token, parse_token, seal, unseal

    token = new_token()
    sealed = seal(NEW_PASSWORD, token, tenant="acme", user_id=ANA)
    assert NEW_PASSWORD.encode() not in sealed and token.key not in sealed
    assert parse_token(str(token)) == token
    assert unseal(sealed, parse_token(str(token)), tenant="acme", user_id=ANA) == NEW_PASSWORD
    other = new_token()
    assert unseal(sealed, ConfirmToken(token.pending_id, other.key), tenant="acme", user_id=ANA) is None
    assert unseal(sealed, ConfirmToken(other.pending_id, token.key), tenant="acme", user_id=ANA) is None
    assert unseal(sealed, token, tenant="acme", user_id="auth0|someone-else") is None
    assert unseal(sealed, token, tenant="globex", user_id=ANA) is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert unseal(tampered, token, tenant="acme", user_id=ANA) is None
    assert unseal(None, token, tenant="acme", user_id=ANA) is None
    for bad in (None, "", str(token)[:-1], str(token) + "A", str(token).replace(".", "-"), "a" * 22 + "." + "!" * 43):
        assert parse_token(bad) is None, bad
    assert str(token).split(".")[1] not in repr(token)


def test_link_state_tells_each_case_apart():
    from streamer.password_reset.confirm_pages import link_state
    from streamer.password_reset.sealed import ConfirmToken, new_token, seal
    from streamer.store import PendingPassword

    token = new_token()

    def row(**changes) -> PendingPassword:
        values = dict(
            id=token.pending_id,
            tenant="acme",
            user_id=ANA,
            connection="c",
            state="pending",
            sealed=seal(NEW_PASSWORD, token, tenant="acme", user_id=ANA),
            created_at=0.0,
            expires_at=100.0,
            updated_at=0.0,
        )
        return PendingPassword(**{**values, **changes})

    assert link_state(row(), token, "acme", 99.9) == "pending"
    assert link_state(row(), token, "acme", 100.0) == "expired"
    assert link_state(row(sealed=None), token, "acme", 1.0) == "expired"
    assert link_state(row(state="used", sealed=None), token, "acme", 1.0) == "used"
    assert link_state(row(state="replaced", sealed=None), token, "acme", 1.0) == "replaced"
    assert link_state(row(), ConfirmToken(token.pending_id, new_token().key), "acme", 1.0) == "unknown"
    assert link_state(row(), token, "globex", 1.0) == "unknown"
    assert link_state(None, token, "acme", 1.0) == "unknown"
    assert link_state(row(), None, "acme", 1.0) == "unknown"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {"statusCode": 400, "error": "Bad Request", "message": "PasswordStrengthError: Password is too weak"},
            "strength",
        ),
        (
            {
                "statusCode": 400,
                "error": "Bad Request",
                "message": "PasswordHistoryError: Password has previously been used",
            },
            "history",
        ),
        (
            {"statusCode": 400, "error": "Bad Request", "message": "PasswordDictionaryError: Password is too common"},
            "dictionary",
        ),
        (
            {
                "statusCode": 400,
                "error": "Bad Request",
                "message": "PasswordNoUserInfoError: Password contains user information",
                "errorCode": "invalid_body",
            },
            "user_info",
        ),
        (
            {
                "statusCode": 400,
                "error": "Bad Request",
                "message": "Payload validation error",
                "errorCode": "invalid_body",
            },
            None,
        ),
        (
            {
                "statusCode": 403,
                "error": "Forbidden",
                "message": "Insufficient scope, expected any of: update:users",
                "errorCode": "insufficient_scope",
            },
            None,
        ),
    ],
)
def test_auth0_policy_refusals_are_recognised_from_their_bodies(body, reason):
    from streamer.auth0.errors import from_status
    from streamer.password_reset.confirm import policy_refusal

    assert policy_refusal(from_status(body["statusCode"], body, endpoint="PATCH /users/{id}")) == reason


async def test_the_delivery_falls_back_to_an_auth0_ticket_when_the_password_is_not_in_memory(
    tmp_path, standin, catcher
):
    """A restart (or another replica) between the form and the send: the user still gets a way in."""
    from structlog.testing import capture_logs

    from streamer.auth0 import ManagementApi
    from streamer.config import parse_config
    from streamer.delivery import Deliverer, DeliverySettings, TransientFailure
    from streamer.outbox import EmailState, OutboxEmail
    from streamer.password_reset import NewPasswordVault
    from streamer.password_reset.links import ResetLinks
    from streamer.rules import compile_rules
    from streamer.smtp import SmtpPool
    from streamer.store.sqlite import SqliteStore
    from streamer.templates import Templates

    config = parse_config(confirm_config(tmp_path, standin, catcher, 8080), env={}, base_dir=tmp_path)
    store = SqliteStore(tmp_path / "d.db")
    await store.open()
    api = ManagementApi(config.tenants["acme"], name="acme", max_retries=0)
    smtp = SmtpPool(config.smtp)
    vault = NewPasswordVault()
    deliverer = Deliverer(
        DeliverySettings.of(config),
        {r.name: r for r in compile_rules(config.rules)},
        {"acme": api},
        Templates(config.templates_dir, default_locale="en"),
        smtp,
        reset_link=ResetLinks(vault, pending_store=store, public_url=str(config.server.public_url)),
    )

    def email(log_id: str) -> OutboxEmail:
        event = {
            "log_id": log_id,
            "type": "password_reset_requested",
            "user_id": ANA,
            "connection": "Username-Password-Authentication",
            "client_id": "",
        }
        return OutboxEmail(
            1,
            f"k-{log_id}",
            "acme",
            "password-reset",
            "password_change",
            ANA,
            log_id,
            ANA_EMAIL,
            "en",
            EmailState.SENDING,
            1,
            0.0,
            None,
            0.0,
            0.0,
            None,
            0.0,
            {"event": event, "user": standin.users[ANA], "client": {}},
        )

    try:
        vault.put("L1", NEW_PASSWORD)
        catcher.fail_next(451, "4.3.0 try later", stage="RCPT")
        with pytest.raises(TransientFailure):
            await deliverer.deliver(email("L1"))
        assert "L1" in vault  # kept for the retry
        await deliverer.deliver(email("L1"))
        [confirming] = await catcher.wait_for(1)
        assert confirming.subject.startswith("Confirm your new") and "/confirm?ticket=" in confirm_link(confirming)
        assert "L1" not in vault

        with capture_logs() as captured:
            await deliverer.deliver(email("L2"))  # nothing in memory for this one
        fallback = (await catcher.wait_for(2))[1]
        assert fallback.subject.startswith("Reset your") and any(
            "/u/reset-verify?ticket=" in link for link in fallback.links
        )
        assert not any("/confirm?" in link for link in fallback.links)
        assert [entry["reason"] for entry in captured if entry["event"] == "password_confirm_unavailable"] == [
            "not_in_memory"
        ]
    finally:
        await smtp.close()
        await api.close()
        await store.close()
