"""Triage decisions: an agent opens a borderline post as a ticket, or dismisses it as not a complaint.

Both are conditional updates on the ticket still being in triage, so of two agents clicking at once exactly one
wins and the other learns so from the row count. The decision is kept as a TicketEvent, which the triage message
shows ("Opened as ticket #12 by ...") whenever it is rendered again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Table, exists, func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.db import execute, table_of
from mentiondesk.storage.models import Mention, Ticket, TicketEvent, TicketKind, TicketState
from mentiondesk.storage.retention import ERASED
from mentiondesk.storage.ticket_actions import log_event
from mentiondesk.storage.types import utcnow

__all__ = [
    "AUTOMATIC",
    "DISMISSED",
    "DISMISSED_REASON",
    "OPENED",
    "Decision",
    "decision",
    "dismiss",
    "open_ticket",
    "post_count",
]

OPENED, DISMISSED = "triage_opened", "triage_dismissed"  # TicketEvent.action
# The actor when a customer's later post, itself a clear complaint, took their item out of triage.
AUTOMATIC = "mentiondesk"
DISMISSED_REASON = "not a complaint (triage)"
EVENTS = table_of(TicketEvent)


@dataclass(frozen=True)
class Decision:
    action: str  # OPENED or DISMISSED
    actor: str  # a Slack user ID
    at: datetime


async def open_ticket(session: AsyncSession, *, ticket_id: int, user: str, label: str, due: datetime | None) -> bool:
    """Put a triage item on the desk as an open ticket of kind label; False when it is no longer in triage."""
    stmt = (
        update(Ticket)
        # An item whose post was erased (retention) has nothing left to open.
        .where(
            col(Ticket.id) == ticket_id, col(Ticket.state) == TicketState.TRIAGE, col(Ticket.customer_acct) != ERASED
        )
        .values(
            state=TicketState.OPEN,
            label=label,
            first_response_due_at=due,
            updated_at=utcnow(),
            version=col(Ticket.version) + 1,
        )
    )
    if await execute(session, stmt) != 1:
        return False
    log_event(session, ticket_id=ticket_id, actor=user, action=OPENED, detail=label)
    return True


async def dismiss(session: AsyncSession, *, ticket_id: int, user: str) -> bool:
    """Close a triage item as not a complaint; False when it is no longer in triage."""
    stmt = (
        update(Ticket)
        .where(col(Ticket.id) == ticket_id, col(Ticket.state) == TicketState.TRIAGE)
        .values(
            state=TicketState.CLOSED,
            label=TicketKind.OTHER,
            closed_reason=DISMISSED_REASON,
            updated_at=utcnow(),
            version=col(Ticket.version) + 1,
        )
    )
    if await execute(session, stmt) != 1:
        return False
    log_event(session, ticket_id=ticket_id, actor=user, action=DISMISSED, detail=DISMISSED_REASON)
    return True


def was_on_desk(tickets: Table) -> ColumnElement[bool]:
    """Tickets agents had on the desk: every one that never went to triage, and those opened from it.

    Not an item still waiting there, nor one dismissed, nor one its customer deleted while it waited.
    """
    opened = exists().where(EVENTS.c.ticket_id == tickets.c.id, EVENTS.c.action == OPENED)
    return or_(tickets.c.triage_reason.is_(None), opened)


async def decision(session: AsyncSession, *, ticket_id: int) -> Decision | None:
    """Who took the item out of triage, how and when; None while it waits."""
    result = await session.exec(
        select(TicketEvent)
        .where(col(TicketEvent.ticket_id) == ticket_id, col(TicketEvent.action).in_([OPENED, DISMISSED]))
        .order_by(col(TicketEvent.id).desc())
        .limit(1)
    )
    event = result.first()
    return Decision(event.action, event.actor, event.created_at) if event is not None else None


async def ticket_shown_at(session: AsyncSession, *, channel: str, ts: str) -> int | None:
    """The ticket whose card, or whose triage message, is the Slack message at (channel, ts)."""
    card = (col(Ticket.channel) == channel) & (col(Ticket.slack_ts) == ts)
    triaged = (col(Ticket.triage_channel) == channel) & (col(Ticket.triage_ts) == ts)
    result = await session.exec(select(Ticket.id).where(card | triaged).limit(1))
    return result.first()


async def post_count(session: AsyncSession, *, ticket_id: int) -> int:
    """How many of the customer's posts the item holds (the first and its follow-ups)."""
    result = await session.exec(
        select(func.count()).select_from(Mention).where(col(Mention.ticket_id) == ticket_id)  # type: ignore[call-overload]
    )
    return int(result.one())
