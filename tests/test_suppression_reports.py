"""Reading bounces and complaints (pure): DSN and ARF parsing, provider payloads, VERP and
unsubscribe tokens, the soft-bounce policy."""

import json

import pytest

from streamer.suppression.policy import Kind, classify_status
from streamer.suppression.providers import postmark_reports, ses_reports
from streamer.suppression.reports import parse_report
from streamer.suppression.verp import ReturnPaths
from streamer.unsubscribe import UnsubscribeTokens, links

from conftest import FIXTURES

BOUNCES = FIXTURES / "bounces"
RETURN_PATH = "bounces+abcdefghijklmnop@bounces.acme.test"


def eml(name: str, **values: str) -> bytes:
    text = (BOUNCES / name).read_text()
    for key, value in {"RETURN_PATH": RETURN_PATH, "BARE_RETURN_PATH": "bounces@bounces.acme.test", **values}.items():
        text = text.replace("{" + key + "}", value)
    return text.replace("\n", "\r\n").encode()


@pytest.mark.parametrize(
    ("status", "action", "kind"),
    [
        ("5.1.1", "failed", Kind.HARD),
        ("5.1.10", "failed", Kind.HARD),
        ("5.4.4", "failed", Kind.HARD),
        ("5.2.2", "failed", Kind.SOFT),  # mailbox full
        ("5.7.1", "failed", Kind.SOFT),  # policy / content block: not the address's fault
        ("4.2.2", "failed", Kind.SOFT),
        ("4.4.1", "delayed", None),
        ("2.0.0", "delivered", None),
        ("5.1.1", "relayed", None),
        ("", "failed", Kind.SOFT),
        ("garbage", "failed", Kind.SOFT),
    ],
)
def test_dsn_status_classification(status, action, kind):
    assert classify_status(status, action) == kind


def test_a_hard_dsn_names_the_recipient_the_status_and_the_original_return_path():
    report = parse_report(eml("dsn_hard.eml"))
    assert report.format == "dsn"
    [finding] = report.findings
    assert (finding.kind, finding.address) == (Kind.HARD, "ana.silva@example.com")
    assert finding.detail.startswith("5.1.1 smtp; 550 5.1.1")
    assert report.original_senders == [RETURN_PATH]


def test_soft_and_delayed_dsns():
    [soft] = parse_report(eml("dsn_soft.eml")).findings
    assert soft.kind == Kind.SOFT
    assert parse_report(eml("dsn_delayed.eml")).findings == []  # the remote MTA still tries


def test_an_arf_complaint_carries_the_original_envelope_sender():
    report = parse_report(eml("arf_complaint.eml"))
    assert report.format == "arf"
    [finding] = report.findings
    assert finding.kind == Kind.COMPLAINT and finding.detail == "feedback-type abuse"
    assert RETURN_PATH in report.original_senders


def test_a_not_spam_arf_and_plain_mail_are_no_reports():
    not_spam = eml("arf_complaint.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert parse_report(not_spam).findings == []
    auto_reply = b"From: ana@example.com\r\nSubject: Out of office\r\n\r\nBack on Monday.\r\n"
    assert parse_report(auto_reply).format is None


def test_ses_notifications():
    [bounce] = ses_reports(json.loads((BOUNCES / "ses_bounce.json").read_text()))
    assert (bounce.kind, bounce.address, bounce.source) == (Kind.HARD, "dave.miller@example.com", "ses")
    assert "5.1.1" in bounce.detail
    [complaint] = ses_reports(json.loads((BOUNCES / "ses_complaint.json").read_text()))
    assert (complaint.kind, complaint.address) == (Kind.COMPLAINT, "Sofia.Garcia@example.com")
    assert ses_reports(json.loads((BOUNCES / "ses_delivery.json").read_text())) == []
    transient = json.loads((BOUNCES / "ses_bounce.json").read_text())
    transient["bounce"]["bounceType"] = "Transient"
    assert [r.kind for r in ses_reports(transient)] == [Kind.SOFT]


def test_postmark_payloads():
    [bounce] = postmark_reports(json.loads((BOUNCES / "postmark_bounce.json").read_text()))
    assert (bounce.kind, bounce.address, bounce.source) == (Kind.HARD, "erik.schmidt@example.com", "postmark")
    [complaint] = postmark_reports(json.loads((BOUNCES / "postmark_spam_complaint.json").read_text()))
    assert complaint.kind == Kind.COMPLAINT
    assert postmark_reports(json.loads((BOUNCES / "postmark_autoresponder.json").read_text())) == []
    soft = {**json.loads((BOUNCES / "postmark_bounce.json").read_text()), "Type": "SoftBounce", "TypeCode": 4096}
    assert [r.kind for r in postmark_reports(soft)] == [Kind.SOFT]


def test_verp_tokens_are_stable_per_tenant_and_address_and_need_the_secret():
    paths = ReturnPaths("bounces@Bounces.Acme.test", b"s" * 32)
    token = paths.token("acme", "Ana@Example.com")
    assert token == paths.token("acme", "ana@example.com") != paths.token("globex", "ana@example.com")
    assert len(token) == 16 and token != ReturnPaths("bounces@bounces.acme.test", b"t" * 32).token(
        "acme", "ana@example.com"
    )  # noqa: E501
    address = paths.address(token)
    assert address == f"bounces+{token}@bounces.acme.test" and len(address.split("@")[0]) <= 64
    assert paths.token_of(address.upper()) == token
    assert paths.token_of(f"bounces+{token}@other.test") is None
    assert paths.token_of(f"other+{token}@bounces.acme.test") is None
    assert paths.token_of("bounces@bounces.acme.test") is None and paths.is_bare("Bounces@bounces.acme.test")
    assert paths.verify(token, "acme", "ana@example.com") and not paths.verify(token, "acme", "bob@example.com")


def test_unsubscribe_tokens_round_trip_and_refuse_any_change():
    tokens = UnsubscribeTokens(b"k" * 32)
    token = tokens.make("acme", "auth0|65f0c0ffee0000000000c003", "new-device")
    subscription = tokens.read(token)
    assert (subscription.tenant, subscription.user_id, subscription.rule) == (
        "acme",
        "auth0|65f0c0ffee0000000000c003",
        "new-device",
    )
    forged = UnsubscribeTokens(b"k" * 32).make("acme", "auth0|someone-else", "new-device").split(".")[0]
    assert tokens.read(forged + "." + token.split(".")[1]) is None  # another user, the same MAC
    assert tokens.read(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert UnsubscribeTokens(b"x" * 32).read(token) is None
    for junk in ("", ".", "a.b.c", "!!!.???", "x" * 5000):
        assert tokens.read(junk) is None
    url, mailto = links("https://mail.acme.test/", token, "fr-CA", "unsubscribe@acme.test")
    assert url == f"https://mail.acme.test/unsubscribe/{token}?lang=fr-CA"
    assert mailto == f"mailto:unsubscribe@acme.test?subject=unsubscribe%20{token}"


def test_rules_see_the_recipient_facts_and_skip_what_the_user_unsubscribed_from():
    from streamer.config import parse_config
    from streamer.rules import compile_rules, decide, reads_recipient, tenant_view

    from conftest import sample_event

    config = parse_config(
        """\
smtp: {from: "Acme <no-reply@acme.test>"}
tenants: {acme: {domain: acme.eu.auth0.com, client_id: x, client_secret: y}}
rules:
  - {name: notice, on: [s], template: new_device, once: per_event, unsubscribe: true}
  - {name: other-address, on: [s], template: welcome, once: per_event,
     if: "recipient.suppressed and recipient.reason == 'hard_bounce'"}
""",
        env={},
    )
    rules = compile_rules(config.rules)
    assert [reads_recipient(r.config) for r in rules] == [False, True]
    user = {"user_id": "auth0|1", "email": "ana@example.com"}

    def run(recipient):
        return decide(
            rules,
            sample_event("s"),
            tenant="acme",
            tenant_ctx=tenant_view("acme", config.tenants["acme"]),
            user=user,
            locale_for=lambda rule: "en",
            accepted_at=0.0,
            recipient=recipient,
        )

    due, skipped = run(None)
    assert [e.rule for e in due] == ["notice"] and skipped == []
    facts = {"suppressed": True, "reason": "hard_bounce", "unsubscribed": ["notice"]}
    due, skipped = run(facts)
    assert [e.rule for e in due] == ["other-address"] and due[0].context["recipient"] == facts
    assert [(s.rule, s.reason) for s in skipped] == [("notice", "user unsubscribed from this rule's emails")]
