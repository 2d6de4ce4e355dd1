"""Sends the Slack outbox: paced per channel, retried through outages, each message exactly once.

Slack allows about one message per second per channel. Rows wait in the database, so a ticket opened
while Slack is down (or the daemon restarts) is posted when Slack is reachable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TextIO

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.config import SlackSettings
from bot.events import CardPosted
from bot.retry import Verdict, backoff_delay, sort_slack_error
from bot.slack_cards import render_plain
from storage.db import transaction
from storage.models import OutboxKind, SlackOutbox, Ticket
from storage.outbox import due_messages, mark_retry, mark_sent, next_due_at
from storage.types import utcnow

logger = logging.getLogger(__name__)

IDLE_POLL_S = 30.0  # also picks up rows written by another daemon sharing the database


class SlackSender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: SlackSettings,
        *,
        client: AsyncWebClient | None,
        dry_run_out: TextIO | None = None,
        on_card_posted: Callable[[CardPosted], Awaitable[None]] | None = None,
    ) -> None:
        if client is None and not settings.dry_run:
            raise ValueError("a Slack client is needed unless slack.dry_run is set")
        self._sessions = sessions
        self._settings = settings
        self._client = client
        self._dry_run_out = dry_run_out
        self._on_card_posted = on_card_posted
        self._wake = asyncio.Event()
        # Monotonic time before which each channel must not get another message.
        self._channel_free_at: dict[str, float] = {}

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                wait_s = await self.send_due()
            except Exception as exc:  # the database went away: keep the rows, try again shortly
                logger.warning("Slack outbox: cannot read the queue: %s", exc)
                wait_s = 5.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)

    async def send_due(self) -> float:
        """Send every message that is due and whose channel is free; returns seconds until the next one."""
        async with self._sessions() as session:
            due = await due_messages(session, now=utcnow())
        soonest = IDLE_POLL_S
        for row, ticket in due:
            wait_s = self._wait_before(row, ticket)
            if wait_s > 0:
                soonest = min(soonest, wait_s)
                continue
            await self._send(row, ticket)
            soonest = min(soonest, self._settings.post_interval_s)
        if not due:
            async with self._sessions() as session:
                next_at = await next_due_at(session)
            if next_at is not None:
                soonest = min(soonest, max(0.0, (next_at - utcnow()).total_seconds()))
        return soonest

    def _target(self, row: SlackOutbox, ticket: Ticket) -> tuple[str, str | None] | None:
        """Channel and thread for a message, or None while its card is not in Slack yet."""
        if row.kind == OutboxKind.CARD:
            return row.channel, None
        if ticket.slack_ts is None:
            return None
        return ticket.channel, ticket.slack_ts

    def _wait_before(self, row: SlackOutbox, ticket: Ticket) -> float:
        target = self._target(row, ticket)
        if target is None:
            return IDLE_POLL_S  # the card's own send wakes us
        return self._channel_free_at.get(target[0], 0.0) - time.monotonic()

    async def _send(self, row: SlackOutbox, ticket: Ticket) -> None:
        target = self._target(row, ticket)
        assert target is not None and row.id is not None
        channel, thread_ts = target
        self._channel_free_at[channel] = time.monotonic() + self._settings.post_interval_s
        try:
            posted_channel, ts = await self._post(row, channel, thread_ts)
        except Exception as exc:
            await self._retry_later(row, channel, exc)
            return
        async with transaction(self._sessions) as session:
            await mark_sent(session, row_id=row.id, channel=posted_channel, ts=ts)
        self._channel_free_at.setdefault(posted_channel, self._channel_free_at[channel])
        if row.kind == OutboxKind.CARD:
            logger.info("CardPosted ticket #%d in %s ts=%s", row.ticket_id, posted_channel, ts)
            self._wake.set()  # follow-ups may have been waiting for this card
            if self._on_card_posted is not None:
                await self._on_card_posted(CardPosted(ticket_id=row.ticket_id, channel=posted_channel, ts=ts))

    async def _post(self, row: SlackOutbox, channel: str, thread_ts: str | None) -> tuple[str, str]:
        if self._client is None:
            assert self._dry_run_out is not None
            where = f"{channel} (thread of {thread_ts})" if thread_ts else channel
            rendered = render_plain(row.text, row.blocks)
            self._dry_run_out.write(f"\n--- [dry run] would post to {where} ---\n{rendered}\n")
            self._dry_run_out.flush()
            return channel, f"dry-run.{row.id:06d}"
        response = await self._client.chat_postMessage(
            channel=channel,
            text=row.text,
            blocks=row.blocks,
            thread_ts=thread_ts,
            unfurl_links=False,
            unfurl_media=False,
            metadata={"event_type": "mentiondesk_message",
                      "event_payload": {"outbox_id": row.id, "ticket": row.ticket_id}},
        )
        return str(response["channel"]), str(response["ts"])

    async def _retry_later(self, row: SlackOutbox, channel: str, exc: Exception) -> None:
        assert row.id is not None
        verdict = sort_slack_error(exc)
        attempt = row.attempts + 1
        if verdict.verdict is Verdict.RATE_LIMITED and verdict.wait_s is not None:
            wait_s = verdict.wait_s
            # The limit is per channel: hold the whole channel, not just this row.
            self._channel_free_at[channel] = time.monotonic() + wait_s
        else:
            wait_s = backoff_delay(attempt, cap_s=self._settings.max_retry_delay_s)
        log = logger.error if verdict.verdict is Verdict.FATAL else logger.warning
        log("Slack message for ticket #%d (%s) not sent: %s; retry %d in %.1fs", row.ticket_id, row.kind,
            verdict.reason, attempt, wait_s)
        async with transaction(self._sessions) as session:
            await mark_retry(session, row_id=row.id, at=utcnow() + timedelta(seconds=wait_s), error=verdict.reason)
