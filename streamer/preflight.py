"""`streamer check --online`: try the daemon's outside world before the first signup needs it.

The offline check proves the config is coherent; this proves it works from here: the SMTP
server takes a connection (TLS and AUTH as configured), each tenant's credentials get a
Management API token granting the scopes the config needs, and the log stream to this daemon
exists and is active, and the From domain's DNS has the DKIM, SPF and DMARC records receivers
look for (streamer.mail_dns). Nothing is sent and nothing is changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from streamer.auth0 import ManagementApi
from streamer.auth0.errors import Auth0Error
from streamer.auth0.log_streams import find_stream, missing_categories, our_endpoint, stream_name
from streamer.auth0.scopes import needed_scopes, probe_access
from streamer.config import Config
from streamer.smtp import SmtpError, SmtpPool

if TYPE_CHECKING:
    from streamer.mail_dns import TxtResolver


@dataclass(frozen=True)
class Finding:
    level: Literal["ok", "warning", "error"]
    text: str


async def preflight(config: Config, resolver: TxtResolver | None = None) -> list[Finding]:
    from streamer.mail_dns import mail_auth_findings

    findings = [await _smtp(config)]
    for name in config.tenants:
        findings.extend(await _tenant(config, name))
    findings.extend(await mail_auth_findings(config, resolver))
    return findings


async def _smtp(config: Config) -> Finding:
    smtp = config.smtp
    where = f"SMTP {smtp.host}:{smtp.port} ({smtp.security}{', AUTH as ' + smtp.username if smtp.username else ''})"
    pool = SmtpPool(smtp)
    try:
        await pool.check()
    except SmtpError as exc:
        return Finding("error", f"{where}: {exc}")
    finally:
        await pool.close()
    return Finding("ok", f"{where}: the server answers")


async def _tenant(config: Config, name: str) -> list[Finding]:
    tenant = config.tenants[name]
    where = f"Auth0 {name} ({tenant.domain})"
    async with ManagementApi(tenant, name=name) as api:
        needs = needed_scopes(config, name)
        access = await probe_access(api.tokens, needs)
        if access.refused is not None:
            return [Finding("error", f"{where}: credentials refused: {access.refused}")]
        if access.failed is not None:
            return [Finding("error", f"{where}: cannot get a token: {access.failed}")]
        if access.missing is None:
            findings = [Finding("warning", f"{where}: credentials accepted; Auth0 did not list the granted scopes")]
            missing = []
        else:
            missing = access.missing
            findings = [
                Finding("error" if need.required else "warning", f"{where}: missing scope {need}") for need in missing
            ]
            findings.append(
                Finding(
                    "ok",
                    f"{where}: credentials accepted, {len(needs) - len(missing)} of {len(needs)} needed scopes granted",
                )
            )
        if tenant.webhook_token is not None and not any("read:log_streams" in need.any_of for need in missing):
            findings.extend(await _stream(api, config, name))
        return findings


async def _stream(api: ManagementApi, config: Config, name: str) -> list[Finding]:
    endpoint = our_endpoint(config.server.public_url, name)
    try:
        stream = find_stream(await api.list_log_streams(), name, config.server.public_url)
    except Auth0Error as exc:
        return [Finding("warning", f"log stream of {name}: cannot list the streams: {exc}")]
    if stream is None:
        return [
            Finding(
                "warning",
                f"log stream of {name}: none posts to {endpoint or 'server.public_url (unset)'} "
                f"or is named {stream_name(name)}: `streamer register` creates it "
                "(unless you poll)",
            )
        ]
    sink = stream.get("sink") if isinstance(stream.get("sink"), dict) else {}
    label = f"log stream {stream.get('id')} of {name} → {sink.get('httpEndpoint')}"
    findings = []
    left_out = missing_categories(stream, config.listened_types())
    if left_out:
        findings.append(
            Finding(
                "warning",
                f"{label}: its filters leave out {', '.join(left_out)}, which rules "
                "listen to: run `streamer register` again",
            )
        )
    status = stream.get("status")
    if status == "active":
        findings.append(Finding("ok", f"{label}: active"))
    elif status == "suspended":
        findings.append(
            Finding(
                "warning",
                f"{label}: suspended by Auth0 after failed deliveries; `streamer run` "
                "re-activates it (or Monitoring > Streams in the dashboard)",
            )
        )
    else:
        findings.append(
            Finding("warning", f"{label}: {status}: events wait in Auth0 until it is resumed (Monitoring > Streams)")
        )
    return findings
