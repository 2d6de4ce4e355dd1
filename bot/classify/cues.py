"""A post's priority from its cues, and its category tags: the rules of `[classifier.priority]` and
`[[classifier.categories]]`, compiled once.

The rule: a post's priority is the highest level any cue gives; with no cue, its kind's default (a complaint normal,
a question low). Cues are word groups, the customer's reach (followers, reblogs, favourites), their repeated tickets
and the model's confidence. Different high cues add up: `high_cues_for_urgent` of them (2 by default) make the post
urgent, because an outage reported by a customer who keeps coming back, or seen by twelve thousand followers, costs
more the longer it waits than either alone. Reach counts once however many of its three numbers are high (they
measure the same thing), and the model's score does not count towards urgent: it says how sure the model is that
this is a complaint, not how much it matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mentiondesk.bot.classify.wordmatch import WordLists
from mentiondesk.bot.cue_settings import (
    DEFAULT_CATEGORIES,
    DEFAULT_WORD_GROUPS,
    CategoryRule,
    PrioritySettings,
    WordGroup,
)
from mentiondesk.storage.priorities import PRIORITIES, priority_rank

__all__ = ["REPEAT_WINDOW_DAYS", "Categories", "PriorityRules", "ordinal"]

# The window `Cues.recent_tickets` counts in (the ingest counts the customer's tickets opened within it).
REPEAT_WINDOW_DAYS = 30
URGENT, HIGH = PRIORITIES[0], PRIORITIES[1]


def ordinal(n: int) -> str:
    """1 -> '1st', 12 -> '12th', 23 -> '23rd'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class _Cue:
    level: str
    reason: str  # in the agent's words, shown on the card
    family: str  # cues of one family count once towards urgent


class _Groups:
    def __init__(self, groups: Sequence[WordGroup]) -> None:
        self.groups = tuple(groups)
        self._lists = WordLists([g.words for g in self.groups])

    def cues(self, words: Sequence[str]) -> list[_Cue]:
        return [
            _Cue(group.level, f"{group.name} words: {', '.join(hits)}", f"words:{group.name}")
            for group, hits in zip(self.groups, self._lists.found(words), strict=True)
            if hits
        ]


@dataclass(frozen=True)
class PriorityRules:
    """Immutable, like the Judge that holds it: a reload builds new rules."""

    settings: PrioritySettings = field(default_factory=PrioritySettings)
    high_priority_score: float = 0.9
    _words: _Groups = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        groups = DEFAULT_WORD_GROUPS if self.settings.words is None else self.settings.words
        object.__setattr__(self, "_words", _Groups(groups))

    def decide(
        self,
        words: Sequence[str],
        *,
        default: str,
        score: float,
        followers: int | None,
        reblogs: int | None,
        favourites: int | None,
        recent_tickets: int,
    ) -> tuple[str, tuple[str, ...]]:
        """(priority, reasons) for a post's words (`words_of`): the reasons list every cue, most pressing first."""
        cues = self._words.cues(words) + self._reach(followers, reblogs, favourites)
        repeat = self.settings.repeat_tickets
        if repeat and recent_tickets >= repeat:
            nth = ordinal(recent_tickets + 1)
            cues.append(_Cue(HIGH, f"{nth} ticket in {REPEAT_WINDOW_DAYS} days", "repeat"))
        if score >= self.high_priority_score:
            cues.append(_Cue(HIGH, f"complaint score {score:.2f}", "score"))
        if not cues:
            return default, ()
        cues.sort(key=lambda c: priority_rank(c.level))
        reasons = [c.reason for c in cues]
        level = cues[0].level
        needed = self.settings.high_cues_for_urgent
        high_families = {c.family for c in cues if c.level == HIGH and c.family != "score"}
        if level == HIGH and needed and len(high_families) >= needed:
            level = URGENT
            reasons.insert(0, f"{len(high_families)} high cues together")
        return level, tuple(reasons)

    def _reach(self, followers: int | None, reblogs: int | None, favourites: int | None) -> list[_Cue]:
        s = self.settings
        counts = [
            (followers, s.followers_high, "followers"),
            (reblogs, s.reblogs_high, "reblogs"),
            (favourites, s.favourites_high, "favourites"),
        ]
        # Unknown counts (None) give no cue: a server that hides them says nothing about reach.
        return [
            _Cue(HIGH, f"{count:,} {what}", "reach")
            for count, limit, what in counts
            if limit and count is not None and count >= limit
        ]


@dataclass(frozen=True)
class Categories:
    """Tags from keyword rules, in the order the rules are written."""

    rules: tuple[CategoryRule, ...] = DEFAULT_CATEGORIES
    _lists: WordLists = field(init=False, repr=False, compare=False)

    @classmethod
    def from_settings(cls, rules: Sequence[CategoryRule] | None) -> Categories:
        return cls(DEFAULT_CATEGORIES if rules is None else tuple(rules))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_lists", WordLists([r.keywords for r in self.rules]))

    def of(self, words: Sequence[str]) -> tuple[str, ...]:
        """The categories of a post's words (`words_of`)."""
        found = self._lists.found(words)
        return tuple(rule.name for rule, hits in zip(self.rules, found, strict=True) if hits)
