"""Garbage-collector settings for the long-running daemon.

Parsing a webhook batch allocates thousands of dicts and lists. With CPython's default
thresholds (700, 10, 10) the collector runs every few requests, and its older-generation passes
walk every object the process holds: modules, compiled templates, configuration, caches. That
was a fifth of the CPU of ingesting 100-event batches. Freezing what exists once the daemon is
up takes those objects out of every pass, and a larger first threshold collects young objects
in fewer passes. Nothing relies on prompt collection of cycles: reference counting frees the
parsed batches as soon as they are stored.

The first threshold is larger than what the webhook holds at once: a batch's events live until
its group commit (32 concurrent 100-event requests: about 20,000 containers, with aiohttp's
own). Below that, nearly every parsed event was walked by a young pass, then by a middle one,
before it was freed anyway: 10,000 cost a tenth of the CPU of ingesting 100-event batches.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000


def tune_for_service() -> None:
    """Call once, when start-up is done (everything allocated so far lives as long as the process)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
