"""What handlers get to work with: the daemon's shared resources, passed in explicitly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.classifier import ComplaintClassifier
from bot.config import Settings
from bot.events import AccountRef
from bot.mastodon_client import MastodonClient


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
