#!/usr/bin/env python
"""Benchmark the embeddings model: posts/s on one core, load time, model size, install size of the ml extra.

    .venv/bin/python bench/embeddings_bench.py [--data ../shared/data/complaints-train.csv] [--no-write]

The process pins itself to CPU 0 (what ``taskset -c 0`` does) and ONNX Runtime runs one intra-op thread, as
the daemon does by default. Texts: the training file's posts when it is there (read in place, never copied),
else hand-written ones of the same length range. Install sizes are summed from the installed distributions'
RECORD files in the running environment: the ``ml`` extra's packages and everything they pull in that the
default install does not already have, against the default install's own dependency closure.
Writes (or replaces) the "Embeddings model" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import statistics
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from mentiondesk.bot.classify.embeddings import DEFAULT_MODEL_DIR, EmbeddingsClassifier
from mentiondesk.bot.classify.model import DEFAULT_MODEL_PATH, ComplaintClassifier

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "RESULTS.md"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "complaints-train.csv"
# The section sits among RESULTS.md's second-level headings, under the one top-level "# Ingest benchmark".
SECTION = "## Embeddings model"
BATCH_SIZES = (1, 32, 256)
TARGET_POSTS_S = 150
FALLBACK = [
    "@shop my parcel has been 'out for delivery' for six days and nobody answers",
    "Thank you @cafe, the new oat latte is lovely!",
    "Does the winter sale include the kids' range? https://example.org/sale",
    "Third refund request and still nothing. Cancelling my subscription. @bank @bank_help",
]


def load_texts(path: Path) -> tuple[list[str], str]:
    if path.is_file():
        with path.open(encoding="utf-8", newline="") as fh:
            return [row["text"] for row in csv.DictReader(fh)], f"the {path.name} posts, read in place"
    return FALLBACK * 600, "hand-written posts (training file not found)"


@dataclass(frozen=True)
class Rate:
    wall: float  # posts per second of elapsed time, whatever else the core was doing
    cpu: float  # posts per second of this process's CPU time: the rate on a core of its own


def throughput(clf: EmbeddingsClassifier, texts: list[str], batch: int, repeats: int) -> list[Rate]:
    rates = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(texts), batch):
            clf.score_many(texts[i : i + batch])
        rates.append(Rate(len(texts) / (time.perf_counter() - wall), len(texts) / (time.process_time() - cpu)))
    return rates


def _closure(names: Iterable[str]) -> set[str]:
    """Installed distributions reachable from names through their unconditional requirements."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _size_bytes(names: Iterable[str]) -> int:
    total = 0
    for name in names:
        for file in metadata.distribution(name).files or []:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
    return total


def install_sizes() -> dict[str, Any]:
    # From pyproject.toml, not the installed metadata: an editable install keeps the extras it was made with.
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = [Requirement(r).name for r in project["dependencies"]]
    ml = [Requirement(r).name for r in project["optional-dependencies"]["ml"]]
    default = _closure(base)
    added = _closure(ml) - default
    return {
        "default_mib": _size_bytes(default) / 2**20,
        "ml_added_mib": _size_bytes(added) / 2**20,
        "ml_added_packages": len(added),
        "ml_added_names": ", ".join(sorted(added)),
    }


def median_load_s(repeats: int) -> tuple[float, float]:
    emb, default = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        EmbeddingsClassifier.load()
        emb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ComplaintClassifier.load()
        default.append(time.perf_counter() - t0)
    return statistics.median(emb), statistics.median(default)


def render(texts_note: str, n_texts: int, rates: dict[int, list[Rate]], loads: tuple[float, float]) -> str:
    sizes = install_sizes()
    onnx = DEFAULT_MODEL_DIR / "model.onnx"
    tokenizer = DEFAULT_MODEL_DIR / "tokenizer.json"
    npz = DEFAULT_MODEL_PATH
    lines = [
        SECTION,
        "",
        f"Written by `python bench/embeddings_bench.py` (run from the repository root), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared); "
        f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- software: Python {platform.python_version()}, onnxruntime {metadata.version('onnxruntime')}, "
        f"tokenizers {metadata.version('tokenizers')}",
        f"- pinned to CPU 0, ONNX Runtime intra-op threads 1; texts: {n_texts:,} of {texts_note}",
        "",
        "| batch size | posts per CPU-second (median) | posts/s elapsed (median; shared machine) | runs | target |",
        "|---:|---:|---:|---:|---:|",
    ]
    for batch, r in rates.items():
        cpu = statistics.median(x.cpu for x in r)
        wall = statistics.median(x.wall for x in r)
        lines.append(f"| {batch} | {cpu:,.0f} | {wall:,.0f} | {len(r)} | ≥ {TARGET_POSTS_S} |")
    lines += [
        "",
        "| what | embeddings model | default model |",
        "|---|---:|---:|",
        f"| model files | {onnx.stat().st_size / 2**20:.1f} MiB 8-bit ONNX + "
        f"{tokenizer.stat().st_size / 2**20:.1f} MiB tokenizer | {npz.stat().st_size / 2**20:.1f} MiB .npz |",
        f"| load time (median, with probe checks) | {loads[0]:.2f} s | {loads[1]:.2f} s |",
        f"| installed packages | default + {sizes['ml_added_mib']:.0f} MiB "
        f"({sizes['ml_added_packages']} packages) | {sizes['default_mib']:.0f} MiB |",
        "",
        f"- The `ml` extra adds: {sizes['ml_added_names']}.",
        "- Per CPU-second is the rate on a core of its own (one thread: the process's CPU time is that core's); the",
        "  elapsed rate is what this run got on a machine shared with other jobs (see the load average).",
        "- Both include preparing and tokenising the text; a daemon batch is every post one ingest page brings.",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Replace this benchmark's own section of RESULTS.md (up to the next heading of its level or above)."""
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else ""
    start = old.find(SECTION)
    if start == -1:
        new = old.rstrip("\n") + "\n\n" + text if old else text
    else:
        ends = [i for i in (old.find(h, start + len(SECTION)) for h in ("\n# ", "\n## ")) if i != -1]
        end = min(ends) if ends else -1
        new = old[:start] + text + (old[end + 1 :] if end != -1 else "")
    RESULTS.write_text(new, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--posts", type=int, default=None, help="use only the first N posts (batch 1: a sixth of them)")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    texts, note = load_texts(args.data)
    texts = texts[: args.posts]
    clf = EmbeddingsClassifier.load()
    clf.score_many(texts[:64])  # warm-up: the first run allocates ONNX Runtime's buffers
    rates: dict[int, list[Rate]] = {}
    for batch in BATCH_SIZES:
        sample = texts[: max(64, len(texts) // 6)] if batch == 1 else texts
        rates[batch] = throughput(clf, sample, batch, args.repeats)
        shown = ", ".join(f"{r.cpu:.0f} per CPU-s ({r.wall:.0f}/s elapsed)" for r in rates[batch])
        print(f"batch {batch}: {shown}", flush=True)
    section = render(note, len(texts), rates, median_load_s(args.repeats))
    print(section)
    if not args.no_write:
        write_section(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
