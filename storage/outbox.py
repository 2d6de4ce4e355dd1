"""The Slack outbox: messages are written here in the same transaction as the ticket, then sent."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.db import execute
from mentiondesk.storage.models import OutboxKind, OutboxState, SlackOutbox, Ticket
from mentiondesk.storage.types import utcnow

# Prefix of last_error when an attempt failed after Slack may already have posted the message (the answer, not
# the request, was lost). Kept in last_error rather than a column: it only matters until the row is sent.
AMBIGUOUS = "ambiguous: "
# Rows the sender tries: parked ones too, on their slower schedule (next_attempt_at).
_UNSENT = (OutboxState.PENDING, OutboxState.PARKED)


def enqueue(
    session: AsyncSession,
    *,
    kind: str,
    ticket_id: int,
    channel: str,
    text: str,
    blocks: list[dict[str, Any]],
    mention_id: int | None = None,
) -> SlackOutbox:
    row = SlackOutbox(kind=kind, ticket_id=ticket_id, mention_id=mention_id, channel=channel, text=text, blocks=blocks)
    session.add(row)
    return row


async def due_messages(session: AsyncSession, *, now: datetime, limit: int = 50) -> list[tuple[SlackOutbox, Ticket]]:
    """Unsent messages (parked ones included) whose time has come, oldest first, with their ticket."""
    stmt = (
        select(SlackOutbox, Ticket)
        .join(Ticket, col(Ticket.id) == col(SlackOutbox.ticket_id))
        .where(col(SlackOutbox.state).in_(_UNSENT), col(SlackOutbox.next_attempt_at) <= now)
        .order_by(col(SlackOutbox.id))
        .limit(limit)
    )
    return [(row, ticket) for row, ticket in await session.exec(stmt)]


async def pending_after(session: AsyncSession, *, after_id: int, limit: int = 50) -> list[tuple[SlackOutbox, Ticket]]:
    """Pending messages with an id above ``after_id``, due or not, oldest first, with their ticket."""
    stmt = (
        select(SlackOutbox, Ticket)
        .join(Ticket, col(Ticket.id) == col(SlackOutbox.ticket_id))
        .where(SlackOutbox.state == OutboxState.PENDING, col(SlackOutbox.id) > after_id)
        .order_by(col(SlackOutbox.id))
        .limit(limit)
    )
    return [(row, ticket) for row, ticket in await session.exec(stmt)]


async def next_due_at(session: AsyncSession, *, after: datetime) -> datetime | None:
    """When the next unsent message that is not yet due (its time after ``after``) comes due."""
    stmt = (
        select(SlackOutbox.next_attempt_at)
        .where(col(SlackOutbox.state).in_(_UNSENT), col(SlackOutbox.next_attempt_at) > after)
        .order_by(col(SlackOutbox.next_attempt_at))
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def mark_sent(session: AsyncSession, *, row_id: int, channel: str, ts: str) -> None:
    row = await session.get(SlackOutbox, row_id)
    if row is None or row.state == OutboxState.SENT:
        return
    row.state = OutboxState.SENT
    row.slack_ts = ts
    row.sent_at = utcnow()
    row.attempts += 1
    row.last_error = None
    session.add(row)
    if row.kind == OutboxKind.CARD:
        # The card's channel ID and ts let follow-ups thread under it and later edits find it.
        await execute(
            session,
            update(Ticket)
            .where(col(Ticket.id) == row.ticket_id)
            .values(channel=channel, slack_ts=ts, updated_at=utcnow(), version=col(Ticket.version) + 1),
        )
    elif row.kind == OutboxKind.TRIAGE:
        # Apart from the card's: the card posted once an agent opens the ticket must not be mistaken for it.
        await execute(
            session,
            update(Ticket)
            .where(col(Ticket.id) == row.ticket_id)
            .values(triage_channel=channel, triage_ts=ts, updated_at=utcnow(), version=col(Ticket.version) + 1),
        )


async def mark_retry(session: AsyncSession, *, row_id: int, at: datetime, error: str, ambiguous: bool = False) -> None:
    """Schedule another attempt; ``ambiguous`` says the message may be in Slack already (see ``in_doubt``)."""
    row = await session.get(SlackOutbox, row_id)
    if row is None:
        return
    row.state = OutboxState.PENDING
    row.attempts += 1
    row.next_attempt_at = at
    row.last_error = ((AMBIGUOUS if ambiguous else "") + error)[:2000]
    session.add(row)


async def mark_parked(
    session: AsyncSession, *, row_id: int, at: datetime, reason: str, ambiguous: bool, attempted: bool = True
) -> None:
    """Set a row aside until ``at``: Slack refused it (or, with ``attempted`` false, would refuse it) for ``reason``."""
    row = await session.get(SlackOutbox, row_id)
    if row is None or row.state == OutboxState.SENT:
        return
    row.state = OutboxState.PARKED
    row.attempts += 1 if attempted else 0
    row.next_attempt_at = at
    row.last_error = ((AMBIGUOUS if ambiguous else "") + reason)[:2000]
    session.add(row)


async def release_parked(session: AsyncSession, *, now: datetime, channels: Iterable[str] | None = None) -> int:
    """Make parked rows due now: all of them (at start), or those for ``channels`` (one just went through).

    A card is matched by its own channel; a thread message or card refresh by its ticket's. Rows in doubt keep
    their time: a sender may be posting one right now (see ``claim``), and making it due would let a second
    sender post it too.
    """
    stmt = update(SlackOutbox).where(
        col(SlackOutbox.state) == OutboxState.PARKED, ~col(SlackOutbox.last_error).startswith(AMBIGUOUS)
    )
    if channels is not None:
        names = sorted(set(channels))
        tickets_there = select(Ticket.id).where(col(Ticket.channel).in_(names))
        stmt = stmt.where(or_(col(SlackOutbox.channel).in_(names), col(SlackOutbox.ticket_id).in_(tickets_there)))
    return await execute(session, stmt.values(next_attempt_at=now))


async def parked_messages(session: AsyncSession) -> list[tuple[int, str]]:
    """(ticket id, reason) of every parked message, oldest first."""
    stmt = (
        select(SlackOutbox.ticket_id, SlackOutbox.last_error)
        .where(SlackOutbox.state == OutboxState.PARKED)
        .order_by(col(SlackOutbox.id))
    )
    return [(ticket_id, (error or "").removeprefix(AMBIGUOUS)) for ticket_id, error in await session.exec(stmt)]


async def claim(session: AsyncSession, *, row: SlackOutbox, lease_until: datetime) -> bool:
    """Take the row for one send attempt; False when another sender took it first, or is taking it now.

    The lease moves the row out of everyone's due list until it expires, and the row is marked in doubt
    for that time: if this sender dies mid-send (crash, kill, shutdown cut short), whoever picks the row
    up after the lease looks in Slack before posting, instead of posting it a second time.

    Commit the session right after, so the row lock is held only for this. On Postgres the row is first
    locked FOR UPDATE SKIP LOCKED: a sender that finds another one claiming it moves on at once rather than
    waiting for that transaction, so several processes' senders take disjoint rows. The compare-and-set
    below is what makes the claim exclusive on both databases (SQLite has no row locks and renders no FOR
    UPDATE; one writer at a time there). Rows are claimed one at a time, just before each is sent, because
    the lease is sized for one attempt: a batch claimed at once would be sent one after another, and the
    last ones could still be posting after their lease ran out.
    """
    unchanged = (
        col(SlackOutbox.id) == row.id,
        col(SlackOutbox.state) == row.state,
        col(SlackOutbox.next_attempt_at) == row.next_attempt_at,
    )
    free = select(SlackOutbox.id).where(*unchanged).with_for_update(skip_locked=True)
    if (await session.exec(free)).first() is None:
        return False
    if in_doubt(row):
        marker = row.last_error
    elif row.state == OutboxState.PARKED and row.last_error:
        marker = AMBIGUOUS + row.last_error  # keeps saying why it was parked, should this attempt never finish
    else:
        marker = AMBIGUOUS + "a send attempt did not finish"
    claimed = await execute(
        session,
        update(SlackOutbox).where(*unchanged).values(next_attempt_at=lease_until, last_error=marker),
    )
    return claimed == 1


def in_doubt(row: SlackOutbox) -> bool:
    """True when an earlier attempt may have posted this message: look in Slack before posting it again."""
    return row.last_error is not None and row.last_error.startswith(AMBIGUOUS)


async def pending_count(session: AsyncSession) -> int:
    # Counted by the database: systemd's status line asks every few seconds, whatever the backlog.
    stmt = select(func.count()).select_from(SlackOutbox).where(SlackOutbox.state == OutboxState.PENDING)
    return (await session.exec(stmt)).one()


@dataclass(frozen=True)
class OutboxBacklog:
    """What waits in the outbox: pending messages (the oldest's queue time) and parked ones."""

    pending: int
    oldest_pending_at: datetime | None
    parked: int


async def outbox_backlog(session: AsyncSession) -> OutboxBacklog:
    """Counts by state over the unsent rows only (the state index bounds it), with the oldest pending row's age."""
    stmt = (
        select(SlackOutbox.state, func.count(), func.min(SlackOutbox.created_at))
        .where(col(SlackOutbox.state).in_(_UNSENT))
        .group_by(col(SlackOutbox.state))
    )
    found = {state: (count, oldest) for state, count, oldest in await session.exec(stmt)}
    pending, oldest = found.get(OutboxState.PENDING, (0, None))
    parked, _ = found.get(OutboxState.PARKED, (0, None))
    return OutboxBacklog(pending=pending, oldest_pending_at=oldest, parked=parked)
