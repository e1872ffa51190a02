"""The `streamer` command line. Exit codes: 0 success, 1 user error (clear message, no
traceback), 2 usage error."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias

from streamer.config import CONFIG_ENV, Config, ConfigError, load_config, resolve_config_path
from streamer.outbox import Command, EmailState, sources
from streamer.store.outbox_admin import BULK_COMMANDS, BulkOutcome

EXIT_OK, EXIT_USER, EXIT_USAGE = 0, 1, 2
#: `migrate --check`: the store needs migrations (distinct from 1, "cannot tell": bad config, store away).
EXIT_MIGRATIONS_PENDING = 3
#: States `outbox retry` / `outbox cancel` accept with --state: the state machine's (streamer.outbox.TRANSITIONS).
BULK_STATES = {command.value: tuple(state.value for state in sources(command)) for command in BULK_COMMANDS}
#: What `outbox retry` / `outbox cancel` did to an email.
_BULK_VERBS = {"retry": "queued again", "cancel": "cancelled"}


class UserError(Exception):
    """Printed as one line (or a list) on stderr; exit 1."""


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", metavar="FILE", help=f"config file (default: ${CONFIG_ENV}, then ./streamer.yaml)"
    )


def _load(args: argparse.Namespace) -> Config:
    return load_config(resolve_config_path(args.config))


def _checked(args: argparse.Namespace) -> Config:
    from streamer.check import check_config

    config = _load(args)
    report = check_config(config)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not report.ok:
        raise ConfigError(report.errors)
    return config


# --- commands -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from streamer import logs
    from streamer.daemon import Daemon, StartupError
    from streamer.gc_tuning import tune_for_service

    config = _checked(args)
    logs.configure(args.log_level)
    try:
        asyncio.run(Daemon(config).run(on_ready=lambda _url: tune_for_service()))
    except StartupError as exc:
        raise UserError(str(exc)) from None
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from streamer.check import check_config

    config = _load(args)
    report = check_config(config)
    for warning in report.warnings:
        print(f"warning: {warning}")
    for error in report.errors:
        print(f"error: {error}")
    if args.online:
        from streamer.mail_dns import resolver_for
        from streamer.preflight import preflight

        try:
            resolver = resolver_for(args.dns_server)
        except ValueError as exc:
            print(f"error: --dns-server: {exc}", file=sys.stderr)
            return EXIT_USAGE
        findings = asyncio.run(preflight(config, resolver))
        for finding in findings:
            print(f"{finding.level}: {finding.text}")
        report.errors.extend(f.text for f in findings if f.level == "error")
        report.warnings.extend(f.text for f in findings if f.level == "warning")
    if not report.ok:
        print(f"{len(report.errors)} error(s); fix them and run `streamer check` again", file=sys.stderr)
        return EXIT_USER
    print(
        f"ok: {config.source}: {len(config.tenants)} tenant(s), {len(config.rules)} rule(s), "
        f"{len(report.warnings)} warning(s)"
    )
    return EXIT_OK


async def _with_store(config: Config, action: Callable[[Any], Any]) -> Any:
    from streamer.store import open_store

    store = open_store(config.store_url)
    try:
        await store.open()
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        raise UserError(f"cannot open the store: {exc}") from None
    try:
        return await action(store)
    finally:
        await store.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _load(args)
    url = config.store_url
    if not url.startswith(("postgresql://", "postgres://")):
        # One process per SQLite file: `run` brings its schema up to date when it opens it.
        print(f"ok: {url.split('@')[-1]}: SQLite stores are migrated by `streamer run` itself; nothing to do")
        return EXIT_OK
    from streamer.store.postgres import PostgresStoreError, apply_migrations, schema_status

    try:
        if args.check:
            current, todo = asyncio.run(schema_status(url))
        else:
            current, todo = asyncio.run(apply_migrations(url))
    except PostgresStoreError as exc:
        raise UserError(str(exc)) from None
    names = ", ".join(map(str, todo))
    if args.check:
        if todo:
            print(f"pending: schema version {current}; {len(todo)} migration(s) to apply: {names}")
            return EXIT_MIGRATIONS_PENDING
        print(f"ok: schema version {current} is current")
        return EXIT_OK
    print(
        f"ok: applied {names} (schema version {current} → {todo[-1].version})"
        if todo
        else f"ok: schema version {current} is current; nothing to apply"
    )
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from streamer.events import BodyError
    from streamer.inbox import Inbox
    from streamer.sources.replay import replay_files

    config = _load(args)
    if args.tenant not in config.tenants:
        raise UserError(f"unknown tenant {args.tenant!r}; the config has: {', '.join(sorted(config.tenants))}")

    async def replay(store: Any) -> Any:
        return await replay_files(Inbox(store, config.listened_types()), args.tenant, args.files)

    try:
        summary = asyncio.run(_with_store(config, replay))
    except BodyError as exc:
        raise UserError(str(exc)) from None
    for reason in summary.skipped[:20]:
        print(f"skipped: {reason}", file=sys.stderr)
    print(
        f"read {summary.read} event(s): {summary.stored} stored, {summary.duplicate} already in the inbox, "
        f"{summary.ignored} ignored (no rule listens to their type), {len(summary.skipped)} skipped entries"
    )
    return EXIT_OK


def cmd_resend(args: argparse.Namespace) -> int:
    from streamer.auth0 import ManagementApi
    from streamer.auth0.errors import Auth0Error
    from streamer.resend import ResendRefused, resend

    config = _load(args)
    if args.tenant not in config.tenants:
        raise UserError(f"unknown tenant {args.tenant!r}; the config has: {', '.join(sorted(config.tenants))}")

    async def queue(store: Any) -> int:
        async with ManagementApi(config.tenants[args.tenant], name=args.tenant) as api:
            return await resend(
                config,
                store,
                api,
                tenant=args.tenant,
                rule_name=args.rule,
                user_id=args.user,
                address=args.to,
                client_id=args.client,
                force=args.force,
            )

    try:
        email_id = asyncio.run(_with_store(config, queue))
    except (ResendRefused, Auth0Error) as exc:
        raise UserError(str(exc)) from None
    print(
        f"queued email {email_id} ({args.rule}) for {args.user or args.to}: a running `streamer run` sends it "
        f"within seconds; `streamer outbox show {email_id}` follows it"
    )
    return EXIT_OK


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _email_dict(email: Any) -> dict[str, Any]:
    return {
        "id": email.id,
        "state": email.state.value,
        "rule": email.rule,
        "tenant": email.tenant,
        "recipient": email.recipient,
        "template": email.template,
        "locale": email.locale,
        "user_id": email.user_id,
        "log_id": email.log_id,
        "attempts": email.attempts,
        "next_attempt": _when(email.next_attempt_at) if email.state in sources(Command.CLAIM) else "-",
        "last_error": email.last_error,
        "created": _when(email.created_at),
        "sent": _when(email.sent_at),
    }


def _either_or(states: tuple[str, ...]) -> str:
    return f"{', '.join(states[:-1])} or {states[-1]}" if len(states) > 1 else states[0]


def _print_emails(emails: list[Any], *, as_json: bool, everything: bool) -> None:
    if as_json:
        print(json.dumps([_email_dict(e) for e in emails], indent=2))
        return
    if not emails:
        print("no emails" + ("" if everything else " queued, failed or dead (use --all to include sent)"))
        return
    header = ("ID", "STATE", "RULE", "TENANT", "RECIPIENT", "ATTEMPTS", "NEXT ATTEMPT", "SENT (UTC)", "LAST ERROR")
    rows = [
        (
            str(e.id),
            e.state.value,
            e.rule,
            e.tenant,
            e.recipient,
            str(e.attempts),
            _email_dict(e)["next_attempt"],
            _when(e.sent_at),
            (e.last_error or "")[:80],
        )
        for e in emails
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _print_outcome(outcome: BulkOutcome, args: argparse.Namespace) -> int:
    """What `outbox retry` / `outbox cancel` did, one line an email (refusals on stderr); the exit code."""
    verb = _BULK_VERBS[args.action]
    if not outcome.selected:
        print(
            f"no {args.state} emails"
            + "".join(f" {k} {v}" for k, v in (("of tenant", args.tenant), ("of rule", args.rule)) if v)
        )
        return EXIT_OK
    refused = {r.email_id: r for r in outcome.refused}
    for email_id in outcome.selected:
        if email_id not in refused:
            print(f"{email_id}: {verb}")
            continue
        now_in = refused[email_id].state
        print(
            f"{email_id}: not {verb}: it is {now_in.value if now_in else 'not found'} (only "
            f"{_either_or(BULK_STATES[args.action])} emails can be)",
            file=sys.stderr,
        )
    if args.state:
        print(f"{len(outcome.done)} of {len(outcome.selected)} {args.state} emails {verb}")
    return EXIT_USER if outcome.refused else EXIT_OK


def cmd_outbox(args: argparse.Namespace) -> int:
    from streamer.store import outbox_admin

    if args.action in BULK_STATES and not args.state and (args.tenant or args.rule):
        print(f"streamer outbox {args.action}: --tenant and --rule narrow --state", file=sys.stderr)
        return EXIT_USAGE
    if args.action in BULK_STATES and bool(args.ids) == bool(args.state):
        print(f"streamer outbox {args.action}: give email IDs or --state (one of them)", file=sys.stderr)
        return EXIT_USAGE
    config = _load(args)
    state = EmailState(args.state) if getattr(args, "state", None) else None
    if args.action == "list":
        emails = asyncio.run(
            _with_store(
                config,
                lambda store: outbox_admin.list_emails(
                    store,
                    state=state,
                    everything=args.all,
                    tenant=args.tenant,
                    rule=args.rule,
                    user_id=args.user,
                    recipient=args.to,
                    limit=args.limit,
                ),
            )
        )
        _print_emails(emails, as_json=args.json, everything=args.all)
        return EXIT_OK
    if args.action == "show":
        email = asyncio.run(_with_store(config, lambda store: store.get_email(args.id)))
        if email is None:
            raise UserError(f"no email with id {args.id}")
        print(json.dumps({**_email_dict(email), "context": email.context}, indent=2, ensure_ascii=False, default=str))
        return EXIT_OK
    outcome = asyncio.run(
        _with_store(
            config,
            lambda store: outbox_admin.apply(
                store,
                Command(args.action),
                ids=args.ids,
                state=state,
                tenant=args.tenant,
                rule=args.rule,
                now=time.time(),
            ),
        )
    )
    return _print_outcome(outcome, args)


def _suppression_dict(entry: Any) -> dict[str, Any]:
    return {
        "tenant": entry.tenant,
        "address": entry.address,
        "reason": entry.reason.value,
        "source": entry.source,
        "detail": entry.detail,
        "since": _when(entry.created_at),
        "updated": _when(entry.updated_at),
    }


def cmd_suppression(args: argparse.Namespace) -> int:
    from streamer.message import InvalidAddress, parse_mailbox
    from streamer.suppression.policy import Reason

    config = _load(args)
    if args.tenant and args.tenant not in config.tenants:
        raise UserError(f"unknown tenant {args.tenant!r}; the config has: {', '.join(sorted(config.tenants))}")
    if args.action != "list":
        try:
            parse_mailbox(args.address)
        except InvalidAddress as exc:
            raise UserError(str(exc)) from None

    async def act(store: Any) -> int:
        if args.action == "list":
            entries = await store.list_suppressions(tenant=args.tenant, address=args.address, limit=args.limit)
            if args.json:
                print(json.dumps([_suppression_dict(e) for e in entries], indent=2, ensure_ascii=False))
                return EXIT_OK
            if not entries:
                print("no suppressed addresses" + (f" for tenant {args.tenant}" if args.tenant else ""))
                return EXIT_OK
            header = ("TENANT", "ADDRESS", "REASON", "SOURCE", "SINCE (UTC)", "DETAIL")
            rows = [
                (e.tenant, e.address, e.reason.value, e.source, _when(e.created_at), e.detail[:60]) for e in entries
            ]
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            for row in [header, *rows]:
                print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
            return EXIT_OK
        if args.action == "add":
            added = await store.suppress(
                args.tenant,
                args.address,
                reason=Reason.MANUAL,
                source="cli",
                detail=args.note or "added by an operator",
                now=time.time(),
            )
            result = {"tenant": args.tenant, "address": args.address.lower(), "added": added}
            text = f"{args.address.lower()}: {'suppressed' if added else 'was already suppressed (reason now manual)'}"
        else:
            removed = await store.unsuppress(args.tenant, args.address)
            result = {"tenant": args.tenant, "address": args.address.lower(), "removed": removed}
            text = (
                f"{args.address.lower()}: removed; `streamer outbox retry --state suppressed --tenant "
                f"{args.tenant}` sends what was held back"
                if removed
                else f"{args.address.lower()}: was not on tenant {args.tenant}'s suppression list"
            )
        print(json.dumps(result) if args.json else text)
        return EXIT_OK if args.action == "add" or result.get("removed") else EXIT_USER

    return asyncio.run(_with_store(config, act))


def cmd_dev(args: argparse.Namespace) -> int:
    from streamer.devkit.sandbox import run_sandbox

    return asyncio.run(
        run_sandbox(
            port=args.port,
            workdir=args.dir,
            open_for_s=args.exit_after,
            templates=args.templates,
            new_password=args.new_password,
        )
    )


def cmd_preview(args: argparse.Namespace) -> int:
    from streamer.preview import PreviewError, preview

    config = _load(args)
    try:
        lines = preview(
            config,
            template=args.template,
            tenant=args.tenant,
            client_id=args.client,
            locale=args.locale,
            out=args.out,
            every=args.all,
        )
    except PreviewError as exc:
        for line in exc.written:
            print(line)
        raise UserError(str(exc)) from None
    print("\n".join(lines))
    return EXIT_OK


def cmd_register(args: argparse.Namespace) -> int:
    from streamer.register import RegisterRefused, register

    config = _load(args)
    if args.tenant not in config.tenants:
        raise UserError(f"unknown tenant {args.tenant!r}; the config has: {', '.join(sorted(config.tenants))}")
    try:
        print(asyncio.run(register(config, args.tenant, args.url)))
    except RegisterRefused as exc:
        raise UserError(str(exc)) from None
    return EXIT_OK


# --- parser -------------------------------------------------------------------------------

#: What `add_subparsers` returns (argparse has no public name for it).
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Send your own Auth0 identity emails (verification, welcome, password) from Auth0 log "
        "events, with no Auth0 Rule or Action code.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_check(sub)
    _add_migrate(sub)
    _add_replay(sub)
    _add_outbox(sub)
    _add_suppression(sub)
    _add_resend(sub)
    _add_dev(sub)
    _add_preview(sub)
    _add_register(sub)
    return parser


def _add_run(sub: Subcommands) -> None:
    """`streamer run`: the daemon."""
    run = sub.add_parser(
        "run",
        help="run the daemon (webhook server, pollers, rules, outbox workers)",
        description="Run the daemon. SIGTERM/SIGINT stop taking work, finish in-flight sends, exit 0.",
    )
    _config_arg(run)
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)


def _add_check(sub: Subcommands) -> None:
    """`streamer check`: validate before deploying."""
    check = sub.add_parser(
        "check",
        help="validate config, rules and every template (--online: also SMTP and Auth0)",
        description="Validate the config, compile every rule and template (all locales and "
        "overrides) and check result_url hosts. Exit 1 on any error.",
    )
    _config_arg(check)
    check.add_argument(
        "--online",
        action="store_true",
        help="also try the outside world: the SMTP server (TLS, AUTH), each tenant's Auth0 "
        "credentials and scopes, and its log stream, and read the From domain's DKIM, SPF "
        "and DMARC records; sends and changes nothing",
    )
    check.add_argument(
        "--dns-server",
        metavar="IP[:PORT]",
        help="with --online: ask this DNS server instead of the system's (e.g. 1.1.1.1, to see "
        "what receivers see from outside)",
    )
    check.set_defaults(func=cmd_check)


def _add_migrate(sub: Subcommands) -> None:
    """`streamer migrate`: the store schema."""
    migrate = sub.add_parser(
        "migrate",
        help="apply the store's schema migrations (--check: only tell whether some are pending)",
        description="Bring the PostgreSQL store's schema up to date (what `run` also does at start, under a "
        "lock, so replicas starting together migrate once). --check changes nothing and exits "
        f"{EXIT_OK} when the schema is current, {EXIT_MIGRATIONS_PENDING} when migrations are pending, "
        f"{EXIT_USER} when it cannot tell (bad config, store unreachable).",
    )
    _config_arg(migrate)
    migrate.add_argument("--check", action="store_true", help="only report; exit 3 if migrations are pending")
    migrate.set_defaults(func=cmd_migrate)


def _add_replay(sub: Subcommands) -> None:
    """`streamer replay`: log events from files."""
    replay = sub.add_parser(
        "replay",
        help="feed log events from files through the inbox",
        description='Store log events from files (JSON array, JSON lines, {"logs": …} or a '
        "GET /api/v2/logs page) in the inbox; already-seen log_ids are ignored. "
        "A running daemon picks them up.",
    )
    _config_arg(replay)
    replay.add_argument("--tenant", required=True, help="tenant name from the config")
    replay.add_argument("files", nargs="+", metavar="FILE", help="files to read; - reads stdin")
    replay.set_defaults(func=cmd_replay)


def _add_outbox(sub: Subcommands) -> None:
    """`streamer outbox list|show|retry|cancel`: the state choices come from the outbox table."""
    outbox = sub.add_parser(
        "outbox", help="inspect and act on queued, failed and dead emails", description="Inspect and act on the outbox."
    )
    outbox_sub = outbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = outbox_sub.add_parser("list", help="list queued, failed and dead emails (--all adds sent)")
    _config_arg(listing)
    listing.add_argument("--all", action="store_true", help="include sent and cancelled emails")
    listing.add_argument("--state", choices=[state.value for state in EmailState])
    listing.add_argument("--rule", help="only this rule's emails")
    listing.add_argument("--user", metavar="USER_ID", help="only this Auth0 user's emails, sent ones included")
    listing.add_argument("--to", metavar="ADDRESS", help="only emails to this address (any case), sent ones included")
    listing.add_argument("--tenant")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = outbox_sub.add_parser("show", help="show one email with its context")
    _config_arg(show)
    show.add_argument("id", type=int)
    for action, help_text, example in (
        (
            "retry",
            f"queue {_either_or(BULK_STATES['retry'])} emails again, now",
            "after an SMTP outage: streamer outbox retry --state dead",
        ),
        (
            "cancel",
            f"cancel {_either_or(BULK_STATES['cancel'])} emails",
            "to stop a rule's queued emails: streamer outbox cancel --state queued --rule welcome",
        ),
    ):
        command = outbox_sub.add_parser(
            action,
            help=help_text,
            description=(
                f"{help_text.capitalize()}: the given IDs, or every email in --state (of one --tenant or --rule if "
                f"given). For example, {example}"
            ),
        )
        _config_arg(command)
        command.add_argument("ids", type=int, nargs="*", metavar="ID")
        command.add_argument("--state", choices=BULK_STATES[action], help="every email in this state (instead of IDs)")
        command.add_argument("--tenant", help="with --state: only this tenant's")
        command.add_argument("--rule", help="with --state: only this rule's")
    outbox.set_defaults(func=cmd_outbox)


def _add_suppression(sub: Subcommands) -> None:
    """`streamer suppression list|add|remove`."""
    suppression = sub.add_parser(
        "suppression",
        help="the suppression list: addresses that bounced or complained, never mailed again",
        description="Addresses on a tenant's suppression list get no email (outbox state `suppressed`). Hard "
        "bounces and complaints add them (inbound listener, provider webhooks), soft bounces after "
        "suppression.soft_bounces.count in its window.",
    )
    suppression_sub = suppression.add_subparsers(dest="action", required=True, metavar="ACTION")
    s_list = suppression_sub.add_parser("list", help="list suppressed addresses, newest first")
    _config_arg(s_list)
    s_list.add_argument("--tenant")
    s_list.add_argument("--address", metavar="ADDRESS", help="only this address (any case)")
    s_list.add_argument("--limit", type=int, default=100)
    s_list.add_argument("--json", action="store_true", help="machine-readable output")
    for action, help_text in (
        ("add", "suppress an address for a tenant (reason: manual)"),
        ("remove", "take an address off a tenant's list (e.g. the user fixed their mailbox)"),
    ):
        command = suppression_sub.add_parser(action, help=help_text, description=help_text.capitalize() + ".")
        _config_arg(command)
        command.add_argument("address", metavar="ADDRESS")
        command.add_argument("--tenant", required=True)
        command.add_argument("--json", action="store_true", help="machine-readable output")
        if action == "add":
            command.add_argument("--note", help="why (shown in `suppression list`)")
    suppression.set_defaults(func=cmd_suppression)


def _add_resend(sub: Subcommands) -> None:
    """`streamer resend`: one user's email again."""
    resend_cmd = sub.add_parser(
        "resend",
        help="queue a rule's email for one user again (support: a lost or expired link)",
        description="Queue the rule's email for one user once more, as the running daemon would: ticket at "
        "send time, the user's language. The rule's `if` still applies unless --force; its `once` "
        "does not.",
    )
    _config_arg(resend_cmd)
    resend_cmd.add_argument("--tenant", required=True)
    resend_cmd.add_argument("--rule", required=True, help="e.g. verify-email")
    who = resend_cmd.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="USER_ID", help="the Auth0 user_id, e.g. auth0|65f0…")
    who.add_argument("--to", metavar="ADDRESS", help="the user's email address (looked up in Auth0)")
    resend_cmd.add_argument("--client", metavar="CLIENT_ID", help="render as for this application (its templates)")
    resend_cmd.add_argument("--force", action="store_true", help="send even if the rule's `if` is false now")
    resend_cmd.set_defaults(func=cmd_resend)


def _add_dev(sub: Subcommands) -> None:
    """`streamer dev`: the sandbox."""
    dev = sub.add_parser(
        "dev",
        help="zero-setup sandbox: Auth0 stand-in, mail catcher, daemon, sample events",
        description="Start an Auth0 stand-in with sample users, an SMTP mail catcher with a web "
        "page, and the daemon on a sample config; post sample events; print the URLs.",
    )
    dev.add_argument("--port", type=int, default=8080, help="port of the daemon (others follow it)")
    dev.add_argument("--dir", default="streamer-dev", help="folder for the sandbox's config, store and .eml files")
    dev.add_argument(
        "--templates",
        metavar="DIR",
        default=None,
        help="templates folder to render (default: ./templates if it exists, else the shipped ones)",
    )
    dev.add_argument(
        "--exit-after", type=float, default=None, metavar="SECONDS", help="stop by itself after this long (for scripts)"
    )
    dev.add_argument(
        "--new-password",
        action="store_true",
        help="password_reset.new_password: the form asks for the new password and the email's link "
        "confirms it (default: the email carries an Auth0 reset ticket)",
    )
    dev.set_defaults(func=cmd_dev)


def _add_preview(sub: Subcommands) -> None:
    """`streamer preview`: templates with sample data."""
    preview_cmd = sub.add_parser("preview", help="render a template with sample data to .eml, .html and .txt")
    _config_arg(preview_cmd)
    preview_cmd.add_argument("--template", help="template name, e.g. verify_email")
    preview_cmd.add_argument("--tenant")
    preview_cmd.add_argument("--client", metavar="CLIENT_ID")
    preview_cmd.add_argument("--locale")
    preview_cmd.add_argument("--out", default="preview", metavar="DIR")
    preview_cmd.add_argument("--all", action="store_true", help="every template × locale × override, with index.html")
    preview_cmd.set_defaults(func=cmd_preview)


def _add_register(sub: Subcommands) -> None:
    """`streamer register`: the tenant's log stream."""
    register = sub.add_parser("register", help="create or update the tenant's Auth0 log stream to this daemon")
    _config_arg(register)
    register.add_argument("--tenant", required=True)
    register.add_argument("--url", required=True, metavar="PUBLIC_URL", help="public base URL of this daemon")
    register.set_defaults(func=cmd_register)


def main(argv: list[str] | None = None) -> int:
    from streamer import logs

    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure("warning")  # JSON lines on stderr; `run` sets its own level
    try:
        return args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USER
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
