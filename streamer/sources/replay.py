"""`streamer replay`: feed log events from files (or stdin) through the same inbox as the webhook."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from streamer.events import BodyError, parse_body
from streamer.inbox import Inbox


@dataclass
class ReplaySummary:
    read: int = 0
    stored: int = 0
    duplicate: int = 0
    ignored: int = 0
    skipped: list[str] = field(default_factory=list)


async def replay_files(inbox: Inbox, tenant: str, files: list[str], *, chunk: int = 500) -> ReplaySummary:
    """Each file may be a JSON array, JSON lines, `{"logs": […]}` or a GET /api/v2/logs page."""
    summary = ReplaySummary()
    for name in files:
        try:
            body = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            raise BodyError(f"{name}: cannot read: {exc.strerror}") from None
        try:
            batch = parse_body(body)
        except BodyError as exc:
            raise BodyError(f"{name}: {exc}") from None
        summary.skipped += [f"{name}: {reason}" for reason in batch.skipped]
        summary.skipped += [f"{name}: {item.log_id}: quarantined: {item.reason}" for item in batch.quarantined]
        inbox.quarantine(tenant, batch.quarantined, source="replay")
        summary.read += len(batch.events)
        for start in range(0, len(batch.events), chunk):
            part = batch.events[start : start + chunk]
            result = await inbox.accept(tenant, part, source="replay")
            summary.stored += result.new
            summary.duplicate += result.duplicate
            summary.ignored += len(part) - result.new - result.duplicate
    return summary
