"""Text preparation for the embeddings model, shared by its training script and its runtime.

Kept apart from ``model.normalise_text`` on purpose: the embeddings artifact was trained on exactly this
function's output, and a later change to the default model's preprocessing must not silently shift it (the
probes in ``model.json`` would then refuse to load it). Standard library only, so the training script can
import it without the runtime's optional dependencies.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_CHARS", "prepare_text"]

# The encoder reads at most max_len word pieces (64 in the shipped model, about 250 characters of English);
# cutting long input early keeps a 100k-character post from costing a full normalisation and tokenisation.
MAX_CHARS = 2000

_HANDLE_RE = re.compile(r"(?<![\w@])@\w+(?:@[\w.-]+\w)?")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")
# Control, format, surrogate, private-use and unassigned code points carry no meaning for the encoder.
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def _printable(ch: str) -> str:
    # The zero-width joiner is kept because emoji sequences need it.
    if ch == "\u200d" or unicodedata.category(ch) not in _DROP_CATEGORIES:
        return ch
    return " "


def prepare_text(text: str) -> str:
    """Canonical form of a post for the encoder; training and inference must both call this."""
    # Lone surrogates are legal in JSON strings but not in UTF-8, and the tokenizer needs UTF-8.
    text = text[: MAX_CHARS * 2].encode("utf-8", "replace").decode("utf-8")
    text = unicodedata.normalize("NFKC", text)
    if not text.isprintable():  # fast path: most posts need no per-character scan
        text = "".join(ch if ch.isprintable() else _printable(ch) for ch in text)
    # Handles and links say who and where, not whether it is a complaint; one placeholder each keeps the
    # signal that a link or another account was there without feeding the model word pieces of names.
    text = _URL_RE.sub(" http ", text)
    text = _HANDLE_RE.sub(" @user ", text)
    return _WS_RE.sub(" ", text).strip()[:MAX_CHARS]
