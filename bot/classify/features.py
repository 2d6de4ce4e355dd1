"""Hashed n-gram counts, bit for bit what scikit-learn's ``HashingVectorizer`` gives, with numpy only.

The model was trained on ``HashingVectorizer(analyzer=..., ngram_range=..., n_features=...,
lowercase=False, alternate_sign=False, norm=None)`` counts. Importing scikit-learn (and scipy with it)
to recompute them costs the daemon ~90 MiB of memory, so this module reproduces them instead:

- n-grams as sklearn's analyzers build them: ``word`` finds tokens with the token pattern and joins
  n consecutive tokens with one space; ``char`` first turns every run of two or more whitespace
  characters into one space (a single tab or newline stays as it is), then takes every substring of
  each length; ``char_wb`` pads each whitespace-separated word with a space on both sides;
- each n-gram hashed with MurmurHash3 (x86, 32-bit, seed 0, signed) over its UTF-8 bytes;
- column ``abs(hash) % n_features``, and counts of equal columns in one row summed.

The hashing is vectorised: every n-gram of a batch is a contiguous run of bytes in one UTF-8 buffer
(for word n-grams, the buffer of the tokens joined by single spaces), so a batch is hashed as arrays of
(start, length) spans in a few numpy passes instead of one Python call per n-gram.
tests/test_classifier_features.py compares the result with scikit-learn on many generated texts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_TOKEN_PATTERN", "BlockCounts", "FeatureBlock", "hash_columns", "hash_counts", "murmurhash3_spans"]

# scikit-learn's default, used when a word block names no pattern of its own.
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_WHITE_SPACES = re.compile(r"\s\s+")

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class FeatureBlock:
    """Settings of one hashed n-gram block; the JSON stores a list of these."""

    name: str
    analyzer: str  # "word" | "char" | "char_wb"
    ngram_range: tuple[int, int]
    n_features: int
    token_pattern: str | None = None  # word blocks only
    sublinear_tf: bool = True
    # False: n-grams of the text with its case kept ("NEVER AGAIN" reads differently from "never again").
    lowercase: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "analyzer": self.analyzer,
            "ngram_range": list(self.ngram_range),
            "n_features": self.n_features,
            "token_pattern": self.token_pattern,
            "sublinear_tf": self.sublinear_tf,
            "lowercase": self.lowercase,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FeatureBlock:
        lo, hi = raw["ngram_range"]
        block = cls(
            name=str(raw["name"]),
            analyzer=str(raw["analyzer"]),
            ngram_range=(int(lo), int(hi)),
            n_features=int(raw["n_features"]),
            token_pattern=None if raw.get("token_pattern") is None else str(raw["token_pattern"]),
            sublinear_tf=bool(raw["sublinear_tf"]),
            # Artifacts of format 1 predate the key: every block then read lowercased text.
            lowercase=bool(raw.get("lowercase", True)),
        )
        if block.analyzer not in {"word", "char", "char_wb"}:
            raise ValueError(f"unknown analyzer {block.analyzer!r}")
        lo, hi = block.ngram_range
        if not 1 <= lo <= hi <= 10 or not 1 <= block.n_features <= 2**24:
            raise ValueError(f"implausible settings for block {block.name!r}")
        return block


@dataclass(frozen=True)
class BlockCounts:
    """One block's counts for a batch in coordinate form, sorted by (row, column), no repeated pairs.

    The same entries as the CSR matrix ``HashingVectorizer.transform`` returns: ``rows[i]``,
    ``columns[i]`` and ``counts[i]`` are one stored entry.
    """

    n_rows: int
    rows: Int64Array
    columns: Int64Array
    counts: npt.NDArray[np.float64]


# --------------------------------------------------------------------------- MurmurHash3


_C1 = np.uint32(0xCC9E2D51)
_C2 = np.uint32(0x1B873593)


def _rotl(x: npt.NDArray[np.uint32], r: int) -> npt.NDArray[np.uint32]:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _mix_k1(k1: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    return _rotl(k1 * _C1, 15) * _C2


def murmurhash3_spans(data: bytes, starts: Int64Array, lengths: Int64Array) -> npt.NDArray[np.int32]:
    """MurmurHash3_x86_32 (seed 0, signed) of ``data[start:start + length]`` for each span.

    Equal to ``sklearn.utils.murmurhash3_32(key, 0, positive=False)`` and ``mmh3.hash(key, 0, True)``.
    Costs one numpy pass per 4 bytes of the longest span, so it suits many short keys.
    """
    # Four zero bytes of padding let every 4-byte read below stay inside the buffer; the bytes
    # past a span's end are masked off in the tail.
    buf = np.frombuffer(data + b"\0\0\0\0", dtype=np.uint8)
    # Every byte offset as the start of a little-endian 32-bit word: the blocks of a span need
    # not be aligned, and one gather per block beats assembling four bytes.
    words = np.ndarray(shape=(buf.size - 3,), dtype="<u4", buffer=buf, strides=(1,))
    h = np.zeros(starts.size, dtype=np.uint32)
    n_blocks = lengths >> 2
    with np.errstate(over="ignore"):  # all arithmetic here is modulo 2**32 by design
        k = 0
        live = np.flatnonzero(n_blocks > 0)
        while live.size:
            hh = h[live] ^ _mix_k1(words[starts[live] + 4 * k])
            h[live] = _rotl(hh, 13) * np.uint32(5) + np.uint32(0xE6546B64)
            k += 1
            live = live[n_blocks[live] > k]
        tail_len = (lengths & 3).astype(np.uint32)
        tailed = np.flatnonzero(tail_len)
        tail = words[starts[tailed] + 4 * n_blocks[tailed]]
        tail &= (np.uint32(1) << (np.uint32(8) * tail_len[tailed])) - np.uint32(1)
        h[tailed] ^= _mix_k1(tail)
        h ^= lengths.astype(np.uint32)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h.view(np.int32)


def hash_columns(hashes: npt.NDArray[np.int32], n_features: int) -> Int64Array:
    """The column of each signed 32-bit hash: ``abs(hash) % n_features``."""
    # sklearn special-cases a hash of -2**31 (abs() of it overflows in 32 bits) so that the column is
    # 2**31 % n_features; in 64 bits abs() does not overflow and gives that same column.
    return np.abs(hashes.astype(np.int64)) % n_features


# --------------------------------------------------------------------------- n-gram spans


@dataclass(frozen=True)
class _Spans:
    """The n-grams of a batch as byte spans of one UTF-8 buffer, each with the row it belongs to."""

    data: bytes
    starts: Int64Array
    lengths: Int64Array
    rows: Int64Array


def _byte_offsets(text: str) -> Int64Array:
    """UTF-8 byte offset of every character boundary of ``text`` (len(text) + 1 entries)."""
    # Lone surrogates cannot be UTF-8 encoded; sklearn's hashing raises on them too.
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    width = 1 + (code_points >= 0x80) + (code_points >= 0x800) + (code_points >= 0x10000)
    offsets = np.zeros(code_points.size + 1, dtype=np.int64)
    np.cumsum(width, out=offsets[1:])
    return offsets


def _group_spans(
    joined: str, piece_lengths: Int64Array, piece_rows: Int64Array, sep: int, ngram_range: tuple[int, int]
) -> _Spans:
    """Spans of n consecutive pieces of ``joined`` (pieces separated by ``sep`` characters), within a row.

    ``joined`` is the pieces in order with ``sep`` characters after each; n-grams never cross rows.
    """
    char_at = _byte_offsets(joined)
    piece_start = np.zeros(piece_lengths.size, dtype=np.int64)
    np.cumsum(piece_lengths[:-1] + sep, out=piece_start[1:])
    piece_end = piece_start + piece_lengths
    starts, lengths, rows = [], [], []
    lo, hi = ngram_range
    for n in range(lo, hi + 1):
        first = np.arange(max(piece_lengths.size - n + 1, 0))
        first = first[piece_rows[first] == piece_rows[first + n - 1]]
        begin, end = char_at[piece_start[first]], char_at[piece_end[first + n - 1]]
        starts.append(begin)
        lengths.append(end - begin)
        rows.append(piece_rows[first])
    return _Spans(joined.encode("utf-8"), np.concatenate(starts), np.concatenate(lengths), np.concatenate(rows))


def _word_spans(block: FeatureBlock, texts: Sequence[str]) -> _Spans:
    pattern = re.compile(block.token_pattern or DEFAULT_TOKEN_PATTERN)
    if pattern.groups > 1:
        raise ValueError("More than 1 capturing group in token pattern. Only a single group should be captured.")
    tokens: list[str] = []
    per_text = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        found = pattern.findall(text)
        per_text[i] = len(found)
        tokens += found
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), per_text)
    # sklearn joins the tokens of a word n-gram with one space, so in the tokens joined by single
    # spaces every n-gram is the contiguous run from its first token's start to its last token's end.
    return _group_spans(" ".join(tokens), lengths, rows, 1, block.ngram_range)


def _char_spans(block: FeatureBlock, texts: Sequence[str]) -> _Spans:
    # Each character is a piece, so character n-grams are runs of n consecutive pieces.
    texts = [_WHITE_SPACES.sub(" ", t) for t in texts]
    joined = "".join(texts)
    per_text = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), per_text)
    return _group_spans(joined, np.ones(len(joined), dtype=np.int64), rows, 0, block.ngram_range)


def _char_wb_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    # A plain port of sklearn's _char_wb_ngrams: no trained model uses it now, so it is kept simple.
    lo, hi = ngram_range
    ngrams = []
    for word in _WHITE_SPACES.sub(" ", text).split():
        padded = f" {word} "
        for n in range(lo, hi + 1):
            offset = 0
            ngrams.append(padded[offset : offset + n])
            while offset + n < len(padded):
                offset += 1
                ngrams.append(padded[offset : offset + n])
            if offset == 0:  # a word shorter than n counts once, not once per longer n
                break
    return ngrams


def _char_wb_spans(block: FeatureBlock, texts: Sequence[str]) -> _Spans:
    ngrams: list[str] = []
    per_text = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        found = _char_wb_ngrams(text, block.ngram_range)
        per_text[i] = len(found)
        ngrams += found
    lengths = np.fromiter(map(len, ngrams), dtype=np.int64, count=len(ngrams))
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), per_text)
    return _group_spans(" ".join(ngrams), lengths, rows, 1, (1, 1))


_SPANS = {"word": _word_spans, "char": _char_spans, "char_wb": _char_wb_spans}


def hash_counts(block: FeatureBlock, texts: Sequence[str]) -> BlockCounts:
    """The block's hashed n-gram counts for each text, as ``HashingVectorizer.transform`` counts them."""
    spans = _SPANS[block.analyzer](block, texts)
    columns = hash_columns(murmurhash3_spans(spans.data, spans.starts, spans.lengths), block.n_features)
    keys, counts = np.unique(spans.rows * block.n_features + columns, return_counts=True)
    rows, columns = np.divmod(keys, block.n_features)
    return BlockCounts(len(texts), rows, columns, counts.astype(np.float64))
