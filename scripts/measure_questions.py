#!/usr/bin/env python
"""How often the question rules (bot/classify/questions.py) call a post a question, on a labelled CSV.

    .venv/bin/python scripts/measure_questions.py ../shared/data/complaints-train.csv [--sample 50 --seed 14]

Prints the share per group as a Markdown table, then a seeded sample of the non-complaints it calls questions
(to check by hand: docs/classifier.md, "Questions") and one of the brand posts it does not (to look for misses).
The data stays where it is; nothing is written.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Callable
from pathlib import Path

from mentiondesk.bot.classify.questions import question_sentence

Row = dict[str, str]
NOT_BRAND = ("random_tweet", "random_reply")


def _share(rows: list[Row], asks: dict[str, bool], name: str, keep: Callable[[Row], bool]) -> str:
    chosen = [r for r in rows if keep(r)]
    hits = sum(asks[r["id"]] for r in chosen)
    return f"| {name} | {len(chosen)} | {hits} | {hits / max(len(chosen), 1):.1%} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="labelled posts: id, text, complaint (0/1), domain")
    parser.add_argument("--sample", type=int, default=50)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    with args.csv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    asks = {r["id"]: question_sentence(r["text"]) is not None for r in rows}

    def brand(r: Row) -> bool:
        return r["domain"] not in NOT_BRAND

    print("| posts | n | called questions | share |\n|---|---:|---:|---:|")
    print(_share(rows, asks, "non-complaints, all domains", lambda r: r["complaint"] == "0"))
    print(_share(rows, asks, "non-complaints, brand posts", lambda r: r["complaint"] == "0" and brand(r)))
    print(_share(rows, asks, "non-complaints, random_tweet/reply", lambda r: r["complaint"] == "0" and not brand(r)))
    print(_share(rows, asks, "complaints", lambda r: r["complaint"] == "1"))

    rng = random.Random(args.seed)
    called = [r for r in rows if r["complaint"] == "0" and asks[r["id"]]]
    missed = [r for r in rows if r["complaint"] == "0" and brand(r) and not asks[r["id"]]]
    for title, pool, n in (("called questions", called, args.sample), ("brand posts not called", missed, 30)):
        print(f"\n{title} (sample of {n}, seed {args.seed}):")
        for i, r in enumerate(rng.sample(pool, min(n, len(pool))), start=1):
            print(f"{i}. {r['id']} | {r['domain']} | {' '.join(r['text'].split())[:180]}")


if __name__ == "__main__":
    main()
