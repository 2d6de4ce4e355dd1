"""The VADER sentiment lexicon as the style cues' table (training only: the ``train`` extra).

The artifact carries the table it was trained with, so the daemon never imports vaderSentiment.
VADER (Hutto and Gilbert, ICWSM 2014) is under the MIT licence, which allows redistributing the table
as long as the copyright and permission notice travel with it: ``LEXICON_SOURCE`` is written into the
artifact beside the table.
"""

from __future__ import annotations

from importlib import metadata

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from mentiondesk.bot.classify.style import LEXICON_TOKEN

__all__ = ["LEXICON_SOURCE", "vader_lexicon"]

LEXICON_SOURCE = (
    "VADER sentiment lexicon (vaderSentiment {version}; C.J. Hutto and E.E. Gilbert, ICWSM 2014), word entries "
    "only. The MIT License (MIT). Copyright (c) 2016 C.J. Hutto. Permission is hereby granted, free of charge, "
    'to any person obtaining a copy of this software and associated documentation files (the "Software"), to '
    "deal in the Software without restriction, including without limitation the rights to use, copy, modify, "
    "merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom "
    "the Software is furnished to do so, subject to the following conditions: The above copyright notice and "
    "this permission notice shall be included in all copies or substantial portions of the Software. THE "
    'SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED '
    "TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT "
    "SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN "
    "ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE "
    "OR OTHER DEALINGS IN THE SOFTWARE."
)


def vader_lexicon() -> tuple[dict[str, float], str]:
    """The word entries of VADER's lexicon (those a token can match) and their source and licence notice."""
    lexicon = SentimentIntensityAnalyzer().lexicon
    words = {str(w): float(v) for w, v in lexicon.items() if LEXICON_TOKEN.fullmatch(str(w))}
    return words, LEXICON_SOURCE.format(version=metadata.version("vaderSentiment"))
