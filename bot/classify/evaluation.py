"""How well a model separates complaints in a labelled CSV (``mentiondesk classifier eval``).

The figures are the ones the complaint literature reports: macro-F1 (the mean of both classes' F1, so the
larger "other" class cannot flatter it), macro precision and recall, and the complaint class's own F1. Posts
whose ``domain`` is ``random_tweet`` or ``random_reply`` (general posts, all labelled 0 in the published data
set) are easy negatives: when the file has a ``domain`` column the figures are also given without them, for the
brand-addressed posts that the product sees.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mentiondesk.bot.classify.loading import Classifier

GENERAL_DOMAINS = frozenset({"random_tweet", "random_reply"})
# The data set both models are trained on; each artifact's metadata cites it.
CITATION = (
    "Daniel Preoțiuc-Pietro, Mihaela Găman and Nikolaos Aletras. 2019. Automatically Identifying "
    "Complaints in Social Media. In Proceedings of the 57th Annual Meeting of the Association for "
    "Computational Linguistics (ACL 2019), pages 5008-5019. https://aclanthology.org/P19-1495"
)
REQUIRED_COLUMNS = ("text", "complaint")


class EvalDataError(Exception):
    """The labelled file cannot be used; the message names the file, line or column."""


@dataclass(frozen=True)
class LabelledPosts:
    texts: list[str]
    labels: list[int]
    domains: list[str] | None  # None when the file has no domain column


@dataclass(frozen=True)
class Figures:
    posts: int
    complaints: int
    macro_f1: float
    precision: float  # macro: the mean of both classes'
    recall: float  # macro
    complaint_f1: float
    accuracy: float


def read_labelled(path: Path) -> LabelledPosts:
    """The posts of a CSV with `text` and `complaint` (0 or 1) columns, and `domain` if it has one."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise EvalDataError(f"{path}: cannot read: {exc.strerror}") from exc
    texts: list[str] = []
    labels: list[int] = []
    domains: list[str] = []
    with handle:
        reader = csv.DictReader(handle)
        try:
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise EvalDataError(f"{path}: no {' or '.join(missing)} column (needs {', '.join(REQUIRED_COLUMNS)})")
            has_domain = "domain" in columns
            for row in reader:
                line = reader.line_num
                label = (row.get("complaint") or "").strip()
                if label not in ("0", "1"):
                    raise EvalDataError(f"{path}, line {line}: complaint must be 0 or 1, got {label!r}")
                text = row.get("text")
                if text is None:
                    raise EvalDataError(f"{path}, line {line}: the row has no text")
                texts.append(text)
                labels.append(int(label))
                if has_domain:
                    domains.append((row.get("domain") or "").strip())
        except UnicodeDecodeError as exc:
            raise EvalDataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except csv.Error as exc:
            raise EvalDataError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from None
    if not texts:
        raise EvalDataError(f"{path}: no labelled posts")
    return LabelledPosts(texts=texts, labels=labels, domains=domains if has_domain else None)


def figures(labels: Sequence[int], predicted: Sequence[int]) -> Figures:
    """The figures of predictions against labels (1 = complaint); a class never predicted nor present scores 0."""
    if len(labels) != len(predicted):
        raise ValueError("one prediction per label")
    per_class = []
    for positive in (1, 0):
        tp = sum(1 for y, p in zip(labels, predicted, strict=True) if y == positive and p == positive)
        fp = sum(1 for y, p in zip(labels, predicted, strict=True) if y != positive and p == positive)
        fn = sum(1 for y, p in zip(labels, predicted, strict=True) if y == positive and p != positive)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append((precision, recall, f1))
    (p1, r1, f1_complaint), (p0, r0, f1_other) = per_class
    correct = sum(1 for y, p in zip(labels, predicted, strict=True) if y == p)
    return Figures(
        posts=len(labels),
        complaints=sum(labels),
        macro_f1=(f1_complaint + f1_other) / 2,
        precision=(p1 + p0) / 2,
        recall=(r1 + r0) / 2,
        complaint_f1=f1_complaint,
        accuracy=correct / len(labels) if labels else 0.0,
    )


def evaluate(classifier: Classifier, posts: LabelledPosts, *, threshold: float) -> dict[str, Figures]:
    """Figures for every post ("all") and, with a domain column, for the brand-addressed ones ("brand")."""
    scores = classifier.score_many(posts.texts)
    predicted = [1 if score >= threshold else 0 for score in scores]
    result = {"all": figures(posts.labels, predicted)}
    if posts.domains is not None:
        brand = [i for i, domain in enumerate(posts.domains) if domain not in GENERAL_DOMAINS]
        if brand:
            result["brand"] = figures([posts.labels[i] for i in brand], [predicted[i] for i in brand])
    return result


def training_file_note(path: Path, metadata: Mapping[str, Any]) -> str | None:
    """A warning when ``path`` is the very file the model was trained on (its metadata keeps the checksum)."""
    trained = metadata.get("training_set")
    expected = trained.get("sha256") if isinstance(trained, dict) else None
    if not isinstance(expected, str) or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        return None
    return (
        f"note: {path} is the file this model was trained on: these are training figures, not a measure of posts "
        "it has not seen (docs/classifier.md has the cross-validated ones)"
    )


def as_json(result: dict[str, Figures], *, threshold: float) -> dict[str, Any]:
    return {"threshold": threshold, **{name: asdict(f) for name, f in result.items()}}


def as_table(result: dict[str, Figures], *, threshold: float) -> str:
    names = {"all": "all posts", "brand": "brand posts (without random_tweet/random_reply)"}
    lines = [f"threshold {threshold:.3f}"]
    lines.append(f"{'':50} {'posts':>6} {'compl.':>6} {'macro-F1':>9} {'prec.':>6} {'recall':>6} {'compl.F1':>8}")
    for name, f in result.items():
        lines.append(
            f"{names[name]:50} {f.posts:>6} {f.complaints:>6} {f.macro_f1:>9.3f} {f.precision:>6.3f} "
            f"{f.recall:>6.3f} {f.complaint_f1:>8.3f}"
        )
    return "\n".join(lines)
