"""The optional embeddings model: a fine-tuned MiniLM sentence encoder served through ONNX Runtime (8-bit).

Installed with ``pip install 'mentiondesk[ml]'`` (onnxruntime and tokenizers; no PyTorch, no transformers).
``scripts/train_embeddings.py`` fine-tunes all-MiniLM-L6-v2 with a mean-pooling classification head, exports
it to ONNX and stores its weights in 8 bits; the artifact directory holds ``model.onnx``, the encoder's
``tokenizer.json`` and ``model.json`` (settings, checksum, thresholds, probe texts and their scores).

The public interface is the one of ``model.ComplaintClassifier`` (see ``loading.Classifier``), so the daemon
and the CLI take either model.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mentiondesk.bot.classify.embedding_text import prepare_text
from mentiondesk.bot.classify.model import (
    COMPLAINT,
    OTHER,
    Classification,
    ClassifierError,
    _sha256,
    check_probes,
    parse_probability,
    read_metadata,
)

if TYPE_CHECKING:
    import onnxruntime
    import tokenizers

__all__ = [
    "ARTIFACT_FORMAT",
    "DEFAULT_MODEL_DIR",
    "INSTALL_HINT",
    "EmbeddingsClassifier",
    "EncodedBatch",
    "configure_tokenizer",
    "pad",
]

ARTIFACT_FORMAT = "mentiondesk-complaint-embeddings-onnx/1"
DEFAULT_MODEL_DIR = Path(__file__).parent / "artifacts" / "embeddings"
METADATA_NAME = "model.json"
TOKENIZER_NAME = "tokenizer.json"
INSTALL_HINT = "pip install 'mentiondesk[ml]'"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

# One post per run of the graph. Its int8 MatMuls quantise activations by one range per run, so a post run with
# others could score differently than alone; on its own its score is its own, and nothing is padded. On one
# thread ONNX Runtime gains little from batches at tweet lengths anyway: runs of 1 scored 195 posts/s on one
# core, runs of 2 204, runs of 64 100-122. A call still scores a whole ingest batch.
SCORE_BATCH = 1
SCORE_BATCH_TOKENS = SCORE_BATCH * 64
# int8 matrix products can round differently on CPUs with and without VNNI instructions; 2e-3 in probability
# is far below any difference in decisions yet catches a different tokenizer, preprocessing or graph.
PROBE_TOLERANCE = 2e-3
MAX_LEN_RANGE = (8, 512)


@dataclass(frozen=True)
class EncodedBatch:
    """One padded batch: arrays of shape (posts, longest post in word pieces), int64 as BERT graphs take."""

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    token_type_ids: npt.NDArray[np.int64]

    def feeds(self, names: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
        arrays = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }
        return {name: arrays[name] for name in names}


def _import_runtime() -> tuple[Any, Any]:
    """onnxruntime and tokenizers, or a ClassifierError naming the extra that installs them."""
    try:
        ort = importlib.import_module("onnxruntime")
        tok = importlib.import_module("tokenizers")
    except ImportError as exc:
        raise ClassifierError(
            f"the embeddings model needs onnxruntime and tokenizers ({exc}); install them with: {INSTALL_HINT}"
        ) from exc
    return ort, tok


def configure_tokenizer(tokenizer: tokenizers.Tokenizer, max_len: int) -> None:
    """Truncate to max_len word pieces and never pad: padding is done per batch, to its own longest post."""
    tokenizer.enable_truncation(max_length=max_len)
    tokenizer.no_padding()


def pad(encodings: Sequence[tokenizers.Encoding]) -> EncodedBatch:
    """Pad tokenised posts to the longest of them; training and runtime both batch through this."""
    width = max((len(e.ids) for e in encodings), default=0)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = enc.attention_mask
        types[row, :n] = enc.type_ids
    return EncodedBatch(ids, mask, types)


def _length_batches(lengths: Sequence[int]) -> Iterator[list[int]]:
    """Indices grouped by similar length (shortest first) so that little of each batch is padding."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batch: list[int] = []
    for i in order:
        # Sorted ascending, so the post being added is the batch's longest: its length sets the padded width.
        if batch and (len(batch) == SCORE_BATCH or (len(batch) + 1) * lengths[i] > SCORE_BATCH_TOKENS):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _read_metadata(json_path: Path) -> dict[str, Any]:
    return read_metadata(json_path, (ARTIFACT_FORMAT,), ARTIFACT_FORMAT)


def _max_len(meta: Mapping[str, Any], json_path: Path) -> int:
    value = meta.get("max_len")
    low, high = MAX_LEN_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ClassifierError(f"{json_path}: max_len {value!r} is not a whole number in [{low}, {high}]")
    return value


def _languages(meta: Mapping[str, Any], json_path: Path) -> tuple[str, ...]:
    value = meta.get("languages")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ClassifierError(f"{json_path}: languages {value!r} is not a non-empty list of language codes")
    return tuple(value)


def _resolve(path: Path | None) -> tuple[Path, Path]:
    """(the .onnx file, its model.json) for an artifact directory or the .onnx file inside one."""
    target = Path(path) if path is not None else DEFAULT_MODEL_DIR
    if target.is_dir():
        json_path = target / METADATA_NAME
        name = _read_metadata(json_path).get("onnx_file")
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise ClassifierError(f"{json_path}: onnx_file {name!r} is not a file name")
        return target / name, json_path
    if target.suffix != ".onnx":
        raise ClassifierError(f"{target}: not an embeddings model (expected a directory or an .onnx file)")
    return target, target.parent / METADATA_NAME


class EmbeddingsClassifier:
    """Scores posts with the ONNX encoder; immutable after construction, safe to share between threads."""

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        tokenizer: tokenizers.Tokenizer,
        *,
        threshold: float,
        triage_threshold: float,
        languages: Sequence[str],
        metadata: dict[str, Any],
    ):
        inputs = [i.name for i in session.get_inputs()]
        unknown = [name for name in inputs if name not in INPUT_NAMES]
        if unknown or "input_ids" not in inputs:
            raise ClassifierError(f"the ONNX graph takes inputs {inputs}, expected input_ids and some of {INPUT_NAMES}")
        self._session = session
        self._inputs = tuple(inputs)
        self._tokenizer = tokenizer
        self._threshold = threshold
        self._triage_threshold = triage_threshold
        self._languages = tuple(languages)
        self._metadata = metadata

    @classmethod
    def from_files(
        cls,
        onnx_path: Path,
        tokenizer_path: Path,
        *,
        max_len: int,
        threshold: float = 0.5,
        triage_threshold: float = 0.25,
        languages: Sequence[str] = ("en",),
        metadata: dict[str, Any] | None = None,
        intra_op_threads: int = 1,
    ) -> EmbeddingsClassifier:
        """A classifier on these files without checksum or probe checks (the training script's own use)."""
        ort, tok = _import_runtime()
        try:
            tokenizer = tok.Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises plain Exception for unreadable or malformed files
            raise ClassifierError(f"{tokenizer_path}: cannot read the tokenizer ({exc})") from exc
        configure_tokenizer(tokenizer, max_len)
        options = ort.SessionOptions()
        # One core by default: the daemon shares the machine, and batching, not threads, is how it keeps up.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types, not a common base
            raise ClassifierError(f"{onnx_path}: onnxruntime cannot load the model ({exc})") from exc
        return cls(
            session,
            tokenizer,
            threshold=threshold,
            triage_threshold=triage_threshold,
            languages=languages,
            metadata=metadata if metadata is not None else {},
        )

    @classmethod
    def load(cls, path: Path | None = None, *, intra_op_threads: int = 1) -> EmbeddingsClassifier:
        """Load an artifact directory (default: the packaged one) or the ``.onnx`` file inside one."""
        _import_runtime()  # a missing extra is the likelier problem: name it before any file check
        onnx_path, json_path = _resolve(path)
        if not onnx_path.is_file():
            raise ClassifierError(f"{onnx_path}: model file is missing")
        meta = _read_metadata(json_path)
        if meta.get("onnx_sha256") != _sha256(onnx_path):
            raise ClassifierError(
                f"{onnx_path}: checksum does not match {json_path.name} (artifact corrupt or files mismatched)"
            )
        tokenizer_path = json_path.parent / TOKENIZER_NAME
        if not tokenizer_path.is_file():
            raise ClassifierError(f"{tokenizer_path}: tokenizer file is missing")
        threshold = parse_probability(meta, "threshold", json_path)
        triage = parse_probability(meta, "triage_threshold", json_path)
        if triage > threshold:
            raise ClassifierError(f"{json_path}: triage_threshold {triage} is above threshold {threshold}")
        clf = cls.from_files(
            onnx_path,
            tokenizer_path,
            max_len=_max_len(meta, json_path),
            threshold=threshold,
            triage_threshold=triage,
            languages=_languages(meta, json_path),
            metadata=meta,
            intra_op_threads=intra_op_threads,
        )
        clf._check_probes(json_path)
        return clf

    def _check_probes(self, json_path: Path) -> None:
        check_probes(
            self.score_many,
            self._metadata,
            json_path,
            tolerance=PROBE_TOLERANCE,
            differs="the tokenizer, preprocessing or graph differ from those the model was trained with",
        )

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def triage_threshold(self) -> float:
        """Below this score a post is very unlikely to be a complaint (about 5% of complaints score lower)."""
        return self._triage_threshold

    @property
    def languages(self) -> tuple[str, ...]:
        return self._languages

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

    def score_many(self, texts: Sequence[str]) -> list[float]:
        """Probability of complaint for each text, in input order."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        scores = self.run(texts, "score").reshape(-1).astype(np.float64)
        if not np.all(np.isfinite(scores)):
            raise ClassifierError("the model returned a non-finite score")
        result: list[float] = np.clip(scores, 0.0, 1.0).tolist()
        return result

    def run(self, texts: Sequence[str], output: str) -> npt.NDArray[np.float32]:
        """One output of the graph for each text, in input order (rows of a 2-D array for vector outputs)."""
        # Sequential encode, not encode_batch: the latter spreads over every core, and scoring keeps to one.
        encodings = [self._tokenizer.encode(prepare_text(t)) for t in texts]
        rows: list[npt.NDArray[np.float32]] = [np.empty(0, dtype=np.float32)] * len(encodings)
        for batch in _length_batches([len(e.ids) for e in encodings]):
            (out,) = self._session.run([output], pad([encodings[i] for i in batch]).feeds(self._inputs))
            for row, i in zip(np.asarray(out, dtype=np.float32), batch, strict=True):
                rows[i] = row
        return np.stack(rows) if rows else np.zeros((0,), dtype=np.float32)

    def classify_many(self, texts: Sequence[str], threshold: float | None = None) -> list[Classification]:
        cut = self._threshold if threshold is None else threshold
        return [Classification(COMPLAINT if score >= cut else OTHER, score) for score in self.score_many(texts)]

    def classify(self, text: str, threshold: float | None = None) -> Classification:
        return self.classify_many([text], threshold)[0]
