"""JSON-lines front end for the complaint classifier (``mentiondesk classify``).

Input: one ``{"text": "..."}`` object per line, optionally with what Mastodon tells about the post (``language``,
``followers_count``, ``reblogs_count``, ``favourites_count``). Output: exactly one line per input line, in order —
``{"label", "score", "kind", "band", "priority", "priority_reasons", "categories"}`` or
``{"error": "line N: ..."}`` — so callers can zip input and output. The daemon's rules decide kind, band, priority
and categories (bot/classify/assess.py), so a post gets here what it would get in the core loop. An input line's
``"id"`` field, when it has one, is copied to the front of its output line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from itertools import islice
from typing import Any, TextIO

from mentiondesk.bot.classify.assess import Cues, Judge
from mentiondesk.bot.classify.loading import Classifier, load_classifier
from mentiondesk.bot.classify.model import COMPLAINT, OTHER
from mentiondesk.bot.config import ClassifierSettings

__all__ = ["load_model", "make_judge", "run_classify"]

# Input fields that feed the priority cues: Mastodon's names, so a caller can pass a status's fields through.
_COUNTS = ("followers_count", "reblogs_count", "favourites_count")


# What an input line carries over to its output line, so callers can join results without counting lines.
Echo = dict[str, Any]


def load_model(settings: ClassifierSettings, override: str | None = None) -> Classifier:
    """The model the config names (or `--model`'s), loaded once; the one place the CLI loads one."""
    return load_classifier(override if override is not None else settings.model_choice())


def make_judge(settings: ClassifierSettings, classifier: Classifier, threshold: float | None = None) -> Judge:
    """The config's rules for this model; `--threshold` moves the complaint threshold (and a triage band above it)."""
    judge = Judge.from_settings(settings, classifier.metadata)
    if threshold is None:
        return judge
    return replace(judge, threshold=threshold, triage_threshold=min(judge.triage_threshold, threshold))


def _cues(obj: dict[str, Any], lineno: int) -> tuple[Cues | None, str | None]:
    language = obj.get("language")
    if language is not None and not isinstance(language, str):
        return None, f"line {lineno}: 'language' must be a string or null ({type(language).__name__})"
    counts: list[int | None] = []
    for field in _COUNTS:
        value = obj.get(field)
        # bool is an int to Python, never a count to a person.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            return None, f"line {lineno}: '{field}' must be a whole number of 0 or more, or null (got {value!r})"
        counts.append(value)
    followers, reblogs, favourites = counts
    return Cues(language=language, followers=followers, reblogs=reblogs, favourites=favourites), None


def _parse(line: str, lineno: int) -> tuple[Echo, tuple[str, Cues] | None, str | None]:
    """Return (echo, (text, cues), None) for a valid line, (echo, None, error message) otherwise."""
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
    cues, error = _cues(obj, lineno)
    if cues is None:
        return echo, None, error
    return echo, (text, cues), None


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(lines)
    while batch := list(islice(it, size)):
        yield batch


def _score_batch(batch: list[str], first_lineno: int, classifier: Classifier, judge: Judge) -> tuple[list[str], bool]:
    parsed = [_parse(line, first_lineno + i) for i, line in enumerate(batch)]
    scores = iter(classifier.score_many([post[0] for _, post, _ in parsed if post is not None]))
    out, any_bad = [], False
    for echo, post, error in parsed:
        if post is None:
            any_bad = True
            out.append(json.dumps({**echo, "error": error}))
            continue
        text, cues = post
        score = next(scores)
        got = judge.assess(text, score, cues)
        result = {
            "label": COMPLAINT if score >= judge.threshold else OTHER,
            "score": round(score, 4),
            "kind": got.kind,
            "band": got.band,
            "priority": got.priority,
            "priority_reasons": list(got.priority_reasons),
            "categories": list(got.categories),
        }
        out.append(json.dumps({**echo, **result}))
    return out, any_bad


def run_classify(
    stdin: TextIO,
    stdout: TextIO,
    classifier: Classifier,
    *,
    judge: Judge | None = None,
    threshold: float | None = None,
    batch_size: int = 512,
) -> int:
    """Classify JSON lines from ``stdin`` to ``stdout``; 0 if every line was valid, else 1.

    Without a judge, the default rules for this model (a config's `[classifier]` left empty).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    judge = judge or make_judge(ClassifierSettings(), classifier, threshold)
    status = 0
    lineno = 1
    for batch in _batches(stdin, batch_size):
        out, any_bad = _score_batch(batch, lineno, classifier, judge)
        lineno += len(batch)
        status |= int(any_bad)
        stdout.write("\n".join(out) + "\n")
        # Flushing per batch lets a downstream consumer see results while a long input streams in.
        stdout.flush()
    return status
