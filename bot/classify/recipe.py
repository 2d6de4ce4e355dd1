"""One training run of a fixed setting: cross-validated figures, both thresholds, the final fit.

Shared by ``scripts/train_classifier.py`` (which first picks the setting) and ``mentiondesk classifier
train`` (which reuses the installed model's setting on more data). Needs the ``train`` extra.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mentiondesk.bot.classify.features import FeatureBlock
from mentiondesk.bot.classify.style import StyleSetting
from mentiondesk.bot.classify.training import (
    SEED,
    Config,
    Fitted,
    fit,
    folds_of,
    model_inputs,
    oof_scores,
    predict,
    rows,
)
from mentiondesk.bot.classify.tuning import (
    Summary,
    bands,
    best_threshold,
    fold_summary,
    metrics,
    per_fold_metrics,
    triage_threshold,
)

__all__ = ["Outcome", "config_from_metadata", "train"]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class Outcome:
    config: Config
    model: Fitted
    threshold: float
    triage_threshold: float
    oof: npt.NDArray[np.float64]  # out-of-fold P(complaint), one per training row
    cv: dict[str, Any]  # the figures, as written to the artifact's metadata

    @property
    def macro_f1(self) -> float:
        return float(self.cv["at_threshold"]["all"]["macro_f1"]["mean"])


def config_from_metadata(meta: dict[str, Any]) -> Config:
    """The setting an artifact was trained with, to retrain it the same way on other data."""
    blocks = tuple(FeatureBlock.from_json(raw) for raw in meta["features"]["blocks"])
    classifier = meta.get("classifier", {})
    combine = classifier.get("combine", "joint")
    if combine not in ("joint", "average"):
        raise ValueError(f"unknown combine {combine!r}")
    raw_style = meta["features"].get("style")
    style = None if raw_style is None else StyleSetting.from_json(raw_style)
    return Config(blocks, float(classifier["C"]), classifier.get("class_weight") == "balanced", combine, style)


def nested_cv(
    counts: Sequence[Any], y: IntArray, config: Config, n_folds: int, inner_folds: int
) -> tuple[list[dict[str, float]], list[IntArray], list[float], npt.NDArray[np.float64]]:
    """Per outer fold, tune the threshold on an inner CV of that fold's training part only."""
    per_fold, folds, chosen = [], [], []
    oof = np.zeros(len(y))
    for train, test in folds_of(y, n_folds, SEED):
        inner_oof, inner_folds_idx = oof_scores(rows(counts, train), y[train], config, inner_folds, SEED + 1)
        th = best_threshold(y[train], inner_oof, inner_folds_idx)
        oof[test] = predict(fit(rows(counts, train), y[train], config), rows(counts, test), config.blocks)
        per_fold.append(metrics(y[test], oof[test], th))
        folds.append(test)
        chosen.append(th)
    return per_fold, folds, chosen, oof


def _figures(
    y: IntArray, oof: npt.NDArray[np.float64], folds: list[IntArray], ths: list[float], brand: BoolArray | None
) -> dict[str, Summary]:
    out = {"all": per_fold_metrics(y, oof, folds, ths)}
    if brand is not None and brand.any():
        out["brand"] = per_fold_metrics(y, oof, folds, ths, subset=brand)
    return out


def train(
    texts: Sequence[str],
    y: IntArray,
    config: Config,
    *,
    brand: BoolArray | None = None,
    n_folds: int = 10,
    inner_folds: int = 5,
    progress: Callable[[str], None] = lambda _msg: None,
) -> Outcome:
    """CV figures (at the tuned threshold, at 0.5, nested), both thresholds, bands, and the model on all rows.

    ``brand`` marks the brand-addressed rows for their own figures; ``inner_folds=0`` skips the nested CV.
    """
    counts = model_inputs({}, config, texts)
    progress(f"{n_folds}-fold cross-validation of {config.describe()}")
    oof, folds = oof_scores(counts, y, config, n_folds)
    threshold = best_threshold(y, oof, folds)
    triage = triage_threshold(y, oof, threshold)
    cv: dict[str, Any] = {
        "scheme": f"stratified {n_folds}-fold, shuffle, random_state={SEED}; per-fold mean and std",
        "at_threshold": _figures(y, oof, folds, [threshold] * n_folds, brand),
        "at_0.5": _figures(y, oof, folds, [0.5] * n_folds, brand),
        "bands": {"all": bands(y, oof, threshold, triage)},
    }
    if brand is not None and brand.any():
        cv["bands"]["brand"] = bands(y[brand], oof[brand], threshold, triage)
    if inner_folds:
        progress(f"nested cross-validation ({n_folds} outer x {inner_folds} inner folds) for the threshold")
        per_fold, nfolds, chosen, noof = nested_cv(counts, y, config, n_folds, inner_folds)
        cv["nested_threshold"] = {
            "description": (
                f"threshold re-tuned inside each outer fold by an inner stratified {inner_folds}-fold CV on that "
                "fold's training part only; the honest estimate for a tuned threshold"
            ),
            "metrics": {"all": fold_summary(per_fold), **_brand_only(y, noof, nfolds, chosen, brand)},
            "thresholds_chosen": chosen,
        }
    progress("fitting on every row")
    model = fit(counts, y, config)
    return Outcome(config, model, threshold, triage, oof, cv)


def _brand_only(
    y: IntArray, oof: npt.NDArray[np.float64], folds: list[IntArray], ths: list[float], brand: BoolArray | None
) -> dict[str, Summary]:
    if brand is None or not brand.any():
        return {}
    return {"brand": per_fold_metrics(y, oof, folds, ths, subset=brand)}
