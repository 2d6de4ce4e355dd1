#!/usr/bin/env python
"""Benchmark ``mentiondesk classify``: model load time, run_classify throughput, peak memory.

    .venv/bin/python bench/classify_bench.py [--lines 20000] [--out bench/results/classify.md]

Input lines are synthetic (seeded random compositions of hand-written phrases), not from any data set.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

from mentiondesk.bot.classify.cli import run_classify
from mentiondesk.bot.classify.model import DEFAULT_MODEL_PATH, ComplaintClassifier

REPO_ROOT = Path(__file__).resolve().parent.parent


OPENERS = ["@brand", "@shop@social.example", "hey @support", "", "", "to whoever runs this account,"]
PHRASES = [
    "my parcel is late again",
    "thanks for sorting that out so quickly",
    "the app crashes every time I open settings",
    "do you ship to Norway?",
    "still waiting for a refund after three weeks",
    "love the new colours this season",
    "your hold music is the only thing that works",
    "is the shop open on bank holidays",
    "the train was cancelled with no announcement",
    "great service at the Leeds branch today",
    "why was I charged twice",
    "can I change the delivery address after ordering",
    "best coffee in town ☕",
    "this is the worst update ever 😡",
    "what a lovely surprise 🎉",
    "nobody has replied to my email",
]
TAILS = ["", "", "!", "?", " https://example.org/t/123", " #fail", " 🙏", " …"]


def synthetic_lines(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        # Lengths from a few words to several hundred characters, like real posts.
        body = " ".join(rng.choice(PHRASES) for _ in range(rng.choice([1, 1, 2, 3, 5, 8])))
        text = f"{rng.choice(OPENERS)} {body}{rng.choice(TAILS)}".strip()
        lines.append(json.dumps({"text": text}, ensure_ascii=False))
    return lines


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def cold_load_seconds() -> float:
    # A fresh interpreter measures what the daemon pays at start-up: imports plus the first load.
    code = (
        "import time; t0 = time.perf_counter(); "
        "from mentiondesk.bot.classify.model import ComplaintClassifier; ComplaintClassifier.load(); "
        "print(time.perf_counter() - t0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_once(clf: ComplaintClassifier, payload: str, batch_size: int) -> None:
    out = io.StringIO()
    if run_classify(io.StringIO(payload), out, clf, batch_size=batch_size) != 0:
        raise SystemExit("benchmark input unexpectedly contained malformed lines")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "classify.md")
    args = ap.parse_args()

    cold = cold_load_seconds()
    warm = statistics.median(timed(ComplaintClassifier.load, 5))
    clf = ComplaintClassifier.load()
    lines = synthetic_lines(args.lines)
    payload = "\n".join(lines) + "\n"
    mean_chars = statistics.mean(len(json.loads(line)["text"]) for line in lines)

    results = {}
    for batch_size in (64, 512, 2048):
        results[batch_size] = min(timed(partial(run_once, clf, payload, batch_size), args.repeat))

    tracemalloc.start()
    run_once(clf, payload, 512)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    report = render(args, cold, warm, results, traced_peak, peak_rss_mb, mean_chars)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    return 0


def render(
    args: argparse.Namespace,
    cold: float,
    warm: float,
    results: dict[int, float],
    traced_peak: int,
    peak_rss_mb: float,
    mean_chars: float,
) -> str:
    n = args.lines
    rows = "\n".join(
        f"| {b} | {n / s:,.0f} | {1000 * s / n * 1000:.1f} | {s:.2f} |" for b, s in sorted(results.items())
    )
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"""# `mentiondesk classify` benchmark

Generated by `bench/classify_bench.py` (synthetic input: {n:,} JSON lines, mean text length
{mean_chars:.0f} characters, seeded; best of {args.repeat} runs; single thread).

| batch size | lines/s | ms per 1,000 lines | total s |
|---:|---:|---:|---:|
{rows}

| | |
|---|---|
| model load, cold (fresh interpreter: imports + load) | {cold * 1000:.0f} ms |
| model load, warm (median of 5) | {warm * 1000:.0f} ms |
| artifact size | {DEFAULT_MODEL_PATH.stat().st_size / 1e6:.2f} MB |
| peak Python allocations during a 512-batch run (tracemalloc) | {traced_peak / 1e6:.1f} MB |
| peak RSS of the benchmark process | {peak_rss_mb:.0f} MB |
| machine | {cpu_model()}, nproc {nproc} |
| software | Python {platform.python_version()}, {platform.system()} {platform.release()} |
"""


if __name__ == "__main__":
    raise SystemExit(main())
