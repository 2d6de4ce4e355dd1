"""Changes agents make to tickets, as conditional updates: two agents acting at once cannot corrupt one.

Each change states the condition it needs (unassigned to claim, open to resolve, ...) in the UPDATE's
WHERE clause, so exactly one of two racing agents wins and the other learns so from the row count. Every
change bumps the ticket's version, logs a TicketEvent and queues a refresh of the Slack card.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.db import execute
from mentiondesk.storage.models import OutboxKind, OutboxState, SlackOutbox, Ticket, TicketEvent, TicketState

# Re-exported: the card's priority select is checked against it.
from mentiondesk.storage.priorities import PRIORITIES as PRIORITIES
from mentiondesk.storage.types import utcnow

# On the desk: agents are working it, whether or not they are waiting on the customer.
ACTIVE = (TicketState.OPEN, TicketState.WAITING)


async def _change(
    session: AsyncSession,
    *,
    ticket_id: int,
    actor: str,
    action: str,
    detail: str = "",
    where: list[ColumnElement[bool]],
    values: dict[str, Any],
) -> bool:
    stmt = (
        update(Ticket)
        .where(col(Ticket.id) == ticket_id, *where)
        .values(**values, updated_at=utcnow(), version=col(Ticket.version) + 1)
    )
    if await execute(session, stmt) != 1:
        return False
    log_event(session, ticket_id=ticket_id, actor=actor, action=action, detail=detail)
    await queue_card_refresh(session, ticket_id=ticket_id)
    return True


def log_event(session: AsyncSession, *, ticket_id: int, actor: str, action: str, detail: str = "") -> None:
    session.add(TicketEvent(ticket_id=ticket_id, actor=actor, action=action, detail=detail))


async def queue_card_refresh(session: AsyncSession, *, ticket_id: int) -> None:
    """Ask the sender to re-render the card; one waiting refresh covers any number of changes.

    Only a row still waiting its turn covers this change: one already claimed by a sender (its lease puts
    next_attempt_at in the future) may have been rendered before this change was made. A waiting row is
    touched (its time set anew), because a sender renders before it claims: the claim, conditional on the
    time it read, then fails, and the row is rendered again with this change in it.
    """
    if not await touch_waiting_renders(session, [ticket_id], now=utcnow()):
        session.add(SlackOutbox(kind=OutboxKind.UPDATE, ticket_id=ticket_id, channel="", text="", blocks=[]))


async def touch_waiting_renders(session: AsyncSession, ticket_ids: Sequence[int], *, now: datetime) -> set[int]:
    """Re-time the unclaimed card renders waiting for these tickets; returns the tickets that had one."""
    if not ticket_ids:
        return set()
    stmt = (
        update(SlackOutbox)
        .where(
            col(SlackOutbox.ticket_id).in_(sorted(set(ticket_ids))),
            col(SlackOutbox.state) == OutboxState.PENDING,
            col(SlackOutbox.kind).in_([OutboxKind.CARD, OutboxKind.UPDATE]),
            col(SlackOutbox.next_attempt_at) <= now,
        )
        .values(next_attempt_at=now)
        .returning(col(SlackOutbox.ticket_id))
    )
    result = await session.exec(stmt)  # type: ignore[call-overload]
    return {int(ticket_id) for (ticket_id,) in result}


async def claim(session: AsyncSession, *, ticket_id: int, user: str) -> bool:
    return await _change(
        session,
        ticket_id=ticket_id,
        actor=user,
        action="claimed",
        where=[col(Ticket.assignee_slack_id).is_(None), col(Ticket.state).in_(ACTIVE)],
        values={"assignee_slack_id": user},
    )


async def unclaim(session: AsyncSession, *, ticket_id: int, user: str) -> bool:
    return await _change(
        session,
        ticket_id=ticket_id,
        actor=user,
        action="unclaimed",
        where=[col(Ticket.assignee_slack_id) == user],
        values={"assignee_slack_id": None},
    )


async def resolve(session: AsyncSession, *, ticket_id: int, user: str, at: datetime | None = None) -> bool:
    return await _change(
        session,
        ticket_id=ticket_id,
        actor=user,
        action="resolved",
        where=[col(Ticket.state).in_(ACTIVE)],
        values={"state": TicketState.RESOLVED, "resolved_at": at or utcnow()},
    )


async def wait_on_customer(session: AsyncSession, *, ticket_id: int, user: str) -> bool:
    """The agent asked the customer something: the ticket waits on their answer (its SLA clocks pause)."""
    return await _change(
        session,
        ticket_id=ticket_id,
        actor=user,
        action="waiting",
        where=[col(Ticket.state) == TicketState.OPEN],
        values={"state": TicketState.WAITING},
    )


async def resume(session: AsyncSession, *, ticket_id: int, actor: str, detail: str = "") -> bool:
    """The customer answered a ticket waiting on them: it is open again."""
    return await _change(
        session,
        ticket_id=ticket_id,
        actor=actor,
        action="resumed",
        detail=detail,
        where=[col(Ticket.state) == TicketState.WAITING],
        values={"state": TicketState.OPEN},
    )


async def reopen(session: AsyncSession, *, ticket_id: int, actor: str, detail: str = "") -> bool:
    return await _change(
        session,
        ticket_id=ticket_id,
        actor=actor,
        action="reopened",
        detail=detail,
        where=[col(Ticket.state).in_([TicketState.RESOLVED, TicketState.CLOSED])],
        values={"state": TicketState.OPEN, "resolved_at": None, "closed_reason": None},
    )


async def close(session: AsyncSession, *, ticket_id: int, actor: str, reason: str, label: str | None = None) -> bool:
    values: dict[str, Any] = {"state": TicketState.CLOSED, "closed_reason": reason}
    if label is not None:
        values["label"] = label
    return await _change(
        session,
        ticket_id=ticket_id,
        actor=actor,
        action="closed",
        detail=reason,
        where=[col(Ticket.state) != TicketState.CLOSED],
        values=values,
    )


async def set_priority(session: AsyncSession, *, ticket_id: int, user: str, priority: str) -> bool:
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
    return await _change(
        session,
        ticket_id=ticket_id,
        actor=user,
        action="priority",
        detail=priority,
        where=[col(Ticket.priority) != priority],
        values={"priority": priority},
    )


async def record_first_response(session: AsyncSession, *, ticket_id: int, at: datetime, actor: str) -> bool:
    """Stamp the first public response; later replies leave the first one standing."""
    return await _change(
        session,
        ticket_id=ticket_id,
        actor=actor,
        action="first_response",
        where=[col(Ticket.first_response_at).is_(None)],
        values={"first_response_at": at},
    )


async def record_customer_activity(session: AsyncSession, *, ticket_id: int, at: datetime) -> None:
    await _change(
        session,
        ticket_id=ticket_id,
        actor="customer",
        action="customer_post",
        where=[],
        values={"last_customer_activity_at": at},
    )
