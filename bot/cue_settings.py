"""The config's `[classifier.priority]` and `[[classifier.categories]]`: which words and numbers raise a ticket's
priority, and which keywords tag it. Validated here; the rules that apply them are bot/classify/cues.py.

Apart from bot/config.py because they are long lists of defaults, and the config example documents the same lists.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mentiondesk.storage.priorities import PRIORITIES

__all__ = [
    "DEFAULT_CATEGORIES",
    "DEFAULT_WORD_GROUPS",
    "CategoryRule",
    "PrioritySettings",
    "WordGroup",
    "check_categories",
    "check_words",
]

Priority = Literal["urgent", "high", "normal", "low"]

# A word or phrase: letters, digits, inner apostrophes, hyphens and spaces, with an optional trailing * for "any
# ending". Punctuation elsewhere would be matched literally by a regex, which nobody writing a word list means.
_WORD_RE = re.compile(r"[\w][\w'’ -]*\*?", re.UNICODE)


class _Rules(BaseModel):
    # Unknown keys are almost always typos (as in every config section).
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_words(words: tuple[str, ...]) -> tuple[str, ...]:
    """Words as matched: trimmed, inner spaces collapsed; an empty or punctuation-only entry is refused."""
    cleaned = []
    for position, word in enumerate(words, start=1):
        text = " ".join(word.split())
        if not text:
            raise ValueError(f'word {position} is empty (each entry is a word or phrase, like "not working")')
        if not _WORD_RE.fullmatch(text):
            raise ValueError(
                f"word {position} ({word!r}) is not a word or phrase: letters, digits, spaces, ' and -, "
                "with an optional * at the end for any ending"
            )
        cleaned.append(text)
    if not cleaned:
        raise ValueError("must list at least one word")
    return tuple(cleaned)


def _check_level(value: object) -> object:
    if isinstance(value, str) and value not in PRIORITIES:
        raise ValueError(f"unknown level {value!r}: a priority is one of {', '.join(PRIORITIES)}")
    return value


def _check_name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty (agents read it on the card)")
    return value.strip()


class WordGroup(_Rules):
    """Words that give a post a priority; `name` is how the card's reason calls them ("outage words: down")."""

    name: str
    level: Priority
    words: tuple[str, ...]

    _name = field_validator("name")(_check_name)
    _level = field_validator("level", mode="before")(_check_level)
    _words = field_validator("words")(check_words)


class CategoryRule(_Rules):
    """A tag shown on the card when any of its keywords is in the post."""

    name: str
    keywords: tuple[str, ...]

    _name = field_validator("name")(_check_name)
    _keywords = field_validator("keywords")(check_words)


# Urgent: harm to people, their data or the brand's legal position, where an hour matters. High: the service is
# down for the customer, which is seldom one customer's problem. Each list errs towards phrases over bare words
# ("is down" rather than "down"), because "you let me down" is not an outage.
DEFAULT_WORD_GROUPS = (
    WordGroup(
        name="safety",
        level="urgent",
        words=(
            "fire",
            "smoke",
            "burn*",
            "explod*",
            "injur*",
            "hurt",
            "hospital",
            "choking",
            "allergic reaction",
            "food poisoning",
            "poisoned",
            "electric shock",
            "unsafe",
            "dangerous",
            "product recall",
        ),
    ),
    WordGroup(
        name="security",
        level="urgent",
        words=(
            "hacked",
            "data breach",
            "breach",
            "data leak",
            "leaked",
            "phishing",
            "scam",
            "fraud*",
            "stolen",
            "identity theft",
            "unauthorized",
            "unauthorised",
            "compromised",
            "someone logged into",
        ),
    ),
    WordGroup(
        name="legal",
        level="urgent",
        words=(
            "lawyer",
            "solicitor",
            "attorney",
            "lawsuit",
            "sue",
            "legal action",
            "court",
            "trading standards",
            "ombudsman",
            "gdpr",
            "discriminat*",
        ),
    ),
    WordGroup(
        name="outage",
        level="high",
        words=(
            "outage",
            "is down",
            "are down",
            "went down",
            "still down",
            "down again",
            "not working",
            "isn't working",
            "stopped working",
            "doesn't work",
            "can't log in",
            "cannot log in",
            "can't login",
            "error 500",
            "service unavailable",
            "no signal",
            "no service",
            "no internet",
            "offline",
            "crash*",
        ),
    ),
)

# Tags agents filter by; a post may carry several or none.
DEFAULT_CATEGORIES = (
    CategoryRule(
        name="delivery",
        keywords=(
            "delivery",
            "deliver*",
            "parcel",
            "package",
            "courier",
            "shipping",
            "shipped",
            "tracking",
            "dispatch*",
            "arrive*",
            "order",
            "driver",
        ),
    ),
    CategoryRule(
        name="billing",
        keywords=(
            "bill",
            "billing",
            "billed",
            "charge",
            "overcharg*",
            "invoice",
            "payment",
            "paid",
            "refund*",
            "price",
            "fee",
            "direct debit",
            "subscription",
            "money back",
        ),
    ),
    CategoryRule(
        name="outage",
        keywords=(
            "outage",
            "is down",
            "went down",
            "not working",
            "no signal",
            "no service",
            "no internet",
            "offline",
            "crash*",
            "error",
        ),
    ),
    CategoryRule(
        name="account",
        keywords=(
            "account",
            "password",
            "log in",
            "login",
            "sign in",
            "locked out",
            "username",
            "verification code",
            "two factor",
            "2fa",
        ),
    ),
    CategoryRule(
        name="returns",
        keywords=("return", "exchange", "faulty", "broken", "damaged", "replacement", "warranty"),
    ),
    CategoryRule(
        name="service",
        keywords=("customer service", "on hold", "no reply", "no response", "call centre", "call center", "rude"),
    ),
)


def _unique_names(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise ValueError(f"two {what} are named {name!r}: each name must be different (cards show it)")
        seen.add(name.lower())


class PrioritySettings(_Rules):
    """`[classifier.priority]`: a ticket's priority is the highest level any cue gives (see docs/classifier.md)."""

    # None: DEFAULT_WORD_GROUPS. Written groups replace them all, so a team can drop one it finds noisy.
    words: tuple[WordGroup, ...] | None = None
    # At or above: a high cue ("12,400 followers"). 0 turns the cue off.
    followers_high: int = Field(default=10_000, ge=0)
    reblogs_high: int = Field(default=20, ge=0)
    favourites_high: int = Field(default=50, ge=0)
    # The customer's earlier tickets in the last 30 days at or above which a new one is high. 0 turns it off.
    repeat_tickets: int = Field(default=2, ge=0)
    # This many different high cues together make a post urgent. 0 turns escalation off.
    high_cues_for_urgent: int = Field(default=2, ge=0)
    # A question with no cue gets this: below an ordinary complaint, so agents answer complaints first.
    question: Priority = "low"
    # A complaint with no cue.
    complaint: Priority = "normal"

    _question = field_validator("question", "complaint", mode="before")(_check_level)

    @field_validator("high_cues_for_urgent")
    @classmethod
    def _not_one(cls, value: int) -> int:
        if value == 1:
            raise ValueError("1 would make every high cue urgent; use 2 or more, or 0 for no escalation")
        return value

    @model_validator(mode="after")
    def _names_differ(self) -> PrioritySettings:
        if self.words is not None:
            _unique_names([g.name for g in self.words], "word groups")
        return self


def check_categories(rules: tuple[CategoryRule, ...] | None) -> tuple[CategoryRule, ...] | None:
    if rules is not None:
        _unique_names([r.name for r in rules], "categories")
    return rules
