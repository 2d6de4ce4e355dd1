"""`mentiondesk classifier train`: the team's labels reach the training set, a worse model is refused unless
forced, and without scikit-learn the command says which extra to install.

The base data is a small synthetic CSV written here (hand-written phrases, not from the complaints corpus),
and the cross-validation uses 3 folds, so each run trains in about a second.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

import mentiondesk.bot.classify
from mentiondesk.bot.classify.retrain import RetrainError, models_folder
from mentiondesk.bot.classify.tuning import bands, triage_threshold
from mentiondesk.bot.cli import main
from mentiondesk.storage.db import create_engine, session_factory, transaction, upgrade
from mentiondesk.storage.labels import record_label
from mentiondesk.storage.models import LabelSource, TicketKind
from tests.test_database_setup import write_config as database_config
from tests.test_storage import mention

COMPLAINTS = [
    "my parcel is late again",
    "still waiting for a refund after three weeks",
    "the app crashes every time I open settings",
    "why was I charged twice",
    "nobody has replied to my email",
    "the train was cancelled with no announcement",
    "this is the worst update ever",
    "my order arrived broken",
]
OTHERS = [
    "thanks for sorting that out so quickly",
    "love the new colours this season",
    "great service at the Leeds branch today",
    "what a lovely surprise",
    "best coffee in town",
    "congratulations on the new shop",
    "happy birthday to the whole team",
    "the staff were so kind to my mum",
]


def _post(rng: random.Random, phrases: list[str]) -> str:
    return " and ".join(rng.sample(phrases, rng.choice([1, 2, 3]))) + rng.choice(["", "!", " :(", " :)", "."])


def write_base(path: Path, n: int = 160) -> Path:
    rng = random.Random(3)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "complaint", "domain"])
        for i in range(n):
            complaint = i % 2 == 0
            writer.writerow([i, _post(rng, COMPLAINTS if complaint else OTHERS), int(complaint), "retail"])
    return path


def write_config(folder: Path, db_url: str, **classifier: str) -> Path:
    lines = "\n".join(f'{key} = "{value}"' for key, value in classifier.items())
    return database_config(folder, db_url, more=f"[classifier]\n{lines}\n")


async def _store_posts(db_url: str, texts: list[str]) -> list[int]:
    engine = create_engine(db_url)
    await upgrade(engine)
    try:
        async with transaction(session_factory(engine)) as session:
            rows = [mention(str(300 + i), text=text) for i, text in enumerate(texts)]
            session.add_all(rows)
            await session.flush()
            return [m.id for m in rows if m.id is not None]
    finally:
        await engine.dispose()


async def _label(db_url: str, ids: list[int], complaint: list[bool], agent: str) -> None:
    engine = create_engine(db_url)
    try:
        async with transaction(session_factory(engine)) as session:
            for mention_id, is_complaint in zip(ids, complaint, strict=True):
                await record_label(
                    session,
                    mention_id=mention_id,
                    ticket_id=None,
                    label=TicketKind.COMPLAINT if is_complaint else TicketKind.OTHER,
                    source=LabelSource.REACTION,
                    agent=agent,
                )
    finally:
        await engine.dispose()


def test_retrain_installs_a_better_model_refuses_a_worse_one_and_force_installs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'mentiondesk.db'}"
    base = write_base(tmp_path / "base.csv")
    rng = random.Random(11)
    truth = [i % 2 == 0 for i in range(30)]
    texts = [_post(rng, COMPLAINTS if c else OTHERS) for c in truth]
    ids = asyncio.run(_store_posts(db_url, texts))
    asyncio.run(_label(db_url, ids, truth, agent="U1"))
    models = tmp_path / "models"
    config = write_config(tmp_path, db_url)
    train = ["classifier", "train", "--config", str(config), "--data", str(base), "--folds", "3"]

    # The team's labels agree with the base data: the new model is no worse, so it is installed.
    assert main(train) == 0
    out = capsys.readouterr().out
    assert "team posts (30): macro-F1" in out and "installed complaint-model-v1.npz" in out
    v1 = json.loads((models / "complaint-model-v1.json").read_text(encoding="utf-8"))
    # The labels reached the training set: 30 more rows, their classes as the agents decided.
    assert v1["training_set"]["team_labels"] == 30
    assert v1["training_set"]["rows"] == 160 + 30
    assert v1["training_set"]["team_label_counts"] == {"complaint": 15, "other": 15}
    assert (models / "current.npz").read_bytes() == (models / "complaint-model-v1.npz").read_bytes()

    # Agents now decide the opposite about every post (a later decision wins): trained on that, the model
    # is worse by cross-validation, so it is written but not installed.
    asyncio.run(_label(db_url, ids, [not c for c in truth], agent="U2"))
    config = write_config(tmp_path, db_url, model=str(models / "current.npz"))
    before = (models / "current.npz").read_bytes()
    assert main(train) == 1
    captured = capsys.readouterr()
    assert "worse: cross-validated macro-F1 drops from" in captured.out
    assert "complaint-model-v2.npz but did not install it; rerun with --force" in captured.err
    assert (models / "current.npz").read_bytes() == before
    v2 = json.loads((models / "complaint-model-v2.json").read_text(encoding="utf-8"))
    assert v2["training_set"]["team_label_counts"] == {"complaint": 15, "other": 15}
    assert v2["retrain"]["installed"] is False and v2["retrain"]["drops"]

    assert main([*train, "--force"]) == 0
    assert (models / "current.npz").read_bytes() == (models / "complaint-model-v3.npz").read_bytes()
    assert json.loads((models / "current.json").read_text(encoding="utf-8"))["retrain"]["forced"] is True


def test_retrain_without_labels_or_data_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'mentiondesk.db'}"
    asyncio.run(_store_posts(db_url, ["my parcel is late"]))
    config = write_config(tmp_path, db_url)
    assert main(["classifier", "train", "--config", str(config), "--data", str(tmp_path / "nope.csv")]) == 2
    assert f"no base training data at {tmp_path / 'nope.csv'}; name the complaints CSV with --data" in (
        capsys.readouterr().err
    )
    base = write_base(tmp_path / "base.csv", n=20)
    assert main(["classifier", "train", "--config", str(config), "--data", str(base)]) == 2
    assert "the team has labelled no posts yet" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_retrain_with_the_embeddings_model_configured_says_which_script_trains_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'mentiondesk.db'}"
    asyncio.run(_store_posts(db_url, ["my parcel is late"]))
    config = write_config(tmp_path, db_url, model="embeddings")
    base = write_base(tmp_path / "base.csv", n=20)
    assert main(["classifier", "train", "--config", str(config), "--data", str(base)]) == 2
    assert "the embeddings model is trained by scripts/train_embeddings.py" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_retrain_on_a_database_not_yet_upgraded_says_to_upgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_file = tmp_path / "mentiondesk.db"
    db_file.touch()  # exists, but no schema
    config = write_config(tmp_path, f"sqlite+aiosqlite:///{db_file}")
    base = write_base(tmp_path / "base.csv", n=20)
    assert main(["classifier", "train", "--config", str(config), "--data", str(base)]) == 1
    assert "run `mentiondesk db upgrade`" in capsys.readouterr().err


def test_models_folder_is_beside_sqlite_and_must_be_set_for_postgres(tmp_path: Path) -> None:
    assert models_folder(None, f"sqlite+aiosqlite:///{tmp_path / 'd.db'}") == tmp_path / "models"
    assert models_folder(tmp_path / "m", "postgresql+asyncpg://u@h/db") == tmp_path / "m"
    with pytest.raises(RetrainError, match=r"set classifier\.models_dir"):
        models_folder(None, "postgresql+asyncpg://u@h/db")


def test_without_scikit_learn_train_exits_2_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'mentiondesk.db'}")
    # As if scikit-learn were not installed: importing it fails, and the training modules load afresh.
    for name in [m for m in sys.modules if m.split(".")[0] == "sklearn"] or ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("retrain", "recipe", "training"):
        monkeypatch.delitem(sys.modules, f"mentiondesk.bot.classify.{name}", raising=False)
        monkeypatch.delattr(mentiondesk.bot.classify, name, raising=False)
    assert main(["classifier", "train", "--config", str(config)]) == 2
    assert "install mentiondesk[train]" in capsys.readouterr().err


def test_triage_threshold_leaves_at_most_5_percent_of_complaints_below_it() -> None:
    # 100 complaints scoring 0.00..0.99 and 100 others at 0.05: 5 complaints score below 0.05.
    y = np.array([1] * 100 + [0] * 100, dtype=np.int64)
    scores = np.concatenate([np.arange(100) / 100, np.full(100, 0.05)])
    assert triage_threshold(y, scores, ticket_threshold=0.5) == 0.05
    # Never at or above the ticket threshold, even when complaints all score high.
    assert triage_threshold(y, np.where(y == 1, 0.9, 0.1), ticket_threshold=0.5) == 0.49
    split = bands(y, scores, ticket=0.5, triage=0.05)
    assert split["ticket"]["share_of_complaints"] == 0.5
    assert split["stored"]["complaints"] == 5 and split["stored"]["posts"] == 5
    assert split["triage"]["posts"] == 45 + 100 and split["triage"]["precision"] == round(45 / 145, 4)
