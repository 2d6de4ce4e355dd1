"""The optional embeddings model (`classifier.model = "embeddings"`): the shipped int8 ONNX artifact and its loader."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from mentiondesk.bot.classify.embeddings import (
    DEFAULT_MODEL_DIR,
    PROBE_TOLERANCE,
    SCORE_BATCH,
    EmbeddingsClassifier,
)
from mentiondesk.bot.classify.loading import load_classifier
from mentiondesk.bot.classify.model import DEFAULT_MODEL_PATH, ClassifierError, ComplaintClassifier
from mentiondesk.bot.cli import main
from mentiondesk.bot.config import ConfigError, Settings, load_config
from mentiondesk.bot.reload import plan_reload

COMPLAINTS = [
    "my order never arrived and nobody answers, worst service ever",
    "@airline third time my flight is cancelled without notice. I want a refund NOW",
    "Your app keeps crashing every time I try to pay my bill. Fix it!",
]
OTHERS = [
    "thank you so much for the quick help, lovely team",
    "Does the winter sale include the kids' range?",
    "Congratulations on the new store opening! 🎉",
]
# The int8 MatMuls quantise activations by one range per run and each post runs on its own, so a post's score
# must not depend on the other posts of a call.
BATCH_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def shipped() -> EmbeddingsClassifier:
    return EmbeddingsClassifier.load()


@pytest.fixture
def artifact_copy(tmp_path: Path) -> Path:
    target = tmp_path / "embeddings"
    shutil.copytree(DEFAULT_MODEL_DIR, target)
    return target


def test_the_shipped_model_loads_offline_and_says_what_it_is(shipped: EmbeddingsClassifier) -> None:
    assert 0.0 < shipped.triage_threshold <= shipped.threshold < 1.0
    assert shipped.languages == ("en",)
    assert shipped.metadata["max_len"] == 64
    probes = shipped.metadata["probes"]
    got = shipped.score_many([p["text"] for p in probes])
    assert got == pytest.approx([p["score"] for p in probes], abs=PROBE_TOLERANCE)


def test_complaints_score_above_the_threshold_and_other_posts_below(shipped: EmbeddingsClassifier) -> None:
    results = shipped.classify_many(COMPLAINTS + OTHERS)
    assert [r.label for r in results] == ["complaint"] * len(COMPLAINTS) + ["other"] * len(OTHERS)
    assert shipped.classify(COMPLAINTS[0]).score == pytest.approx(results[0].score, abs=BATCH_TOLERANCE)
    # An explicit threshold overrides the model's own.
    assert {r.label for r in shipped.classify_many(OTHERS, threshold=0.0)} == {"complaint"}


def test_scores_keep_input_order_whatever_the_batching(shipped: EmbeddingsClassifier) -> None:
    # More texts than one batch, of very different lengths, so the length sort and the split both happen.
    texts = [f"{COMPLAINTS[i % 3]} {'and again ' * (i % 5)}" if i % 2 else OTHERS[i % 3] for i in range(40)]
    assert len(texts) > 2 * SCORE_BATCH
    together = np.array(shipped.score_many(texts))
    alone = np.array([shipped.score_many([t])[0] for t in texts[:6]])
    assert np.max(np.abs(together[:6] - alone)) < BATCH_TOLERANCE
    # Input order is kept: equal texts get (near) equal scores wherever they sit in the sorted batches.
    assert together[0] == pytest.approx(together[6], abs=BATCH_TOLERANCE)
    assert (together[1::2] > shipped.threshold).all() and (together[0::2] < shipped.threshold).all()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "\x00\x00 nul bytes \x00",
        "lone surrogate \ud800 and \udfff here",
        "😡" * 300,
        "refund " * 15_000,  # 105,000 characters
        "\u202eright-to-left override\u202c and zero\u200bwidth",
        "ｆｕｌｌｗｉｄｔｈ ÅÉÎ",
    ],
    ids=["empty", "blank", "nul", "surrogates", "emoji", "100k", "bidi", "fullwidth"],
)
def test_hostile_text_gets_a_score_not_an_error(shipped: EmbeddingsClassifier, text: str) -> None:
    (score,) = shipped.score_many([text])
    assert 0.0 <= score <= 1.0


def test_a_non_string_is_refused_by_position(shipped: EmbeddingsClassifier) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\] is bytes"):
        shipped.score_many(["fine", b"bytes"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("choice", "kind"),
    [
        (None, ComplaintClassifier),
        ("default", ComplaintClassifier),
        (str(DEFAULT_MODEL_PATH), ComplaintClassifier),
        ("embeddings", EmbeddingsClassifier),
        (DEFAULT_MODEL_DIR, EmbeddingsClassifier),
        (DEFAULT_MODEL_DIR / "model.onnx", EmbeddingsClassifier),
    ],
    ids=["none", "default", "npz-path", "embeddings", "embeddings-dir", "onnx-path"],
)
def test_the_configured_choice_picks_the_model(choice: str | Path | None, kind: type) -> None:
    assert isinstance(load_classifier(choice), kind)


def test_a_bad_choice_names_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ClassifierError, match=r"'embedings': no such file or directory \(expected 'default'"):
        load_classifier("embedings")
    other = tmp_path / "model.pkl"
    other.write_bytes(b"x")
    with pytest.raises(ClassifierError, match=r"unknown model file type '\.pkl'"):
        load_classifier(other)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClassifierError, match="model metadata file is missing"):
        load_classifier(tmp_path / "empty")


def test_without_the_ml_extra_the_error_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import onnxruntime` raise ImportError, as on an install without the extra.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ClassifierError, match=r"install them with: pip install 'mentiondesk\[ml\]'"):
        load_classifier("embeddings")
    assert isinstance(load_classifier("default"), ComplaintClassifier)


def test_a_corrupt_onnx_file_fails_its_checksum(artifact_copy: Path) -> None:
    onnx = artifact_copy / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(ClassifierError, match=r"checksum does not match model\.json"):
        EmbeddingsClassifier.load(artifact_copy)


def test_probe_scores_that_moved_refuse_the_model(artifact_copy: Path) -> None:
    meta_path = artifact_copy / "model.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["probes"][0]["score"] = 1.0 - meta["probes"][0]["score"]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ClassifierError, match="probe scores differ from training"):
        EmbeddingsClassifier.load(artifact_copy)


def test_a_missing_tokenizer_is_named(artifact_copy: Path) -> None:
    (artifact_copy / "tokenizer.json").unlink()
    with pytest.raises(ClassifierError, match=r"tokenizer.json: tokenizer file is missing"):
        EmbeddingsClassifier.load(artifact_copy)


CONFIG = """
[mastodon]
base_url = "https://social.example"
[slack]
default_channel = "#support"
[classifier]
"""


def _settings(tmp_path: Path, lines: str) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG + lines, encoding="utf-8")
    return load_config(path, environ={}).settings


def test_classifier_model_in_the_config_and_its_older_spelling(tmp_path: Path) -> None:
    assert _settings(tmp_path, "").classifier.model_choice() == "default"
    assert _settings(tmp_path, 'model = "embeddings"\n').classifier.model_choice() == "embeddings"
    assert _settings(tmp_path, 'model_path = "/m/x.npz"\n').classifier.model_choice() == Path("/m/x.npz")
    with pytest.raises(ConfigError, match=r"classifier\.model and classifier\.model_path are both set"):
        _settings(tmp_path, 'model = "embeddings"\nmodel_path = "/m/x.npz"\n')
    with pytest.raises(ConfigError, match=r"classifier\.model: "):
        _settings(tmp_path, 'model = ""\n')


def test_changing_the_model_is_applied_by_a_reload(tmp_path: Path) -> None:
    plan = plan_reload(_settings(tmp_path, ""), _settings(tmp_path, 'model = "embeddings"\n'))
    assert plan.restart_needed == () and plan.changed == ("classifier",)
    assert plan.settings.classifier.model == "embeddings"


def test_classifier_eval_takes_the_same_model_choices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "labelled.csv"
    rows = [(t, 1, "apparel") for t in COMPLAINTS] + [(t, 0, "random_tweet") for t in OTHERS]
    data.write_text("text,complaint,domain\n" + "".join(f'"{t}",{y},{d}\n' for t, y, d in rows), encoding="utf-8")
    assert main(["classifier", "eval", "--data", str(data), "--model", "embeddings", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threshold"] == EmbeddingsClassifier.load().threshold
    assert result["all"]["macro_f1"] == 1.0 and result["brand"]["posts"] == len(COMPLAINTS)
    assert main(["classifier", "eval", "--data", str(data), "--model", str(tmp_path / "nope.onnx")]) == 1
    assert "nope.onnx': no such file or directory" in capsys.readouterr().err
