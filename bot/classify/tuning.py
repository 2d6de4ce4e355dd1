"""Figures and thresholds from scores and labels, with numpy alone (training and ``classifier train``).

The figures are the complaint literature's: macro-F1 (the mean of both classes' F1, so the larger
"other" class cannot flatter it), macro precision and recall, the complaint class's F1. Cross-validated
figures are the mean and standard deviation over the folds, as the published results report them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "THRESHOLD_GRID",
    "TRIAGE_MISSED_COMPLAINTS",
    "Bands",
    "bands",
    "best_threshold",
    "fold_summary",
    "metrics",
    "per_fold_metrics",
    "triage_threshold",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Summary = dict[str, dict[str, float]]

THRESHOLD_GRID = np.round(np.arange(0.20, 0.801, 0.01), 2)
# The triage band's floor: at most this share of complaints (out of fold) score below it and so are only
# stored. An agent glancing at a triage list is cheap; a complaint nobody sees is what the desk exists to avoid.
TRIAGE_MISSED_COMPLAINTS = 0.05
TRIAGE_GRID = np.round(np.arange(0.01, 0.801, 0.01), 2)


def metrics(y: IntArray, scores: FloatArray, threshold: float) -> dict[str, float]:
    """Macro-F1, macro precision and recall, complaint precision/recall/F1 and accuracy at ``threshold``."""
    pred = scores >= threshold
    truth = y == 1
    per_class = []
    for positive_pred, positive in ((pred, truth), (~pred, ~truth)):
        tp = float(np.sum(positive_pred & positive))
        fp = float(np.sum(positive_pred & ~positive))
        fn = float(np.sum(~positive_pred & positive))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per_class.append((p, r, 2 * p * r / (p + r) if p + r else 0.0))
    (p1, r1, f1), (p0, r0, f0) = per_class
    return {
        "macro_f1": (f1 + f0) / 2,
        "macro_precision": (p1 + p0) / 2,
        "macro_recall": (r1 + r0) / 2,
        "complaint_precision": p1,
        "complaint_recall": r1,
        "complaint_f1": f1,
        "accuracy": float(np.mean(pred == truth)) if len(y) else 0.0,
    }


def fold_summary(per_fold: Sequence[dict[str, float]]) -> Summary:
    return {
        key: {
            "mean": round(float(np.mean([m[key] for m in per_fold])), 4),
            "std": round(float(np.std([m[key] for m in per_fold])), 4),
        }
        for key in per_fold[0]
    }


def per_fold_metrics(
    y: IntArray,
    scores: FloatArray,
    folds: Sequence[IntArray],
    thresholds: Sequence[float],
    subset: BoolArray | None = None,
) -> Summary:
    """Mean and std over folds; ``subset`` keeps only some rows of each fold (e.g. brand posts)."""
    per_fold = []
    for test, th in zip(folds, thresholds, strict=True):
        rows = test if subset is None else test[subset[test]]
        per_fold.append(metrics(y[rows], scores[rows], th))
    return fold_summary(per_fold)


def best_threshold(y: IntArray, scores: FloatArray, folds: Sequence[IntArray] | None = None) -> float:
    """The grid threshold maximising macro-F1 (per-fold mean when folds are given); ties go nearest 0.5."""

    def score(t: float) -> float:
        if folds is None:
            return metrics(y, scores, t)["macro_f1"]
        return float(np.mean([metrics(y[f], scores[f], t)["macro_f1"] for f in folds]))

    # Ties go to the threshold nearest 0.5, the least "tuned" choice.
    ranked = sorted(THRESHOLD_GRID, key=lambda t: (-round(score(float(t)), 10), abs(t - 0.5)))
    return float(ranked[0])


def triage_threshold(y: IntArray, scores: FloatArray, ticket_threshold: float) -> float:
    """The highest grid score below ``ticket_threshold`` under which at most 5% of complaints fall."""
    complaint_scores = scores[y == 1]
    chosen = float(TRIAGE_GRID[0])
    for t in TRIAGE_GRID:
        if t >= ticket_threshold:
            break
        if complaint_scores.size and float(np.mean(complaint_scores < t)) <= TRIAGE_MISSED_COMPLAINTS:
            chosen = float(t)
    return chosen


Bands = dict[str, dict[str, float]]


def bands(y: IntArray, scores: FloatArray, ticket: float, triage: float) -> Bands:
    """Per band (ticket >= ``ticket`` > triage >= ``triage`` > stored): share of posts, share of all
    complaints, and the band's precision (share of its posts that are complaints)."""
    complaints = max(int(np.sum(y == 1)), 1)
    out: Bands = {}
    for name, mask in (
        ("ticket", scores >= ticket),
        ("triage", (scores >= triage) & (scores < ticket)),
        ("stored", scores < triage),
    ):
        n = int(np.sum(mask))
        hits = int(np.sum(y[mask] == 1))
        out[name] = {
            "posts": n,
            "share_of_posts": round(n / max(len(y), 1), 4),
            "complaints": hits,
            "share_of_complaints": round(hits / complaints, 4),
            "precision": round(hits / n, 4) if n else 0.0,
        }
    return out
