"""streamer benchmark: five figures, each against a ceiling (or floor) measured in the same run.

    python bench/run.py [--quick] [--only ingest|delivery|api|latency|dkim]
    # ≤ 9 min (quick ≤ 90 s); writes bench/RESULTS.md (a whole run only)

What is under test always runs on core 0 (`taskset -c 0`): the real daemon (`python -m streamer
run`, a subprocess with its own SQLite store) or the ceiling script standing in for it. Core 1
runs the rest: this orchestrator (Auth0 stand-in, mail catcher, low-rate clients), wrk,
postfix's smtp-sink, `streamer replay`. Only loopback traffic. The daemon is read as a user
reads it: its `/metrics` and the `streamer` CLI, never its store. The machine may be shared: each
measurement records how much of core 0 other processes took (from /proc/stat minus our own CPU
time), rounds where that exceeds 15% are set aside when a cleaner round exists, and CPU-normalised
ratios (work per CPU-second of each side) are printed as cross-checks that interference cannot bias.

Each measurement is a module of bench/measurements/ (its method is its METHOD text, printed
under "Method" in bench/RESULTS.md); this script runs them in order and writes the report.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent)]  # this tree's streamer, whichever one pip has installed

import harness as h  # noqa: E402
from measurements import api_calls, delivery, dkim, ingest, latency  # noqa: E402
from report import Report, table_text, write_results  # noqa: E402
from settings import FULL, QUICK, Run, Settings  # noqa: E402

#: `--only` name → the measurements it runs, in this order (the latency floor sends the message
#: the delivery measurement leaves, so `--only latency` runs the delivery first).
ORDER = (("ingest", ingest), ("delivery", delivery), ("api", api_calls), ("dkim", dkim), ("latency", latency))
NEEDS = {"latency": ("delivery", "latency")}
#: RESULTS.md's Method: the shared set-up above, then each measurement's, by its number.
METHOD = (
    __doc__.split("\n\n", 2)[2].split("\n\n")[0]
    + "\n\n"
    + "\n".join(module.METHOD for module in (ingest, delivery, api_calls, latency, dkim))
)


async def main(settings: Settings, mode: str, only: str | None = None) -> None:
    h.pin_self_to_helper_core()
    started = time.monotonic()
    report = Report()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    workdir = Path(tempfile.mkdtemp(prefix="streamer-bench-"))
    sink_port = h.free_port()
    sink = h.smtp_sink(sink_port, workdir)
    await sink.start(ready_port=sink_port)
    chosen = None if only is None else NEEDS.get(only, (only,))
    try:
        run = Run(settings, report, sink_port, workdir)
        for name, module in ORDER:
            if chosen is None or name in chosen:
                await module.measure(run)
    finally:
        await sink.stop()
    elapsed = time.monotonic() - started
    print(f"\n{table_text(report.rows)}\n\n{mode} run: {elapsed:.0f} s")
    if only is not None:  # a partial run is for iterating; RESULTS.md keeps whole runs only
        for section, lines in report.notes.items():
            print(f"\n{section}\n" + "\n".join(f"- {line}" for line in lines))
        shutil.rmtree(workdir, ignore_errors=True)
        return
    machine = h.machine_info()
    machine["load average (1/5/15 min)"] = (
        f"{' '.join(load_before)} at start, {' '.join(Path('/proc/loadavg').read_text().split()[:3])} at end"
    )
    write_results(BENCH / "RESULTS.md", report, machine, mode, elapsed, METHOD)
    print(f"wrote {BENCH / 'RESULTS.md'}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, no profile (≤ 90 s)")
    parser.add_argument(
        "--only",
        choices=[name for name, _ in ORDER],
        help="run one measurement and print it; bench/RESULTS.md is left as it is",
    )
    arguments = parser.parse_args()
    asyncio.run(main(QUICK if arguments.quick else FULL, "quick" if arguments.quick else "full", arguments.only))
