"""Writing a fitted model as the artifact pair ``<name>.npz`` + ``<name>.json`` (numpy only).

The arrays go in a zip written byte for byte reproducibly; the JSON holds the feature settings, the
thresholds, the figures and the probe scores that ``ComplaintClassifier.load`` checks. Both files are
written under temporary names and renamed into place, JSON last, so a reader never sees a half-written
file; one that loads between the two renames gets a checksum mismatch, an error, never a wrong model.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mentiondesk.bot.classify.features import FeatureBlock
from mentiondesk.bot.classify.model import ARTIFACT_FORMAT, ComplaintClassifier, _densify, _read_npz, _sha256
from mentiondesk.bot.classify.style import StyleSetting

__all__ = ["PROBE_TEXTS", "LinearModel", "probe_scores", "sparse_arrays", "write_artifact", "write_npz"]

# Hand-written, not from the data set: they pin the feature space at load time (see model.py).
PROBE_TEXTS = [
    "@shop my parcel has been 'out for delivery' for six days and nobody answers 😡 https://t.co/x",
    "Thank you @cafe, the new oat latte is lovely! 🎉",
    "Does the winter sale include the kids' range?",
    "Third refund request and still nothing. Cancelling my subscription.",
    "",
    "ÅÉÎ ｆｕｌｌｗｉｄｔｈ\u0000\u202e text\tand\nnewlines",
]


class LinearModel(Protocol):
    """What a fitted model must provide to be written (``training.Fitted`` does)."""

    idf: list[npt.NDArray[np.float64]]
    df: list[npt.NDArray[np.int64]]
    coef: list[npt.NDArray[np.float64]]
    intercept: float
    style_mean: npt.NDArray[np.float64] | None
    style_scale: npt.NDArray[np.float64] | None
    style_coef: npt.NDArray[np.float64] | None


def sparse_arrays(model: LinearModel, blocks: Sequence[FeatureBlock]) -> dict[str, npt.NDArray[Any]]:
    arrays: dict[str, npt.NDArray[Any]] = {}
    for i, _block in enumerate(blocks):
        idf, df, block_coef = model.idf[i], model.df[i], model.coef[i]
        unseen = idf[df == 0]
        # Columns never seen in training all share one IDF value; storing it once keeps the file small.
        default = float(unseen[0]) if unseen.size else float(idf.max())
        seen = np.flatnonzero(df > 0).astype(np.int32)
        nz = np.flatnonzero(block_coef).astype(np.int32)
        arrays[f"idf_index_{i}"] = seen
        arrays[f"idf_value_{i}"] = idf[seen].astype(np.float32)
        arrays[f"idf_default_{i}"] = np.array(default, dtype=np.float64)
        arrays[f"coef_index_{i}"] = nz
        arrays[f"coef_value_{i}"] = block_coef[nz].astype(np.float32)
    arrays["intercept"] = np.array(float(model.intercept), dtype=np.float64)
    if model.style_coef is not None and model.style_mean is not None and model.style_scale is not None:
        # A few dozen numbers: kept in float64, so the style block adds no storage error at all.
        arrays["style_mean"] = np.asarray(model.style_mean, dtype=np.float64)
        arrays["style_scale"] = np.asarray(model.style_scale, dtype=np.float64)
        arrays["style_coef"] = np.asarray(model.style_coef, dtype=np.float64)
    return arrays


def write_npz(path: Path, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """Like np.savez_compressed, but byte-for-byte reproducible.

    numpy stamps each zip member with the current time, so identical arrays would give a different
    file (and artifact_sha256) on every run; a fixed timestamp and sorted members avoid that.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(arrays[name]), allow_pickle=False)


def runtime_classifier(
    npz_path: Path, blocks: Sequence[FeatureBlock], threshold: float, style: StyleSetting | None = None
) -> ComplaintClassifier:
    """The runtime scorer over the arrays as stored (float32), without load()'s probe check."""
    arrays = _densify(_read_npz(npz_path), blocks, npz_path, with_style=style is not None)
    return ComplaintClassifier(blocks, arrays, threshold, {}, style=style)


def probe_scores(
    npz_path: Path, blocks: Sequence[FeatureBlock], threshold: float, style: StyleSetting | None = None
) -> list[dict[str, Any]]:
    # Scored through the runtime code on the arrays as stored, so load-time checks match.
    clf = runtime_classifier(npz_path, blocks, threshold, style)
    return [{"text": t, "score": round(s, 6)} for t, s in zip(PROBE_TEXTS, clf.score_many(PROBE_TEXTS), strict=True)]


def _replace(tmp: Path, final: Path) -> None:
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def write_artifact(
    npz_path: Path,
    model: LinearModel,
    blocks: Sequence[FeatureBlock],
    *,
    threshold: float,
    triage_threshold: float,
    metadata: Mapping[str, Any],
    style: StyleSetting | None = None,
) -> dict[str, Any]:
    """Write the pair at ``npz_path`` (and its ``.json``) and return the metadata written.

    ``metadata`` adds descriptive keys (figures, training set, notes); the keys the loader relies on
    (format, features, thresholds, languages, checksum, probes) are set here.
    """
    npz_path = npz_path.with_suffix(".npz")
    json_path = npz_path.with_suffix(".json")
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_npz = npz_path.with_name(f".{npz_path.name}.{os.getpid()}.tmp")
    tmp_json = json_path.with_name(f".{json_path.name}.{os.getpid()}.tmp")
    try:
        write_npz(tmp_npz, sparse_arrays(model, blocks))
        meta: dict[str, Any] = {
            "format": ARTIFACT_FORMAT,
            **metadata,
            "features": {
                **dict(metadata.get("features", {})),
                "blocks": [b.to_json() for b in blocks],
                **({} if style is None else {"style": style.to_json()}),
            },
            "threshold": threshold,
            "triage_threshold": triage_threshold,
            # The training data are English posts; other languages go to triage (see docs/classifier.md).
            "languages": list(metadata.get("languages", ["en"])),
            "artifact_sha256": _sha256(tmp_npz),
            "probes": probe_scores(tmp_npz, blocks, threshold, style),
        }
        tmp_json.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _replace(tmp_npz, npz_path)
        _replace(tmp_json, json_path)
    finally:
        tmp_npz.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
    ComplaintClassifier.load(npz_path)  # fails loudly if the pair just written does not load
    return meta
