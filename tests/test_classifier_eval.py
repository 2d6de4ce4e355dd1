"""`mentiondesk classifier eval`: the model's figures on a labelled CSV, overall and for the brand posts alone."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import mentiondesk.bot.classify.model
from mentiondesk.bot.classify.evaluation import EvalDataError, figures, read_labelled
from mentiondesk.bot.cli import main

COMPLAINT = "my order never arrived and nobody answers, worst service ever"
PRAISE = "thank you so much for the quick help, lovely team"


def test_figures_match_a_hand_count() -> None:
    # Complaints: 2 found, 1 missed, 1 false alarm. Others: 3 right, 1 taken for a complaint.
    labels = [1, 1, 1, 0, 0, 0, 0]
    predicted = [1, 1, 0, 1, 0, 0, 0]
    f = figures(labels, predicted)
    complaint_f1 = 2 * (2 / 3) * (2 / 3) / (4 / 3)  # precision 2/3, recall 2/3
    other_f1 = 2 * (3 / 4) * (3 / 4) / (6 / 4)  # precision 3/4, recall 3/4
    assert f.posts == 7 and f.complaints == 3
    assert f.complaint_f1 == pytest.approx(complaint_f1)
    assert f.macro_f1 == pytest.approx((complaint_f1 + other_f1) / 2)
    assert f.precision == pytest.approx((2 / 3 + 3 / 4) / 2) and f.recall == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert f.accuracy == pytest.approx(5 / 7)


def test_a_class_never_predicted_scores_zero_not_a_division_error() -> None:
    f = figures([1, 0, 0], [0, 0, 0])
    assert f.complaint_f1 == 0.0 and f.macro_f1 == pytest.approx((0.0 + 0.8) / 2)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labelled.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_eval_prints_figures_overall_and_for_brand_posts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(
        tmp_path,
        "id,text,complaint,domain\n"
        f'1,"{COMPLAINT}",1,apparel\n'
        f'2,"{PRAISE}",0,software\n'
        "3,good morning everyone,0,random_tweet\n"
        "4,what a day,0,random_reply\n",
    )
    assert main(["classifier", "eval", "--data", str(data), "--json", "--threshold", "0.5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threshold"] == 0.5
    assert result["all"]["posts"] == 4 and result["all"]["complaints"] == 1
    # The general posts are left out of the brand figures, not the complaints.
    assert result["brand"]["posts"] == 2 and result["brand"]["complaints"] == 1
    for name in ("all", "brand"):
        assert 0.0 <= result[name]["macro_f1"] <= 1.0

    assert main(["classifier", "eval", "--data", str(data)]) == 0
    table = capsys.readouterr().out
    assert "all posts" in table and "brand posts" in table and "macro-F1" in table


def test_without_a_domain_column_there_are_no_brand_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path, f'text,complaint\n"{COMPLAINT}",1\n"{PRAISE}",0\n')
    assert main(["classifier", "eval", "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"threshold", "all"} and result["all"]["posts"] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label\nhello,1\n", "no complaint column"),
        ("complaint\n1\n", "no text column"),
        (f'text,complaint\n"{COMPLAINT}",1\n"{PRAISE}",yes\n', "line 3: complaint must be 0 or 1, got 'yes'"),
        ("text,complaint\n", "no labelled posts"),
    ],
    ids=["no complaint column", "no text column", "bad label", "empty"],
)
def test_a_file_that_cannot_be_used_is_refused_naming_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    data = _write(tmp_path, content)
    assert main(["classifier", "eval", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(data) in err


def test_a_missing_or_undecodable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="cannot read"):
        read_labelled(tmp_path / "nowhere.csv")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,complaint\nna\xefve,0\n".encode("latin-1"))
    with pytest.raises(EvalDataError, match="not UTF-8"):
        read_labelled(latin1)


def test_the_models_own_training_file_is_flagged_as_training_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Scoring a model on the posts it learned from gives near-perfect figures that say nothing of new posts.
    data = _write(tmp_path, f'text,complaint\n"{COMPLAINT}",1\n"{PRAISE}",0\n')
    shipped = Path(mentiondesk.bot.classify.model.__file__).parent / "artifacts" / "complaint_model"
    model = tmp_path / "model.npz"
    shutil.copyfile(shipped.with_suffix(".npz"), model)
    meta = json.loads(shipped.with_suffix(".json").read_text(encoding="utf-8"))
    meta["training_set"]["sha256"] = hashlib.sha256(data.read_bytes()).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")

    assert main(["classifier", "eval", "--data", str(data), "--model", str(model)]) == 0
    captured = capsys.readouterr()
    assert "macro-F1" in captured.out
    assert f"{data} is the file this model was trained on" in captured.err
    assert "training figures, not a measure of posts it has not seen" in captured.err

    # Any other file: no such note.
    other = tmp_path / "other.csv"
    other.write_text(f'text,complaint\n"{PRAISE}",0\n"{COMPLAINT}",1\n', encoding="utf-8")
    assert main(["classifier", "eval", "--data", str(other), "--model", str(model)]) == 0
    assert "trained on" not in capsys.readouterr().err
