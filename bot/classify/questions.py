"""Is a post asking the brand something? English rules, measured in docs/classifier.md ("Questions").

A post is a question when one of its sentences ends in a question mark or opens the way requests do ("how do I",
"can you", "is there", "when will", ...), and that sentence is not rhetorical. Rhetorical questions are how
customers complain in public ("why is my order STILL not here?!"): they are told apart by the marks of anger
(shouting, "still not", "yet again", "seriously") and by "why ... not" openings. Complaint wins anyway when the model's
score says complaint (bot/classify/assess.py), so these rules matter for posts the model did not call complaints.
"""

from __future__ import annotations

import re

__all__ = ["question_sentence"]

_URL_RE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_HANDLE_RE = re.compile(r"(?<![\w@])@\w+(?:@[\w.-]+\w)?")
# A sentence runs to its end marks (kept: "?" and "?!" are the evidence) or to a line break.
_SENTENCE_RE = re.compile(r"[^.!?\n]+[.!?]*")
# Trailing decoration after the end mark: emoji, hashtags, closing brackets and quotes.
_TRAILING_RE = re.compile(r"(?:\s*(?:#\w+|[^\w\s?!.]))+$")

# Openings that ask even without a question mark ("can you check my order please").
_ASKING = re.compile(
    r"^(?:hi|hello|hey|hiya|excuse me|please|pls|quick question|question)?[\s,:-]*"
    r"(?:how (?:do|can|could|would|should|long|much|many|does) |"
    r"(?:can|could|would|will) (?:you|i|we|someone|somebody|anyone) |"
    r"(?:is|are) there |is (?:it|this|that) (?:possible|true|normal|safe|ok|okay) |"
    r"(?:do|does|did) (?:you|i|we|it|this|they|the|my|your) |"
    r"(?:when|where|what|which|who|whom) (?:is|are|was|will|do|does|can|should|would|'s) |"
    r"(?:when|where|what)'s |what time |"
    r"any (?:idea|news|update|updates|word|info|information|eta|chance|plans?) |"
    r"have you |has (?:my|the|anyone) |should i |am i able |wondering |i was wondering |i wonder )",
    re.IGNORECASE,
)
# A sentence that ends in "?" but scolds rather than asks.
_RHETORICAL_OPENING = re.compile(
    r"^(?:so |but |and |seriously,? |really,? )*"
    r"(?:why|how come|how hard|how difficult|how many (?:more )?times|how long (?:do|does|will|must) (?:i|we|it)|"
    r"what(?:'s| is) the point|what(?:'s| is) wrong with|what the|wtf|are you (?:kidding|serious|joking)|"
    r"is it too much|who thought|who (?:designed|decided)|seriously|really|you call this)\b",
    re.IGNORECASE,
)
_ANGRY_WORDS = re.compile(
    r"\b(?:still (?:not|no|nothing|haven't|hasn't|can't|cannot|don't|doesn't|isn't|aren't|waiting)|yet again|"
    r"ridiculous|a joke|useless|pathetic|disgrac\w*|unacceptable)\b",
    re.IGNORECASE,
)
# Shouting: a word of four or more capitals. Shorter ones are mostly names (NHS, USB, ETA), which questions use.
_SHOUT_RE = re.compile(r"\b[A-Z]{4,}\b")
_ENDS_ASKING = re.compile(r"\?[!?]*$")


def _sentences(text: str) -> list[str]:
    text = _HANDLE_RE.sub(" ", _URL_RE.sub(" ", text))
    found = (s.strip() for s in _SENTENCE_RE.findall(text))
    return [_TRAILING_RE.sub("", s) for s in found if s]


def _rhetorical(sentence: str) -> bool:
    # "?!" alone is not enough: "do you have it in the UK too?!" is excitement, and asks all the same.
    return bool(_RHETORICAL_OPENING.match(sentence) or _SHOUT_RE.search(sentence) or _ANGRY_WORDS.search(sentence))


def question_sentence(text: str) -> str | None:
    """The first sentence that asks the brand something, or None: a post of statements or rhetorical questions."""
    for sentence in _sentences(text):
        words = sentence.split()
        asks = bool(_ENDS_ASKING.search(sentence)) and len(words) >= 2
        if not asks and not _ASKING.match(sentence):
            continue
        if not _rhetorical(sentence):
            return sentence
    return None
