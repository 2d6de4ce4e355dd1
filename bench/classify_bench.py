#!/usr/bin/env python
"""Benchmark the complaint model: throughput on one core in batch, file size, load time, peak memory.

    .venv/bin/python bench/classify_bench.py [--lines 20000] [--repeat 3] [--model PATH] [--out bench/RESULTS.md]

The process pins itself to one CPU and numpy's thread pools to one thread (the daemon scores on one core),
then measures ``ComplaintClassifier.score_many`` on the whole batch and ``run_classify`` (the ``mentiondesk
classify`` command: JSON parsing and output included) at several batch sizes. The report replaces the
section between its markers in ``--out`` and leaves the rest of the file as it is.

Input lines are synthetic (seeded random compositions of hand-written phrases), not from any data set.
"""

from __future__ import annotations

import os

# Before numpy is imported (through mentiondesk): its BLAS thread pools read these once, at import.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mentiondesk.bot.classify.cli import run_classify  # noqa: E402
from mentiondesk.bot.classify.model import DEFAULT_MODEL_PATH, ComplaintClassifier  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTION_START = "<!-- classify-bench:start -->"
SECTION_END = "<!-- classify-bench:end -->"
TARGET_POSTS_PER_S = 5000
TARGET_MODEL_MB = 5.0


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


def cold_load_seconds(model: Path) -> float:
    # A fresh interpreter measures what the daemon pays at start-up: imports plus the first load.
    code = (
        "import sys, time; t0 = time.perf_counter(); "
        "from mentiondesk.bot.classify.model import ComplaintClassifier; ComplaintClassifier.load(sys.argv[1]); "
        "print(time.perf_counter() - t0)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def pin_to_one_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of ``path`` (or add it), leaving the other sections as they are."""
    block = f"{SECTION_START}\n{section.rstrip()}\n{SECTION_END}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, help="model artifact (.npz)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "RESULTS.md")
    args = ap.parse_args()

    pinned = pin_to_one_cpu()
    cold = cold_load_seconds(args.model)
    warm = statistics.median(timed(partial(ComplaintClassifier.load, args.model), 5))
    clf = ComplaintClassifier.load(args.model)
    lines = synthetic_lines(args.lines)
    texts = [json.loads(line)["text"] for line in lines]
    payload = "\n".join(lines) + "\n"
    mean_chars = statistics.mean(len(t) for t in texts)

    scoring = min(timed(partial(clf.score_many, texts), args.repeat))
    results = {}
    for batch_size in (64, 512, 2048):
        results[batch_size] = min(timed(partial(run_once, clf, payload, batch_size), args.repeat))

    tracemalloc.start()
    clf.score_many(texts)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    measured = Measured(cold, warm, scoring, results, traced_peak, peak_rss_mb, mean_chars, pinned)
    report = render(args, clf, measured)
    write_section(args.out, report)
    print(report)
    return 0


@dataclass(frozen=True)
class Measured:
    cold_s: float
    warm_s: float
    scoring_s: float  # score_many over all the texts in one call
    run_classify_s: dict[int, float]  # by batch size
    traced_peak: int
    peak_rss_mb: float
    mean_chars: float
    pinned: str


def render(args: argparse.Namespace, clf: ComplaintClassifier, m: Measured) -> str:
    n = args.lines
    rows = "\n".join(
        f"| `mentiondesk classify` (JSON lines in and out), batch {b} | {n / s:,.0f} | {1e6 * s / n:.1f} |"
        for b, s in sorted(m.run_classify_s.items())
    )
    npz = args.model.with_suffix(".npz")
    size_mb = (npz.stat().st_size + npz.with_suffix(".json").stat().st_size) / 1e6
    per_s = n / m.scoring_s
    batch = f"**{per_s:,.0f}** (target ≥ {TARGET_POSTS_PER_S:,})"
    return f"""## Complaint classifier

Written by `python bench/classify_bench.py --lines {n} --repeat {args.repeat}` (best of {args.repeat} runs),
{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; model `{npz.name}` ({clf.metadata.get("format")}).
One core: the process is {m.pinned}, OMP/OPENBLAS/MKL threads = 1. Input: {n:,} synthetic posts, mean length
{m.mean_chars:.0f} characters, seeded. The 2-core machine is shared, so figures vary between runs.

| scoring | posts/s | µs per post |
|---|---:|---:|
| `ComplaintClassifier.score_many`, one batch of {n:,} | {batch} | {1e6 * m.scoring_s / n:.1f} |
{rows}

| | |
|---|---|
| model files (.npz + .json) | **{size_mb:.2f} MB** (target < {TARGET_MODEL_MB:g} MB) |
| model load, cold (fresh interpreter: imports + load + probe check) | {m.cold_s * 1000:.0f} ms |
| model load, warm (median of 5) | {m.warm_s * 1000:.0f} ms |
| peak Python allocations while scoring the batch (tracemalloc) | {m.traced_peak / 1e6:.1f} MB |
| peak RSS of the benchmark process | {m.peak_rss_mb:.0f} MB |
| machine | {cpu_model()}, {os.cpu_count()} CPUs |
| software | Python {platform.python_version()}, numpy {np.__version__}, {platform.system()} {platform.release()} |
"""


if __name__ == "__main__":
    raise SystemExit(main())
