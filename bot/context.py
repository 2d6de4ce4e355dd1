"""What handlers get to work with: the daemon's shared resources, passed in explicitly."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.classify.assess import Judge
from mentiondesk.bot.classify.loading import Classifier
from mentiondesk.bot.config import ConfigError, Settings
from mentiondesk.bot.events import AccountRef
from mentiondesk.bot.mastodon.client import MastodonClient, StatusLimits
from mentiondesk.bot.sla.policy import SlaBook, sla_book

# Mastodon's defaults, until the instance says otherwise.
DEFAULT_LIMITS = StatusLimits(max_characters=500, characters_reserved_per_url=23)


@dataclass(frozen=True, eq=False)
class Tuning:
    """The settings and model in force and what is built from them; a reload replaces the whole object, never a part."""

    settings: Settings
    # The rules that turn a post's score into a band (ticket, triage, stored), a kind and a priority.
    judge: Judge
    # The SLA policies and calendars, built from settings.sla.
    sla: SlaBook
    # The complaint model the judge's thresholds belong to; None only where a Tuning is built without one (tests).
    classifier: Classifier | None = None

    @property
    def threshold(self) -> float:
        return self.judge.threshold

    @classmethod
    def of(cls, settings: Settings, model_metadata: Mapping[str, Any], classifier: Classifier | None = None) -> Tuning:
        """Build everything from settings; thresholds and languages the config leaves out come from the model."""
        try:
            judge = Judge.from_settings(settings.classifier, model_metadata)
        except (ValueError, KeyError, TypeError) as exc:
            # Only now are the config's classifier keys and the model's own thresholds seen together.
            raise ConfigError(f"[classifier] with this model: {exc}") from exc
        return cls(settings=settings, judge=judge, sla=sla_book(settings.sla), classifier=classifier)

    @classmethod
    def with_model(cls, settings: Settings, classifier: Classifier) -> Tuning:
        return cls.of(settings, model_rules(classifier), classifier)


def model_rules(classifier: Classifier) -> dict[str, Any]:
    """The model's metadata with the threshold it was loaded with, which its loader has already checked."""
    return {**classifier.metadata, "threshold": classifier.threshold}


class AppContext:
    """The shared resources, and the current Tuning (settings, model, judge, SLA book), which a reload swaps.

    A unit of work that reads settings more than once takes a pinned() view, so it sees one Tuning throughout.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        classifier: Classifier,
        mastodon: MastodonClient,
        brand: AccountRef,
        # Nudges the Slack sender after a commit so a new card goes out at once instead of at the next poll.
        wake_outbox: Callable[[], None],
        limits: StatusLimits = DEFAULT_LIMITS,
        # For answering agents directly (modals, ephemeral messages); None in dry-run mode.
        slack: AsyncWebClient | None = None,
    ) -> None:
        self.sessions = sessions
        self.mastodon = mastodon
        self.brand = brand
        self.wake_outbox = wake_outbox
        self.limits = limits
        self.slack = slack
        self._tuning = Tuning.with_model(settings, classifier)
        # Pinned views in use, by the Tuning they pinned: a reload waits for the old one's to end.
        self._pins: Counter[Tuning] = Counter()
        self._unpinned = asyncio.Event()

    @property
    def tuning(self) -> Tuning:
        return self._tuning

    @property
    def settings(self) -> Settings:
        return self._tuning.settings

    @property
    def classifier(self) -> Classifier:
        """The model in force; swapped with its thresholds by a reload, so a pinned batch keeps both."""
        assert self._tuning.classifier is not None
        return self._tuning.classifier

    @property
    def threshold(self) -> float:
        return self._tuning.threshold

    @property
    def judge(self) -> Judge:
        return self._tuning.judge

    @property
    def sla(self) -> SlaBook:
        return self._tuning.sla

    def swap(self, tuning: Tuning) -> Tuning:
        """Put tuning in force for the work that starts from now on; returns the one it replaces."""
        old, self._tuning = self._tuning, tuning
        return old

    @contextlib.contextmanager
    def pinned(self) -> Iterator[AppContext]:
        """A view of this context whose Tuning stays the one in force now, for one unit of work (a batch)."""
        view = copy.copy(self)
        tuning = self._tuning
        self._pins[tuning] += 1
        try:
            yield view
        finally:
            self._pins[tuning] -= 1
            if self._pins[tuning] <= 0:
                del self._pins[tuning]
                self._unpinned.set()

    async def retired(self, tuning: Tuning, timeout_s: float) -> bool:
        """Wait (up to timeout_s) until no unit of work still uses tuning; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while tuning in self._pins:
                    self._unpinned.clear()
                    await self._unpinned.wait()
        except TimeoutError:
            return False
        return True
