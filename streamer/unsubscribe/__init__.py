"""One-click unsubscribe for optional notices (RFC 8058): signed links, the page, the preference."""

from __future__ import annotations

import time
from urllib.parse import quote

from streamer import metrics
from streamer.logs import get_logger
from streamer.store import Store
from streamer.unsubscribe.tokens import Subscription, UnsubscribeTokens

__all__ = ["Subscription", "UnsubscribeTokens", "links", "record_unsubscribe"]

log = get_logger(__name__)
MAILTO_SUBJECT_PREFIX = "unsubscribe "


def links(public_url: str, token: str, locale: str | None, mailto: str | None) -> tuple[str, str | None]:
    """(HTTPS link, mailto link or None) for List-Unsubscribe. The page's language rides along as ?lang=."""
    url = f"{public_url.rstrip('/')}/unsubscribe/{token}"
    if locale:
        url += f"?lang={quote(locale)}"
    return url, (f"mailto:{mailto}?subject={quote(MAILTO_SUBJECT_PREFIX + token)}" if mailto else None)


async def record_unsubscribe(store: Store, subscription: Subscription, *, source: str) -> bool:
    """Store the preference (rules see it from the next event on); True if it is new."""
    added = await store.set_unsubscribed(subscription.tenant, subscription.user_id, subscription.rule, now=time.time())
    if added:
        metrics.UNSUBSCRIBES.labels(subscription.tenant, subscription.rule).inc()
    log.info(
        "unsubscribed",
        tenant=subscription.tenant,
        rule=subscription.rule,
        user_id=subscription.user_id,
        source=source,
        new=added,
    )
    return added
