"""The Auth0 stand-in answers like Auth0's documented Management API (raw HTTP, real sockets)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiohttp import web

from streamer.auth0.log_streams import CATEGORY_OF_TYPE, stream_body
from streamer.devkit.auth0_standin import (
    Auth0StandIn,
    TokenBucket,
    connection_id,
    is_loopback_url,
    load_sample_users,
    make_log_id,
    parse_query,
)
from streamer.devkit.auth0_standin.stream_delivery import batch_body, batch_headers
from streamer.devkit.auth0_standin.streams import takes

from support.http import receiving
from support.waiting import wait_until

SAMPLES = Path("/work/shared/auth0/samples")
ANA = "auth0|65f0c0ffee0000000000a001"
BRUNO = "google-oauth2|104203384937812345678"
CHLOE = "auth0|65f0c0ffee0000000000c003"


def sample(name: str):
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture
async def http(standin):
    """An httpx client with a valid Management API token, not following redirects."""
    async with httpx.AsyncClient(base_url=standin.base_url, follow_redirects=False, timeout=10) as client:
        answer = await client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": standin.client_id,
                "client_secret": standin.client_secret,
                "audience": standin.audience,
            },
        )
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield client


def error_shape(body: dict, status: int) -> None:
    assert body["statusCode"] == status
    assert isinstance(body["error"], str) and isinstance(body["message"], str)


# --- /oauth/token and bearer checks ----------------------------------------------------------


async def test_token_form_and_json(standin):
    async with httpx.AsyncClient(base_url=standin.base_url) as client:
        form = await client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "standin-client",
                "client_secret": "standin-secret",
                "audience": "https://acme-test.us.auth0.com/api/v2/",
            },
        )
        as_json = await client.post(
            "/oauth/token",
            json={
                "grant_type": "client_credentials",
                "client_id": "standin-client",
                "client_secret": "standin-secret",
                "audience": "https://acme-test.us.auth0.com/api/v2/",
            },
        )
    for answer in (form, as_json):
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == set(sample("mgmt/POST_oauth_token_200.json"))
        assert body["token_type"] == "Bearer" and body["expires_in"] == 86400
        assert body["access_token"].count(".") == 2  # JWT-looking


async def test_token_refusals(standin):
    base = {
        "grant_type": "client_credentials",
        "client_id": "standin-client",
        "client_secret": "standin-secret",
        "audience": "https://acme-test.us.auth0.com/api/v2/",
    }
    async with httpx.AsyncClient(base_url=standin.base_url) as client:
        bad_secret = await client.post("/oauth/token", data={**base, "client_secret": "nope"})
        bad_audience = await client.post("/oauth/token", data={**base, "audience": base["audience"].rstrip("/")})
        bad_grant = await client.post("/oauth/token", data={**base, "grant_type": "password"})
    assert bad_secret.status_code == 401
    assert bad_secret.json() == {"error": "access_denied", "error_description": "Unauthorized"}
    assert bad_audience.status_code == 403 and bad_audience.json()["error"] == "access_denied"
    assert bad_grant.status_code == 403 and bad_grant.json()["error"] == "unsupported_grant_type"


async def test_api_requires_valid_unexpired_bearer(standin, http):
    async with httpx.AsyncClient(base_url=standin.base_url) as anonymous:
        missing = await anonymous.get(f"/api/v2/users/{ANA}")
        invalid = await anonymous.get(f"/api/v2/users/{ANA}", headers={"Authorization": "Bearer not-a-token"})
    assert missing.status_code == 401 and invalid.status_code == 401
    assert invalid.json() == sample("mgmt/error_bodies.json")["401"]
    assert (await http.get(f"/api/v2/users/{ANA}")).status_code == 200
    assert http.headers["Authorization"].removeprefix("Bearer ") in standin.issued_tokens
    standin.expire_tokens()
    expired = await http.get(f"/api/v2/users/{ANA}")
    assert expired.status_code == 401 and expired.json()["message"] == "Expired token"


async def test_short_token_ttl_expires():
    async with Auth0StandIn(token_ttl_s=1) as server:
        token = server.issue_token(ttl_s=0)
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            answer = await client.get(
                "/api/v2/logs", params={"from": "0"}, headers={"Authorization": f"Bearer {token}"}
            )
        assert answer.status_code == 401 and answer.json()["message"] == "Expired token"


# --- users -----------------------------------------------------------------------------------


async def test_get_user_and_404_body(http):
    ana = await http.get(f"/api/v2/users/{ANA.replace('|', '%7C')}")
    assert ana.status_code == 200
    assert ana.json()["email"] == "ana.silva@example.com" and ana.json()["user_metadata"] == {"locale": "fr-CA"}
    assert "app_metadata" not in ana.json()  # empty → omitted, like Auth0
    bruno = (await http.get(f"/api/v2/users/{BRUNO}")).json()
    assert "user_metadata" not in bruno and bruno["locale"] == "pt-BR"
    missing = await http.get("/api/v2/users/auth0|nobody")
    assert missing.status_code == 404
    assert missing.json() == sample("mgmt/error_bodies.json")["404"]


async def test_get_user_fields(http):
    only = (
        await http.get(f"/api/v2/users/{CHLOE}", params={"fields": "email,user_id", "include_fields": "true"})
    ).json()
    assert set(only) == {"email", "user_id"}
    without = (
        await http.get(f"/api/v2/users/{CHLOE}", params={"fields": "identities", "include_fields": "false"})
    ).json()
    assert "identities" not in without and "email" in without


async def test_search_forms_and_totals(standin, http):
    one = await http.get("/api/v2/users", params={"q": f'user_id:"{ANA}"', "search_engine": "v3"})
    assert [u["user_id"] for u in one.json()] == [ANA]
    many = await http.get(
        "/api/v2/users",
        params={
            "q": f'user_id:("{ANA}" OR "{BRUNO}" OR "auth0|x")',
            "search_engine": "v3",
            "per_page": 100,
            "include_totals": "true",
        },
    )
    body = many.json()
    assert set(body) == {"start", "limit", "length", "total", "users"}
    assert {u["user_id"] for u in body["users"]} == {ANA, BRUNO} and body["total"] == 2 and body["limit"] == 100
    by_email = await http.get("/api/v2/users", params={"q": 'email:"chloe.tremblay@example.com"'})
    assert [u["user_id"] for u in by_email.json()] == [CHLOE]
    paged = await http.get("/api/v2/users", params={"per_page": 2, "page": 1, "include_totals": "true"})
    assert paged.json()["start"] == 2 and paged.json()["length"] == 2 and paged.json()["total"] == len(standin.users)


async def test_search_refuses_bad_queries(http):
    for params in ({"q": "user_id:(a OR"}, {"q": 'user_id:"a" OR'}, {"q": "nonsense"}, {"per_page": 101}):
        answer = await http.get("/api/v2/users", params=params)
        assert answer.status_code == 400, params
        error_shape(answer.json(), 400)
        assert answer.json()["errorCode"] == "invalid_query_string"


async def test_search_index_lag(standin, http):
    fresh = standin.add_user({"email": "new.user@example.com"}, indexed=False)
    query = {"q": f'user_id:"{fresh["user_id"]}"'}
    assert (await http.get("/api/v2/users", params=query)).json() == []
    assert (await http.get(f"/api/v2/users/{fresh['user_id']}")).status_code == 200
    standin.freeze_search(ANA)
    await http.patch(f"/api/v2/users/{ANA}", json={"email_verified": True})
    stale = (await http.get("/api/v2/users", params={"q": f'user_id:"{ANA}"'})).json()[0]
    assert stale["email_verified"] is False
    standin.index_all()
    assert [u["user_id"] for u in (await http.get("/api/v2/users", params=query)).json()] == [fresh["user_id"]]


def test_parse_query_subset():
    assert parse_query('user_id:"a|1"') == [("user_id", ["a|1"])]
    assert parse_query('user_id:("a" OR "b\\"c")') == [("user_id", ["a", 'b"c'])]
    assert parse_query('type:sv AND user_id:"x"') == [("type", ["sv"]), ("user_id", ["x"])]
    for bad in ("", 'user_id:("a" "b")', "user_id:", 'a:"b" c:"d"'):
        with pytest.raises(ValueError):
            parse_query(bad)


async def test_users_by_email(http):
    found = await http.get("/api/v2/users-by-email", params={"email": "chloe.tremblay@example.com"})
    assert [u["user_id"] for u in found.json()] == [CHLOE]
    assert (await http.get("/api/v2/users-by-email", params={"email": "nobody@example.com"})).json() == []
    assert (await http.get("/api/v2/users-by-email")).status_code == 400


async def test_patch_merges_metadata_first_level(standin, http):
    answer = await http.patch(
        f"/api/v2/users/{CHLOE}",
        json={"app_metadata": {"streamer": {"welcome_sent_at": "x"}, "plan": None, "new": 1}, "name": "Chloé T."},
    )
    assert answer.status_code == 200
    assert answer.json()["app_metadata"] == {"streamer": {"welcome_sent_at": "x"}, "new": 1}  # nested replaced
    assert answer.json()["user_metadata"] == {"locale": "fr-CA", "marketing_opt_in": False}
    assert standin.users[CHLOE]["name"] == "Chloé T."
    cleared = await http.patch(f"/api/v2/users/{CHLOE}", json={"app_metadata": {"streamer": None, "new": None}})
    assert "app_metadata" not in cleared.json()  # empty again → omitted
    assert (await http.patch(f"/api/v2/users/{CHLOE}", json={})).status_code == 400
    assert (await http.patch("/api/v2/users/auth0|nobody", json={"name": "x"})).status_code == 404


# --- tickets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short1A!", None),  # 8 characters, 4 kinds: accepted
        ("Ab1!", "PasswordStrengthError: Password is too weak"),  # too short
        ("alllowercaseletters", "PasswordStrengthError: Password is too weak"),  # one kind of character
        ("Password123!", "PasswordDictionaryError: Password is too common"),
        ("x-Ana.Silva-9", "PasswordNoUserInfoError: Password contains user information"),
    ],
)
async def test_patch_password_applies_the_connection_password_policy(standin, http, password, message):
    answer = await http.patch(
        f"/api/v2/users/{ANA}", json={"password": password, "connection": "Username-Password-Authentication"}
    )
    if message is None:
        assert answer.status_code == 200 and "password" not in answer.json()
        assert standin.password_matches(ANA, password)
        assert standin.password_changes == [{"user_id": ANA, "connection": "Username-Password-Authentication"}]
        scp = standin.logs[-1]
        assert scp["type"] == "scp" and scp["user_id"] == ANA and password not in str(scp)
    else:
        assert answer.status_code == 400
        assert answer.json() == {"statusCode": 400, "error": "Bad Request", "message": message}
        assert not standin.password_matches(ANA, password) and standin.password_changes == []
        assert not [e for e in standin.logs if e["type"] == "scp"]


async def test_patch_password_refuses_one_of_the_last_five(standin, http):
    for password in ("First-Pass-01", "Second-Pass-02"):
        assert (await http.patch(f"/api/v2/users/{ANA}", json={"password": password})).status_code == 200
    again = await http.patch(f"/api/v2/users/{ANA}", json={"password": "First-Pass-01"})
    assert again.status_code == 400 and again.json()["message"].startswith("PasswordHistoryError")
    assert standin.password_matches(ANA, "Second-Pass-02")
    standin.password_policy = None
    assert (await http.patch(f"/api/v2/users/{ANA}", json={"password": "a"})).status_code == 200


async def test_email_verification_ticket(standin, http):
    answer = await http.post(
        "/api/v2/tickets/email-verification", json=sample("mgmt/POST_tickets_email-verification_request.json")
    )
    assert answer.status_code == 201
    url = answer.json()["ticket"]
    assert url.startswith(f"{standin.base_url}/u/email-verification?ticket=") and url.endswith("#")
    ticket = standin.tickets[parse_qs(urlsplit(url).query)["ticket"][0]]
    assert ticket["kind"] == "email_verification" and ticket["user_id"] == ANA and ticket["ttl_sec"] == 86400
    assert ticket["client_id"] == "Xy7pQ2acmeTESTclient000000000001" and ticket["used"] is False
    default = await http.post("/api/v2/tickets/email-verification", json={"user_id": ANA})
    assert standin.tickets[parse_qs(urlsplit(default.json()["ticket"]).query)["ticket"][0]]["ttl_sec"] == 432000


async def test_ticket_refusals(http):
    missing = await http.post("/api/v2/tickets/email-verification", json={"ttl_sec": 10})
    assert missing.status_code == 400 and missing.json() == sample("mgmt/error_bodies.json")["400"]
    both = await http.post(
        "/api/v2/tickets/email-verification",
        json={"user_id": ANA, "result_url": "https://app.acme.test/", "client_id": "abc"},
    )
    assert both.status_code == 400 and both.json()["errorCode"] == "invalid_body"
    unknown = await http.post("/api/v2/tickets/email-verification", json={"user_id": "auth0|nobody"})
    assert unknown.status_code == 404 and unknown.json()["errorCode"] == "inexistent_user"
    extra = await http.post("/api/v2/tickets/email-verification", json={"user_id": ANA, "bogus": 1})
    assert extra.status_code == 400
    new_password = await http.post("/api/v2/tickets/password-change", json={"user_id": ANA, "new_password": "x" * 12})
    assert new_password.status_code == 400 and "new_password" in new_password.json()["message"]
    neither = await http.post("/api/v2/tickets/password-change", json={"ttl_sec": 10})
    assert neither.status_code == 400
    email_only = await http.post("/api/v2/tickets/password-change", json={"email": "ana.silva@example.com"})
    assert email_only.status_code == 400 and "connection_id" in email_only.json()["message"]


async def test_password_ticket_by_email_and_connection_id(standin, http):
    database = connection_id("Username-Password-Authentication")
    found = await http.post(
        "/api/v2/tickets/password-change", json={"email": "ana.silva@example.com", "connection_id": database}
    )
    assert found.status_code == 201
    [ticket] = standin.tickets.values()
    assert ticket["user_id"] == ANA and ticket["kind"] == "password_change"
    elsewhere = await http.post(
        "/api/v2/tickets/password-change",
        json={"email": "ana.silva@example.com", "connection_id": connection_id("google")},
    )
    assert elsewhere.status_code == 404 and elsewhere.json()["errorCode"] == "inexistent_user"
    both = await http.post(
        "/api/v2/tickets/password-change",
        json={"user_id": ANA, "email": "ana.silva@example.com", "connection_id": database},
    )
    assert both.status_code == 400 and "user_id cannot be used together" in both.json()["message"]


async def test_verification_ticket_consumed_once_appends_sv_and_redirects(standin, http):
    answer = await http.post(
        "/api/v2/tickets/email-verification",
        json={"user_id": ANA, "result_url": "https://app.acme.test/verified?lang=fr"},
    )
    url = answer.json()["ticket"]
    used = await http.get(url.rstrip("#"), headers={"Authorization": ""})
    assert used.status_code == 302
    location = urlsplit(used.headers["Location"])
    assert (location.netloc, location.path) == ("app.acme.test", "/verified")
    assert parse_qs(location.query)["lang"] == ["fr"] and parse_qs(location.query)["success"] == ["true"]
    assert standin.users[ANA]["email_verified"] is True
    event = standin.logs[-1]
    reference = sample("events/sv.json")
    assert event["type"] == "sv" and event["user_id"] == ANA and set(reference) <= set(event)
    assert set(event["details"]) == set(reference["details"])
    assert event["details"]["body"] == {"tenant": "acme-test"}  # no ticket id
    assert event["details"]["query"]["resultUrl"] == "https://app.acme.test/verified?lang=fr"
    again = await http.get(url.rstrip("#"))
    assert again.status_code == 410 and "text/html" in again.headers["Content-Type"]
    assert len([e for e in standin.logs if e["type"] == "sv"]) == 1


async def test_verification_ticket_without_result_url_and_expired(standin, http):
    url = (await http.post("/api/v2/tickets/email-verification", json={"user_id": CHLOE})).json()["ticket"]
    page = await http.get(url)
    assert page.status_code == 200 and "Your email was verified" in page.text
    url = (await http.post("/api/v2/tickets/email-verification", json={"user_id": ANA, "ttl_sec": 1})).json()["ticket"]
    standin.tickets[parse_qs(urlsplit(url).query)["ticket"][0]]["expires_at"] = time.time() - 1
    expired = await http.get(url)
    assert expired.status_code == 410 and standin.users[ANA]["email_verified"] is False
    assert (await http.get("/u/email-verification?ticket=nope")).status_code == 400


async def test_password_change_ticket_flow(standin, http):
    answer = await http.post(
        "/api/v2/tickets/password-change",
        json={
            "user_id": ANA,
            "result_url": "https://app.acme.test/login",
            "ttl_sec": 3600,
            "mark_email_as_verified": True,
        },
    )
    assert answer.status_code == 201
    url = answer.json()["ticket"]
    assert url.startswith(f"{standin.base_url}/u/reset-verify?ticket=") and url.endswith("#")
    form = await http.get(url)
    assert form.status_code == 200
    assert 'label for="newPassword"' in form.text and 'autocomplete="new-password"' in form.text
    action = url.rstrip("#").removeprefix(standin.base_url)
    mismatch = await http.post(action, data={"newPassword": "correct horse 1", "confirmNewPassword": "other"})
    assert mismatch.status_code == 400 and 'role="alert"' in mismatch.text
    done = await http.post(action, data={"newPassword": "correct horse 1", "confirmNewPassword": "correct horse 1"})
    assert done.status_code == 302 and done.headers["Location"] == "https://app.acme.test/login"
    assert standin.password_matches(ANA, "correct horse 1") and standin.users[ANA]["email_verified"] is True
    event = standin.logs[-1]
    assert event["type"] == "scp" and "ticket" not in event["details"]["body"]
    assert "correct horse" not in json.dumps(event)
    assert (await http.post(action, data={"newPassword": "x" * 9, "confirmNewPassword": "x" * 9})).status_code == 410


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("alllowercaseletters", "PasswordStrengthError: Password is too weak"),
        ("Password123!", "PasswordDictionaryError: Password is too common"),
        ("x-Ana.Silva-9", "PasswordNoUserInfoError: Password contains user information"),
    ],
)
async def test_the_reset_page_applies_the_password_policy_as_patch_does(standin, http, password, message):
    """The hosted form refuses what PATCH refuses, with the same words, and the link still works."""
    url = (await http.post("/api/v2/tickets/password-change", json={"user_id": ANA})).json()["ticket"]
    action = url.rstrip("#").removeprefix(standin.base_url)
    refused = await http.post(action, data={"newPassword": password, "confirmNewPassword": password})
    assert refused.status_code == 400 and f'role="alert" id="form-error">{message}<' in refused.text
    assert not standin.password_matches(ANA, password)
    assert not [e for e in standin.logs if e["type"] == "scp"]
    done = await http.post(action, data={"newPassword": "Strong-Enough-7", "confirmNewPassword": "Strong-Enough-7"})
    assert done.status_code == 200 and standin.password_matches(ANA, "Strong-Enough-7")


async def test_the_reset_page_refuses_a_recent_password(standin, http):
    """The page keeps the history PATCH reads: the password it replaced cannot come straight back."""
    for password in ("First-Pass-01", "Second-Pass-02"):
        url = (await http.post("/api/v2/tickets/password-change", json={"user_id": ANA})).json()["ticket"]
        action = url.rstrip("#").removeprefix(standin.base_url)
        answer = await http.post(action, data={"newPassword": password, "confirmNewPassword": password})
        assert answer.status_code == 200
    again = await http.patch(f"/api/v2/users/{ANA}", json={"password": "First-Pass-01"})
    assert again.status_code == 400 and again.json()["message"].startswith("PasswordHistoryError")


async def test_legacy_password_flow_accepts_new_password():
    async with Auth0StandIn(users=load_sample_users(), legacy_password_flow=True) as server:
        token = server.issue_token()
        async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
            url = (
                await http.post(
                    "/api/v2/tickets/password-change", json={"user_id": ANA, "new_password": "chosen-before-1"}
                )
            ).json()["ticket"]
            page = await http.get(url)
            assert "Confirm new password" in page.text and "chosen-before-1" not in page.text
            assert (await http.post(url.rstrip("#").removeprefix(server.base_url))).status_code == 200
        assert server.password_matches(ANA, "chosen-before-1")
        assert all("new_password" not in t for t in server.tickets.values())


# --- logs ------------------------------------------------------------------------------------


def test_log_id_layout():
    from datetime import UTC, datetime

    log_id = make_log_id(datetime(2026, 3, 1, 14, 1, 8, 449000, tzinfo=UTC), 7)
    assert len(log_id) == 56 and log_id.startswith("90020260301140108449") and log_id.endswith("7")


async def test_add_log_fills_ids_increasing(standin):
    events = [standin.add_log({"type": "s", "user_id": ANA}) for _ in range(5)]
    ids = [e["log_id"] for e in events]
    assert all(len(i) == 56 and i.startswith("900") and i.isdigit() for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(e["_id"] == e["log_id"] and e["date"].endswith("Z") for e in events)
    known = sample("events/ss.json")
    replayed = standin.add_log(known)  # a known event keeps its id and date
    assert replayed["log_id"] == known["log_id"] and replayed["date"] == "2026-03-01T14:01:07.412Z"
    again = standin.add_log(known)  # ids stay unique
    later = standin.add_log({"type": "s"})
    assert again["log_id"] != known["log_id"] and later["log_id"] > max(ids + [again["log_id"]])


async def test_checkpoint_paging_and_link(standin, http):
    first = standin.add_log({"type": "ss", "user_id": ANA})
    for kind in ("svr", "s", "sv", "scp"):
        standin.add_log({"type": kind, "user_id": ANA})
    page = await http.get("/api/v2/logs", params={"from": first["log_id"], "take": 2})
    assert page.status_code == 200 and [e["type"] for e in page.json()] == ["svr", "s"]
    link = page.headers["Link"]
    assert link.endswith('; rel="next"') and "take=2" in link
    next_url = page.links["next"]["url"]
    assert parse_qs(urlsplit(next_url).query)["from"] == [page.json()[-1]["log_id"]]
    rest = await http.get(next_url.removeprefix(standin.base_url))
    assert [e["type"] for e in rest.json()] == ["sv", "scp"]
    caught_up = await http.get(rest.links["next"]["url"].removeprefix(standin.base_url))
    assert caught_up.json() == [] and caught_up.links["next"]["url"] == rest.links["next"]["url"]
    assert (await http.get("/api/v2/logs", params={"from": "0", "take": 101})).status_code == 400
    assert (await http.get("/api/v2/logs", params={"from": "abc"})).status_code == 400


async def test_logs_search_mode(standin, http):
    for kind in ("ss", "s", "sv"):
        standin.add_log({"type": kind, "user_id": ANA})
        await asyncio.sleep(0.002)  # distinct dates
    newest_first = (await http.get("/api/v2/logs")).json()
    assert [e["type"] for e in newest_first] == ["sv", "s", "ss"]
    oldest_first = (await http.get("/api/v2/logs", params={"sort": "date:1", "per_page": 2})).json()
    assert [e["type"] for e in oldest_first] == ["ss", "s"]
    totals = (await http.get("/api/v2/logs", params={"q": 'type:"sv"', "include_totals": "true"})).json()
    assert totals["total"] == 1 and totals["logs"][0]["type"] == "sv"


# --- rate limit and injected failures ---------------------------------------------------------


async def test_rate_limit_headers_on_every_api_response(standin, http):
    for path in (f"/api/v2/users/{ANA}", "/api/v2/users/auth0|nobody", "/api/v2/logs?from=0"):
        answer = await http.get(path)
        assert int(answer.headers["x-ratelimit-limit"]) >= 1000
        assert int(answer.headers["x-ratelimit-reset"]) >= int(time.time())
    async with httpx.AsyncClient(base_url=standin.base_url) as anonymous:
        assert "x-ratelimit-limit" in (await anonymous.get("/api/v2/users")).headers


async def test_token_bucket_answers_429_with_headers(standin, http):
    standin.set_rate_limit(2, 1.0)
    answers = [await http.get(f"/api/v2/users/{ANA}") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["1", "0", "0"]
    assert answers[2].json() == sample("mgmt/error_bodies.json")["429"]
    reset = int(answers[2].headers["x-ratelimit-reset"])
    assert time.time() < reset <= time.time() + 3
    assert all(a.headers["x-ratelimit-limit"] == "2" for a in answers)


def test_token_bucket_model():
    bucket = TokenBucket(5, 5.0, updated=1000.0)
    assert all(bucket.take(1000.0) for _ in range(5)) and not bucket.take(1000.0)
    assert bucket.headers(1000.0) == {
        "x-ratelimit-limit": "5",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "1001",
    }
    assert bucket.take(1000.2) and not bucket.take(1000.2)


async def test_fail_next_injects_auth0_error_bodies(standin, http):
    standin.fail_next("/api/v2/users/", 503, count=2)
    first, second, third = [await http.get(f"/api/v2/users/{ANA}") for _ in range(3)]
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    error_shape(first.json(), 503)
    assert "x-ratelimit-limit" in first.headers
    standin.fail_next("/api/v2/tickets", 429)
    limited = await http.post("/api/v2/tickets/email-verification", json={"user_id": ANA})
    assert limited.status_code == 429 and limited.json()["errorCode"] == "too_many_requests"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert ("GET", f"/api/v2/users/{ANA}", 503) in standin.calls
    assert standin.calls[-1] == ("POST", "/api/v2/tickets/email-verification", 429)


# --- log streams -----------------------------------------------------------------------------


async def test_log_stream_crud(http):
    body = sample("mgmt/POST_log-streams_request.json")
    created = await http.post("/api/v2/log-streams", json=body)
    assert created.status_code == 200
    stream = created.json()
    assert stream["id"].startswith("lst_") and stream["status"] == "active" and stream["sink"] == body["sink"]
    assert [s["id"] for s in (await http.get("/api/v2/log-streams")).json()] == [stream["id"]]
    paused = await http.patch(f"/api/v2/log-streams/{stream['id']}", json={"status": "paused"})
    assert paused.json()["status"] == "paused"
    sink = await http.patch(f"/api/v2/log-streams/{stream['id']}", json={"sink": {"httpEndpoint": "https://x.test/"}})
    assert sink.json()["sink"]["httpEndpoint"] == "https://x.test/"
    assert sink.json()["sink"]["httpContentFormat"] == "JSONARRAY"
    assert (await http.patch(f"/api/v2/log-streams/{stream['id']}", json={"status": "bogus"})).status_code == 400
    assert (await http.post("/api/v2/log-streams", json={"type": "http", "sink": {}})).status_code == 400
    assert (await http.delete(f"/api/v2/log-streams/{stream['id']}")).status_code == 204
    missing = await http.get(f"/api/v2/log-streams/{stream['id']}")
    assert missing.status_code == 404 and missing.json()["statusCode"] == 404


async def test_active_http_stream_receives_events(standin, http):
    received: list[tuple[str, list]] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        received.append((request.headers.get("Authorization", ""), await request.json()))
        arrived.set()
        return web.Response(status=200)

    async with receiving("/logs/acme", receive) as base_url:
        await http.post(
            "/api/v2/log-streams",
            json={
                "name": "streamer",
                "type": "http",
                "filters": [{"type": "category", "name": "user.success"}],
                "sink": {
                    "httpEndpoint": f"{base_url}/logs/acme",
                    "httpContentFormat": "JSONARRAY",
                    "httpAuthorization": "Bearer s3",
                },
            },
        )
        standin.add_log({"type": "s", "user_id": ANA})  # auth.login.success: filtered out
        event = standin.add_log({"type": "sv", "user_id": ANA})
        await asyncio.wait_for(arrived.wait(), 5)
    authorization, body = received[0]
    assert authorization == "Bearer s3"
    assert body == [{"log_id": event["log_id"], "data": event}]


async def test_a_user_success_stream_gets_svr_and_scpr_as_register_expects(standin, http):
    """The stand-in files `svr`/`scpr` under user.success, as Auth0 does (FACTS.md) and as the
    filters `streamer register` writes assume; under another category they never arrived."""
    received: list[dict] = []
    all_arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        received.extend(entry["data"] for entry in await request.json())
        if len(received) >= 3:
            all_arrived.set()
        return web.Response(status=200)

    async with receiving("/logs/acme", receive) as base_url:
        body = stream_body("acme", base_url, "s3", {"sv", "scpr"})
        await http.post("/api/v2/log-streams", json={**body, "type": "http"})
        standin.add_log({"type": "s", "user_id": ANA})  # auth.login.success: filtered out
        for kind in ("svr", "scpr", "sv"):
            standin.add_log({"type": kind, "user_id": ANA})
        await asyncio.wait_for(all_arrived.wait(), 10)
    assert [event["type"] for event in received] == ["svr", "scpr", "sv"]


def test_sample_users_cover_locales_and_shapes():
    users = {u["email"]: u for u in load_sample_users()}
    assert users["ana.silva@example.com"]["user_metadata"]["locale"] == "fr-CA"
    assert users["ana.silva@example.com"]["email_verified"] is False
    assert users["bruno.costa@example.com"]["user_id"].startswith("google-oauth2|")
    assert users["bruno.costa@example.com"]["email_verified"] is True
    assert users["chloe.tremblay@example.com"]["email_verified"] is True
    locales = {(u.get("user_metadata") or {}).get("locale") for u in users.values()}
    assert {"fr-CA", "de", "es"} <= locales
    assert any(not u["email_verified"] and "user_metadata" not in u for u in users.values())  # English, default
    assert all(u["email"].endswith("@example.com") for u in users.values())


async def test_unknown_api_route_answers_auth0_shape(http):
    answer = await http.get("/api/v2/no-such-thing")
    assert answer.status_code == 404 and answer.json()["statusCode"] == 404
    assert "x-ratelimit-limit" in answer.headers


async def test_a_stream_failing_batch_after_batch_is_suspended_and_delivers_what_it_kept_once_active(standin, http):
    answers = {"status": 503}
    received: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        if answers["status"] == 200:
            received.extend(record["log_id"] for record in await request.json())
        return web.Response(status=answers["status"])

    async with receiving("/logs/acme", receive) as base_url:
        stream = (
            await http.post(
                "/api/v2/log-streams",
                json={"name": "streamer-acme", "type": "http", "sink": {"httpEndpoint": f"{base_url}/logs/acme"}},
            )
        ).json()
        standin.stream_suspend_after = 2
        first = standin.add_log({"type": "ss", "user_id": ANA})
        await wait_until(
            lambda: standin.log_streams[stream["id"]]["status"] == "suspended",  # 3 attempts a
            what="the stream suspended",
        )  # batch, twice
        assert (await http.get(f"/api/v2/log-streams/{stream['id']}")).json()["status"] == "suspended"
        failed = [d for d in standin.stream_deliveries if d[0] == stream["id"]]
        assert len(failed) == 6 and {status for _, status, _ in failed} == {503}
        later = standin.add_log({"type": "sv", "user_id": ANA})  # while suspended: kept, not sent
        assert [e["log_id"] for e in standin.stream_held[stream["id"]]] == [first["log_id"], later["log_id"]]
        assert len(standin.stream_deliveries) == 6 and received == []

        answers["status"] = 200
        patched = await http.patch(f"/api/v2/log-streams/{stream['id']}", json={"status": "active"})
        assert patched.json()["status"] == "active"
        await wait_until(lambda: len(received) >= 2, what="the kept events delivered")
    assert received == [first["log_id"], later["log_id"]]
    assert standin.stream_held.get(stream["id"], []) == []


async def test_a_stream_to_another_host_is_kept_never_posted(standin, http):
    """A stand-in sends nothing off this machine: the batch is recorded as not delivered (-1)."""
    stream = (
        await http.post(
            "/api/v2/log-streams",
            json={"type": "http", "sink": {"httpEndpoint": "https://streamer.example.com/logs/acme"}},
        )
    ).json()
    standin.add_log({"type": "sv", "user_id": ANA})
    await wait_until(lambda: standin.stream_deliveries, what="a delivery attempt")
    assert standin.stream_deliveries == [(stream["id"], -1, 1)]
    assert [
        is_loopback_url(u)
        for u in (
            "http://127.0.0.2:1/",
            "http://[::1]:8/",
            "http://LOCALHOST/",
            "http://10.0.0.1/",
            "https://auth0.com/",
        )
    ] == [True] * 3 + [False] * 2


def test_a_stream_takes_the_categories_of_the_shared_table():
    """Which events a stream takes follows `streamer.auth0.log_streams`, the table `streamer
    register` and the watch use (no table of the stand-in's own to drift from it)."""
    for kind, category in [*CATEGORY_OF_TYPE.items(), ("some_new_type", "other")]:
        for name in {*CATEGORY_OF_TYPE.values(), "other"}:
            stream = {"type": "http", "filters": [{"type": "category", "name": name}]}
            assert takes(stream, {"type": kind}) == (name == category), (kind, name)
    assert takes({"type": "http"}, {"type": "svr"})  # no filters: everything
    assert not takes({"type": "eventbridge"}, {"type": "svr"})  # only http streams post


def test_a_batch_in_each_content_format_with_the_sinks_headers():
    events = [{"log_id": "1", "type": "sv"}, {"log_id": "2", "type": "scp"}]
    records = [{"log_id": "1", "data": events[0]}, {"log_id": "2", "data": events[1]}]
    assert json.loads(batch_body({}, events)) == records
    assert json.loads(batch_body({"httpContentFormat": "JSONOBJECT"}, events)) == {"logs": records}
    lines = batch_body({"httpContentFormat": "JSONLINES"}, events).split("\n")
    assert [json.loads(line) for line in lines] == records
    sink = {
        "httpContentType": "application/x-ndjson",
        "httpAuthorization": "Bearer s3",
        "httpCustomHeaders": [{"header": "X-Tenant", "value": "acme"}, {"value": "no name"}],
    }
    assert batch_headers(sink) == {
        "Content-Type": "application/x-ndjson",
        "Authorization": "Bearer s3",
        "X-Tenant": "acme",
    }
    assert batch_headers({}) == {"Content-Type": "application/json"}


async def test_a_token_carries_the_grant_of_its_issue_time(standin):
    standin.granted_scopes = "read:users"
    narrow = standin.issue_token()
    standin.granted_scopes = "read:users create:user_tickets"
    wide = standin.issue_token()
    async with httpx.AsyncClient(base_url=standin.base_url) as client:
        body = {"user_id": ANA}
        refused = await client.post(
            "/api/v2/tickets/email-verification", json=body, headers={"Authorization": f"Bearer {narrow}"}
        )
        assert refused.status_code == 403
        assert refused.json() == {
            "statusCode": 403,
            "error": "Forbidden",
            "errorCode": "insufficient_scope",
            "message": "Insufficient scope, expected any of: create:user_tickets",
        }
        allowed = await client.post(
            "/api/v2/tickets/email-verification", json=body, headers={"Authorization": f"Bearer {wide}"}
        )
        assert allowed.status_code == 201
        user = await client.get(f"/api/v2/users/{ANA}", headers={"Authorization": f"Bearer {narrow}"})
        assert user.status_code == 200
        token = await client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": standin.client_id,
                "client_secret": standin.client_secret,
                "audience": standin.audience,
            },
        )
    assert token.json()["scope"] == "read:users create:user_tickets"


# --- a real tenant: search lag, latency, plan rate limits ------------------------------------


async def _search(http, user_id: str) -> list[dict]:
    return (await http.get("/api/v2/users", params={"q": f'user_id:"{user_id}"'})).json()


async def _verified_in_search(http, user_id: str) -> bool:
    return bool((await _search(http, user_id))[0]["email_verified"])


async def test_search_lags_writes_by_search_lag_s_while_get_by_id_and_by_email_are_current(standin, http):
    lag = 1.0  # the checks of the lagging answers take far less, even on a busy machine
    standin.set_search_lag(lag)
    written = time.monotonic()
    fresh = standin.add_user({"email": "lagging@example.com"})
    assert await _search(http, fresh["user_id"]) == []  # a new user: absent
    assert (await http.get(f"/api/v2/users/{fresh['user_id']}")).status_code == 200
    by_email = (await http.get("/api/v2/users-by-email", params={"email": "lagging@example.com"})).json()
    assert [u["user_id"] for u in by_email] == [fresh["user_id"]]
    await http.patch(f"/api/v2/users/{ANA}", json={"email_verified": True})
    assert (await _search(http, ANA))[0]["email_verified"] is False  # a changed user: as they were
    assert (await http.get(f"/api/v2/users/{ANA}")).json()["email_verified"] is True
    await wait_until(lambda: _search(http, fresh["user_id"]), what="the new user in the search")
    assert time.monotonic() - written >= lag
    await wait_until(lambda: _verified_in_search(http, ANA), what="the change in the search")


async def test_deleting_a_user_logs_sdu_and_the_search_finds_them_for_the_lag(standin, http):
    standin.set_search_lag(30)
    answer = await http.delete(f"/api/v2/users/{ANA}")
    assert answer.status_code == 204
    assert (await http.get(f"/api/v2/users/{ANA}")).json()["errorCode"] == "inexistent_user"
    assert [u["user_id"] for u in await _search(http, ANA)] == [ANA]  # the index has not caught up
    [sdu] = [e for e in standin.logs if e["type"] == "sdu"]
    assert sdu["user_id"] == ANA and sdu["log_id"]
    standin.index_all()
    assert await _search(http, ANA) == []
    assert (await http.delete(f"/api/v2/users/{ANA}")).status_code == 404


async def test_latency_is_added_to_every_api_call(standin, http):
    standin.latency_s = 0.2
    started = time.monotonic()
    await http.get(f"/api/v2/users/{ANA}")
    assert time.monotonic() - started >= 0.2


async def test_plan_presets_have_separate_buckets_where_auth0_has_them(standin, http):
    standin.set_plan("essentials")
    read = await http.get(f"/api/v2/users/{ANA}")
    ticket = await http.post("/api/v2/tickets/email-verification", json={"user_id": ANA})
    assert read.headers["x-ratelimit-limit"] == "40" and ticket.headers["x-ratelimit-limit"] == "10"
    tickets = [await http.post("/api/v2/tickets/email-verification", json={"user_id": ANA}) for _ in range(10)]
    assert tickets[-1].status_code == 429 and tickets[-1].json()["errorCode"] == "too_many_requests"
    assert (await http.get(f"/api/v2/users/{ANA}")).status_code == 200  # reads have their own bucket
    standin.set_plan("free")
    answers = [await http.get(f"/api/v2/users/{ANA}") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["x-ratelimit-limit"] == "2"
    with pytest.raises(ValueError):
        standin.set_plan("platinum")
