"""A local Auth0 tenant: the Management API endpoints streamer uses, served by aiohttp.

It is the only Auth0 stand-in the tests use, and `streamer dev` embeds it, so it follows
Auth0's documented behaviour (see shared/auth0/FACTS.md) rather than streamer's wishes:
client-credentials tokens that expire, Bearer checks on every /api/v2 call, Auth0's error
bodies, the x-ratelimit-* headers of a token bucket, users search with its lagging index,
first-level metadata merges, one-time tickets that append `sv`/`scp` log events when used,
checkpoint paging of the tenant logs with a Link header, log streams that actually deliver.

Deliberate differences, because it runs on a developer's machine:
* ticket URLs point at the stand-in (`{base_url}/u/...`), not `https://{domain}/u/...`, so the
  links in the emails can be clicked;
* `new_password` on password-change tickets is refused (400 invalid_body) as current Auth0
  does, unless `legacy_password_flow=True` emulates a tenant with Change Password flow v1.

`PATCH /api/v2/users/{id}` with `password` applies a database connection's password policy
(`password_policy`, on by default: Auth0's "fair" strength, a small dictionary, no personal
info, a history of 5) and refuses with Auth0's 400 bodies (`PASSWORD_POLICY_ERRORS`); the hosted
reset form (`/u/reset-verify`) applies the same policy and shows the same words. An accepted
change logs `scp`, which streamer's "password changed" rule listens to.

Test hooks: `calls`, `tickets`, `logs`, `users`, `add_user`, `add_log`, `fail_next`,
`set_rate_limit`, `unindexed` / `freeze_search` (search index lag), `stream_deliveries`.

A real tenant, as the bench and `streamer dev` use it (`realistic_tenant()`, or the options): `search_lag_s`
(a user written less than that long ago is absent from `GET /api/v2/users`, or found as they
were; get-by-id and users-by-email are always current), `latency_s` per call, and `plan`, the
Management API rate limits of an Auth0 plan with its separate buckets (`RATE_LIMIT_PLANS`).
The defaults (no lag, no latency, no limit) are the ideal tenant most tests want.

One module per resource over one shared `Tenant` (state.py): tokens, users (and the search),
tickets (and their pages), logs, log streams (and their delivery), rate limits; app.py puts
them together.
"""

from streamer.devkit.auth0_standin.app import Auth0StandIn, build_app, realistic_tenant
from streamer.devkit.auth0_standin.errors import ApiProblem, api_error, error_body
from streamer.devkit.auth0_standin.limits import RATE_LIMIT_PLANS, UNLIMITED_HEADER_LIMIT, TokenBucket
from streamer.devkit.auth0_standin.logs import DEFAULT_TAKE, VERIFIED_MESSAGE
from streamer.devkit.auth0_standin.params import MAX_PER_PAGE
from streamer.devkit.auth0_standin.passwords import COMMON_PASSWORDS, PASSWORD_POLICY_ERRORS
from streamer.devkit.auth0_standin.query import matches, parse_query, project
from streamer.devkit.auth0_standin.state import (
    Tenant,
    connection_id,
    iso_ms,
    log_id_key,
    make_log_id,
    merge_metadata,
    public_user,
)
from streamer.devkit.auth0_standin.stream_delivery import is_loopback_url
from streamer.devkit.auth0_standin.tickets import DEFAULT_TICKET_TTL_S
from streamer.devkit.auth0_standin.tokens import ENDPOINT_SCOPES, SCOPES
from streamer.devkit.auth0_standin.users import load_sample_users

__all__ = [
    "COMMON_PASSWORDS",
    "DEFAULT_TAKE",
    "DEFAULT_TICKET_TTL_S",
    "ENDPOINT_SCOPES",
    "MAX_PER_PAGE",
    "PASSWORD_POLICY_ERRORS",
    "RATE_LIMIT_PLANS",
    "SCOPES",
    "UNLIMITED_HEADER_LIMIT",
    "VERIFIED_MESSAGE",
    "ApiProblem",
    "Auth0StandIn",
    "Tenant",
    "TokenBucket",
    "api_error",
    "build_app",
    "connection_id",
    "error_body",
    "is_loopback_url",
    "iso_ms",
    "load_sample_users",
    "log_id_key",
    "make_log_id",
    "matches",
    "merge_metadata",
    "parse_query",
    "project",
    "public_user",
    "realistic_tenant",
]
