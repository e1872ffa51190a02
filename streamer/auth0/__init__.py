"""Auth0 Management API access for streamer: tokens, pacing, errors and the API itself."""

from streamer.auth0.client import ManagementApi
from streamer.auth0.errors import Auth0Error, Auth0Permanent, Auth0Transient, UserNotFound
from streamer.auth0.pacer import RateLimitPacer, TenantPacer
from streamer.auth0.token import TokenSource

__all__ = [
    "ManagementApi",
    "TokenSource",
    "RateLimitPacer",
    "TenantPacer",
    "Auth0Error",
    "Auth0Transient",
    "Auth0Permanent",
    "UserNotFound",
]
