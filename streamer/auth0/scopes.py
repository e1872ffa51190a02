"""The Management API scopes a config needs, checked once at start against the token's grant.

A missing scope otherwise shows up late and far away: as the first email failing with a 403,
maybe hours after a deploy. Auth0 lists the granted scopes in the token answer, so the daemon
can say at start, per tenant, which ones to tick and what for. Granting them needs no restart:
after a 403 the client fetches a new token (see TokenSource.invalidate_after_refusal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from streamer.auth0.errors import Auth0Error, Auth0Permanent
from streamer.config import Config
from streamer.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Need:
    any_of: tuple[str, ...]
    why: str
    required: bool = True  # False: streamer works without it, only less well

    def __str__(self) -> str:
        return f"{' or '.join(self.any_of)} ({self.why})"


def needed_scopes(config: Config, tenant: str) -> list[Need]:
    """What this tenant's part of the config calls, one entry per capability."""
    settings = config.tenants[tenant]
    needs = [Need(("read:users",), "user profiles for rules and templates")]
    if any(rule.ticket is not None for rule in config.rules) or config.password_reset.enabled:
        needs.append(Need(("create:user_tickets",), "verification and password-change links"))
    if any(rule.mark is not None for rule in config.rules):
        needs.append(Need(("update:users_app_metadata", "update:users"), "the rules' mark in app_metadata"))
    if config.password_reset.enabled and config.password_reset.new_password:
        needs.append(
            Need(("update:users",), "setting the password confirmed on the hosted form (password_reset.new_password)")
        )
    if settings.poll.enabled:
        needs.append(Need(("read:logs", "read:logs_users"), "polling GET /api/v2/logs"))
    if settings.webhook_token is not None:
        needs.append(Need(("read:log_streams",), "noticing Auth0 suspending the log stream", required=False))
        needs.append(Need(("update:log_streams",), "restarting a suspended log stream", required=False))
    return needs


def missing_scopes(granted: frozenset[str], needs: list[Need]) -> list[Need]:
    return [need for need in needs if not granted.intersection(need.any_of)]


class TokenSourceLike(Protocol):
    scopes: frozenset[str] | None

    async def get(self) -> str: ...


@dataclass(frozen=True)
class Access:
    """What one token fetch tells about a tenant's credentials and grant."""

    refused: Auth0Error | None = None  # the credentials (a 4xx from /oauth/token)
    failed: Auth0Error | None = None  # Auth0 unreachable or failing
    missing: list[Need] | None = None  # None: no token, or Auth0 did not list the scopes


async def probe_access(tokens: TokenSourceLike, needs: list[Need]) -> Access:
    """Fetch a token now (shared by the daemon's start-up report and `check --online`)."""
    try:
        await tokens.get()
    except Auth0Permanent as exc:
        return Access(refused=exc)
    except Auth0Error as exc:
        return Access(failed=exc)
    return Access(missing=None if tokens.scopes is None else missing_scopes(tokens.scopes, needs))


async def report_access(tenant: str, tokens: TokenSourceLike, needs: list[Need]) -> list[Need] | None:
    """Log what is wrong with the credentials or the grant; returns the missing scopes (None
    when unknown)."""
    access = await probe_access(tokens, needs)
    if access.refused is not None:
        log.error(
            "auth0_credentials_refused",
            tenant=tenant,
            error=str(access.refused),
            hint=f"check tenants.{tenant}.client_id and client_secret, and that the application is "
            "authorized for the Auth0 Management API; emails wait in the outbox meanwhile",
        )
    elif access.failed is not None:
        log.warning("auth0_unreachable_at_start", tenant=tenant, error=str(access.failed))
    elif access.missing:
        log.warning(
            "auth0_scopes_missing",
            tenant=tenant,
            missing=[str(need) for need in access.missing],
            hint="Dashboard > Applications > APIs > Auth0 Management API > Machine to Machine "
            "Applications: tick them for streamer's application; no restart needed",
        )
    elif access.missing is not None:
        log.info("auth0_access_ok", tenant=tenant)
    return access.missing
