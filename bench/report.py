"""bench/RESULTS.md: each figure in a table row beside its ceiling from the same run, under how it was made."""

from __future__ import annotations

import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SECTIONS: dict[str, tuple[str, list[str]]] = {
    "in-process": (
        "Ingest in process, and raw writes of the same rows",
        ["database", "what", "posts/s", "rows/s", "posts"],
    ),
    "e2e": (
        "End to end: `mentiondesk run` fed by the replay stream, posts classified and stored",
        ["database", "posts", "stored posts/s", "ceiling: replay stream to a plain reader, posts/s", "target"],
    ),
    "latency": (
        "Latency from a post's creation, at a steady rate",
        [
            "database",
            "rate /s",
            "posts",
            "to its row: p50 / p95 / p99",
            "to its card at Slack: p50 / p95 / p99 (cards)",
            "floor: plain reader p50 / p95 / p99",
            "target",
        ],
    ),
    "catch-up": (
        "Catch-up from mastodon-mock after a stop",
        ["database", "posts", "daemon posts/s", "plain client posts/s", "ratio", "target"],
    ),
    "rss": (
        "Peak memory (VmHWM) of `mentiondesk run`",
        ["database", "already in the database", "peak RSS", "same, empty database", "target"],
    ),
}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q from 0 to 100); inf counts as larger than any value (a post never stored)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def seconds(value: float) -> str:
    if math.isinf(value):
        return "never"
    if math.isnan(value):
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def spread(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    return " / ".join(seconds(percentile(values, q)) for q in (50, 95, 99))


def per_s(count: float, elapsed_s: float) -> str:
    return f"{count / elapsed_s:,.0f}" if elapsed_s > 0 else "n/a"


@dataclass
class Report:
    argv: list[str]
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_at_start: str = field(default_factory=lambda: _loadavg())
    rows: dict[str, list[list[str]]] = field(default_factory=lambda: {name: [] for name in SECTIONS})
    notes: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in SECTIONS})
    setup: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def add(self, section: str, row: list[str]) -> None:
        assert len(row) == len(SECTIONS[section][1]), (section, row)
        self.rows[section].append(row)
        print(f"{section}: " + " | ".join(row), flush=True)

    def note(self, section: str, text: str) -> None:
        self.notes[section].append(text)

    def markdown(self) -> str:
        command = " ".join(shlex.quote(a) for a in ["python", "-m", "bench.ingest", *self.argv])
        lines = [
            "# Ingest benchmark",
            "",
            f"Written by `{command}` (run from the repository root), {self.started:%Y-%m-%d %H:%M} UTC.",
            "",
            f"- machine: {_machine()}; load average at start {self.load_at_start}, at end {_loadavg()}",
            f"- software: Python {platform.python_version()}, {platform.system()} {platform.release()}; {_commit()}",
            *(f"- {line}" for line in self.setup),
            "",
            "Every figure stands beside its ceiling (or floor) measured in the same run on the same machine. How each",
            "is measured is in the docstrings of bench/ingest.py and the modules it uses.",
        ]
        for name, (title, header) in SECTIONS.items():
            if not self.rows[name] and not self.notes[name]:
                continue
            lines += ["", f"## {title}", ""]
            if self.rows[name]:
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|")
                lines += ["| " + " | ".join(row) + " |" for row in self.rows[name]]
            if self.notes[name]:
                lines.append("")
                lines += [f"- {text}" for text in self.notes[name]]
        if self.extra:
            lines += ["", *self.extra]
        return "\n".join(lines) + "\n"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores (shared)"


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    return f"commit {head}{dirty}"


def write(report: Report, out: Path | None) -> None:
    text = report.markdown()
    if out is None:
        sys.stdout.write("\n" + text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"results written to {out}", flush=True)
