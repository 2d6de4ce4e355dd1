"""The training recipe of the complaint model, with scikit-learn (the ``train`` extra only).

Used by ``scripts/train_classifier.py`` and ``mentiondesk classifier train``; nothing the daemon runs may
import this module: scikit-learn and scipy cost it ~90 MiB of memory. At run time
``mentiondesk.bot.classify.features`` computes the same counts with numpy alone, and
``mentiondesk.bot.classify.model.block_scores`` the same weighting, so whatever is fitted here must stay
a sum over blocks of ``coef . tfidf`` plus an intercept.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from mentiondesk.bot.classify.features import FeatureBlock
from mentiondesk.bot.classify.model import normalised_views
from mentiondesk.bot.classify.style import StyleSetting, style_features, style_scores

__all__ = [
    "PUNCT_TOKENS",
    "SEED",
    "Config",
    "Fitted",
    "StyleSetting",
    "block_counts",
    "fit",
    "hash_counts",
    "make_hashers",
    "model_inputs",
    "oof_scores",
    "predict",
    "style_matrix",
    "weight_block",
]

SEED = 42
# Keeps single characters, punctuation and emoji as tokens ("?" and "!" are informative here);
# sklearn's default pattern drops all of them.
PUNCT_TOKENS = r"(?u)@user|\w+|[^\w\s]"

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Config:
    """One model setting: feature blocks, regularisation, and how the blocks' evidence is combined.

    ``combine="joint"`` fits one logistic regression over all blocks side by side; ``"average"`` fits one
    per block and averages their log-odds. Both are a sum over blocks of ``coef . tfidf`` at run time.
    """

    blocks: tuple[FeatureBlock, ...]
    C: float
    balanced: bool = False
    combine: Literal["joint", "average"] = "joint"
    style: StyleSetting | None = None

    def __post_init__(self) -> None:
        if self.style is not None and self.combine != "joint":
            raise ValueError("the style block is fitted jointly with the n-gram blocks only")

    def describe(self) -> str:
        parts = [
            f"{b.analyzer}{b.ngram_range[0]}-{b.ngram_range[1]}"
            + ("/punct" if b.token_pattern == PUNCT_TOKENS else "")
            + ("" if b.lowercase else "/cased")
            + f"/2^{int(np.log2(b.n_features))}"
            for b in self.blocks
        ]
        return (
            " + ".join(parts)
            + f" | C={self.C:g}"
            + (" balanced" if self.balanced else "")
            + (" | log-odds average" if self.combine == "average" else "")
            + (f" | style cues x{self.style.alpha:g}" if self.style is not None else "")
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "C": self.C,
            "class_weight": "balanced" if self.balanced else None,
            "combine": self.combine,
            "solver": "liblinear",
        }


@dataclass
class Fitted:
    """A fitted model in the artifact's terms: per-block IDF (and document counts) and coefficients."""

    idf: list[FloatArray]
    df: list[IntArray]
    coef: list[FloatArray]
    intercept: float
    # The style block (None without one): (features - mean) / scale . coef adds to the log-odds.
    style_mean: FloatArray | None = None
    style_scale: FloatArray | None = None
    style_coef: FloatArray | None = None


def make_hashers(blocks: Sequence[FeatureBlock]) -> list[HashingVectorizer]:
    hashers = []
    for block in blocks:
        kwargs: dict[str, Any] = {}
        if block.token_pattern is not None:
            kwargs["token_pattern"] = block.token_pattern
        hashers.append(
            HashingVectorizer(
                analyzer=block.analyzer,
                ngram_range=block.ngram_range,
                n_features=block.n_features,
                # Texts arrive already normalised; a second lowercase pass would only cost time.
                lowercase=False,
                # Counts must stay non-negative for IDF weighting and raw for the L2 norm below.
                alternate_sign=False,
                norm=None,
                dtype=np.float64,
                **kwargs,
            )
        )
    return hashers


def hash_counts(hashers: Sequence[HashingVectorizer], normalised: Sequence[str]) -> list[sp.csr_matrix]:
    return [sp.csr_matrix(h.transform(normalised)) for h in hashers]


def block_counts(
    cache: dict[FeatureBlock, sp.csr_matrix], blocks: Sequence[FeatureBlock], texts: Sequence[str]
) -> list[sp.csr_matrix]:
    """Each block's counts of the raw ``texts``, normalised as the runtime does for that block."""
    # Hashing is stateless, so each block's counts are computed once and shared by all folds and settings.
    missing = [b for b in blocks if b not in cache]
    if missing:
        views = normalised_views(texts, {b.lowercase for b in missing})
        for block in missing:
            cache[block] = hash_counts(make_hashers([block]), views[block.lowercase])[0]
    return [cache[b] for b in blocks]


def style_matrix(texts: Sequence[str], style: StyleSetting) -> FloatArray:
    """The style cues of the raw ``texts``, from the case-kept view the runtime computes them on."""
    return style_features(normalised_views(texts, {False})[False], style.lexicon)


def model_inputs(cache: dict[FeatureBlock, sp.csr_matrix], config: Config, texts: Sequence[str]) -> list[Any]:
    """What ``fit`` and ``predict`` take: each block's counts, then the style cues if the setting has them."""
    inputs: list[Any] = list(block_counts(cache, config.blocks, texts))
    if config.style is not None:
        inputs.append(style_matrix(texts, config.style))
    return inputs


def weight_block(counts: sp.csr_matrix, idf: FloatArray, sublinear_tf: bool) -> sp.csr_matrix:
    """TF-IDF with per-row L2 normalisation, matching sklearn's TfidfVectorizer(norm="l2")."""
    weighted = counts.copy()
    if sublinear_tf:
        np.log(weighted.data, out=weighted.data)
        weighted.data += 1.0
    weighted.data *= idf[weighted.indices]
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    norms[norms == 0.0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ weighted)


def _lr(config: Config) -> LogisticRegression:
    return LogisticRegression(
        C=config.C,
        class_weight="balanced" if config.balanced else None,
        solver="liblinear",
        random_state=SEED,
        max_iter=1000,
    )


def _fit_lr(x: sp.csr_matrix, y: IntArray, config: Config) -> tuple[FloatArray, float]:
    """Coefficients over all of ``x``'s columns and the intercept.

    liblinear's cost per iteration grows with the number of columns, and hashing leaves most of them empty
    (a 2^20-column block of a few thousand posts uses a few hundred thousand): fitting on the used columns
    alone gives the same solution, since an empty column's L2-penalised coefficient is zero, several
    times faster.
    """
    used = np.flatnonzero(np.diff(x.tocsc().indptr))
    lr = _lr(config).fit(x[:, used], y)
    coef = np.zeros(x.shape[1], dtype=np.float64)
    coef[used] = lr.coef_.ravel()
    return coef, float(lr.intercept_[0])


def fit(inputs: Sequence[Any], y: IntArray, config: Config) -> Fitted:
    counts: list[sp.csr_matrix] = list(inputs[: len(config.blocks)])
    idfs, dfs = [], []
    for c in counts:
        tf = TfidfTransformer(smooth_idf=True).fit(c)
        idfs.append(np.asarray(tf.idf_, dtype=np.float64))
        dfs.append(np.asarray((c > 0).sum(axis=0)).ravel().astype(np.int64))
    weighted = [weight_block(c, idf, b.sublinear_tf) for c, idf, b in zip(counts, idfs, config.blocks, strict=True)]
    if config.combine == "average":
        coefs, intercepts = [], []
        for block_x in weighted:
            block_coef, intercept = _fit_lr(block_x, y, config)
            # Averaging log-odds keeps the model linear in the features, so the runtime formula holds.
            coefs.append(block_coef / len(weighted))
            intercepts.append(intercept)
        return Fitted(idfs, dfs, coefs, float(np.mean(intercepts)))
    style_mean = style_scale = None
    if config.style is not None:
        cues = np.asarray(inputs[len(config.blocks)], dtype=np.float64)
        style_mean = cues.mean(axis=0)
        sd = cues.std(axis=0)
        # A cue constant in training carries no information; a unit scale keeps it at zero, not NaN.
        sd[sd == 0.0] = 1.0
        style_scale = sd / config.style.alpha
        weighted.append(sp.csr_matrix((cues - style_mean) / style_scale))
    flat, intercept = _fit_lr(sp.csr_matrix(sp.hstack(weighted, format="csr")), y, config)
    bounds = np.cumsum([0, *(b.n_features for b in config.blocks)])
    coef = [np.array(flat[lo:hi], dtype=np.float64) for lo, hi in itertools.pairwise(bounds)]
    if config.style is None:
        return Fitted(idfs, dfs, coef, intercept)
    style_coef = np.array(flat[bounds[-1] :], dtype=np.float64)
    return Fitted(idfs, dfs, coef, intercept, style_mean, style_scale, style_coef)


def predict(model: Fitted, inputs: Sequence[Any], blocks: Sequence[FeatureBlock]) -> FloatArray:
    """P(complaint) per row, computed as the runtime computes it (a sum of per-block log-odds)."""
    counts = inputs[: len(blocks)]
    z = np.full(counts[0].shape[0], model.intercept)
    for c, idf, coef, block in zip(counts, model.idf, model.coef, blocks, strict=True):
        z += weight_block(c, idf, block.sublinear_tf) @ coef
    if model.style_coef is not None:
        if len(inputs) <= len(blocks) or model.style_mean is None or model.style_scale is None:
            raise ValueError("a model with style cues needs them among its inputs")
        z += style_scores(np.asarray(inputs[len(blocks)]), model.style_mean, model.style_scale, model.style_coef)
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def rows(inputs: Sequence[Any], idx: IntArray) -> list[Any]:
    return [c[idx] for c in inputs]


def folds_of(y: IntArray, n_folds: int, seed: int) -> list[tuple[IntArray, IntArray]]:
    split = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    return [(np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)) for train, test in split]


def oof_scores(
    counts: Sequence[Any], y: IntArray, config: Config, n_folds: int, seed: int = SEED
) -> tuple[FloatArray, list[IntArray]]:
    """Out-of-fold P(complaint): each row scored by the model of the one fold that did not train on it."""
    oof = np.zeros(len(y))
    test_folds = []
    for train, test in folds_of(y, n_folds, seed):
        oof[test] = predict(fit(rows(counts, train), y[train], config), rows(counts, test), config.blocks)
        test_folds.append(test)
    return oof, test_folds
