"""The figures /metrics reads from the database at each scrape: small aggregate queries on indexed columns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.models import OutboxState, SlackOutbox, Ticket, TicketState


@dataclass(frozen=True)
class UnsentMessages:
    channel: str
    state: str  # OutboxState.PENDING or PARKED
    count: int
    oldest_created_at: datetime


async def unsent_messages(session: AsyncSession) -> list[UnsentMessages]:
    """Unsent outbox rows per channel and state; a card refresh (no channel of its own) counts in its ticket's."""
    channel = func.coalesce(func.nullif(col(SlackOutbox.channel), ""), col(Ticket.channel))
    stmt = (
        select(channel, col(SlackOutbox.state), func.count(), func.min(col(SlackOutbox.created_at)))
        .join(Ticket, col(Ticket.id) == col(SlackOutbox.ticket_id))
        .where(col(SlackOutbox.state).in_((OutboxState.PENDING, OutboxState.PARKED)))
        .group_by(channel, col(SlackOutbox.state))
    )
    return [UnsentMessages(str(c), str(s), int(n), oldest) for c, s, n, oldest in await session.exec(stmt)]


async def tickets_on_desk(session: AsyncSession) -> dict[str, int]:
    """How many tickets are open, and waiting on their customer."""
    active = (TicketState.OPEN, TicketState.WAITING)
    stmt = select(col(Ticket.state), func.count()).where(col(Ticket.state).in_(active)).group_by(col(Ticket.state))
    counts = {state: 0 for state in active}
    counts.update({str(state): int(n) for state, n in await session.exec(stmt)})
    return counts
