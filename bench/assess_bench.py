#!/usr/bin/env python
"""Benchmark the rules after the model (bot/classify/assess.py): what questions, priority cues and categories cost
per post, beside the model's own scoring of the same posts.

    .venv/bin/python -m bench.assess_bench [--lines 20000] [--repeat 5] [--out bench/RESULTS-assess.md]

Posts are classify_bench.py's synthetic lines (seeded compositions of hand-written phrases), with random reach
counts. Writes a Markdown table to --out (and prints it).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path

from bench.classify_bench import synthetic_lines
from mentiondesk.bot.classify.assess import Cues, Judge
from mentiondesk.bot.classify.model import ComplaintClassifier
from mentiondesk.bot.classify.questions import question_sentence
from mentiondesk.bot.classify.wordmatch import words_of
from mentiondesk.bot.config import ClassifierSettings


def best_us_per_post(fn: Callable[[], object], posts: int, repeat: int) -> float:
    """The fastest of `repeat` runs: on a shared machine the slower ones measure the neighbours."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / posts * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS-assess.md")
    args = ap.parse_args()
    texts = [json.loads(line)["text"] for line in synthetic_lines(args.lines)]
    rng = random.Random(3)
    cues = [Cues(followers=rng.choice([None, 40, 15_000]), reblogs=rng.choice([None, 0, 30])) for _ in texts]
    classifier = ComplaintClassifier.load()
    judge = Judge.from_settings(ClassifierSettings(), classifier.metadata)  # the default rules
    scores = classifier.score_many(texts)
    words = [words_of(t) for t in texts]
    n, r = len(texts), args.repeat
    rows = [
        ("model: score_many (batch)", best_us_per_post(lambda: classifier.score_many(texts), n, r)),
        (
            "rules: Judge.assess, all of them",
            best_us_per_post(lambda: list(map(judge.assess, texts, scores, cues)), n, r),
        ),
        ("  of which: words_of (split once)", best_us_per_post(lambda: list(map(words_of, texts)), n, r)),
        ("  of which: question_sentence", best_us_per_post(lambda: list(map(question_sentence, texts)), n, r)),
        ("  of which: categories", best_us_per_post(lambda: list(map(judge.categories.of, words)), n, r)),
    ]
    lines = [
        "# The rules after the model: questions, priority cues, categories",
        "",
        f"`python -m bench.assess_bench --lines {n} --repeat {r}`: {n:,} synthetic posts (mean "
        f"{sum(map(len, texts)) / n:.0f} characters), the default rules and the packaged model, best of {r} runs on "
        f"one core ({platform.processor() or platform.machine()}, Python {platform.python_version()}, a machine "
        "shared with other work).",
        "",
        "| step | µs per post | posts/s |",
        "|---|---:|---:|",
        *(f"| {name} | {us:.1f} | {1e6 / us:,.0f} |" for name, us in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
