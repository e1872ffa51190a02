"""The hosted password-reset form: in-process aiohttp server, real SQLite inbox, the Auth0 stand-in."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.auth0 import ManagementApi
from streamer.inbox import Inbox
from streamer.password_reset import (
    CSRF_COOKIE,
    MESSAGES,
    NewPasswordVault,
    SlidingWindowLimiter,
    choose_locale,
    create_reset_ticket,
    new_log_id,
    password_reset_routes,
)
from streamer.store.sqlite import SqliteStore

from support.clock import FakeClock
from support.reset_form import (
    ANA,
    ANA_EMAIL,
    BRUNO_EMAIL,
    NOBODY_EMAIL,
    PATH,
    SECRET_PASSWORD,
    SHOP,
    csrf_from,
    make_config,
)

# --- the page --------------------------------------------------------------------------------


async def test_the_form_is_labelled_localized_and_served_with_strict_headers(harness):
    h = await harness()
    response = await h.client.get(PATH)
    html = await response.text()
    assert response.status == 200
    assert '<html lang="en"' in html and response.headers["Content-Language"] == "en"
    assert '<label for="email">Email address</label>' in html and 'id="email" name="email"' in html
    assert 'type="password"' not in html  # new_password is off
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "style-src 'sha256-" in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "<script" not in html and "http://" not in html and "https://" not in html  # nothing external
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{CSRF_COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/password-reset/acme" in cookie and "Max-Age=3600" in cookie and "expires=" in cookie.lower()
    # The cookie's own token is reused while fresh: two tabs can both submit.
    again = await h.client.get(PATH)
    assert csrf_from(await again.text()) == csrf_from(html) and "Set-Cookie" not in again.headers


async def test_unknown_tenant_and_disabled_form_are_404(harness):
    h = await harness()
    for method in ("get", "post"):
        response = await getattr(h.client, method)("/password-reset/nobody")
        assert response.status == 404 and "Page not found" in await response.text()
        assert response.headers["Cache-Control"] == "no-store"
    off = await harness(enabled=False)
    assert (await off.client.get(PATH)).status == 404
    assert (await off.client.post(PATH, data={"email": ANA_EMAIL})).status == 404


async def test_client_name_is_shown_escaped_and_unknown_clients_are_ignored(harness):
    h = await harness()
    html = await (await h.client.get(f"{PATH}?client_id={SHOP}&lang=en")).text()
    assert '<p class="brand">Acme &lt;Shop&gt;</p>' in html
    assert f'action="/password-reset/acme?client_id={SHOP}&amp;lang=en"' in html
    html = await (await h.client.get(f"{PATH}?client_id=someoneElse")).text()
    assert 'class="brand"' not in html and "someoneElse" not in html


# --- no account enumeration ----------------------------------------------------------------------


async def test_existing_and_unknown_addresses_get_byte_identical_answers_in_the_same_time(harness):
    h = await harness(min_response_s=0.3)
    answers = []
    for email in (ANA_EMAIL, NOBODY_EMAIL, BRUNO_EMAIL):
        token = await h.token()
        started = time.perf_counter()
        status, headers, body = await h.submit(email, token=token)
        answers.append(
            (
                status,
                {k: v for k, v in headers.items() if k not in ("Date", "Set-Cookie")},
                body,
                time.perf_counter() - started,
            )
        )
    assert answers[0][:3] == answers[1][:3] == answers[2][:3]
    assert answers[0][0] == 200 and "If an account exists for that address" in answers[0][2]
    assert all(0.3 <= elapsed < 1.5 for *_, elapsed in answers)  # never faster than the fixed duration
    assert ANA_EMAIL not in answers[0][2] and "csrf" not in answers[0][2]
    await h.pages.drain()
    assert [e["user_id"] for e in h.events()] == [ANA]


async def test_an_existing_user_gets_one_event_with_who_where_and_which_app(harness):
    h = await harness()
    status, _, _ = await h.submit(
        "  Ana.Silva@Example.COM ", query=f"?client_id={SHOP}", headers={"User-Agent": "Mozilla/5.0 (Test)"}
    )
    assert status == 200
    await h.pages.drain()
    [event] = h.events()
    assert event["type"] == "password_reset_requested"
    assert event["user_id"] == ANA and event["user_name"] == ANA_EMAIL
    assert event["client_id"] == SHOP and event["client_name"] == "Acme <Shop>"
    assert event["ip"] == "127.0.0.1" and event["user_agent"] == "Mozilla/5.0 (Test)"
    assert event["connection"] == "Username-Password-Authentication"
    assert event["description"] == "Password reset requested on the hosted form"
    assert re.fullmatch(r"streamer-\d{17}-[0-9a-f]{16}", event["log_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["date"])
    [line] = [line for line in h.log_lines() if line["event"] == "password_reset_requested"]
    assert line["user_id"] == ANA and ANA_EMAIL not in h.logs.getvalue()


async def test_unknown_or_social_only_addresses_store_nothing_and_log_only_a_hash(harness):
    h = await harness()
    for email in (NOBODY_EMAIL, BRUNO_EMAIL):
        assert (await h.submit(email))[0] == 200
    await h.pages.drain()
    assert h.events() == []
    lines = [line for line in h.log_lines() if line["event"] == "password_reset_no_account"]
    assert [line["reason"] for line in lines] == ["unknown_address", "no_database_identity"]
    assert all(re.fullmatch(r"[0-9a-f]{16}", line["address_hash"]) for line in lines)
    assert NOBODY_EMAIL not in h.logs.getvalue() and BRUNO_EMAIL not in h.logs.getvalue()


async def test_auth0_errors_still_give_the_generic_page_and_are_logged(harness, standin):
    h = await harness()
    standin.fail_next("/api/v2/users-by-email", 403)
    status, _, body = await h.submit(ANA_EMAIL)
    assert status == 200 and "If an account exists" in body
    await h.pages.drain()
    assert h.events() == []
    [line] = [line for line in h.log_lines() if line["event"] == "password_reset_lookup_failed"]
    assert line["status"] == 403 and ANA_EMAIL not in json.dumps(line)


# --- CSRF ----------------------------------------------------------------------------------------


async def test_posts_without_a_valid_csrf_token_are_refused_with_403(harness):
    h = await harness()
    good = await h.token()
    forged = good.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    cases = [
        {"email": ANA_EMAIL},
        {"email": ANA_EMAIL, "csrf_token": ""},
        {"email": ANA_EMAIL, "csrf_token": "v1.1.2.3"},
        {"email": ANA_EMAIL, "csrf_token": forged},
    ]
    for data in cases:
        response = await h.client.post(PATH, data=data)
        assert response.status == 403 and "This page has expired" in await response.text()
        assert response.headers["Cache-Control"] == "no-store"
    # The right field but no cookie (another browser, or cookies blocked).
    h.client.session.cookie_jar.clear()
    assert (await h.client.post(PATH, data={"email": ANA_EMAIL, "csrf_token": good})).status == 403
    # A genuine pair that has expired.
    token = await h.token()
    h.clock.advance(3601)
    assert (await h.submit(ANA_EMAIL, token=token))[0] == 403
    await h.pages.drain()
    assert h.events() == []


async def test_a_malformed_or_oversized_body_is_a_clean_4xx(harness):
    h = await harness()
    await h.token()
    response = await h.client.post(
        PATH, data=b"email=%ff%fe", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 400
    response = await h.client.post(PATH, json={"email": ANA_EMAIL})
    assert response.status == 400
    response = await h.client.post(PATH, data={"email": "a" * 20_000})
    assert response.status == 413


# --- rate limits ---------------------------------------------------------------------------------


async def test_per_ip_rate_limit_answers_429_with_retry_after(harness):
    h = await harness(per_ip="3/hour")
    for n in range(3):
        assert (await h.submit(f"person{n}@example.com"))[0] == 200
    h.clock.advance(600)
    status, headers, body = await h.submit("person9@example.com")
    assert status == 429 and "Too many attempts" in body
    assert int(headers["Retry-After"]) == 3000 and "50 minutes" in body
    assert headers["Cache-Control"] == "no-store"
    h.clock.advance(3001)
    assert (await h.submit("person9@example.com"))[0] == 200


async def test_per_address_rate_limit_uses_the_normalized_address(harness):
    h = await harness(per_address="2/hour")
    assert (await h.submit(ANA_EMAIL))[0] == 200
    assert (await h.submit("ANA.SILVA@example.com"))[0] == 200
    status, headers, _ = await h.submit("  Ana.Silva@EXAMPLE.com")
    assert status == 429 and 0 < int(headers["Retry-After"]) <= 3600
    assert (await h.submit(NOBODY_EMAIL))[0] == 200  # other addresses are not affected
    await h.pages.drain()
    assert len(h.events()) == 2


async def test_behind_a_trusted_proxy_each_client_has_its_own_per_ip_bucket(harness):
    h = await harness(per_ip="2/hour", trusted_proxies=["127.0.0.1/32"])
    alice = {"X-Forwarded-For": "198.51.100.1"}
    for n in range(2):
        assert (await h.submit(f"person{n}@example.com", headers=alice))[0] == 200
    assert (await h.submit("person2@example.com", headers=alice))[0] == 429
    # Another client behind the same proxy (the socket peer of every request) is not affected,
    # and what a client writes on the left of the proxy's own entry is ignored.
    bob = {"X-Forwarded-For": "198.51.100.1, 203.0.113.50"}
    assert (await h.submit(ANA_EMAIL, headers=bob))[0] == 200
    await h.pages.drain()
    [event] = h.events()
    assert event["ip"] == "203.0.113.50"
    assert (await h.submit("person3@example.com", headers={"Forwarded": 'for="[2001:db8::7]:4711"'}))[0] == 200


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(harness):
    h = await harness(per_ip="2/hour", trusted_proxies=["10.0.0.0/8"])
    for n in range(2):
        assert (await h.submit(f"person{n}@example.com", headers={"X-Forwarded-For": f"198.51.100.{n}"}))[0] == 200
    status, _, _ = await h.submit(
        "person3@example.com", headers={"X-Forwarded-For": "198.51.100.77", "Forwarded": "for=198.51.100.78"}
    )
    assert status == 429  # rotating a forged header gains nothing


async def test_a_stranger_asking_for_someones_reset_cannot_lock_the_owner_out(harness):
    h = await harness(per_address="2/hour", trusted_proxies=["127.0.0.1/32"])
    stranger, owner = {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-For": "198.51.100.7"}
    assert [(await h.submit(ANA_EMAIL, headers=stranger))[0] for _ in range(3)] == [200, 200, 429]
    assert (await h.submit(ANA_EMAIL, headers=owner))[0] == 200
    await h.pages.drain()
    assert [e["ip"] for e in h.events()] == ["203.0.113.9", "203.0.113.9", "198.51.100.7"]


def test_sliding_window_limiter():
    clock = FakeClock(0)
    limiter = SlidingWindowLimiter(2, 60, clock=clock)
    limiter.hit("k")
    clock.advance(10)
    limiter.hit("k")
    assert limiter.retry_after("k") == 50 and limiter.retry_after("other") == 0
    clock.advance(50)
    assert limiter.retry_after("k") == 0


# --- new passwords -------------------------------------------------------------------------------


async def test_mismatched_or_short_passwords_re_render_the_form_with_an_announced_error(harness):
    h = await harness(new_password=True)
    status, _, html = await h.submit(ANA_EMAIL, password=SECRET_PASSWORD, password_confirm=SECRET_PASSWORD + "x")
    assert status == 400
    assert 'role="alert"' in html and "autofocus" in html and "The two passwords don&#39;t match" in html
    assert re.search(r'id="password_confirm"[^>]*aria-invalid="true" aria-describedby="password_confirm-error"', html)
    assert f'value="{ANA_EMAIL}"' in html and SECRET_PASSWORD not in html
    assert "<title>Error: " in html
    status, _, html = await h.submit(ANA_EMAIL, password="short", password_confirm="short")
    assert status == 400 and "at least 10 characters" in html and 'value="short"' not in html
    assert re.search(r'id="password"[^>]*aria-describedby="password-hint password-error" aria-invalid="true"', html)
    status, _, html = await h.submit("not-an-address", password=SECRET_PASSWORD, password_confirm=SECRET_PASSWORD)
    assert status == 400 and 'aria-describedby="email-error"' in html and 'value="not-an-address"' in html
    await h.pages.drain()
    assert h.events() == []


async def test_a_new_password_reaches_only_the_in_memory_vault(harness, tmp_path):
    h = await harness(new_password=True)
    status, _, body = await h.submit(ANA_EMAIL, password=SECRET_PASSWORD, password_confirm=SECRET_PASSWORD)
    assert status == 200 and SECRET_PASSWORD not in body
    await h.pages.drain()
    [event] = h.events()
    assert SECRET_PASSWORD not in json.dumps(event)
    await h.store.close()  # checkpoint the WAL into the file
    for path in tmp_path.glob(f"{h.db_path.name}*"):
        assert SECRET_PASSWORD.encode() not in path.read_bytes(), path
    assert SECRET_PASSWORD not in h.logs.getvalue()
    assert SECRET_PASSWORD not in repr(h.vault)
    assert h.vault.take(event["log_id"]) == SECRET_PASSWORD
    assert h.vault.take(event["log_id"]) is None  # popped


async def test_a_password_for_an_unknown_address_is_not_kept(harness):
    h = await harness(new_password=True)
    assert (await h.submit(NOBODY_EMAIL, password=SECRET_PASSWORD, password_confirm=SECRET_PASSWORD))[0] == 200
    await h.pages.drain()
    assert len(h.vault) == 0 and h.events() == []


def test_the_vault_forgets_after_its_ttl():
    clock = FakeClock(0)
    vault = NewPasswordVault(ttl_s=60, max_entries=2, clock=clock)
    vault.put("a", "pw-a")
    vault.put("b", "pw-b")
    vault.put("c", "pw-c")  # over capacity: the oldest goes
    assert vault.take("a") is None and "b" in vault
    clock.advance(61)
    assert vault.take("b") is None and vault.take("c") is None and len(vault) == 0


async def test_create_reset_ticket_leaves_new_password_out_unless_the_tenant_is_legacy(tmp_path, standin):
    from streamer.devkit.auth0_standin import Auth0StandIn, load_sample_users

    config = make_config(tmp_path, standin)
    vault = NewPasswordVault()
    async with ManagementApi(config.tenants["acme"], name="acme", max_retries=0) as api:
        vault.put("l1", SECRET_PASSWORD)
        url = await create_reset_ticket(api, vault, log_id="l1", user_id=ANA, result_url="https://app.acme.test/x")
        assert "ticket=" in url and "l1" not in vault
        assert all("new_password" not in t for t in standin.tickets.values())
        # legacy_flow on a current tenant: Auth0 says 400, the ticket is made without it.
        vault.put("l2", SECRET_PASSWORD)
        assert "ticket=" in await create_reset_ticket(api, vault, log_id="l2", user_id=ANA, legacy_flow=True)
        assert all("new_password" not in t for t in standin.tickets.values())
    async with Auth0StandIn(users=load_sample_users(), legacy_password_flow=True) as legacy:
        tenant = config.tenants["acme"].model_copy(update={"api_url": legacy.base_url, "domain": legacy.domain})
        async with ManagementApi(tenant, name="legacy", max_retries=0) as api:
            vault.put("l3", SECRET_PASSWORD)
            await create_reset_ticket(api, vault, log_id="l3", user_id=ANA, legacy_flow=True)
            assert [t.get("new_password") for t in legacy.tickets.values()] == [SECRET_PASSWORD]


# --- language --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "accept", "tenant_default", "expected"),
    [
        ("?lang=fr", "de-DE,de;q=0.9", None, "fr"),  # ?lang wins
        ("?lang=fr-CA", None, None, "fr"),  # regional → language
        ("?lang=xx", "es-MX", None, "es"),  # unusable ?lang is skipped
        ("", "de-CH, en;q=0.5", None, "de"),  # Accept-Language
        ("", "pt-BR, fr;q=0.4", None, "fr"),  # first supported entry
        ("", "pt-BR", "es", "es"),  # tenant default
        ("", None, None, "en"),  # templates.default_locale
        (f"?client_id={SHOP}", "de", None, "fr"),  # the application's locale
        (f"?client_id={SHOP}&lang=es", "de", None, "es"),
    ],
)
async def test_page_language(harness, query, accept, tenant_default, expected):
    h = await harness(default_locale=tenant_default)
    headers = {"Accept-Language": accept} if accept else {}
    response = await h.client.get(PATH + query, headers=headers)
    html = await response.text()
    assert f'<html lang="{expected}"' in html and response.headers["Content-Language"] == expected
    assert f"<h1>{MESSAGES[expected]['title']}</h1>" in html
    # The POST answers in the same language.
    status, _, body = await h.submit(NOBODY_EMAIL, query=query, token=csrf_from(html), headers=headers)
    assert status == 200 and f'<html lang="{expected}"' in body


def test_choose_locale_and_translations_are_complete():
    assert choose_locale("fr_CA") == "fr" and choose_locale(None, "garbage!", "DE") == "de"
    assert choose_locale("pt") == "en"
    for locale, strings in MESSAGES.items():
        assert set(strings) == set(MESSAGES["en"]), locale
        assert all(value.strip() for value in strings.values()), locale


def test_log_ids_sort_by_time():
    from datetime import UTC, datetime, timedelta

    first = datetime(2026, 3, 1, 14, 1, 7, 398000, tzinfo=UTC)
    ids = [new_log_id(first + timedelta(milliseconds=n)) for n in (0, 1, 999, 60_000)]
    assert ids == sorted(ids) and len(set(ids)) == 4 and ids[0].startswith("streamer-20260301140107398-")


def test_password_reset_routes_returns_route_definitions(tmp_path, standin):
    config = make_config(tmp_path, standin)
    routes = password_reset_routes(config, Inbox(SqliteStore(tmp_path / "x.db"), set()), {})
    assert {(r.method, r.path) for r in routes} == {
        ("GET", PATH.replace("acme", "{tenant}")),
        ("POST", PATH.replace("acme", "{tenant}")),
    }


# --- fuzzing ---------------------------------------------------------------------------------------


@pytest.fixture
async def fuzz_harness(harness):
    h = await harness(new_password=True, min_response_s=0)
    h.good_token = await h.token()
    return h


_field_names = st.sampled_from(["email", "password", "password_confirm", "csrf_token", "x", "email[]"])
_values = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=400),
    st.sampled_from([ANA_EMAIL, NOBODY_EMAIL, "a@b.c", "@", "x" * 300, "é@ü.de"]),
)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fields=st.lists(st.tuples(_field_names, _values), max_size=8),
    with_token=st.booleans(),
    query=st.sampled_from(["", "?lang=de", "?client_id=%00", "?lang=%ff&client_id=" + "z" * 200]),
    raw=st.one_of(st.none(), st.binary(max_size=300)),
)
async def test_arbitrary_form_input_never_causes_a_server_error(fuzz_harness, fields, with_token, query, raw):
    h = fuzz_harness
    if raw is not None:
        response = await h.client.post(
            PATH + query, data=raw, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    else:
        data = list(fields) + ([("csrf_token", h.good_token)] if with_token else [])
        response = await h.client.post(PATH + query, data=data)
    body = await response.text()
    assert response.status in (200, 400, 403, 413, 429), body[:300]
    assert response.headers["Cache-Control"] == "no-store"
    assert re.search(r'type="password"[^>]*value=', body) is None  # passwords are never echoed
