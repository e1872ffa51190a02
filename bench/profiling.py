"""py-spy on the daemon, from core 1, and its samples summarised by pipeline stage: where a
measurement below its target spends its time."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path

import harness as h
from harness import HELPER_CORE


async def start_profiler(pid: int, output: Path) -> asyncio.subprocess.Process:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("py-spy is missing: pip install py-spy")
    process = await asyncio.create_subprocess_exec(
        *h.pinned(
            HELPER_CORE,
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "100",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.3)
    return process


def summarize_profile(path: Path, stages: tuple[tuple[str, str], ...], top: int = 15) -> list[str]:
    """Collapsed stacks → share of samples per stage (inclusive) and the busiest leaf functions.
    `stages`: (label, substring of a frame that marks the stage); two leading spaces per level."""
    stage_samples: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_frame_name(frame) for frame in stack.split(";") if frame]
        if not frames or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for label, marker in stages:
            if any(marker in frame for frame in frames):
                stage_samples[label] += samples
    if not total:
        return ["(no samples)"]
    lines = [
        f"{total} samples (100 Hz) of non-idle threads; a sample counts for every stage on its stack.",
        "",
        "| share of samples | stage |",
        "|---:|---|",
    ]
    lines += [f"| {stage_samples[label] / total:.0%} | {_indented(label)} |" for label, _ in stages]
    lines += ["", "Top self time (leaf functions):", ""]
    lines += [f"- {samples / total:.1%} `{name}`" for name, samples in own.most_common(top)]
    return lines


def _indented(label: str) -> str:
    """Two leading spaces per level → non-breaking indentation and an arrow, for Markdown tables."""
    depth = (len(label) - len(label.lstrip(" "))) // 2
    return ("&nbsp;&nbsp;" * (depth - 1) + "↳ " if depth else "") + label.strip()


def _frame_name(frame: str) -> str:
    """`send (streamer/smtp.py:412)` → `send (streamer/smtp.py)`; library paths shortened."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    where = where.rpartition(":")[0] or where
    for marker in ("site-packages/", "lib/python3.11/", str(h.REPO) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"
