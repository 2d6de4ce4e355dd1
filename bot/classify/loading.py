"""Which complaint model to load: ``classifier.model = "default" | "embeddings" | <path>``.

Both models offer the ``Classifier`` protocol; the daemon and the CLI only ever hold one through it. The
embeddings model needs the ``ml`` extra, imported only when it is chosen, so the default install never
pays for onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from mentiondesk.bot.classify.model import Classification, ClassifierError, ComplaintClassifier

__all__ = ["CHOICES", "Classifier", "load_classifier"]

DEFAULT = "default"
EMBEDDINGS = "embeddings"
CHOICES = (DEFAULT, EMBEDDINGS)


class Classifier(Protocol):
    """What the daemon and the CLI need of a complaint model."""

    @property
    def threshold(self) -> float: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...

    def score_many(self, texts: Sequence[str]) -> list[float]: ...

    def classify_many(self, texts: Sequence[str], threshold: float | None = None) -> list[Classification]: ...

    def classify(self, text: str, threshold: float | None = None) -> Classification: ...


def _embeddings(path: Path | None) -> Classifier:
    from mentiondesk.bot.classify.embeddings import EmbeddingsClassifier

    return EmbeddingsClassifier.load(path)


def load_classifier(choice: str | Path | None = None) -> Classifier:
    """The model named by ``choice``: "default" (or None), "embeddings", or a path to either kind of artifact.

    A path to a directory or an ``.onnx`` file is an embeddings model; an ``.npz`` (or its ``.json``) is a
    default-format model. Raises ClassifierError when the choice names neither, or the model cannot load.
    """
    if choice is None or choice == DEFAULT:
        return ComplaintClassifier.load(None)
    if choice == EMBEDDINGS:
        return _embeddings(None)
    path = Path(choice)
    if not path.exists():
        raise ClassifierError(
            f"classifier.model {str(choice)!r}: no such file or directory (expected {DEFAULT!r}, {EMBEDDINGS!r}, "
            "a default-format .npz or an embeddings model's directory or .onnx file)"
        )
    if path.is_dir() or path.suffix == ".onnx":
        return _embeddings(path)
    if path.suffix in (".npz", ".json"):
        return ComplaintClassifier.load(path)
    raise ClassifierError(
        f"classifier.model {str(choice)!r}: unknown model file type {path.suffix!r} "
        "(expected .npz for the default format, a directory or .onnx for the embeddings model)"
    )
