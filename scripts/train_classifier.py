#!/usr/bin/env python
"""Train the complaint classifier and write bot/classify/artifacts/complaint_model.{npz,json}.

Data: the complaints corpus of Preoțiuc-Pietro, Găman and Aletras, "Automatically Identifying
Complaints in Social Media" (ACL 2019), read from outside the repository (never copy it in).

    .venv/bin/python scripts/train_classifier.py [--data PATH] [--out bot/classify/artifacts/complaint_model.npz]

Steps: stratified 10-fold CV over a small grid of feature/regularisation settings, keep the best by
per-fold mean macro-F1 at its tuned threshold; then for that setting (mentiondesk.bot.classify.recipe):
the ticket threshold maximising out-of-fold macro-F1, the triage threshold under which at most 5% of
complaints fall, a nested CV for an honest tuned-threshold figure, the fit on all rows, and the artifact,
checked against the fitted model on every training text. Everything is seeded, so reruns give the same
artifact. docs/classifier.md reports the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mentiondesk.bot.classify.evaluation import CITATION, GENERAL_DOMAINS, EvalDataError, read_labelled
from mentiondesk.bot.classify.model import MAX_CHARS

try:
    import sklearn

    from mentiondesk.bot.classify.export import runtime_classifier, write_artifact
    from mentiondesk.bot.classify.recipe import Outcome, train
    from mentiondesk.bot.classify.training import PUNCT_TOKENS, SEED, Config, Fitted, model_inputs, oof_scores, predict
    from mentiondesk.bot.classify.tuning import best_threshold, per_fold_metrics
    from mentiondesk.bot.classify.vader import vader_lexicon
except ImportError as exc:  # the daemon's install leaves scikit-learn out
    raise SystemExit(
        f"{Path(__file__).name}: training needs scikit-learn ({exc}); install it with: pip install -e '.[train]'"
    ) from exc

from mentiondesk.bot.classify.features import FeatureBlock
from mentiondesk.bot.classify.style import StyleSetting

REPO_ROOT = Path(__file__).resolve().parent.parent
# The data set is kept outside the repository (never copy it in), next to the checkout.
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "complaints-train.csv"
N_FOLDS = 10
INNER_FOLDS = 5
N_FEATURES = 2**20


def word(lo: int, hi: int, n_features: int = N_FEATURES) -> FeatureBlock:
    return FeatureBlock("word", "word", (lo, hi), n_features, token_pattern=PUNCT_TOKENS)


def char(analyzer: str, lo: int, hi: int, *, lowercase: bool = True, n_features: int = N_FEATURES) -> FeatureBlock:
    name = "char" if lowercase else "char_cased"
    return FeatureBlock(name, analyzer, (lo, hi), n_features, lowercase=lowercase)


def candidate_configs() -> list[Config]:
    """A deliberately small grid: each extra setting tried makes the best CV figure more optimistic."""
    lexicon, source = vader_lexicon()
    shipped = (word(1, 2, 2**18), char("char", 2, 5, lowercase=False, n_features=2**18))
    return [
        # The format 2 model's setting plus the style cues (format 3), at three strengths.
        *(Config(shipped, 10.0, style=StyleSetting(alpha, lexicon, source)) for alpha in (0.01, 0.03, 0.05)),
        # The shipped model of format 1, for comparison.
        Config((word(1, 2, 2**18), char("char", 2, 5, n_features=2**18)), 10.0),
        Config((word(1, 2, 2**18), char("char", 2, 5, lowercase=False, n_features=2**18)), 10.0),
        Config((word(1, 2), char("char", 2, 5)), 10.0, combine="average"),
        Config((word(1, 3), char("char", 1, 6)), 10.0, combine="average"),
        Config((word(1, 2), char("char", 2, 5, lowercase=False)), 10.0),
        Config((word(1, 2), char("char", 2, 5, lowercase=False)), 20.0, combine="average"),
        Config((word(1, 2), char("char", 2, 5), char("char", 1, 4, lowercase=False)), 10.0, combine="average"),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="the complaints CSV, columns text and complaint, domain optional (default: %(default)s)",
    )
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bot" / "classify" / "artifacts" / "complaint_model.npz")
    ap.add_argument("--quick", action="store_true", help="only evaluate the first two candidate settings")
    return ap.parse_args(argv)


def search(configs: list[Config], texts: list[str], y: np.ndarray) -> list[dict[str, Any]]:
    cache: dict[FeatureBlock, Any] = {}
    tried = []
    for n, config in enumerate(configs, 1):
        t0 = time.perf_counter()
        oof, folds = oof_scores(model_inputs(cache, config, texts), y, config, N_FOLDS, SEED)
        th = best_threshold(y, oof, folds)
        at_best = per_fold_metrics(y, oof, folds, [th] * N_FOLDS)["macro_f1"]
        tried.append({"config": config, "threshold": th, "macro_f1": at_best})
        print(
            f"[{n:2d}/{len(configs)}] {config.describe():70s} macro-F1 @{th:.2f} "
            f"{at_best['mean']:.4f}±{at_best['std']:.4f} ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    return tried


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_file():
        print(
            f"{Path(__file__).name}: no training data at {args.data}; "
            "name the complaints CSV (columns text, complaint) with --data PATH",
            file=sys.stderr,
        )
        return 2
    try:
        posts = read_labelled(args.data)
    except EvalDataError as exc:
        print(f"{Path(__file__).name}: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    y = np.array(posts.labels, dtype=np.int64)
    brand = None if posts.domains is None else np.array([d not in GENERAL_DOMAINS for d in posts.domains])
    data_sha = hashlib.sha256(args.data.read_bytes()).hexdigest()
    print(f"{args.data}: {len(y)} rows, {int(y.sum())} complaints, sha256 {data_sha[:12]}…")

    tried = search(candidate_configs()[: 2 if args.quick else None], posts.texts, y)
    best = max(tried, key=lambda r: (r["macro_f1"]["mean"], -len(r["config"].describe())))
    print(f"best: {best['config'].describe()}")
    outcome = train(
        posts.texts, y, best["config"], brand=brand, n_folds=N_FOLDS, inner_folds=INNER_FOLDS, progress=print
    )

    meta = write_artifact(
        args.out,
        outcome.model,
        outcome.config.blocks,
        threshold=outcome.threshold,
        triage_threshold=outcome.triage_threshold,
        metadata=metadata(args.data, data_sha, y, outcome.config, outcome.cv, tried),
        style=outcome.config.style,
    )
    checks = verify(args.out.with_suffix(".npz"), outcome, posts.texts)
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps({**meta, "checks": checks}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    cv = outcome.cv
    nested = cv["nested_threshold"]["metrics"]
    print(
        f"wrote {args.out.with_suffix('.npz')} ({args.out.with_suffix('.npz').stat().st_size / 1e6:.2f} MB); "
        f"thresholds ticket {meta['threshold']:.2f} triage {meta['triage_threshold']:.2f}; "
        f"CV macro-F1 {_f1(cv['at_threshold'], 'all')} (brand {_f1(cv['at_threshold'], 'brand')}); "
        f"nested {_f1(nested, 'all')} (brand {_f1(nested, 'brand')}); "
        f"max |runtime - fitted| {checks['max_abs_diff_vs_fitted_model']:.2g}, "
        f"|runtime - sklearn path| {checks['max_abs_diff_vs_sklearn_path']:.2g}; {time.perf_counter() - started:.0f}s"
    )
    return 0


def verify(npz: Path, outcome: Outcome, texts: list[str]) -> dict[str, Any]:
    """The runtime's scores on every training text against the fitted model and the scikit-learn path."""
    blocks = outcome.config.blocks
    counts = model_inputs({}, outcome.config, texts)
    clf = runtime_classifier(npz, blocks, outcome.threshold, outcome.config.style)
    runtime = np.array(clf.score_many(texts))
    # The fitted model in float64: the artifact stores float32, so scores may differ by ~1e-7.
    vs_fitted = float(np.max(np.abs(predict(outcome.model, counts, blocks) - runtime)))
    # The same stored (float32) arrays through scikit-learn's hashing and scipy's weighting: equal to 1e-9.
    arrays = clf._arrays  # the runtime's own densified arrays, exactly what it scores with
    stored = Fitted(arrays.idf, [np.zeros(0, dtype=np.int64)] * len(blocks), arrays.coef, arrays.intercept)
    if arrays.style is not None:
        stored.style_mean, stored.style_scale, stored.style_coef = arrays.style
    vs_sklearn = float(np.max(np.abs(predict(stored, counts, blocks) - runtime)))
    if vs_fitted > 1e-4 or vs_sklearn > 1e-9:
        raise SystemExit(
            f"artifact scores differ: {vs_fitted:.3g} from the fitted model, {vs_sklearn:.3g} from sklearn"
        )
    return {
        "texts": len(texts),
        "max_abs_diff_vs_fitted_model": vs_fitted,
        "max_abs_diff_vs_sklearn_path": vs_sklearn,
    }


def _f1(figures: dict[str, Any], part: str) -> str:
    return f"{figures[part]['macro_f1']['mean']:.4f}" if part in figures else "n/a"


def metadata(
    data: Path, data_sha: str, y: np.ndarray, config: Config, cv: dict[str, Any], tried: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "model": (
            "TF-IDF (sublinear tf, smoothed idf, L2 norm per block) over hashed word and character n-grams, "
            "logistic regression (liblinear, L2). P(complaint) = sigmoid(intercept + sum over blocks of "
            "coef . tfidf). Sparse arrays in the .npz: idf_index_i/idf_value_i (columns seen in training), "
            "idf_default_i (all other columns), coef_index_i/coef_value_i, intercept. With style cues "
            "(features.style): + (cues - style_mean) / style_scale . style_coef, the cues computed by "
            "mentiondesk.bot.classify.style.style_features on the case-kept normalised text."
        ),
        "features": {
            "preprocessing": (
                "mentiondesk.bot.classify.model.normalise_text: lone surrogates replaced, NFKC, control/format "
                "characters to spaces (ZWJ kept), URLs -> 'http', @handles -> '@user', whitespace collapsed, "
                f"lowercased, truncated to {MAX_CHARS} characters; emoji kept"
            ),
            "vectorizer": (
                "sklearn.feature_extraction.text.HashingVectorizer(alternate_sign=False, norm=None, lowercase=False)"
            ),
        },
        "classifier": config.to_json(),
        "threshold_selection": (
            "ticket: maximises per-fold mean out-of-fold macro-F1 over 0.20..0.80 step 0.01 (ties -> nearest 0.5); "
            "triage: the highest score (step 0.01) below which at most 5% of complaints fall, out of fold"
        ),
        "languages": ["en"],
        "cv": {
            **cv,
            "caveat": "the setting was chosen by the same CV among the grid in notes, so all figures are mildly "
            "optimistic; the data's README says a held-out part of the corpus is kept back for the real evaluation",
        },
        "training_set": {
            "file": data.name,
            "sha256": data_sha,
            "rows": len(y),
            "class_counts": {"complaint": int(y.sum()), "other": int(len(y) - y.sum())},
            "team_labels": 0,
        },
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "seed": SEED,
        "citation": CITATION,
        "published_benchmark": (
            "full 3,449-post set, 10-fold CV: up to 79 macro-F1 feature-based (the paper), "
            "87 with fine-tuned transformers (Jin and Aletras, COLING 2020)"
        ),
        "notes": [
            "Grid tried (stratified 10-fold, per-fold mean±std macro-F1 at each setting's tuned threshold); "
            "'punct' = token pattern keeping punctuation/emoji/single characters as word tokens.",
            *(
                f"{r['config'].describe()}: {r['macro_f1']['mean']:.4f}±{r['macro_f1']['std']:.4f} "
                f"@{r['threshold']:.2f}" + ("  <- chosen" if r["config"] == config else "")
                for r in sorted(tried, key=lambda r: -r["macro_f1"]["mean"])
            ),
        ],
    }


if __name__ == "__main__":
    raise SystemExit(main())
