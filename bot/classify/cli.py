"""JSON-lines front end for the complaint classifier (``mentiondesk classify``).

Input: one ``{"text": "..."}`` object per line. Output: exactly one line per input line, in order —
``{"label": ..., "score": ...}`` or ``{"error": "line N: ..."}`` — so callers can zip input and output.
An input line's ``"id"`` field, when it has one, is copied to the front of its output line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, TextIO

from mentiondesk.bot.classify.model import COMPLAINT, OTHER, ComplaintClassifier

__all__ = ["run_classify"]


# What an input line carries over to its output line, so callers can join results without counting lines.
Echo = dict[str, Any]


def _parse(line: str, lineno: int) -> tuple[Echo, str | None, str | None]:
    """Return (echo, text, None) for a valid line, (echo, None, error message) otherwise."""
    if not line.strip():
        return {}, None, f"line {lineno}: blank line"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return {}, None, f"line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
    except (ValueError, RecursionError):  # e.g. absurdly deep nesting; the message would be noise
        return {}, None, f"line {lineno}: invalid JSON"
    if not isinstance(obj, dict):
        return {}, None, f"line {lineno}: expected a JSON object, got {type(obj).__name__}"
    echo = {"id": obj["id"]} if "id" in obj else {}
    text = obj.get("text")
    if not isinstance(text, str):
        got = "missing" if "text" not in obj else type(text).__name__
        return echo, None, f"line {lineno}: 'text' must be a string ({got})"
    return echo, text, None


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(lines)
    while batch := list(islice(it, size)):
        yield batch


def _score_batch(
    batch: list[str], first_lineno: int, classifier: ComplaintClassifier, threshold: float
) -> tuple[list[str], bool]:
    parsed = [_parse(line, first_lineno + i) for i, line in enumerate(batch)]
    texts = [text for _, text, _ in parsed if text is not None]
    scores = iter(classifier.score_many(texts))
    out, any_bad = [], False
    for echo, text, error in parsed:
        if text is None:
            any_bad = True
            out.append(json.dumps({**echo, "error": error}))
        else:
            score = next(scores)
            label = COMPLAINT if score >= threshold else OTHER
            out.append(json.dumps({**echo, "label": label, "score": round(score, 4)}))
    return out, any_bad


def run_classify(
    stdin: TextIO,
    stdout: TextIO,
    classifier: ComplaintClassifier,
    *,
    threshold: float | None = None,
    batch_size: int = 512,
) -> int:
    """Classify JSON lines from ``stdin`` to ``stdout``; 0 if every line was valid, else 1."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cut = classifier.threshold if threshold is None else threshold
    status = 0
    lineno = 1
    for batch in _batches(stdin, batch_size):
        out, any_bad = _score_batch(batch, lineno, classifier, cut)
        lineno += len(batch)
        status |= int(any_bad)
        stdout.write("\n".join(out) + "\n")
        # Flushing per batch lets a downstream consumer see results while a long input streams in.
        stdout.flush()
    return status
