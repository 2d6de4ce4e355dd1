"""Complaint classifier: decides whether a post addressed to the brand is a complaint.

The model is TF-IDF over hashed word and character n-grams with a logistic regression on top,
trained by ``scripts/train_classifier.py`` on the complaints corpus of Preoțiuc-Pietro, Găman and
Aletras, "Automatically Identifying Complaints in Social Media" (ACL 2019).

The artifact is deliberately not a pickle: a pickle ties the model to the exact scikit-learn version
that wrote it and can run arbitrary code when loaded. Instead ``complaint_model.npz`` holds plain
numeric arrays (IDF weights and coefficients, stored sparsely) and ``complaint_model.json`` holds the
feature settings. Training uses scikit-learn's ``HashingVectorizer``, which is stateless; at run time
``mentiondesk.bot.classify.features`` reproduces its counts from those settings with numpy alone, so the
daemon never imports scikit-learn or scipy (together ~90 MiB of memory). The probe texts recorded in
the JSON check at load time that the features, and so the scores, are still the training-time ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mentiondesk.bot.classify.features import BlockCounts, FeatureBlock, hash_counts
from mentiondesk.bot.classify.style import STYLE_NAMES, StyleSetting, style_features, style_scores

__all__ = [
    "ARTIFACT_FORMAT",
    "DEFAULT_MODEL_PATH",
    "Classification",
    "ClassifierError",
    "ComplaintClassifier",
    "FeatureBlock",
    "block_scores",
    "normalise_text",
    "normalised_views",
]

ARTIFACT_FORMAT = "mentiondesk-complaint-tfidf-lr/3"
# Format 1 had no triage threshold nor languages; its models still load (no triage band, English assumed).
# Format 2 had no style cues; format 3 may add them (``features.style`` and the ``style_*`` arrays).
READABLE_FORMATS = frozenset({"mentiondesk-complaint-tfidf-lr/1", "mentiondesk-complaint-tfidf-lr/2", ARTIFACT_FORMAT})
TRIAGE_FORMATS = frozenset({"mentiondesk-complaint-tfidf-lr/2", ARTIFACT_FORMAT})
DEFAULT_MODEL_PATH = Path(__file__).parent / "artifacts" / "complaint_model.npz"
COMPLAINT = "complaint"
OTHER = "other"

# Mastodon's default post limit is 500 characters; anything far beyond that is not a post we can
# classify better by reading further, and an unbounded input would let one line stall a batch.
MAX_CHARS = 5000
# Texts are scored in batches big enough to amortise the fixed cost of each numpy pass, small enough
# to bound its arrays: every character gives up to four char n-grams with ~60 bytes of array entries
# each, so the character budget caps a batch's working memory at ~25 MB.
SCORE_BATCH = 1024
SCORE_BATCH_CHARS = 100_000
# float32 storage changes scores by ~1e-7; the probes only need to catch a different feature space.
PROBE_TOLERANCE = 1e-4

_HANDLE_RE = re.compile(r"(?<![\w@])@\w+(?:@[\w.-]+\w)?")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")


class ClassifierError(Exception):
    """The model artifact is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Classification:
    label: str  # "complaint" | "other"
    score: float  # probability of complaint, 0..1


def _drop_control(ch: str) -> str:
    # Control/format characters (NUL, bidi overrides, ...) carry no meaning for the model but would
    # otherwise create junk n-grams; the zero-width joiner is kept because emoji sequences need it.
    if ch == "\u200d":
        return ch
    return " " if unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} else ch


def _normalise_keeping_case(text: str) -> str:
    # Lone surrogates (legal in JSON, not in UTF-8) would make the feature hashing raise.
    text = text[: MAX_CHARS * 2].encode("utf-8", "replace").decode("utf-8")
    text = unicodedata.normalize("NFKC", text)
    if not text.isprintable():  # fast path: most posts need no per-character scan
        text = "".join(ch if ch.isprintable() else _drop_control(ch) for ch in text)
    text = _URL_RE.sub(" http ", text)
    text = _HANDLE_RE.sub(" @user ", text)
    return _WS_RE.sub(" ", text).strip()


def normalise_text(text: str, *, lowercase: bool = True) -> str:
    """Canonical form used at training and inference time; must stay identical for both."""
    text = _normalise_keeping_case(text)
    return (text.lower() if lowercase else text)[:MAX_CHARS]


def normalised_views(texts: Sequence[str], cases: Collection[bool]) -> dict[bool, list[str]]:
    """``normalise_text`` of every text, lowercased (key True) and/or with case kept (key False).

    The shared steps run once per text however many views a model's blocks need.
    """
    kept = [_normalise_keeping_case(t) for t in texts]
    views: dict[bool, list[str]] = {}
    if True in cases:
        views[True] = [t.lower()[:MAX_CHARS] for t in kept]
    if False in cases:
        views[False] = [t[:MAX_CHARS] for t in kept]
    return views


def block_scores(
    counts: BlockCounts,
    idf: npt.NDArray[np.float64],
    coef: npt.NDArray[np.float64],
    sublinear_tf: bool,
) -> npt.NDArray[np.float64]:
    """Each row's ``coef . tfidf`` for one block: TF-IDF with per-row L2 normalisation, as in training.

    The arithmetic of the scipy.sparse code used in training (``training.weight_block``): the weights
    come out bit for bit the same; the dot product adds the same terms in column order where scipy's
    sparse product leaves them in another, so scores differ by ~1e-15 (the tests allow 1e-9).
    """
    tf = np.log(counts.counts) + 1.0 if sublinear_tf else counts.counts
    weighted = tf * idf[counts.columns]
    # reduceat, not bincount: scipy sums a row's squares with numpy's pairwise summation, and the same
    # summation order gives the same norms to the last bit.
    first = np.flatnonzero(np.diff(counts.rows, prepend=-1))
    squares = np.zeros(counts.n_rows)
    squares[counts.rows[first]] = np.add.reduceat(weighted * weighted, first)
    norms = np.sqrt(squares)
    norms[norms == 0.0] = 1.0
    scaled = weighted * (1.0 / norms)[counts.rows]
    z = np.bincount(counts.rows, weights=scaled * coef[counts.columns], minlength=counts.n_rows)
    return z.astype(np.float64, copy=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Written this way so large |z| neither overflows exp nor loses the tail.
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _batches(texts: Sequence[str]) -> Iterator[slice]:
    """Consecutive slices of at most SCORE_BATCH texts and, unless one text alone exceeds it, SCORE_BATCH_CHARS."""
    start, chars = 0, 0
    for i, text in enumerate(texts):
        if i > start and (i - start == SCORE_BATCH or chars + len(text) > SCORE_BATCH_CHARS):
            yield slice(start, i)
            start, chars = i, 0
        chars += len(text)
    if start < len(texts):
        yield slice(start, len(texts))


@dataclass(frozen=True)
class _Arrays:
    """Dense per-block IDF and coefficient vectors rebuilt from the sparse artifact arrays."""

    idf: list[npt.NDArray[np.float64]]
    coef: list[npt.NDArray[np.float64]]
    intercept: float
    # The style block's (mean, scale, coef), or None for a model without one.
    style: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None


def _read_npz(npz_path: Path) -> dict[str, npt.NDArray[Any]]:
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ClassifierError(f"{npz_path}: cannot read model arrays ({exc})") from exc


def _densify(
    arrays: Mapping[str, npt.NDArray[Any]],
    blocks: Sequence[FeatureBlock],
    npz_path: Path,
    *,
    with_style: bool = False,
) -> _Arrays:
    def get(name: str) -> npt.NDArray[Any]:
        if name not in arrays:
            raise ClassifierError(f"{npz_path}: array {name!r} is missing")
        return arrays[name]

    idfs, coefs = [], []
    for i, block in enumerate(blocks):
        idf_idx, idf_val = get(f"idf_index_{i}"), get(f"idf_value_{i}")
        coef_idx, coef_val = get(f"coef_index_{i}"), get(f"coef_value_{i}")
        idf_default = get(f"idf_default_{i}")
        for idx, val in ((idf_idx, idf_val), (coef_idx, coef_val)):
            if idx.ndim != 1 or idx.shape != val.shape or idx.dtype.kind not in "iu":
                raise ClassifierError(f"{npz_path}: block {block.name!r} has malformed sparse arrays")
            if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= block.n_features):
                raise ClassifierError(f"{npz_path}: block {block.name!r} indexes beyond n_features")
            if val.dtype.kind != "f" or not np.all(np.isfinite(val)):
                raise ClassifierError(f"{npz_path}: block {block.name!r} has non-finite values")
        if idf_default.shape != () or not math.isfinite(float(idf_default)):
            raise ClassifierError(f"{npz_path}: block {block.name!r} has a bad default IDF")
        idf = np.full(block.n_features, float(idf_default), dtype=np.float64)
        idf[idf_idx] = idf_val
        coef = np.zeros(block.n_features, dtype=np.float64)
        coef[coef_idx] = coef_val
        # Read-only so that concurrent worker threads can share them without surprises.
        idf.setflags(write=False)
        coef.setflags(write=False)
        idfs.append(idf)
        coefs.append(coef)
    intercept = get("intercept")
    if intercept.shape != () or not math.isfinite(float(intercept)):
        raise ClassifierError(f"{npz_path}: intercept is malformed")
    if not with_style:
        return _Arrays(idfs, coefs, float(intercept))
    style = tuple(np.asarray(get(f"style_{part}"), dtype=np.float64) for part in ("mean", "scale", "coef"))
    if any(a.shape != (len(STYLE_NAMES),) or not np.all(np.isfinite(a)) for a in style) or np.any(style[1] == 0.0):
        raise ClassifierError(f"{npz_path}: the style arrays are malformed")
    for a in style:
        a.setflags(write=False)
    return _Arrays(idfs, coefs, float(intercept), (style[0], style[1], style[2]))


def read_metadata(json_path: Path, formats: Collection[str], expected: str) -> dict[str, Any]:
    """An artifact's JSON metadata, as a dict, when its ``format`` is one of ``formats``; else ClassifierError."""
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ClassifierError(f"{json_path}: model metadata file is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassifierError(f"{json_path}: cannot read model metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise ClassifierError(f"{json_path}: metadata is not a JSON object")
    if meta.get("format") not in formats:
        raise ClassifierError(f"{json_path}: unsupported artifact format {meta.get('format')!r}, expected {expected!r}")
    return meta


def _parse_blocks(meta: Mapping[str, Any], json_path: Path) -> list[FeatureBlock]:
    try:
        blocks = [FeatureBlock.from_json(raw) for raw in meta["features"]["blocks"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ClassifierError(f"{json_path}: feature settings are invalid ({exc!r})") from exc
    if not blocks:
        raise ClassifierError(f"{json_path}: no feature blocks")
    return blocks


def parse_probability(meta: Mapping[str, Any], key: str, json_path: Path) -> float:
    """``meta[key]`` as a number strictly between 0 and 1 (a threshold); else ClassifierError naming the file."""
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ClassifierError(f"{json_path}: {key} {value!r} is not a number in (0, 1)")
    return float(value)


def _parse_triage_threshold(meta: Mapping[str, Any], threshold: float, json_path: Path) -> float:
    if meta.get("format") not in TRIAGE_FORMATS and "triage_threshold" not in meta:
        return threshold  # an older artifact: no triage band
    triage = meta.get("triage_threshold")
    if isinstance(triage, bool) or not isinstance(triage, int | float) or not 0.0 < triage <= threshold:
        raise ClassifierError(
            f"{json_path}: triage_threshold {triage!r} is not a number in (0, threshold {threshold:g}]"
        )
    return float(triage)


def _parse_style(meta: Mapping[str, Any], json_path: Path) -> StyleSetting | None:
    raw = meta.get("features", {}).get("style")
    if raw is None:
        return None
    try:
        return StyleSetting.from_json(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ClassifierError(f"{json_path}: style settings are invalid ({exc!r})") from exc


def _parse_languages(meta: Mapping[str, Any], json_path: Path) -> tuple[str, ...]:
    languages = meta.get("languages", ["en"])
    if not isinstance(languages, list) or not languages or not all(isinstance(x, str) and x for x in languages):
        raise ClassifierError(f"{json_path}: languages {languages!r} is not a list of language codes")
    return tuple(languages)


def check_probes(
    score_many: Callable[[Sequence[str]], list[float]],
    metadata: Mapping[str, Any],
    json_path: Path,
    *,
    tolerance: float,
    differs: str,
) -> None:
    """Score the probe texts recorded at training time and refuse the model unless they come out the same.

    A model whose input handling drifted from training does not fail loudly: it gives quietly wrong scores. Every
    model kind checks its probes at load through this; ``differs`` says what would have changed.
    """
    probes = metadata.get("probes")
    if not isinstance(probes, list) or not probes:
        raise ClassifierError(f"{json_path}: no probe texts to verify the model")
    try:
        texts = [str(p["text"]) for p in probes]
        expected = np.array([float(p["score"]) for p in probes])
    except (KeyError, TypeError, ValueError) as exc:
        raise ClassifierError(f"{json_path}: probe entries are malformed ({exc!r})") from exc
    worst = float(np.max(np.abs(np.array(score_many(texts)) - expected)))
    if not worst <= tolerance:  # written so that NaN fails too
        raise ClassifierError(f"{json_path}: probe scores differ from training by up to {worst:.4g}; {differs}")


class ComplaintClassifier:
    """Scores posts; immutable after construction, so one instance can serve many threads."""

    def __init__(
        self,
        blocks: Sequence[FeatureBlock],
        arrays: _Arrays,
        threshold: float,
        metadata: dict[str, Any],
        *,
        triage_threshold: float | None = None,
        languages: Sequence[str] = ("en",),
        style: StyleSetting | None = None,
    ):
        if (style is None) != (arrays.style is None):
            raise ClassifierError("the style setting and the style arrays must come together")
        self._style = style
        self._blocks = tuple(blocks)
        self._arrays = arrays
        self._threshold = threshold
        self._triage_threshold = threshold if triage_threshold is None else triage_threshold
        self._languages = tuple(languages)
        self._metadata = metadata

    @classmethod
    def load(cls, path: Path | None = None) -> ComplaintClassifier:
        """Load ``<name>.npz`` and its ``<name>.json``; ``path`` may name either (default: packaged)."""
        npz_path = Path(path) if path is not None else DEFAULT_MODEL_PATH
        npz_path = npz_path.with_suffix(".npz")
        json_path = npz_path.with_suffix(".json")
        if not npz_path.is_file():
            raise ClassifierError(f"{npz_path}: model file is missing")
        meta = read_metadata(json_path, READABLE_FORMATS, ARTIFACT_FORMAT)
        expected_sha = meta.get("artifact_sha256")
        if expected_sha != _sha256(npz_path):
            raise ClassifierError(
                f"{npz_path}: checksum does not match {json_path.name} (artifact corrupt or files mismatched)"
            )
        blocks = _parse_blocks(meta, json_path)
        style = _parse_style(meta, json_path)
        arrays = _densify(_read_npz(npz_path), blocks, npz_path, with_style=style is not None)
        threshold = parse_probability(meta, "threshold", json_path)
        clf = cls(
            blocks,
            arrays,
            threshold,
            meta,
            triage_threshold=_parse_triage_threshold(meta, threshold, json_path),
            languages=_parse_languages(meta, json_path),
            style=style,
        )
        clf._check_probes(json_path)
        return clf

    def _check_probes(self, json_path: Path) -> None:
        # Guards against features that differ from the training-time ones (a change to features.py, or a
        # retrain with a scikit-learn that hashes or tokenises differently).
        check_probes(
            self.score_many,
            self._metadata,
            json_path,
            tolerance=PROBE_TOLERANCE,
            differs="the features computed here differ from those the model was trained on",
        )

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def triage_threshold(self) -> float:
        """Below ``threshold``, at or above this: worth a person's glance (the triage band); below: stored."""
        return self._triage_threshold

    @property
    def languages(self) -> tuple[str, ...]:
        """Language codes of the posts the model was trained on; others belong in triage."""
        return self._languages

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

    def decision_function(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Raw log-odds; callers wanting probabilities use ``score_many``."""
        cases = {block.lowercase for block in self._blocks}
        # The style cues read the case-kept text (shouting is a cue).
        views = normalised_views(texts, cases | {False} if self._style is not None else cases)
        # The views differ only by case folding, so one view's lengths serve to cut batches for both.
        cut_by = views[True] if True in views else views[False]
        parts = (self._log_odds({case: view[part] for case, view in views.items()}) for part in _batches(cut_by))
        return np.concatenate([np.empty(0), *parts])

    def _log_odds(self, views: Mapping[bool, Sequence[str]]) -> npt.NDArray[np.float64]:
        n = len(next(iter(views.values())))
        z = np.full(n, self._arrays.intercept, dtype=np.float64)
        for block, idf, coef in zip(self._blocks, self._arrays.idf, self._arrays.coef, strict=True):
            z += block_scores(hash_counts(block, views[block.lowercase]), idf, coef, block.sublinear_tf)
        if self._style is not None and self._arrays.style is not None:
            mean, scale, coef = self._arrays.style
            z += style_scores(style_features(views[False], self._style.lexicon), mean, scale, coef)
        return z

    def score_many(self, texts: Sequence[str]) -> list[float]:
        """Probability of complaint for each text, in input order."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        scores: list[float] = _sigmoid(self.decision_function(texts)).tolist()
        return scores

    def classify_many(self, texts: Sequence[str], threshold: float | None = None) -> list[Classification]:
        cut = self._threshold if threshold is None else threshold
        return [Classification(COMPLAINT if score >= cut else OTHER, score) for score in self.score_many(texts)]

    def classify(self, text: str, threshold: float | None = None) -> Classification:
        return self.classify_many([text], threshold)[0]
