"""Webhook/replay body parsing: every Auth0 content format, and garbage never crashes it."""

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.events import (
    _TEXT_TRIGGER,
    _TEXT_TRIGGERS,
    BodyError,
    _may_hold_trigger,
    may_hold_credentials,
    parse_body,
    scrub,
    scrubbed_json,
    unwrap,
    user_id_of,
)

FIXTURES = Path(__file__).parent / "fixtures"  # copies of shared/auth0/samples


def sample_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize(
    "name", ["webhook/body_JSONARRAY.json", "webhook/body_JSONLINES.jsonl", "webhook/body_JSONOBJECT.json"]
)
def test_every_auth0_content_format_gives_the_same_events(name):
    batch = parse_body(sample_bytes(name))
    assert [e["type"] for e in batch.events] == ["ss", "svr", "s", "sv"]
    assert all(len(e["log_id"]) == 56 for e in batch.events)
    assert batch.skipped == []


def test_a_logs_api_page_and_a_bare_event_are_accepted():
    page = parse_body(sample_bytes("mgmt/GET_logs_checkpoint_page.json"))
    assert [e["type"] for e in page.events] == ["ss", "svr", "s", "sv"]
    search = parse_body(sample_bytes("mgmt/GET_logs_search_include_totals.json"))
    assert [e["type"] for e in search.events] == ["ss", "s"]
    single = parse_body(sample_bytes("events/ss.json"))
    assert [e["type"] for e in single.events] == ["ss"]


def test_envelope_log_id_is_used_when_data_lacks_it():
    body = json.dumps([{"log_id": "900abc", "data": {"type": "ss", "user_id": "auth0|1"}}])
    assert parse_body(body).events == [{"log_id": "900abc", "type": "ss", "user_id": "auth0|1"}]


def test_non_events_are_reported_not_fatal():
    body = json.dumps([1, "x", None, {"type": "ss"}, {"log_id": "1"}, {"log_id": "2", "type": "s"}])
    batch = parse_body(body)
    assert [e["log_id"] for e in batch.events] == ["2"]
    assert len(batch.skipped) == 5
    assert "entry 0: not an object but int" in batch.skipped


@pytest.mark.parametrize("encode", [lambda body: body, lambda body: body.decode(), lambda body: b"\xef\xbb\xbf" + body])
@pytest.mark.parametrize("name", ["webhook/body_JSONARRAY.json", "webhook/body_JSONLINES.jsonl"])
def test_bytes_text_and_a_byte_order_mark_give_the_same_events(name, encode):
    """orjson reads the bytes as they came; what it refuses (a BOM, JSON lines) takes the long way."""
    assert parse_body(encode(sample_bytes(name))).events == parse_body(sample_bytes(name)).events


@pytest.mark.parametrize(
    ("body", "says"),
    [(b"", "empty"), (b" \n ", "empty"), (b"[1, \xff]", "not UTF-8"), (b'{"a": 1}\n{oops', "line 2")],
)
def test_a_body_error_says_what_is_wrong(body, says):
    with pytest.raises(BodyError, match=says):
        parse_body(body)


@pytest.mark.parametrize("body", [b"", b"   ", b"{not json", b"\xff\xfe\x00", b"[1, 2", b'{"a": 1}\n{oops'])
def test_a_body_that_is_not_json_is_a_body_error(body):
    with pytest.raises(BodyError):
        parse_body(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_parse_or_raise_body_error(data):
    try:
        batch = parse_body(data)
    except BodyError:
        return
    for event in batch.events:
        assert isinstance(event["log_id"], str) and isinstance(event["type"], str)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        json_values
        | st.fixed_dictionaries(
            {"log_id": st.text(min_size=1, max_size=60), "type": st.sampled_from(["ss", "s", "sv"])}
        ),
        max_size=10,
    )
)
def test_any_json_array_is_split_into_events_and_skipped_entries(entries):
    batch = parse_body(json.dumps(entries))
    assert len(batch.events) + len(batch.skipped) == len(entries)


def test_scrub_removes_ticket_links_and_passwords_at_any_depth():
    event = json.loads(sample_bytes("events/scp.json"))
    event["details"]["body"]["verificationUrl"] = "https://x.auth0.com/u/email-verification?ticket=abc#"
    cleaned = json.dumps(scrub(event))
    assert "Q2hhbmdlUGFzc3dvcmRUaWNrZXRFeGFtcGxl" not in cleaned
    assert "ticket=abc" not in cleaned
    assert event["details"]["body"]["ticket"] == "Q2hhbmdlUGFzc3dvcmRUaWNrZXRFeGFtcGxl"  # input untouched


def test_user_id_falls_back_to_details_body():
    assert user_id_of({"user_id": "", "details": {"body": {"user_id": "auth0|9"}}}) == "auth0|9"
    assert user_id_of({"user_id": ""}) is None
    assert unwrap({"_id": "7", "type": "s"})[0]["log_id"] == "7"


def test_scrub_returns_a_clean_event_as_it_is_and_copies_only_what_it_changes():
    clean = json.loads(sample_bytes("events/s.json"))
    assert scrub(clean) is clean
    dirty = json.loads(sample_bytes("events/sv.json"))
    cleaned = scrub(dirty)
    assert cleaned is not dirty and cleaned["details"]["body"]["ticket"] == "[removed]"
    assert cleaned["details"]["query"] is dirty["details"]["query"]  # untouched branch shared, not copied


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_scrub_never_leaves_a_credential_value(value):
    wrapped = {"details": {"body": {"ticket": "SECRET-TICKET", "x": value}}, "list": [{"password": "p4ss"}]}
    text = json.dumps(scrub(wrapped))
    assert "SECRET-TICKET" not in text and "p4ss" not in text


def test_risk_assessment_codes_survive_scrubbing():
    """Rules read details.riskAssessment.assessments.NewDevice.code: it is not a credential."""
    event = scrub(json.loads(sample_bytes("events/s_new_device.json")))
    assert event["details"]["riskAssessment"]["assessments"]["NewDevice"]["code"] == "no_match"


_KEYS = st.sampled_from(
    [
        "password",
        "ticket",
        "otp",
        "access_token",
        "name",
        "email",
        "details",
        "Ticket",
        "AUTHORIZATION",
        "newPassword",
        "x-api-key",
        "last_password_reset",
        "token_type",
        "OTP_code",
        "description",
        "footprint",
        'pass"word',
        "verification_url",
        "xpassword\n",
        "otp\n",
        "mfa_otp\n",
        "\u017fecret",
        "client_\u017fecret",
        "api-key",
        "reset_url",
        "otp-code",
    ]
)
_TEXT_PIECES = st.sampled_from(
    [
        "https://t.auth0.com/lo/reset?ticket=",
        "abc123",
        "&access_token=",
        "?code=",
        "Bearer ",
        "https://t.auth0.com/lo/reset?Ticket=abc123#",
        "cb?access_token=at1",
        "Bearer abcdefghij",  # noqa: E501
        "eyJhbGciOiJI.eyJzdWIi.c2ln",
        "eyJhbGciOi",
        ".x.y",
        "ticket",
        "=",
        " ",
        '"',
        "\\",
        "/",
        "é",
        "PASSWORD=",
        "ey",
        "J",
        "?tic\u212aet=",
        "\u0130",
        "\n",
        "[removed]",
        "[Removed]",
        "[removed",
        "]",
        "*",
    ]
)
_TEXT = st.lists(_TEXT_PIECES, max_size=5).map("".join) | st.text(max_size=8)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT | st.just("*****") | st.just("[removed]"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=800, deadline=None)
@given(st.lists(st.dictionaries(_KEYS, _JSON, max_size=5), min_size=1, max_size=4), st.booleans(), st.booleans())
def test_a_body_said_to_hold_no_credentials_needs_no_scrubbing(entries, pretty, ascii_only):
    """The raw-body fast path may only skip scrub() when scrub() would change nothing."""
    events = [{**entry, "log_id": f"L{i}", "type": "ss"} for i, entry in enumerate(entries)]
    raw = json.dumps(events, indent=2 if pretty else None, ensure_ascii=ascii_only).encode()
    if not may_hold_credentials(raw):
        assert all(scrub(event) is event for event in parse_body(raw).events)


@settings(max_examples=800, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=5))
def test_a_value_is_encoded_as_it_would_be_once_scrubbed(value):
    """scrubbed_json skips scrub() when the encoded bytes are clear: never with a different result
    (nor an error where scrubbing first would have none: an integer beyond 64 bits)."""
    try:
        expected = orjson.dumps(scrub(value), default=str)
    except orjson.JSONEncodeError:
        with pytest.raises(orjson.JSONEncodeError):
            scrubbed_json(value)
        return
    assert scrubbed_json(value) == expected


def test_scrubbed_data_is_scrubbed_already():
    """A context holds events stored scrubbed: encoding it must not pay for scrub() a second time."""
    event = {"details": {"body": {"ticket": "https://t/lo?x=1", "password": "hunter2"}}, "type": "sv"}
    cleaned = scrub(event)
    assert cleaned["details"]["body"] == {"ticket": "[removed]", "password": "[removed]"}
    assert scrub(cleaned) is cleaned
    assert not may_hold_credentials(orjson.dumps(cleaned))
    assert may_hold_credentials(b'{"ticket": "[Removed]"}') and may_hold_credentials(b'{"ticket": "*[removed]"}')
    assert scrubbed_json({"user": event}) == orjson.dumps({"user": cleaned})


def test_auth0s_password_mask_is_kept_and_real_credentials_are_found():
    assert not may_hold_credentials(b'[{"details": {"body": {"password": "*****", "otp": null}}}]')
    assert may_hold_credentials(b'[{"details": {"body": {"password" : "hunter2"}}}]')
    assert may_hold_credentials(b'[{"details": {"body": {"ticket": "https://t"}}}]')
    assert may_hold_credentials(b'[{"details": {"body": {"pass\\u0077ord": "x"}}}]')  # an escape could spell one
    assert scrub({"password": "*****"}) == {"password": "*****"}


@pytest.mark.parametrize(
    "key", ["xpassword\n", "otp\n", "mfa_otp\n", "\u017fecret", "Pa\u017f\u017fword", "tic\u212aet"]
)
def test_keys_that_python_reads_as_credential_words_are_maybes(key):
    """scrub() matches keys with Python's re: `$` before a trailing newline, and case-insensitive
    Unicode (ſ is s, the Kelvin sign is k). The raw check must not let such a key through."""
    raw = json.dumps([{"log_id": "L1", "type": "ss", key: "hunter2"}], ensure_ascii=False).encode()
    event = parse_body(raw).events[0]
    assert scrub(event) is not event
    assert may_hold_credentials(raw)


def test_a_folding_letter_in_free_text_is_a_maybe():
    raw = json.dumps(
        [{"log_id": "L1", "type": "ss", "description": "cb?tic\u212aet=abc123"}], ensure_ascii=False
    ).encode()
    event = parse_body(raw).events[0]
    assert scrub(event)["description"] == "cb?tic\u212aet=[removed]"
    assert may_hold_credentials(raw)


def test_credential_keys_are_found_in_any_case_and_by_the_word_they_hold():
    event = {
        "details": {
            "Ticket": "T1CKET",
            "authorization": "Basic dXNlcjpwYXNz",
            "X-Api-Key": "K3Y",
            "clientSecret": "S3CRET",
            "body": {"NewPassword": "hunter22", "mfa_otp": "123456"},
        },
        "last_password_reset": "2026-03-01T10:00:00.000Z",
        "token_type": "Bearer",
        "footprint": "kept",
    }
    text = json.dumps(scrub(event))
    for secret in ("T1CKET", "dXNlcjpwYXNz", "K3Y", "S3CRET", "hunter22", "123456"):
        assert secret not in text
    assert '"last_password_reset": "2026-03-01T10:00:00.000Z"' in text and '"footprint": "kept"' in text


def test_credentials_inside_free_text_are_removed():
    event = {
        "description": "Reset sent: https://acme.auth0.com/lo/reset?ticket=Q2hhbmdlUGFzc3dvcmQ#",
        "details": {
            "error": {"message": "callback https://app.test/cb?state=1&access_token=at123&code=c0de"},
            "headers": ["Bearer abcdefghijklmnop", "ok"],
            "note": "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl here",
        },
    }
    cleaned = scrub(event)
    text = json.dumps(cleaned)
    for secret in ("Q2hhbmdlUGFzc3dvcmQ", "at123", "c0de", "abcdefghijklmnop", "eyJzdWIiOiIxIn0"):
        assert secret not in text
    assert cleaned["description"] == "Reset sent: https://acme.auth0.com/lo/reset?ticket=[removed]#"
    assert "state=1" in text and cleaned["details"]["headers"][1] == "ok"
    raw = json.dumps([{**event, "log_id": "L1", "type": "s"}]).encode()
    assert may_hold_credentials(raw)
    assert may_hold_credentials(b'[{"details": {"Ticket": "x"}}]')
    assert may_hold_credentials(b'[{"details": {"AUTHORIZATION": "x"}}]')
    assert not may_hold_credentials(b'[{"description": "Successful login", "details": {"Ticket": null}}]')


@settings(max_examples=500, deadline=None)
@given(st.lists(_TEXT, min_size=1, max_size=4), st.booleans())
def test_a_free_text_credential_never_takes_the_raw_fast_path(texts, ascii_only):
    """Same property, on the field where credentials hide in text (ticket links in a description)."""
    events = [{"log_id": f"L{i}", "type": "ss", "description": text} for i, text in enumerate(texts)]
    raw = json.dumps(events, ensure_ascii=ascii_only).encode()
    if not may_hold_credentials(raw):
        assert all(scrub(event) is event for event in parse_body(raw).events)


_TRIGGER_PIECES = [
    "bearer",
    "BeArEr",
    "eyj",
    "EYJ",
    "eyJ",
    "bea",
    "rer",
    "ey",
    "j",
    "=",
    "x",
    "ticket",
    "\u212a",
    "\u017f",
    "\u0130",
    "\u0131",
    " ",
]
_TRIGGER_TEXT = st.lists(st.sampled_from(_TRIGGER_PIECES), max_size=6).map("".join)


@settings(max_examples=500, deadline=None)
@given(_TRIGGER_TEXT | st.text(max_size=12))
def test_the_cheap_trigger_test_never_skips_text_the_regex_would_scrub(text):
    """scrub_text's C-speed pre-test must let through every text its regex would act on."""
    if _TEXT_TRIGGER.search(text) is not None:
        assert _may_hold_trigger(text)


def test_the_cheap_trigger_test_knows_every_trigger():
    """It finds `=` triggers by their `=` and only bearer and eyj by name: a new trigger needs it updated."""
    assert all(trigger.endswith("=") or trigger in ("bearer", "eyj") for trigger in _TEXT_TRIGGERS)


# --- values no store can keep: quarantined one by one, never the whole batch ---------------------

POISONS = {
    "lone surrogate in a field": (r'"description": "\ud800"', "description: a lone UTF-16 surrogate"),
    "lone surrogate deep inside": (r'"details": {"body": {"name": ["x", "\udfff"]}}', "details.body.name[1]"),
    "lone surrogate in a key": (r'"details": {"\ud800": 1}', "a key with a lone UTF-16 surrogate"),
    "lone surrogate as the type": (r'"type": "\ud83d"', "type: a lone UTF-16 surrogate"),
    "integer over 4,300 digits": ('"n": ' + "7" * 5000, "number out of range"),
    "number beyond a double": ('"n": 1e400', "number out of range (1e400)"),
    "NaN": ('"n": NaN', "number out of range (NaN)"),
    "nested 300 levels": ('"n": ' + "[" * 300 + "]" * 300, "n: nested deeper than 254 levels"),
}


@pytest.mark.parametrize("name", POISONS)
@pytest.mark.parametrize("shape", ["array", "lines", "envelopes"])
def test_an_event_no_store_can_keep_is_quarantined_and_the_others_go_on(name, shape):
    fragment, reason = POISONS[name]
    poison = '{"log_id": "bad", "type": "ss", ' + fragment + "}"
    if '"type"' in fragment:
        poison = '{"log_id": "bad", ' + fragment + "}"
    good = ['{"log_id": "good1", "type": "ss"}', '{"log_id": "good2", "type": "s"}']
    entries = [good[0], poison, good[1]]
    if shape == "envelopes":
        ids = ("good1", "bad", "good2")
        entries = [f'{{"log_id": "{i}", "data": {entry}}}' for i, entry in zip(ids, entries, strict=True)]
    body = ("\n".join(entries) if shape == "lines" else "[" + ", ".join(entries) + "]").encode()

    batch = parse_body(body)

    assert [e["log_id"] for e in batch.events] == ["good1", "good2"]
    assert [q.log_id for q in batch.quarantined] == ["bad"]
    assert reason in batch.quarantined[0].reason
    assert batch.skipped == []
    orjson.dumps(batch.events)  # what is kept can be stored


def test_a_log_id_that_is_not_unicode_is_skipped_not_stored():
    batch = parse_body(rb'[{"log_id": "\ud800", "type": "ss"}, {"log_id": "ok", "type": "ss"}]')
    assert [e["log_id"] for e in batch.events] == ["ok"]
    assert batch.skipped == ["entry 0: log_id is not valid Unicode"]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"log_id": "a", "type": "s", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"a": 1}\n' + b"[" * 5000 + b"]" * 5000,
    ],
)
def test_a_body_nested_5000_levels_deep_is_a_clear_body_error(body):
    with pytest.raises(BodyError, match="nested too deeply"):
        parse_body(body)


def test_valid_events_parse_as_before_big_numbers_included():
    """Numbers as orjson reads them, whichever parser a body needed (a poison event elsewhere in it
    sends the whole body through the standard one): the same event is never kept once, refused once."""
    for other in ('{"log_id": "b", "type": "s"}', r'{"log_id": "b", "type": "s", "x": "\ud800"}'):
        body = (
            '[{"log_id": "a", "type": "s", "n": 18446744073709551615, "big": ' + "9" * 30 + ', "f": 1.5, '
            '"deep": ' + "[" * 200 + "]" * 200 + "}, " + other + "]"
        ).encode()
        [event] = [e for e in parse_body(body).events if e["log_id"] == "a"]
        assert event["n"] == 18446744073709551615 and event["big"] == 1e30 and event["f"] == 1.5
