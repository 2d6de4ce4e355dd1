"""What the desk does with a post, from the model's score and what else is known about it.

The model gives one number, the probability of a complaint. The desk needs more: what kind of post it is, which of
three bands it falls in (a ticket; triage, where an agent decides; stored only), how urgent it is and why. Those
rules live here, apart from the model, so that both models and `mentiondesk classify` apply the same ones.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from mentiondesk.bot.classify.cues import Categories, PriorityRules
from mentiondesk.bot.classify.questions import question_sentence
from mentiondesk.bot.classify.wordmatch import words_of
from mentiondesk.bot.config import ClassifierSettings
from mentiondesk.bot.cue_settings import PrioritySettings

__all__ = ["BANDS", "KINDS", "Assessment", "Cues", "Judge", "primary_language"]

COMPLAINT, QUESTION, OTHER = "complaint", "question", "other"
KINDS = (COMPLAINT, QUESTION, OTHER)
TICKET, TRIAGE, STORED = "ticket", "triage", "stored"
BANDS = (TICKET, TRIAGE, STORED)


@dataclass(frozen=True)
class Cues:
    """What is known about a post beyond its text (Mastodon's data, the customer's history)."""

    language: str | None = None  # Mastodon's `language`, an ISO 639 code, when the server gave one
    followers: int | None = None
    reblogs: int | None = None
    favourites: int | None = None
    recent_tickets: int = 0  # the customer's tickets opened within the repeat window, before this post


@dataclass(frozen=True)
class Assessment:
    kind: str  # KINDS
    band: str  # BANDS
    score: float  # probability of a complaint
    priority: str  # urgent / high / normal / low
    priority_reasons: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    triage_reason: str | None = None  # set when band is triage


def primary_language(code: str | None) -> str | None:
    """'en-GB' -> 'en'; None for a missing or blank code (many servers leave it out)."""
    if code is None or not code.strip():
        return None
    return code.strip().split("-")[0].split("_")[0].lower()


@dataclass(frozen=True)
class Judge:
    """The rules that turn a score into an assessment; immutable, so a reload swaps a whole new one."""

    threshold: float  # at or above: a complaint
    triage_threshold: float  # at or above (and below threshold): triage
    languages: frozenset[str]  # the languages the model covers; an unknown language counts as covered
    tickets_for: frozenset[str] = frozenset({COMPLAINT})
    high_priority_score: float = 0.9
    priority_settings: PrioritySettings = field(default_factory=PrioritySettings)
    categories: Categories = field(default_factory=Categories)
    _priority_rules: PriorityRules = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.triage_threshold <= self.threshold <= 1.0:
            raise ValueError(
                f"the triage threshold ({self.triage_threshold:g}) must not be above the complaint threshold "
                f"({self.threshold:g}), both within 0..1"
            )
        unknown = set(self.tickets_for) - set(KINDS[:2])
        if unknown:
            raise ValueError(f"tickets_for takes 'complaint' and 'question', got {sorted(unknown)!r}")
        rules = PriorityRules(self.priority_settings, self.high_priority_score)
        object.__setattr__(self, "_priority_rules", rules)

    @classmethod
    def from_settings(cls, settings: ClassifierSettings, model_metadata: Mapping[str, Any]) -> Judge:
        """The config's rules; thresholds and languages the config leaves out come from the model's metadata."""
        threshold = settings.threshold if settings.threshold is not None else float(model_metadata["threshold"])
        triage = settings.triage_threshold
        if triage is None:
            # A model without a triage threshold of its own gets no triage band unless the config asks for one.
            triage = min(float(model_metadata.get("triage_threshold", threshold)), threshold)
        return cls.covering(
            model_metadata.get("languages", ["en"]),
            threshold=threshold,
            triage_threshold=triage,
            tickets_for=frozenset(settings.tickets_for),
            high_priority_score=settings.high_priority_score,
            priority_settings=settings.priority,
            categories=Categories.from_settings(settings.categories),
        )

    @classmethod
    def covering(cls, languages: Collection[str], **rules: object) -> Judge:
        return cls(languages=frozenset(lang.lower() for lang in languages), **rules)  # type: ignore[arg-type]

    def assess(self, text: str, score: float, cues: Cues | None = None) -> Assessment:
        cues = cues or Cues()
        kind = self.kind(text, score)
        band, reason = self._band(kind, score, cues)
        default = self.priority_settings.question if kind == QUESTION else self.priority_settings.complaint
        words = words_of(text)
        priority, reasons = self._priority_rules.decide(
            words,
            default=default,
            score=score,
            followers=cues.followers,
            reblogs=cues.reblogs,
            favourites=cues.favourites,
            recent_tickets=cues.recent_tickets,
        )
        return Assessment(kind, band, score, priority, reasons, self.categories.of(words), reason)

    def kind(self, text: str, score: float) -> str:
        """Complaint when the score says so, whatever else the post does: "why is it STILL not here?" asks too."""
        if score >= self.threshold:
            return COMPLAINT
        return QUESTION if question_sentence(text) is not None else OTHER

    def _band(self, kind: str, score: float, cues: Cues) -> tuple[str, str | None]:
        language = primary_language(cues.language)
        if language is not None and language not in self.languages:
            # The model would only be guessing: a person decides instead.
            covered = ", ".join(sorted(self.languages)) or "none"
            return TRIAGE, f"written in '{language}', which the model does not cover ({covered})"
        if kind in self.tickets_for:
            return TICKET, None
        # A question that opens no ticket by itself is still a borderline complaint when its score says so.
        if score >= self.triage_threshold:
            return TRIAGE, (
                f"complaint score {score:.2f}: between the triage threshold {self.triage_threshold:.2f} "
                f"and the ticket threshold {self.threshold:.2f}"
            )
        return STORED, None
