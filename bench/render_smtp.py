"""Second delivery yardstick for bench/run.py: the work no design can skip per email, and nothing
else. For each of `--count` distinct welcome emails it renders the template with streamer's own
renderer (Jinja2, CSS inlining, text part), builds the MIME message and sends it over one of
`--pool` persistent raw aiosmtplib connections. No store, no rules, no Auth0, no retries, no logs.

    taskset -c 0 python bench/render_smtp.py --config streamer.yaml --port 2525 --count 3000 --pool 8
Prints one JSON line: {"sent": N, "seconds": S, "rate": N/S, "cpu_ms_per_email": …}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiosmtplib

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # this tree's streamer, whichever pip installed

from streamer.config import load_config  # noqa: E402
from streamer.locale import fallback_chain  # noqa: E402
from streamer.message import build_message, envelope  # noqa: E402
from streamer.render import render  # noqa: E402
from streamer.rules import client_view, tenant_view  # noqa: E402
from streamer.templates import Templates, greeting_name  # noqa: E402

import harness as h  # noqa: E402
from raw_smtp import pooled  # noqa: E402

TENANT = "acme"


def contexts(count: int, tenant: dict) -> list[dict]:
    """The same welcome emails the streamer delivery round sends (verified users, `sv` events)."""
    users = h.make_users("welcome", count, verified=True, logins=1)
    events = [h.make_event("sv", user, h.log_id(2, i), "2026-01-01T00:00:00.000Z") for i, user in enumerate(users)]
    return [
        {"event": event, "user": user, "client": client_view(event), "tenant": tenant}
        for event, user in zip(events, users, strict=True)
    ]


async def send_all(config_path: Path, port: int, count: int, pool: int) -> dict:
    config = load_config(config_path, env={})
    templates = Templates(config.templates_dir, default_locale=config.templates.default_locale)
    chain = fallback_chain("en", config.templates.default_locale)
    todo = contexts(count, tenant_view(TENANT, config.tenants[TENANT]))

    async def send_one(client: aiosmtplib.SMTP, index: int) -> None:
        context = todo[index]
        user = context["user"]
        rendered = render(templates, "welcome", tenant=TENANT, client_id=None, locale_chain=chain, context=context)
        message = build_message(
            from_addr=config.smtp.from_,
            to_addr=user["email"],
            to_name=greeting_name(user) or None,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            locale=rendered.locale,
            message_id_key=context["event"]["log_id"],
        )
        mail_from, rcpt_to = envelope(config.smtp.from_, user["email"])
        await client.sendmail(mail_from, rcpt_to, message)

    return await pooled(port, count, pool, send_one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the delivery round's streamer.yaml")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--pool", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(send_all(args.config, args.port, 100, args.pool))  # warm-up: imports, template compilation
    result = asyncio.run(send_all(args.config, args.port, args.count, args.pool))
    result["process_cpu_s"] = time.process_time()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
