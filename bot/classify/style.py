"""Post-level style and sentiment cues of complaints, one dense row per post (numpy only).

Preoțiuc-Pietro, Găman and Aletras (ACL 2019) found these predictive of complaints beyond the words
themselves: shouting (all-caps words, "!"), questions, negations, talk to "you" about "me", time and
persistence ("still", "again", "days"), intensifiers, past tense, links, handles, length, and the
sentiment of the words (here from the VADER lexicon, whose table the artifact carries so that the
daemon never imports vaderSentiment). Training and run time both call ``style_features`` on the
case-kept normalised text, so the model sees the same numbers in both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["LEXICON_TOKEN", "STYLE_NAMES", "StyleSetting", "style_features", "style_scores"]

# Word tokens with an inner apostrophe kept ("don't"), handles, and single punctuation marks.
_TOKEN = re.compile(r"@user|\w+(?:'\w+)?|[^\w\s]")
# Which lexicon entries a token can ever match; the rest (emoticons such as ":)") are left out of the table.
LEXICON_TOKEN = re.compile(r"\w+(?:'\w+)?")


def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


_NEGATIONS = _words("not never no nothing nobody none cannot cant dont didnt wont isnt doesnt havent hasnt wasnt")
_SECOND_PERSON = _words("you your yours you're youre u ur you've you'll")
_FIRST_PERSON = _words("i my me mine myself i'm im i've ive i'd")
_TIME_WORDS = _words(
    "still again yet days day hours hour weeks week months waiting since already ages now today yesterday minutes mins"
)
_INTENSIFIERS = _words(
    "very so really extremely absolutely totally completely worst terrible awful ridiculous disgusting seriously such"
)

STYLE_NAMES = (
    "share_all_caps_words",
    "log1p_exclamations",
    "log1p_questions",
    "log1p_negations",
    "log1p_second_person",
    "log1p_first_person",
    "log1p_time_words",
    "log1p_intensifiers",
    "share_ed_words",
    "has_link",
    "log1p_handles",
    "log1p_chars",
    "valence_sum_over_4",
    "valence_mean",
    "valence_min",
    "valence_max",
    "log1p_negative_words",
    "log1p_positive_words",
)


@dataclass(frozen=True)
class StyleSetting:
    """The dense block of ``style_features``: standardised, then scaled by ``alpha`` for the fit.

    ``alpha`` sets how strongly the regularisation holds the block back against the L2-normalised n-gram
    blocks: the effective penalty on a standardised cue grows as 1/alpha^2.
    """

    alpha: float
    lexicon: Mapping[str, float] = field(compare=False, hash=False, repr=False)
    lexicon_source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(STYLE_NAMES),
            "alpha": self.alpha,
            "lexicon_source": self.lexicon_source,
            "lexicon": dict(sorted(self.lexicon.items())),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> StyleSetting:
        if list(raw["names"]) != list(STYLE_NAMES):
            raise ValueError(f"style cues {raw['names']!r} differ from this version's {list(STYLE_NAMES)!r}")
        lexicon = {str(w): float(v) for w, v in dict(raw["lexicon"]).items()}
        if not all(math.isfinite(v) for v in lexicon.values()):
            raise ValueError("the style lexicon has non-finite valences")
        alpha = float(raw["alpha"])
        if not alpha > 0.0:
            raise ValueError(f"style alpha {alpha!r} is not positive")
        return cls(alpha, lexicon, str(raw.get("lexicon_source", "")))


# One dict lookup per token instead of one set test per word list: the cues run on every post the daemon scores.
# The lists share no word, so each word has one class.
_WORD_CLASS = {
    word: i
    for i, words in enumerate((_NEGATIONS, _SECOND_PERSON, _FIRST_PERSON, _TIME_WORDS, _INTENSIFIERS))
    for word in words
}


def _row(text: str, lexicon: Mapping[str, float]) -> list[float]:
    classes = [0, 0, 0, 0, 0]
    n_words = caps = ed = handles = 0
    has_link = False
    valences: list[float] = []
    for token in _TOKEN.findall(text):
        lower = token.lower()
        if token[0].isalpha():
            n_words += 1
            caps += len(token) >= 2 and token.isupper()
        word_class = _WORD_CLASS.get(lower)
        if word_class is not None:
            classes[word_class] += 1
        elif lower.endswith("n't"):
            classes[0] += 1
        ed += len(lower) > 3 and lower.endswith("ed")
        has_link = has_link or lower == "http"
        handles += lower == "@user"
        valence = lexicon.get(lower)
        if valence is not None:
            valences.append(valence)
    if valences:
        total = math.fsum(valences)
        sentiment = [
            total / 4,
            total / len(valences),
            min(valences),
            max(valences),
            math.log1p(sum(1 for v in valences if v < 0)),
            math.log1p(sum(1 for v in valences if v > 0)),
        ]
    else:
        sentiment = [0.0] * 6
    n_words = max(n_words, 1)
    return [
        caps / n_words,
        math.log1p(text.count("!")),
        math.log1p(text.count("?")),
        *(math.log1p(n) for n in classes),
        ed / n_words,
        1.0 if has_link else 0.0,
        math.log1p(handles),
        math.log1p(len(text)),
        *sentiment,
    ]


def style_features(case_kept: Sequence[str], lexicon: Mapping[str, float]) -> npt.NDArray[np.float64]:
    """One row of ``STYLE_NAMES`` per text; texts as ``normalise_text(text, lowercase=False)`` gives them."""
    return np.array([_row(text, lexicon) for text in case_kept], dtype=np.float64).reshape(-1, len(STYLE_NAMES))


def style_scores(
    features: npt.NDArray[np.float64],
    mean: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64],
    coef: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Each row's log-odds contribution: ``coef . (features - mean) / scale``, as fitted in training."""
    return np.asarray(((features - mean) / scale) @ coef, dtype=np.float64)
