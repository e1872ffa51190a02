"""What one bench/run.py run is: durations and counts (full or quick), the constants every
measurement shares, and the context handed to each measurement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from report import Report

POOL_SIZE = 8  # SMTP connections and dispatcher workers, in streamer and in the ceiling
OLD_DATE = "2026-01-01T00:00:00.000Z"  # before the users' last update: cached profiles stay usable
#: A round in which other processes took more of core 0 is set aside when a cleaner round exists.
DISTURBED = 0.15


@dataclass(frozen=True)
class Settings:
    ingest_warmup_s: int
    ingest_s: int
    ingest_rounds: int
    drain_s: float
    delivery_emails: int
    delivery_rounds: int
    signups: int
    latency_s: float
    floor_s: float
    profile: bool


#: Five rounds: on this shared 2-core machine one round's ratio moves by ±10%; a median of five
#: moves much less than a median of three.
FULL = Settings(
    ingest_warmup_s=2,
    ingest_s=5,
    ingest_rounds=5,
    drain_s=3,
    delivery_emails=3000,
    delivery_rounds=5,
    signups=500,
    latency_s=20,
    floor_s=5,
    profile=True,
)
QUICK = Settings(
    ingest_warmup_s=1,
    ingest_s=3,
    ingest_rounds=1,
    drain_s=1.5,
    delivery_emails=1000,
    delivery_rounds=1,
    signups=200,
    latency_s=8,
    floor_s=2,
    profile=False,
)


@dataclass(frozen=True)
class Run:
    """What a measurement gets: the run's settings, the report it adds to, the smtp-sink every
    delivery goes into (core 1) and a scratch folder (the delivery leaves message.eml there: one
    email as streamer built it, for the raw-send ceiling and the latency floor)."""

    settings: Settings
    report: Report
    sink_port: int
    workdir: Path

    @property
    def message_file(self) -> Path:
        return self.workdir / "message.eml"
