"""What handlers get to work with: the daemon's shared resources, passed in explicitly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.classify.model import ComplaintClassifier
from mentiondesk.bot.config import Settings
from mentiondesk.bot.events import AccountRef
from mentiondesk.bot.mastodon.client import MastodonClient, StatusLimits
from mentiondesk.bot.sla.policy import SlaBook, sla_book

# Mastodon's defaults, until the instance says otherwise.
DEFAULT_LIMITS = StatusLimits(max_characters=500, characters_reserved_per_url=23)


@dataclass
class AppContext:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    classifier: ComplaintClassifier
    threshold: float
    mastodon: MastodonClient
    brand: AccountRef
    # Nudges the Slack sender after a commit so a new card goes out at once instead of at the next poll.
    wake_outbox: Callable[[], None]
    limits: StatusLimits = DEFAULT_LIMITS
    # For answering agents directly (modals, ephemeral messages); None in dry-run mode.
    slack: AsyncWebClient | None = None
    # The SLA policies and calendars, built from settings.sla.
    sla: SlaBook = field(init=False)

    def __post_init__(self) -> None:
        self.sla = sla_book(self.settings.sla)
