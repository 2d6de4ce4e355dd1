"""Dry run (slack.dry_run): print what the Slack outbox holds instead of sending it, and leave the outbox alone.

A dry run may be pointed at the database of a real setup, so it never consumes the queue: messages that were
waiting for Slack, and those the dry run queues itself, all stay pending for the next run with Slack. Each one
is printed once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, TextIO

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.slack.card_view import render_card
from mentiondesk.bot.slack.cards import render_plain
from mentiondesk.bot.slack.sender import IDLE_POLL_S
from mentiondesk.bot.slack.triage_view import render_triage
from mentiondesk.storage.models import OutboxKind, SlackOutbox, Ticket
from mentiondesk.storage.outbox import pending_after, pending_count

logger = logging.getLogger(__name__)

PAGE_SIZE = 50


class DryRunSender:
    """Stands in for SlackSender when slack.dry_run is set: same wake()/run()/stop(), output to a terminal."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, out: TextIO) -> None:
        self._sessions = sessions
        self._out = out
        self._wake = asyncio.Event()
        self._stopping = False
        # Every pending row can be printed and rows are printed in id order, so the last id printed is all
        # the memory needed: no row is ever marked, and none is printed twice.
        self._printed_up_to = 0
        self.sent = 0  # a dry run sends nothing; the outbox keeps every message

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def finish(self, until: float) -> None:
        """As SlackSender.finish: here, print what is queued and return (nothing waits to be due)."""
        self.stop()

    async def announce(self) -> None:
        """Say at start what a dry run does with the outbox, and how much is already waiting in it."""
        async with self._sessions() as session:
            waiting = await pending_count(session)
        if waiting == 0:
            logger.info("slack.dry_run: Slack messages are printed, not sent")
            return
        logger.warning(
            "slack.dry_run: %d Slack message%s already waiting in the outbox %s printed but left queued; "
            "they are sent by the next run with slack.dry_run = false",
            waiting,
            "" if waiting == 1 else "s",
            "is" if waiting == 1 else "are",
        )

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._print_or_log()
            # Nothing here ever becomes due by itself: new rows wake us, the poll catches other processes' rows.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=IDLE_POLL_S)
        # The daemon stops its intake before its sender, so this last look shows everything queued until the stop.
        await self._print_or_log()

    async def _print_or_log(self) -> None:
        try:
            await self.print_new()
        except Exception as exc:  # the database went away: try again on the next wake-up
            logger.warning("Slack outbox (dry run): cannot read the queue: %s", exc)

    async def print_new(self) -> int:
        """Print every pending message not printed yet; returns how many were printed."""
        printed = 0
        while True:
            async with self._sessions() as session:
                batch = await pending_after(session, after_id=self._printed_up_to, limit=PAGE_SIZE)
                for row, ticket in batch:
                    assert row.id is not None
                    text, blocks = await _render(session, row, ticket)
                    self._out.write(f"\n--- [dry run] {_action(row, ticket)} ---\n{render_plain(text, blocks)}\n")
                    self._printed_up_to = row.id
                    printed += 1
            self._out.flush()
            if len(batch) < PAGE_SIZE:
                break
        return printed


def _action(row: SlackOutbox, ticket: Ticket) -> str:
    # Named by ticket, not by Slack ts: the card may never have been in Slack.
    if row.kind == OutboxKind.CARD:
        return f"would post to {row.channel}"
    if row.kind == OutboxKind.ALERT:
        return f"would post to {row.channel} (an alert about ticket #{ticket.id})"
    if row.kind == OutboxKind.TRIAGE:
        return f"would post to {row.channel} (triage: is ticket #{ticket.id}'s post a complaint?)"
    if row.kind == OutboxKind.TRIAGE_UPDATE:
        return f"would update the triage message of ticket #{ticket.id}"
    if row.kind == OutboxKind.UPDATE:
        return f"would update the card of ticket #{ticket.id} in {ticket.channel}"
    return f"would post to {ticket.channel} (thread of ticket #{ticket.id}'s card)"


async def _render(session: AsyncSession, row: SlackOutbox, ticket: Ticket) -> tuple[str, list[dict[str, Any]]]:
    # As the real sender does: a card shows the ticket as it is now; thread messages were fixed when queued.
    if row.kind in (OutboxKind.FOLLOWUP, OutboxKind.ALERT):
        return row.text, row.blocks
    if row.kind in (OutboxKind.TRIAGE, OutboxKind.TRIAGE_UPDATE):
        return await render_triage(session, ticket)
    return await render_card(session, ticket)
