"""``mentiondesk classifier train``: retrain the complaint model on the base data plus the team's labels.

"Before" is the installed model: its figures on the team-labelled posts (which it never saw) and the
cross-validated figures recorded when it was trained. "After" is the new model, trained the same way as
the installed one on the base data plus the team's posts: its out-of-fold figures on the same team posts
(each scored by a fold model that did not train on it) and its cross-validated figures on all the data.
The new model is always written as ``complaint-model-v<N>`` in the models folder; it replaces
``current`` only when neither figure dropped, or with ``force``. Needs the ``train`` extra.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mentiondesk.bot.classify.evaluation import GENERAL_DOMAINS, LabelledPosts, read_labelled
from mentiondesk.bot.classify.export import write_artifact
from mentiondesk.bot.classify.loading import load_classifier
from mentiondesk.bot.classify.model import DEFAULT_MODEL_PATH, ClassifierError, ComplaintClassifier
from mentiondesk.bot.classify.recipe import Outcome, config_from_metadata, train
from mentiondesk.bot.classify.tuning import metrics
from mentiondesk.storage.db import DatabaseError, current_revision, head_revision, open_engine, session_factory
from mentiondesk.storage.labels import TeamLabel, team_labels
from mentiondesk.storage.urls import sqlite_path

__all__ = ["RetrainError", "Retrained", "models_folder", "read_team_labels", "retrain"]

CURRENT = "current"
# The shipped training file lives outside the package (it may not be redistributed inside it); in a checkout
# it sits beside the repository, as scripts/train_classifier.py expects.
DEFAULT_BASE_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "complaints-train.csv"
_VERSION_RE = re.compile(r"complaint-model-v(\d+)\.npz")


class RetrainError(Exception):
    """Retraining cannot start (no data, no models folder); the message says what to fix."""


@dataclass(frozen=True)
class Retrained:
    version_path: Path  # the new complaint-model-v<N>.npz
    installed: bool  # current.{npz,json} now holds it
    drops: list[str]  # the figures that dropped, one sentence each; empty when none did
    report: str  # the before/after table a person reads


def models_folder(models_dir: Path | None, database_url: str) -> Path:
    """The configured folder, or ``models`` beside the SQLite database; Postgres has no such place."""
    if models_dir is not None:
        return models_dir
    db_file = sqlite_path(database_url)
    if db_file is None:
        raise RetrainError(
            "set classifier.models_dir in the config: with this database there is no folder beside it to keep "
            "retrained models in"
        )
    return db_file.parent / "models"


async def read_team_labels(database_url: str) -> list[TeamLabel]:
    engine = await open_engine(database_url, create=False)
    try:
        current, head = await current_revision(engine), head_revision()
        if current != head:
            raise DatabaseError(
                f"database schema is at {current or 'nothing'}, this version needs {head}: run `mentiondesk db upgrade`"
            )
        async with session_factory(engine)() as session:
            return await team_labels(session)
    finally:
        await engine.dispose()


def _next_version(folder: Path) -> int:
    found = [int(m.group(1)) for p in folder.glob("complaint-model-v*.npz") if (m := _VERSION_RE.fullmatch(p.name))]
    return max(found, default=0) + 1


def _install(version_npz: Path, folder: Path) -> None:
    """Make ``current.{npz,json}`` the given version: copy under temporary names, rename, JSON last."""
    for suffix in (".npz", ".json"):
        tmp = folder / f".{CURRENT}{suffix}.{os.getpid()}.tmp"
        shutil.copyfile(version_npz.with_suffix(suffix), tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, folder / f"{CURRENT}{suffix}")


def _figures_on(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics(labels, scores, threshold).items()}


def _training_setting(installed: ComplaintClassifier) -> dict[str, Any]:
    # A model with no n-gram setting to repeat (e.g. the optional embeddings model) is retrained with the
    # packaged default's setting.
    meta = dict(installed.metadata)
    if "features" in meta and "classifier" in meta and "blocks" in meta.get("features", {}):
        return meta
    return dict(ComplaintClassifier.load(DEFAULT_MODEL_PATH).metadata)


def retrain(
    *,
    base: LabelledPosts,
    base_path: Path,
    labels: Sequence[TeamLabel],
    installed: ComplaintClassifier,
    folder: Path,
    force: bool,
    n_folds: int = 10,
    progress: Callable[[str], None] = lambda _msg: None,
) -> Retrained:
    """Train, compare, write ``complaint-model-v<N>`` and install it as ``current`` unless it is worse."""
    if not labels:
        raise RetrainError("the team has labelled no posts yet: nothing to add to the training data")
    team_texts = [label.text for label in labels]
    team_y = np.array([1 if label.complaint else 0 for label in labels], dtype=np.int64)
    texts = [*base.texts, *team_texts]
    y = np.concatenate([np.array(base.labels, dtype=np.int64), team_y])
    base_brand = [True] * len(base.texts) if base.domains is None else [d not in GENERAL_DOMAINS for d in base.domains]
    brand = np.array([*base_brand, *([True] * len(labels))])
    team_rows = np.arange(len(base.texts), len(texts))

    before_team = _figures_on(team_y, np.array(installed.score_many(team_texts)), installed.threshold)
    before_cv = installed.metadata.get("cv", {}).get("at_threshold", {})
    before_cv_f1 = _cv_macro_f1(before_cv)

    config = config_from_metadata(_training_setting(installed))
    outcome = train(texts, y, config, brand=brand, n_folds=n_folds, inner_folds=0, progress=progress)
    after_team = _figures_on(team_y, outcome.oof[team_rows], outcome.threshold)
    after_cv_f1 = outcome.macro_f1

    drops = []
    if after_team["macro_f1"] < before_team["macro_f1"]:
        drops.append(
            f"macro-F1 on the team's {len(labels)} labelled posts drops from {before_team['macro_f1']:.3f} "
            f"to {after_team['macro_f1']:.3f}"
        )
    if before_cv_f1 is not None and after_cv_f1 < before_cv_f1:
        drops.append(f"cross-validated macro-F1 drops from {before_cv_f1:.3f} to {after_cv_f1:.3f}")

    folder.mkdir(parents=True, exist_ok=True)
    version = _next_version(folder)
    version_npz = folder / f"complaint-model-v{version}.npz"
    accepted = not drops or force
    write_artifact(
        version_npz,
        outcome.model,
        outcome.config.blocks,
        threshold=outcome.threshold,
        triage_threshold=outcome.triage_threshold,
        metadata=_metadata(
            installed, base_path, base, labels, outcome, version, before_team, before_cv, after_team, drops, force
        ),
        style=outcome.config.style,
    )
    if accepted:
        _install(version_npz, folder)
    report = _report(len(labels), before_team, before_cv_f1, after_team, after_cv_f1)
    return Retrained(version_npz, accepted, drops, report)


def _cv_macro_f1(at_threshold: dict[str, Any]) -> float | None:
    # Format 2 keeps overall and brand figures apart; format 1 had the overall figures at the top.
    figures = at_threshold.get("all", at_threshold)
    value = figures.get("macro_f1", {}).get("mean") if isinstance(figures, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _report(
    n_labels: int,
    before_team: dict[str, float],
    before_cv_f1: float | None,
    after_team: dict[str, float],
    after_cv_f1: float,
) -> str:
    rows = [
        f"{'':44} {'before':>8} {'after':>8}",
        *(
            f"{f'team posts ({n_labels}): {name}':44} {before_team[key]:>8.3f} {after_team[key]:>8.3f}"
            for key, name in (
                ("macro_f1", "macro-F1"),
                ("macro_precision", "macro precision"),
                ("macro_recall", "macro recall"),
                ("complaint_f1", "complaint F1"),
            )
        ),
        f"{'cross-validated macro-F1 (all training data)':44} "
        f"{'n/a' if before_cv_f1 is None else f'{before_cv_f1:.3f}':>8} {after_cv_f1:>8.3f}",
    ]
    return "\n".join(rows)


def _metadata(
    installed: ComplaintClassifier,
    base_path: Path,
    base: LabelledPosts,
    labels: Sequence[TeamLabel],
    outcome: Outcome,
    version: int,
    before_team: dict[str, float],
    before_cv: dict[str, Any],
    after_team: dict[str, float],
    drops: list[str],
    force: bool,
) -> dict[str, Any]:
    meta = {
        k: v for k, v in installed.metadata.items() if k in ("model", "features", "citation", "published_benchmark")
    }
    complaints = sum(1 for label in labels if label.complaint)
    return {
        **meta,
        "classifier": outcome.config.to_json(),
        "languages": list(installed.languages),
        "version": version,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cv": outcome.cv,
        "training_set": {
            "file": base_path.name,
            "sha256": hashlib.sha256(base_path.read_bytes()).hexdigest(),
            "rows": len(base.texts) + len(labels),
            "base_rows": len(base.texts),
            "team_labels": len(labels),
            "team_label_counts": {"complaint": complaints, "other": len(labels) - complaints},
            "last_label_at": max(label.decided_at for label in labels).isoformat(),
        },
        "retrain": {
            "replaces": installed.metadata.get("version", "packaged default"),
            "before": {"team_posts": before_team, "cv_at_threshold": before_cv},
            "after": {"team_posts_out_of_fold": after_team},
            "drops": drops,
            "installed": not drops or force,
            "forced": bool(drops) and force,
        },
    }


def load_base(path: Path) -> LabelledPosts:
    """The base training data; a missing file is a RetrainError naming it and the ``--data`` option."""
    if not path.is_file():
        raise RetrainError(f"no base training data at {path}; name the complaints CSV with --data CSV")
    return read_labelled(path)


def load_installed(choice: str | Path | None) -> ComplaintClassifier:
    """The installed model (classifier.model) to compare with: only the default kind is retrained here."""
    try:
        installed = load_classifier(choice)
    except ClassifierError as exc:
        raise RetrainError(f"cannot load the installed model to compare with: {exc}") from exc
    if not isinstance(installed, ComplaintClassifier):
        raise RetrainError(
            f"classifier.model is {str(choice)!r}, the embeddings model: `classifier train` retrains the default "
            "(n-gram) model; the embeddings model is trained by scripts/train_embeddings.py (docs/classifier.md)"
        )
    return installed


async def run(
    *,
    database_url: str,
    data: Path,
    model_choice: str | Path | None,
    models_dir: Path | None,
    force: bool,
    n_folds: int = 10,
    progress: Callable[[str], None] = lambda _msg: None,
) -> Retrained:
    """The whole command, the database read async and the CPU-bound training in a worker thread."""
    folder = models_folder(models_dir, database_url)
    base = await asyncio.to_thread(load_base, data)
    installed = await asyncio.to_thread(load_installed, model_choice)
    labels = await read_team_labels(database_url)
    progress(f"{len(base.texts)} base posts from {data}, {len(labels)} labelled by the team")
    return await asyncio.to_thread(
        lambda: retrain(
            base=base,
            base_path=data,
            labels=labels,
            installed=installed,
            folder=folder,
            force=force,
            n_folds=n_folds,
            progress=progress,
        )
    )
