"""The figures of a bench/run.py run: table rows, notes by section, and bench/RESULTS.md."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import harness as h


@dataclass
class Row:
    name: str
    figure: str
    ceiling: str
    ratio: str
    target: str
    verdict: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)
        print(f"  {text}", flush=True)


def note_problems(report: Report, section: str, label: str, problems: Counter[str]) -> None:
    """Warnings/errors the daemon logged during a measurement: a figure is only as good as its run."""
    if problems:
        listed = ", ".join(f"{name} ×{count}" for name, count in problems.most_common(6))
        report.note(section, f"WARNING {label}: the daemon logged {listed}")


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "MISS")


HEADER = ("measurement", "streamer", "ceiling / floor (same run)", "ratio", "target", "result")


def table_text(rows: list[Row]) -> str:
    cells = [HEADER, *[(r.name, r.figure, r.ceiling, r.ratio, r.target, r.verdict) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def table_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---:|---:|---:|---|---|"]
    lines += [
        "| " + " | ".join((r.name, r.figure, r.ceiling, r.ratio, r.target, f"**{r.verdict}**")) + " |" for r in rows
    ]
    return "\n".join(lines)


def write_results(path: Path, report: Report, machine: dict[str, str], mode: str, seconds: float, method: str) -> None:
    parts = [
        "# streamer benchmark results",
        "",
        f"`python bench/run.py{' --quick' if mode == 'quick' else ''}` — {mode} run, {seconds:.0f} s. "
        "Generated file: rerun to refresh; compare only figures from the same run.",
        "",
        table_markdown(report.rows),
        "",
        "## Machine",
        "",
        *[f"- **{key}**: {value}" for key, value in machine.items()],
        "",
        "## Details",
        "",
    ]
    for section, notes in report.notes.items():
        parts += [f"### {section}", ""]
        parts += notes if "profile" in section else [f"- {note}" for note in notes]
        parts.append("")
    parts += ["## Method", "", method, ""]
    # bench/replicas.py keeps its own section (between its markers): carry it over.
    old = path.read_text() if path.exists() else ""
    begin, end = "<!-- bench/replicas.py: begin -->", "<!-- bench/replicas.py: end -->"
    if begin in old and end in old:
        parts += [old[old.index(begin) : old.index(end) + len(end)], ""]
    kept = h.other_sections(path)  # bench/budget.py's and bench/soak.py's sections stay
    path.write_text("\n".join(parts) + (f"\n{kept}\n" if kept else ""))
