"""The runtime featuriser (numpy only) against scikit-learn, which trained the model.

The daemon must score exactly as the trained model does without importing scikit-learn or scipy:
the hashed counts must equal ``HashingVectorizer``'s entry for entry, and the scores the old
scikit-learn path's. All texts are generated or written for these tests.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils import murmurhash3_32

from mentiondesk.bot.classify.features import BlockCounts, FeatureBlock, hash_columns, hash_counts, murmurhash3_spans
from mentiondesk.bot.classify.model import (
    DEFAULT_MODEL_PATH,
    MAX_CHARS,
    ComplaintClassifier,
    _densify,
    _read_npz,
    _sigmoid,
    normalise_text,
)
from mentiondesk.bot.classify.style import StyleSetting, style_scores
from mentiondesk.bot.classify.training import make_hashers, style_matrix, weight_block
from tests.test_layers import imports_of, source_files

REPO = Path(__file__).resolve().parent.parent
ARTIFACT_META = json.loads(DEFAULT_MODEL_PATH.with_suffix(".json").read_text(encoding="utf-8"))
ARTIFACT_BLOCKS = [FeatureBlock.from_json(raw) for raw in ARTIFACT_META["features"]["blocks"]]
ARTIFACT_STYLE = StyleSetting.from_json(ARTIFACT_META["features"]["style"])
# Settings the shipped model does not use, so that a retrain with any of them scores right too; the tiny
# n_features make hash collisions (summed counts) common.
OTHER_BLOCKS = [
    FeatureBlock("default-pattern", "word", (1, 3), 2**20),
    FeatureBlock("bigrams-only", "word", (2, 2), 1000, token_pattern=r"\S+"),
    FeatureBlock("one-group", "word", (1, 1), 2**18, token_pattern=r"(?u)#(\w+)"),
    FeatureBlock("wb", "char_wb", (2, 5), 2**18),
    FeatureBlock("wb-short", "char_wb", (3, 3), 97),
    FeatureBlock("unigrams", "char", (1, 3), 7),
]

WORDS = [
    "my", "parcel", "is", "late", "again", "thanks", "refund", "why", "charged", "twice", "@user", "http",
    "café", "naïve", "straße", "İstanbul", "日本語", "кофе", "مرحبا", "x", "a", "ok", "don't", "#fail",
]  # fmt: skip
SPECIALS = [
    "😡", "🎉", "👩\u200d👩\u200d👧\u200d👦", "🏳\ufe0f\u200d🌈", "\U0010ffff", "\U0001d400", "\ufffd", "e\u0301",
    "\u0308", "!", "?", "…", "'", "-", ".", "@", "#", "\u00a0", "\u3000", "\u2028", "\t", "\n", "\r\n", "  ", "   ",
]  # fmt: skip
# Everything but lone surrogates, which cannot be UTF-8 encoded (normalise_text replaces them).
ANY_CHAR = st.characters(exclude_categories=["Cs"])
TEXTS = st.one_of(
    st.text(ANY_CHAR, max_size=60),
    st.lists(st.sampled_from(WORDS + SPECIALS), max_size=40).map("".join),
    st.lists(st.sampled_from(WORDS + SPECIALS), max_size=40).map(" ".join),
    st.text(st.sampled_from([" ", "\t", "\n", "a", "b", "\u0301", "😡"]), max_size=30),
)


def generated_texts(n: int, seed: int) -> list[str]:
    """Posts-like texts with the awkward parts sprinkled in; half of them also as normalise_text gives them."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n // 2):
        pieces = [rng.choice(WORDS if rng.random() < 0.8 else SPECIALS) for _ in range(rng.randint(0, 60))]
        seps = [rng.choice([" ", " ", " ", "", "  ", "\t", " \n "]) for _ in pieces]
        text = "".join(p + s for p, s in zip(pieces, seps, strict=True))
        texts += [text, normalise_text(text)]
    return texts


def sklearn_counts(block: FeatureBlock, texts: Sequence[str]) -> BlockCounts:
    matrix = sp.coo_matrix(make_hashers([block])[0].transform(texts))
    order = np.lexsort((matrix.col, matrix.row))
    return BlockCounts(
        len(texts), matrix.row[order].astype(np.int64), matrix.col[order].astype(np.int64), matrix.data[order]
    )


def row_entries(counts: BlockCounts) -> list[list[tuple[int, float]]]:
    bounds = np.searchsorted(counts.rows, np.arange(counts.n_rows + 1))
    pairs = list(zip(counts.columns.tolist(), counts.counts.tolist(), strict=True))
    return [pairs[lo:hi] for lo, hi in itertools.pairwise(bounds.tolist())]


def assert_same_counts(block: FeatureBlock, texts: Sequence[str]) -> None:
    ours, theirs = hash_counts(block, texts), sklearn_counts(block, texts)
    assert ours.n_rows == len(texts) and np.all(np.diff(ours.rows) >= 0)
    # Compared per text, so that a failure names the text rather than an array position.
    for text, mine, ref in zip(texts, row_entries(ours), row_entries(theirs), strict=True):
        assert mine == ref, f"(column, count) entries differ for {text!r}"
    assert np.array_equal(ours.rows, theirs.rows)


# --------------------------------------------------------------------------- MurmurHash3


def spans_of(keys: Sequence[bytes]) -> tuple[bytes, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    lengths = np.array([len(k) for k in keys], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    return b"".join(keys), starts, lengths


def test_murmurhash_of_every_key_length_matches_sklearn() -> None:
    # 0..40 bytes covers every tail length with 0 to 10 full blocks, at every alignment in the buffer.
    data = bytes(range(256)) * 2
    keys = [data[start : start + n] for n in range(41) for start in range(7)]
    hashes = murmurhash3_spans(*spans_of(keys))
    assert hashes.tolist() == [murmurhash3_32(k, 0, positive=False) for k in keys]


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.text(ANY_CHAR, max_size=30), max_size=40))
def test_murmurhash_of_any_text_matches_sklearn(texts: list[str]) -> None:
    keys = [t.encode("utf-8") for t in texts]
    assert murmurhash3_spans(*spans_of(keys)).tolist() == [murmurhash3_32(k, 0, positive=False) for k in keys]


@pytest.mark.parametrize("n_features", [2**18, 1000, 7])
def test_the_one_hash_abs_cannot_take_gets_sklearns_column(n_features: int) -> None:
    # sklearn's column for -2**31, whose abs() overflows 32 bits (no short text is known to hash to it).
    hashes = np.array([-(2**31), -5, 0, 5, 2**31 - 1], dtype=np.int32)
    expected = [(2147483647 - (n_features - 1)) % n_features, 5 % n_features, 0, 5 % n_features]
    assert hash_columns(hashes, n_features).tolist() == [*expected, (2**31 - 1) % n_features]


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize("block", ARTIFACT_BLOCKS + OTHER_BLOCKS, ids=lambda b: b.name)
def test_counts_equal_hashing_vectorizer_on_thousands_of_texts(block: FeatureBlock) -> None:
    assert_same_counts(block, generated_texts(3000, seed=len(block.name)))


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(TEXTS, min_size=1, max_size=30))
def test_counts_equal_hashing_vectorizer_on_any_text(texts: list[str]) -> None:
    for block in ARTIFACT_BLOCKS + OTHER_BLOCKS:
        assert_same_counts(block, texts)


def test_whitespace_runs_become_one_space_but_a_single_tab_stays_a_tab() -> None:
    # sklearn's char analyzer replaces runs of two or more whitespace characters only.
    char = FeatureBlock("c", "char", (2, 2), 2**18)
    assert_same_counts(char, ["a\tb", "a \t b", "a\n\nb", "a\u3000b", "a\u3000\u3000b"])
    tab, space = hash_counts(char, ["a\tb", "a b"]).columns.reshape(2, 2)
    assert set(tab) != set(space)


def test_an_empty_batch_and_empty_texts() -> None:
    for block in ARTIFACT_BLOCKS:
        assert hash_counts(block, []).rows.size == 0
        assert_same_counts(block, ["", " ", "x", ""])


# --------------------------------------------------------------------------- scores


def sklearn_path_scores(texts: Sequence[str]) -> npt.NDArray[np.float64]:
    """Scores as the classifier computed them with scikit-learn and scipy, before features.py."""
    arrays = _densify(_read_npz(DEFAULT_MODEL_PATH), ARTIFACT_BLOCKS, DEFAULT_MODEL_PATH, with_style=True)
    z = np.full(len(texts), arrays.intercept)
    for block, hasher, idf, coef in zip(
        ARTIFACT_BLOCKS, make_hashers(ARTIFACT_BLOCKS), arrays.idf, arrays.coef, strict=True
    ):
        normalised = [normalise_text(t, lowercase=block.lowercase) for t in texts]
        z += weight_block(sp.csr_matrix(hasher.transform(normalised)), idf, block.sublinear_tf) @ coef
    assert arrays.style is not None
    z += style_scores(style_matrix(texts, ARTIFACT_STYLE), *arrays.style)
    return _sigmoid(z)


@pytest.fixture(scope="module")
def clf() -> ComplaintClassifier:
    # Built as the training script builds it, without load()'s probe check: a scoring change must fail
    # here by the difference it makes, however small, not stop at the probes' coarser tolerance.
    arrays = _densify(_read_npz(DEFAULT_MODEL_PATH), ARTIFACT_BLOCKS, DEFAULT_MODEL_PATH, with_style=True)
    return ComplaintClassifier(ARTIFACT_BLOCKS, arrays, ARTIFACT_META["threshold"], {}, style=ARTIFACT_STYLE)


def test_scores_equal_the_sklearn_path(clf: ComplaintClassifier) -> None:
    texts = [
        *generated_texts(2000, seed=1),
        "@shop my parcel has been 'out for delivery' for six days and nobody answers 😡 https://t.co/x",
        "Thank you @cafe, the new oat latte is lovely! 🎉",
        "a" * 100_000,
        "\ud800 lone surrogate \udfff",
        "\x00\x01\x02\x1b[31m",
    ]
    ours = np.array(clf.score_many(texts))
    reference = sklearn_path_scores(texts)
    assert np.max(np.abs(ours - reference)) <= 1e-9
    # Not a vacuous comparison: the texts span both labels.
    assert (ours >= clf.threshold).any() and (ours < clf.threshold).any()


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(TEXTS, min_size=1, max_size=20))
def test_scores_of_any_text_equal_the_sklearn_path(clf: ComplaintClassifier, texts: list[str]) -> None:
    assert np.max(np.abs(np.array(clf.score_many(texts)) - sklearn_path_scores(texts))) <= 1e-9


def test_a_batch_of_maximal_posts_is_scored_in_bounded_memory(clf: ComplaintClassifier) -> None:
    # Each character gives four char n-grams and each n-gram several 8-byte array entries: one numpy
    # pass over these 100 posts of MAX_CHARS would hold ~125 MB at once, far beyond the daemon's budget.
    rng = random.Random(5)
    texts = [" ".join(rng.choice(WORDS) for _ in range(MAX_CHARS)) for _ in range(100)]
    tracemalloc.start()
    try:
        scores = clf.score_many(texts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 60_000_000
    assert scores[:3] == clf.score_many(texts[:3])


# --------------------------------------------------------------------------- what the daemon imports


def test_the_daemon_loads_the_model_without_sklearn_scipy_or_vader() -> None:
    code = (
        "import json, sys\n"
        "import mentiondesk.bot.daemon\n"
        "from mentiondesk.bot.classify.model import ComplaintClassifier\n"
        "ComplaintClassifier.load().score_many(['my parcel is late 😡'])\n"
        "training = ('sklearn', 'scipy', 'vaderSentiment')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in training)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == []


# The modules that import scikit-learn or vaderSentiment (the `train` extra) at their top.
TRAINING_SIDE = ("training", "recipe", "retrain", "vader")


def test_only_training_code_imports_the_sklearn_helpers() -> None:
    training_side = {f"mentiondesk.bot.classify.{name}" for name in TRAINING_SIDE}
    importers = [
        f"{path.relative_to(REPO)}:{line}"
        for path in source_files()
        if path.relative_to(REPO).as_posix() not in {f"bot/classify/{name}.py" for name in TRAINING_SIDE}
        for line, name in imports_of(path)
        if any(name == m or name.startswith(f"{m}.") for m in training_side)
    ]
    # The CLI imports retrain inside `classifier train` only, where a missing extra becomes exit status 2.
    assert [where.split(":")[0] for where in importers] == ["bot/cli.py"]


def test_training_without_sklearn_says_how_to_install_it() -> None:
    script = REPO / "scripts" / "train_classifier.py"
    code = (
        "import runpy, sys\n"
        "sys.modules['sklearn'] = None  # as if not installed\n"
        f"sys.argv = [{str(script)!r}]\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "train_classifier.py: training needs scikit-learn" in result.stderr
    assert "pip install -e '.[train]'" in result.stderr
