"""Tests for mentiondesk.bot.classify.model and mentiondesk.bot.classify.cli against the packaged model artifact.

All example texts are written for these tests; none come from the training corpus.
"""

from __future__ import annotations

import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mentiondesk.bot.classify.cli import run_classify
from mentiondesk.bot.classify.model import DEFAULT_MODEL_PATH, Classification, ClassifierError, ComplaintClassifier

COMPLAINTS = [
    "my order never arrived and support ignores me, this is awful",
    "@acme third time my train has been cancelled this week and no refund. absolutely disgraceful",
    "been on hold for two hours and your app still charges me twice. fix this now",
    "@shopco the jacket fell apart after one wash and you refuse to replace it. never buying again",
]
NOT_COMPLAINTS = [
    "thanks so much, love the new update!",
    "@acme do you deliver to scotland?",
    "congratulations to the whole team on the launch, great work 🎉",
    "happy birthday to my best friend, have a wonderful day",
]
HOSTILE = [
    "",
    " ",
    "\x00\x01\x02\x1b[31m",
    "a" * 100_000,
    "word " * 25_000,
    "\ud800 lone surrogate \udfff",
    "\u202eright-to-left override\u202c and zero\u200bwidth",
    "e\u0301" * 2_000,
    "👩‍👩‍👧‍👦🏳️‍🌈" * 50,
    "ｆｕｌｌｗｉｄｔｈ ﬁ ligature ①②③",
    "@@@@ http:// www. @",
    "\t\n\r\x0b\x0c",
    "\U0010ffff\ufffe\uffff",
]


@pytest.fixture(scope="module")
def clf() -> ComplaintClassifier:
    return ComplaintClassifier.load()


def copy_artifact(tmp_path: Path) -> Path:
    dest = tmp_path / "complaint_model.npz"
    shutil.copy(DEFAULT_MODEL_PATH, dest)
    shutil.copy(DEFAULT_MODEL_PATH.with_suffix(".json"), dest.with_suffix(".json"))
    return dest


def rewrite_json(npz: Path, **changes: object) -> None:
    path = npz.with_suffix(".json")
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.update(changes)
    path.write_text(json.dumps(meta), encoding="utf-8")


# --------------------------------------------------------------------------- loading


def test_packaged_artifact_loads(clf: ComplaintClassifier) -> None:
    assert 0.0 < clf.threshold < 1.0
    assert clf.metadata["training_set"]["rows"] > 0


def test_packaged_model_has_a_triage_band_below_its_threshold_and_covers_english(clf: ComplaintClassifier) -> None:
    assert 0.0 < clf.triage_threshold < clf.threshold
    assert clf.languages == ("en",)
    assert clf.classify("@shop third refund request and still nothing, cancelling now").label == "complaint"


def test_a_format_1_model_still_loads_without_a_triage_band(tmp_path: Path) -> None:
    npz = copy_artifact(tmp_path)
    meta = json.loads(npz.with_suffix(".json").read_text(encoding="utf-8"))
    del meta["triage_threshold"], meta["languages"]
    meta["format"] = "mentiondesk-complaint-tfidf-lr/1"
    npz.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    old = ComplaintClassifier.load(npz)
    assert old.triage_threshold == old.threshold
    assert old.languages == ("en",)


def test_load_accepts_json_path_too() -> None:
    clf = ComplaintClassifier.load(DEFAULT_MODEL_PATH.with_suffix(".json"))
    assert clf.threshold == ComplaintClassifier.load().threshold


def test_artifact_is_small() -> None:
    assert DEFAULT_MODEL_PATH.stat().st_size < 10_000_000


def test_missing_artifact_names_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(ClassifierError, match=r"nope\.npz"):
        ComplaintClassifier.load(missing)


def test_missing_metadata_names_file(tmp_path: Path) -> None:
    npz = copy_artifact(tmp_path)
    npz.with_suffix(".json").unlink()
    with pytest.raises(ClassifierError, match=r"complaint_model\.json.*missing"):
        ComplaintClassifier.load(npz)


def test_corrupt_artifact_names_file(tmp_path: Path) -> None:
    npz = copy_artifact(tmp_path)
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(ClassifierError, match=r"complaint_model\.npz.*checksum"):
        ComplaintClassifier.load(npz)


def test_garbage_artifact_with_matching_checksum(tmp_path: Path) -> None:
    # Checksum right but content not an npz: the reader itself must fail cleanly.
    import hashlib

    npz = copy_artifact(tmp_path)
    npz.write_bytes(b"definitely not a zip file")
    rewrite_json(npz, artifact_sha256=hashlib.sha256(npz.read_bytes()).hexdigest())
    with pytest.raises(ClassifierError, match=r"complaint_model\.npz.*cannot read"):
        ComplaintClassifier.load(npz)


def test_corrupt_metadata_names_file(tmp_path: Path) -> None:
    npz = copy_artifact(tmp_path)
    npz.with_suffix(".json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(ClassifierError, match=r"complaint_model\.json"):
        ComplaintClassifier.load(npz)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"format": "something-else/9"}, "unsupported artifact format"),
        ({"threshold": 1.5}, "threshold"),
        ({"features": {"blocks": []}}, "no feature blocks"),
        ({"features": {"blocks": [{"name": "x"}]}}, "feature settings are invalid"),
        ({"probes": [{"text": "hello there", "score": 0.123456789}]}, "probe scores differ"),
        ({"triage_threshold": 0.95}, r"triage_threshold 0\.95 is not a number in \(0, threshold"),
        ({"triage_threshold": None}, "triage_threshold None"),
        ({"languages": []}, "languages"),
    ],
)
def test_mismatched_metadata_is_rejected(tmp_path: Path, changes: dict[str, object], reason: str) -> None:
    npz = copy_artifact(tmp_path)
    rewrite_json(npz, **changes)
    with pytest.raises(ClassifierError, match=reason) as excinfo:
        ComplaintClassifier.load(npz)
    assert "complaint_model" in str(excinfo.value)


def test_changed_n_features_is_rejected(tmp_path: Path) -> None:
    # A feature-space mismatch must not load quietly: it would give wrong scores.
    npz = copy_artifact(tmp_path)
    meta = json.loads(npz.with_suffix(".json").read_text(encoding="utf-8"))
    for block in meta["features"]["blocks"]:
        block["n_features"] = 1024
    rewrite_json(npz, features=meta["features"])
    with pytest.raises(ClassifierError, match="complaint_model"):
        ComplaintClassifier.load(npz)


# --------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("text", COMPLAINTS)
def test_clear_complaints_score_above_threshold(clf: ComplaintClassifier, text: str) -> None:
    result = clf.classify(text)
    assert result.score >= clf.threshold
    assert result.label == "complaint"


@pytest.mark.parametrize("text", NOT_COMPLAINTS)
def test_praise_and_questions_score_below_threshold(clf: ComplaintClassifier, text: str) -> None:
    result = clf.classify(text)
    assert result.score < clf.threshold
    assert result.label == "other"


def test_scores_are_probabilities_and_order_is_kept(clf: ComplaintClassifier) -> None:
    texts = [t for pair in zip(COMPLAINTS, NOT_COMPLAINTS, strict=True) for t in pair]
    scores = clf.score_many(texts)
    assert all(0.0 <= s <= 1.0 for s in scores)
    results = clf.classify_many(texts)
    assert [r.score for r in results] == scores
    assert [r.score for r in results] == [clf.classify(t).score for t in texts]
    assert [r.label for r in results] == ["complaint", "other"] * len(COMPLAINTS)


def test_explicit_threshold_overrides_default(clf: ComplaintClassifier) -> None:
    text = NOT_COMPLAINTS[0]
    assert clf.classify(text, threshold=0.0) == Classification("complaint", clf.classify(text).score)
    assert clf.classify(COMPLAINTS[0], threshold=1.01).label == "other"


def test_batching_does_not_change_scores(clf: ComplaintClassifier) -> None:
    texts = [f"{COMPLAINTS[i % 4]} #{i}" for i in range(2_500)]  # spans several internal batches
    many = clf.score_many(texts)
    assert len(many) == len(texts)
    assert many[1_999] == clf.score_many([texts[1_999]])[0]


def test_empty_input(clf: ComplaintClassifier) -> None:
    assert clf.score_many([]) == []
    assert clf.classify_many([]) == []


def test_handles_and_urls_are_normalised(clf: ComplaintClassifier) -> None:
    a = clf.classify("@somebrand my refund never came https://example.com/a").score
    b = clf.classify("@otherbrand@mastodon.social my refund never came http://x.org/zz?q=1").score
    assert a == pytest.approx(b)


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_does_not_crash(clf: ComplaintClassifier, text: str) -> None:
    result = clf.classify(text)
    assert 0.0 <= result.score <= 1.0
    assert result.label in {"complaint", "other"}


def test_non_string_is_a_type_error(clf: ComplaintClassifier) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        clf.score_many(["fine", None])  # type: ignore[list-item]


def test_thread_safe(clf: ComplaintClassifier) -> None:
    texts = COMPLAINTS + NOT_COMPLAINTS + HOSTILE
    expected = clf.score_many(texts)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: clf.score_many(texts), range(32)))
    assert all(r == expected for r in results)


# --------------------------------------------------------------------------- run_classify


def run(clf: ComplaintClassifier, text: str, **kwargs: object) -> tuple[int, list[dict[str, object]], str]:
    out = io.StringIO()
    code = run_classify(io.StringIO(text), out, clf, **kwargs)  # type: ignore[arg-type]
    raw = out.getvalue()
    return code, [json.loads(line) for line in raw.splitlines()], raw


def test_run_classify_keeps_order_one_line_each(clf: ComplaintClassifier) -> None:
    texts = [COMPLAINTS[0], NOT_COMPLAINTS[0]] * 300
    stdin = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    code, rows, raw = run(clf, stdin, batch_size=7)
    assert code == 0
    assert raw.endswith("\n")
    assert len(rows) == len(texts)
    assert [r["label"] for r in rows] == ["complaint", "other"] * 300
    expected = [round(s, 4) for s in clf.score_many(texts)]
    assert [r["score"] for r in rows] == expected
    fields = {"label", "score", "kind", "band", "priority", "priority_reasons", "categories"}
    assert all(set(r) == fields for r in rows)


def test_run_classify_reports_malformed_lines(clf: ComplaintClassifier) -> None:
    lines = [
        json.dumps({"text": COMPLAINTS[1]}),
        "not json at all",
        "[1, 2, 3]",
        json.dumps({"body": "no text key"}),
        json.dumps({"text": 42}),
        "",
        "[" * 100_000,
        json.dumps({"text": NOT_COMPLAINTS[1], "extra": True}),
    ]
    code, rows, _ = run(clf, "\n".join(lines) + "\n", batch_size=3)
    assert code == 1
    assert len(rows) == len(lines)
    assert rows[0]["label"] == "complaint"
    assert rows[-1]["label"] == "other"
    for n, row in enumerate(rows[1:-1], start=2):
        assert set(row) == {"error"}
        assert str(row["error"]).startswith(f"line {n}: ")


def test_run_classify_last_line_without_newline(clf: ComplaintClassifier) -> None:
    code, rows, _ = run(clf, json.dumps({"text": "a"}) + "\n" + json.dumps({"text": "b"}))
    assert code == 0
    assert len(rows) == 2


def test_run_classify_threshold_and_empty_input(clf: ComplaintClassifier) -> None:
    code, rows, _ = run(clf, json.dumps({"text": NOT_COMPLAINTS[0]}) + "\n", threshold=0.0)
    assert (code, rows[0]["label"]) == (0, "complaint")
    assert run(clf, "") == (0, [], "")


def test_run_classify_echoes_each_lines_id_so_callers_can_join(clf: ComplaintClassifier) -> None:
    lines = [
        json.dumps({"id": "a-1", "text": COMPLAINTS[0]}),
        json.dumps({"text": NOT_COMPLAINTS[0]}),
        json.dumps({"id": 7, "text": 42}),
        json.dumps({"id": {"post": 9}, "text": NOT_COMPLAINTS[1]}),
        "not json",
    ]
    code, rows, _ = run(clf, "\n".join(lines) + "\n")
    assert code == 1
    assert list(rows[0])[:3] == ["id", "label", "score"] and rows[0]["id"] == "a-1"
    assert "id" not in rows[1] and rows[1]["label"] == "other"
    assert rows[2] == {"id": 7, "error": "line 3: 'text' must be a string (int)"}
    assert rows[3]["id"] == {"post": 9} and rows[3]["label"] == "other"
    assert set(rows[4]) == {"error"}
