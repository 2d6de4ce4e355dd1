"""Messages Slack refused for good: parked with the reason and the fix, and what the same cause would refuse
held back with them, until the cause is fixed.

Retrying a refusal soon cannot help when a person must act (invite the bot, fix a channel key, replace the
token). A parked row waits slack.parked_retry_s, is tried again at each start, and when a message gets
through to its channel the others parked for that channel follow at once. While a cause is fresh, messages
it would refuse are parked without asking Slack again: that channel's (``Reach.CHANNEL``), or every message
(``Reach.EVERYTHING``, a bad token), never those of other channels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.config import SlackSettings
from mentiondesk.bot.slack.problems import DEFAULT_BOT_NAME, ChannelRef, Reach, refusal
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import SlackOutbox
from mentiondesk.storage.outbox import in_doubt, mark_parked, release_parked
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hold:
    """Messages Slack would refuse for the same reason as one it just refused, set aside until ``until``."""

    until: float  # time.monotonic()
    at: datetime  # the same moment, as the rows' next_attempt_at
    reason: str


class Parking:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: SlackSettings,
        *,
        channel_keys: Mapping[str, str] | None = None,
        bot_name: str = DEFAULT_BOT_NAME,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        # The config key naming each configured channel, and the bot's name: a refusal's fix names both.
        self._channel_keys = dict(channel_keys or {})
        self._bot_name = bot_name
        # By channel; None holds every message (the token itself was refused).
        self._holds: dict[str | None, Hold] = {}

    async def retry_all_now(self) -> None:
        """At start: the cause may have been fixed while the daemon was down."""
        try:
            async with transaction(self._sessions) as session:
                released = await release_parked(session, now=utcnow())
        except Exception as exc:  # the database is away; the rows are tried on their own schedule instead
            logger.warning("Slack outbox: cannot retry parked messages now: %s", exc)
            return
        if released:
            logger.info("Slack outbox: trying %d parked message(s) again", released)

    def hold_on(self, channel: str | None) -> Hold | None:
        """The hold on ``channel`` (None: on every message), while it lasts."""
        hold = self._holds.get(channel)
        if hold is not None and hold.until <= time.monotonic():
            del self._holds[channel]
            return None
        return hold

    async def park(self, row: SlackOutbox, channel: str, exc: Exception, *, ambiguous: bool) -> bool:
        """Park the row when Slack refused it for good; False when trying again soon may work."""
        assert row.id is not None
        ref = ChannelRef(channel, key=self._channel_keys.get(channel))
        found = refusal(exc, channel=ref, bot_name=self._bot_name, base_url=self._settings.base_url)
        if found is None:
            return False
        retry_s = self._settings.parked_retry_s
        hold = Hold(time.monotonic() + retry_s, utcnow() + timedelta(seconds=retry_s), found.explanation)
        if found.reach is not Reach.MESSAGE:
            self._holds[None if found.reach is Reach.EVERYTHING else channel] = hold
        logger.error(
            "Slack message for ticket #%d (%s) parked: %s (tried again every %gs and at each start)",
            row.ticket_id,
            row.kind,
            found.explanation,
            retry_s,
            extra={"ticket_id": row.ticket_id, "outbox_id": row.id, "channel": channel, "attempt": row.attempts + 1},
        )
        async with transaction(self._sessions) as session:
            await mark_parked(session, row_id=row.id, at=hold.at, reason=found.explanation, ambiguous=ambiguous)
        return True

    async def park_behind(self, row: SlackOutbox, hold: Hold) -> None:
        """Park a claimed row Slack would refuse like the one before it, without asking Slack again.

        ``row`` is as it was read before the claim, so its doubt is the earlier attempts', not the claim's.
        """
        assert row.id is not None
        logger.info(
            "Slack message for ticket #%d (%s) parked without a try: %s",
            row.ticket_id,
            row.kind,
            hold.reason,
            extra={"ticket_id": row.ticket_id, "outbox_id": row.id, "channel": row.channel},
        )
        async with transaction(self._sessions) as session:
            await mark_parked(
                session, row_id=row.id, at=hold.at, reason=hold.reason, ambiguous=in_doubt(row), attempted=False
            )

    async def went_through(self, session: AsyncSession, *channels: str) -> None:
        """A message reached these channels: whatever was parked for them may follow now."""
        for channel in channels:
            self._holds.pop(channel, None)
        await release_parked(session, now=utcnow(), channels=channels)
