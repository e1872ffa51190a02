"""Every shipped template × locale, delivered by streamer's own Deliverer (Auth0 stand-in tickets,
real SMTP into the catcher), then scored by SpamAssassin's local rules in one batch: nothing but
the two rules that only say "this message never crossed a relay".

SpamAssassin runs once over an mbox of all the messages (`spamassassin -L --mbox`): its start-up
(parsing ~1,000 rules) is most of the cost, so batching keeps the test at ~10 s.
"""

from __future__ import annotations

import mailbox
import re
import shutil
import subprocess
import time
from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from streamer.auth0 import ManagementApi
from streamer.config import parse_config
from streamer.delivery import Deliverer, DeliverySettings
from streamer.message import message_id
from streamer.outbox import EmailState, OutboxEmail
from streamer.rules import compile_rules
from streamer.sample_context import TICKET_TEMPLATES, sample_context
from streamer.smtp import SmtpPool
from streamer.templates import Templates

from conftest import REPO

#: Only present because the test scores the message where it is made, before any relay.
UNAVOIDABLE = {"NO_RECEIVED", "NO_RELAYS"}
_LOCALE_SUFFIX = re.compile(r"^(?:body|subject)\.([A-Za-z]{2,3}(?:-[A-Za-z0-9]+)?)\.(?:html|txt)$")


def shipped_locales() -> list[str]:
    """The default locale plus every locale suffix a shipped template file carries."""
    found = {match.group(1) for path in (REPO / "templates").rglob("*") if (match := _LOCALE_SUFFIX.match(path.name))}
    return ["en", *sorted(found)]


def shipped_templates() -> list[str]:
    return sorted(Templates(REPO / "templates", default_locale="en").template_names())


def config_for(standin, catcher):
    rules = "\n".join(
        f"  - {{name: {name.replace('_', '-')}, on: [s], template: {name}"
        + (
            f", ticket: {{kind: {'email_verification' if name == 'verify_email' else 'password_change'}, "
            f"result_url: 'https://app.acme.test/done'}}"
            if name in TICKET_TEMPLATES
            else ""
        )
        + "}"
        for name in shipped_templates()
    )
    return parse_config(
        f"""\
smtp: {{host: 127.0.0.1, port: {catcher.port}, security: none, from: "Acme <no-reply@acme.test>",
        reply_to: "Acme Support <support@acme.test>", timeout_s: 10}}
templates: {{dir: "{REPO / "templates"}", default_locale: en}}
redirects: {{allowed_hosts: ["app.acme.test"]}}
tenants:
  acme:
    domain: {standin.domain}
    api_url: {standin.base_url}
    client_id: {standin.client_id}
    client_secret: {standin.client_secret}
    vars:
      app_name: Acme
      app_url: https://app.acme.test
      logo_url: https://app.acme.test/logo.png
      brand_color: "#1d4ed8"
      support_email: support@acme.test
      password_reset_url: https://app.acme.test/forgot-password
      company_address: "Acme Inc. · 1 Example Street · Springfield"
rules:
{rules}
""",
        env={},
    )


def outbox_email(index: int, template: str, locale: str) -> OutboxEmail:
    context = sample_context(template, locale, ticket=False)
    context = {key: value for key, value in context.items() if key not in ("tenant", "locale")}
    now = time.time()
    return OutboxEmail(
        id=index,
        key=f"spam-test:{template}:{locale}",
        tenant="acme",
        rule=template.replace("_", "-"),
        template=template,
        user_id=context["user"]["user_id"],
        log_id=f"log-{index}",
        recipient=context["user"]["email"],
        locale=locale,
        state=EmailState.SENDING,
        attempts=1,
        next_attempt_at=now,
        last_error=None,
        created_at=now,
        updated_at=now,
        sent_at=None,
        accepted_at=now,
        context=context,
    )


def scores(report_header: str) -> dict[str, float]:
    """`RULE=1.5,OTHER=-0.1` (SpamAssassin's _TESTSSCORES(,)_) → {rule: points}."""
    pairs = [item.split("=") for item in re.sub(r"\s+", "", report_header).split(",") if "=" in item]
    return {name: float(points) for name, points in pairs}


@pytest.mark.skipif(shutil.which("spamassassin") is None, reason="Debian package spamassassin (installed by .ci/run)")
async def test_every_template_and_locale_scores_zero_with_spamassassin(tmp_path, standin, catcher):
    config = config_for(standin, catcher)
    templates = Templates(config.templates_dir, default_locale="en")
    rules = {rule.name: rule for rule in compile_rules(config.rules)}
    async with ManagementApi(config.tenants["acme"], name="acme") as api:
        smtp = SmtpPool(config.smtp)
        try:
            deliverer = Deliverer(DeliverySettings.of(config), rules, {"acme": api}, templates, smtp)
            cases = [(template, locale) for template in shipped_templates() for locale in shipped_locales()]
            for index, (template, locale) in enumerate(cases, 1):
                await deliverer.deliver(outbox_email(index, template, locale))
        finally:
            await smtp.close()
    caught = await catcher.wait_for(len(cases))
    assert len(caught) == len(cases) >= 5 * 5

    box = mailbox.mbox(tmp_path / "all.mbox")
    for message in caught:
        box.add(mailbox.mboxMessage(message.data))
    box.flush()
    started = time.monotonic()
    result = subprocess.run(
        [
            "spamassassin",
            "-L",
            "--mbox",
            "-p",
            str(tmp_path / "user_prefs"),
            "--cf",
            "add_header all TestsScores _TESTSSCORES(,)_",
        ],
        stdin=open(tmp_path / "all.mbox", "rb"),
        capture_output=True,
        timeout=600,
        check=True,
    )
    elapsed = time.monotonic() - started
    scored = [message_from_bytes(m.as_bytes(), policy=default_policy) for m in _read_mbox(result.stdout, tmp_path)]
    assert len(scored) == len(cases)

    by_id = {message["Message-ID"]: message for message in scored}
    problems = {}
    for template, locale in cases:
        message = by_id[message_id(f"spam-test:{template}:{locale}", config.smtp.from_)]
        assert message["Feedback-ID"].startswith(f"{template.replace('_', '-')}:acme:")
        hits = scores(str(message["X-Spam-TestsScores"]))
        assert UNAVOIDABLE <= set(hits), hits  # the header was read, the rules ran
        costly = {name: points for name, points in hits.items() if name not in UNAVOIDABLE and abs(points) >= 0.01}
        if costly:
            problems[f"{template}.{locale}"] = costly
    assert not problems, f"SpamAssassin points (scored {len(cases)} messages in {elapsed:.1f} s): {problems}"


def _read_mbox(data: bytes, tmp_path) -> list[mailbox.mboxMessage]:
    path = tmp_path / "scored.mbox"
    path.write_bytes(data)
    return list(mailbox.mbox(path))
