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
    required: bool = True   # False: streamer works without it, only less well

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


async def report_access(tenant: str, tokens: TokenSourceLike, needs: list[Need]) -> list[Need] | None:
    """Fetch a token now and log what is wrong with the credentials or the grant; returns the
    missing scopes (None when unknown: no token, or Auth0 did not list the scopes)."""
    try:
        await tokens.get()
    except Auth0Permanent as exc:
        log.error("auth0_credentials_refused", tenant=tenant, error=str(exc),
                  hint=f"check tenants.{tenant}.client_id and client_secret, and that the application is "
                       "authorized for the Auth0 Management API; emails wait in the outbox meanwhile")
        return None
    except Auth0Error as exc:
        log.warning("auth0_unreachable_at_start", tenant=tenant, error=str(exc))
        return None
    if tokens.scopes is None:
        return None
    missing = missing_scopes(tokens.scopes, needs)
    if missing:
        log.warning("auth0_scopes_missing", tenant=tenant, missing=[str(need) for need in missing],
                    hint="Dashboard > Applications > APIs > Auth0 Management API > Machine to Machine "
                         "Applications: tick them for streamer's application; no restart needed")
    else:
        log.info("auth0_access_ok", tenant=tenant)
    return missing
