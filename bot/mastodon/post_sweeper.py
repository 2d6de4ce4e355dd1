"""Re-reading customer posts of open tickets, because not every server pushes edits and deletes to us."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.config import MastodonSettings
from mentiondesk.bot.events import PostDeleted, PostEdited
from mentiondesk.bot.mastodon.client import MastodonClient
from mentiondesk.bot.mastodon.fields import UnreadablePost
from mentiondesk.bot.mastodon.watcher import OnChange
from mentiondesk.bot.retry import backoff_delay, rate_limit_pause_s
from mentiondesk.storage.models import Mention
from mentiondesk.storage.tickets import posts_to_refresh

logger = logging.getLogger(__name__)

# Posts re-read per refresh sweep: at the default 120 s interval that is at most 100 of the 300 requests
# Mastodon allows per 5 minutes.
REFRESH_BATCH = 40


class PostSweeper:
    """Re-reads the customer posts of open tickets, a batch per interval, and reports edits and deletes.

    Walks the posts round in id order from an in-memory position, so every post is checked in turn
    (oldest-checked first) however many there are; after a restart the walk starts again from the top.
    """

    def __init__(
        self,
        *,
        client: MastodonClient,
        sessions: async_sessionmaker[AsyncSession],
        on_change: OnChange,
        settings: MastodonSettings,
        batch: int = REFRESH_BATCH,
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._on_change = on_change
        self._settings = settings
        self._batch = batch
        self._after_id = 0
        self.sweeps_completed = 0

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                await self.sweep()
                attempt = 0
                self.sweeps_completed += 1
                wait_s = max(self._settings.refresh_interval_s, self._pause_s())
            except Exception as exc:
                # Nothing is lost by waiting: the posts are still there to check next time.
                attempt += 1
                wait_s = max(
                    self._settings.refresh_interval_s, backoff_delay(attempt, cap_s=self._settings.max_backoff_s)
                )
                logger.warning("refreshing posts failed: %s; next try in %.1fs", exc or type(exc).__name__, wait_s)
            await asyncio.sleep(wait_s)

    async def sweep(self) -> int:
        """Check one batch of posts; returns how many were checked (0 when it stopped to spare requests)."""
        async with self._sessions() as session:
            mentions = await posts_to_refresh(session, after_id=self._after_id, limit=self._batch)
        for mention in mentions:
            if self._pause_s() > 0:
                return 0  # leave the rest of the batch for after the window resets; the walk resumes here
            await self._check(mention)
            assert mention.id is not None
            self._after_id = mention.id
        if len(mentions) < self._batch:
            self._after_id = 0  # reached the end: the next sweep starts again from the oldest post
        return len(mentions)

    def _pause_s(self) -> float:
        return rate_limit_pause_s(self._client, cap_s=self._settings.max_backoff_s, what="post refreshes")

    async def _check(self, mention: Mention) -> None:
        try:
            current = await self._client.status(mention.status_id)
        except UnreadablePost as exc:
            # Nothing to compare it with; stopping here would leave every later post unchecked for good.
            logger.warning(
                "cannot check post %s for edits and deletes: %s",
                mention.status_id,
                exc,
                extra={"status_id": mention.status_id, "ticket_id": mention.ticket_id},
            )
            return
        if current is None:
            await self._on_change(PostDeleted(status_id=mention.status_id))
        elif current.edited_at is not None and current.edited_at != mention.edited_at:
            await self._on_change(PostEdited(post=current))
