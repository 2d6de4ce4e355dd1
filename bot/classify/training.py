"""scikit-learn featurisation for training only (``scripts/train_classifier.py`` and the tests).

Needs the ``train`` extra (``pip install -e '.[train]'``). Nothing the daemon runs may import this
module: scikit-learn and scipy cost it ~90 MiB of memory. At run time
``mentiondesk.bot.classify.features`` computes the same counts with numpy alone, and
``mentiondesk.bot.classify.model.block_scores`` the same weighting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

from mentiondesk.bot.classify.features import FeatureBlock

__all__ = ["hash_counts", "make_hashers", "weight_block"]


def make_hashers(blocks: Sequence[FeatureBlock]) -> list[HashingVectorizer]:
    hashers = []
    for block in blocks:
        kwargs: dict[str, Any] = {}
        if block.token_pattern is not None:
            kwargs["token_pattern"] = block.token_pattern
        hashers.append(
            HashingVectorizer(
                analyzer=block.analyzer,
                ngram_range=block.ngram_range,
                n_features=block.n_features,
                # Texts arrive already normalised; a second lowercase pass would only cost time.
                lowercase=False,
                # Counts must stay non-negative for IDF weighting and raw for the L2 norm below.
                alternate_sign=False,
                norm=None,
                dtype=np.float64,
                **kwargs,
            )
        )
    return hashers


def hash_counts(hashers: Sequence[HashingVectorizer], normalised: Sequence[str]) -> list[sp.csr_matrix]:
    return [sp.csr_matrix(h.transform(normalised)) for h in hashers]


def weight_block(counts: sp.csr_matrix, idf: npt.NDArray[np.float64], sublinear_tf: bool) -> sp.csr_matrix:
    """TF-IDF with per-row L2 normalisation, matching sklearn's TfidfVectorizer(norm="l2")."""
    weighted = counts.copy()
    if sublinear_tf:
        np.log(weighted.data, out=weighted.data)
        weighted.data += 1.0
    weighted.data *= idf[weighted.indices]
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    norms[norms == 0.0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ weighted)
