"""The style and sentiment cues: what they read, and that a model using them scores the same at run time.

All texts are written or generated for these tests (the training data never enters the repository).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from mentiondesk.bot.classify.export import write_artifact
from mentiondesk.bot.classify.features import FeatureBlock
from mentiondesk.bot.classify.model import DEFAULT_MODEL_PATH, ClassifierError, ComplaintClassifier, normalise_text
from mentiondesk.bot.classify.style import STYLE_NAMES, StyleSetting, style_features
from mentiondesk.bot.classify.training import PUNCT_TOKENS, Config, Fitted, fit, model_inputs, predict

LEXICON = {"late": -1.5, "thanks": 1.9, "love": 3.2, "broken": -2.1, "worst": -3.1, "lovely": 2.8}
BLOCKS = (
    FeatureBlock("word", "word", (1, 2), 2**12, token_pattern=PUNCT_TOKENS),
    FeatureBlock("char_cased", "char", (2, 4), 2**12, lowercase=False),
)
COMPLAINT_WORDS = ["still", "broken", "late", "again", "WORST", "days", "not", "waiting", "!", "refund"]
PRAISE_WORDS = ["thanks", "love", "lovely", "great", "team", "?", "when", "open", "new", "🎉"]


def cues(text: str) -> dict[str, float]:
    row = style_features([normalise_text(text, lowercase=False)], LEXICON)[0]
    return dict(zip(STYLE_NAMES, row.tolist(), strict=True))


def test_cues_read_shouting_persistence_and_negative_words() -> None:
    angry = cues("@shop I have been WAITING 3 DAYS and STILL not fixed!!! Worst, broken https://t.co/x")
    calm = cues("Thanks @cafe, lovely latte")
    assert angry["share_all_caps_words"] > 0.2 and calm["share_all_caps_words"] == 0.0
    assert angry["log1p_exclamations"] == pytest.approx(np.log1p(3))
    assert angry["log1p_time_words"] == pytest.approx(np.log1p(3))  # waiting, days, still
    assert angry["log1p_negations"] == pytest.approx(np.log1p(1))
    assert angry["has_link"] == 1.0 and calm["has_link"] == 0.0
    assert angry["valence_min"] == -3.1 and angry["log1p_negative_words"] == pytest.approx(np.log1p(2))
    assert calm["valence_mean"] == pytest.approx((1.9 + 2.8) / 2)


def test_an_empty_post_has_neutral_cues() -> None:
    assert set(cues("").values()) == {0.0}


def labelled_texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        complaint = i % 2 == 0
        words = COMPLAINT_WORDS if complaint else PRAISE_WORDS
        # A third of the words from the other side, so the model has to weigh evidence.
        picked = [rng.choice(words if rng.random() < 0.7 else PRAISE_WORDS + COMPLAINT_WORDS) for _ in range(12)]
        texts.append("@shop " + " ".join(picked))
        labels.append(int(complaint))
    return texts, np.array(labels, dtype=np.int64)


@pytest.fixture(scope="module")
def styled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config, Fitted, list[str]]:
    texts, y = labelled_texts(300, seed=3)
    config = Config(BLOCKS, 10.0, style=StyleSetting(0.05, LEXICON, "test lexicon"))
    model = fit(model_inputs({}, config, texts), y, config)
    npz = tmp_path_factory.mktemp("styled") / "model.npz"
    write_artifact(npz, model, BLOCKS, threshold=0.5, triage_threshold=0.2, metadata={}, style=config.style)
    return npz, config, model, texts


def test_runtime_scores_equal_the_training_path_on_the_training_texts(
    styled: tuple[Path, Config, Fitted, list[str]],
) -> None:
    npz, config, model, texts = styled
    clf = ComplaintClassifier.load(npz)
    runtime = np.array(clf.score_many(texts))
    arrays = clf._arrays
    assert arrays.style is not None
    # The training path over the arrays as stored (n-gram weights are stored as float32).
    stored = Fitted(arrays.idf, [np.zeros(0, dtype=np.int64)] * len(BLOCKS), arrays.coef, arrays.intercept)
    stored.style_mean, stored.style_scale, stored.style_coef = arrays.style
    inputs = model_inputs({}, config, texts)
    assert np.max(np.abs(predict(stored, inputs, BLOCKS) - runtime)) <= 1e-9
    assert np.max(np.abs(predict(model, inputs, BLOCKS) - runtime)) <= 1e-4
    # The cues weigh in: without them the scores move.
    plain = Fitted(model.idf, model.df, model.coef, model.intercept)
    assert np.max(np.abs(predict(plain, inputs[: len(BLOCKS)], BLOCKS) - runtime)) > 1e-3
    assert (runtime >= 0.5).any() and (runtime < 0.5).any()


def test_the_lexicon_travels_in_the_metadata_with_its_licence(styled: tuple[Path, Config, Fitted, list[str]]) -> None:
    npz, *_ = styled
    assert ComplaintClassifier.load(npz).metadata["features"]["style"]["lexicon"] == dict(sorted(LEXICON.items()))
    shipped = ComplaintClassifier.load().metadata["features"]["style"]
    assert "MIT License" in shipped["lexicon_source"] and "Hutto" in shipped["lexicon_source"]
    assert shipped["lexicon"]["worst"] < 0 < shipped["lexicon"]["thanks"]


def test_a_format_2_model_without_cues_still_loads(tmp_path: Path) -> None:
    texts, y = labelled_texts(200, seed=4)
    config = Config(BLOCKS, 10.0)
    model = fit(model_inputs({}, config, texts), y, config)
    npz = tmp_path / "old.npz"
    write_artifact(npz, model, BLOCKS, threshold=0.5, triage_threshold=0.2, metadata={})
    meta = json.loads(npz.with_suffix(".json").read_text(encoding="utf-8"))
    meta["format"] = "mentiondesk-complaint-tfidf-lr/2"
    npz.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    clf = ComplaintClassifier.load(npz)
    assert np.allclose(clf.score_many(texts), predict(model, model_inputs({}, config, texts), BLOCKS), atol=1e-4)


def copy_shipped(tmp_path: Path) -> Path:
    dest = tmp_path / "complaint_model.npz"
    shutil.copy(DEFAULT_MODEL_PATH, dest)
    shutil.copy(DEFAULT_MODEL_PATH.with_suffix(".json"), dest.with_suffix(".json"))
    return dest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda style: style.update(names=["caps"]), "style cues .* differ from this version's"),
        (lambda style: style.update(alpha=0), "style alpha 0.0 is not positive"),
        (lambda style: style.pop("lexicon"), "style settings are invalid"),
    ],
)
def test_bad_style_settings_name_the_cause(tmp_path: Path, change: object, message: str) -> None:
    npz = copy_shipped(tmp_path)
    path = npz.with_suffix(".json")
    meta = json.loads(path.read_text(encoding="utf-8"))
    change(meta["features"]["style"])  # type: ignore[operator]
    path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ClassifierError, match=message):
        ComplaintClassifier.load(npz)


def test_a_changed_lexicon_fails_the_probe_check(tmp_path: Path) -> None:
    npz = copy_shipped(tmp_path)
    path = npz.with_suffix(".json")
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["features"]["style"]["lexicon"] = {}
    path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ClassifierError, match="probe scores differ"):
        ComplaintClassifier.load(npz)
