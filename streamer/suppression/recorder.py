"""Applying one report to the list: hard bounces and complaints suppress at once, soft bounces count.

Every source (the inbound listener, the provider webhooks) ends here, so the metrics, the log
lines and the soft-bounce policy are the same whichever way a report arrived.
"""

from __future__ import annotations

import time

from streamer import metrics
from streamer.config import SuppressionConfig
from streamer.logs import get_logger
from streamer.store import Store
from streamer.suppression.policy import Kind, Reason, Report, SoftBouncePolicy, normalize_address

log = get_logger(__name__)

_REASON = {Kind.HARD: Reason.HARD_BOUNCE, Kind.COMPLAINT: Reason.COMPLAINT}


class SuppressionRecorder:
    def __init__(self, store: Store, config: SuppressionConfig):
        self.store = store
        self.soft = SoftBouncePolicy(config.soft_bounces.count, config.soft_bounces.window)

    async def record(self, tenant: str, report: Report, *, now: float | None = None) -> bool:
        """Store the report's effect; True if it put the address on the list."""
        now = time.time() if now is None else now
        address = normalize_address(report.address)
        metrics.BOUNCE_REPORTS.labels(report.source, report.kind.value).inc()
        if report.kind is Kind.SOFT:
            added = await self.store.record_soft_bounce(
                tenant,
                address,
                source=report.source,
                detail=report.detail,
                now=now,
                window_s=self.soft.window_s,
                threshold=self.soft.count,
            )
            reason = Reason.SOFT_BOUNCE
        else:
            reason = _REASON[report.kind]
            added = await self.store.suppress(
                tenant, address, reason=reason, source=report.source, detail=report.detail, now=now
            )
        if added:
            metrics.SUPPRESSIONS_ADDED.labels(tenant, reason.value, report.source).inc()
        # The address is personal data: its domain is enough to spot a provider-wide problem.
        log.info(
            "bounce_report",
            tenant=tenant,
            kind=report.kind.value,
            source=report.source,
            domain=address.rpartition("@")[2],
            suppressed=added,
            detail=report.detail[:200],
        )
        return added
