"""Queries behind the agents' desk: ticket threads and their notes, the slash command's lists and daily stats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.db import execute, table_of
from mentiondesk.storage.models import Mention, Note, Reply, Ticket, TicketState
from mentiondesk.storage.ticket_actions import log_event
from mentiondesk.storage.triage import was_on_desk


async def ticket_for_thread(session: AsyncSession, *, channel: str, thread_ts: str) -> Ticket | None:
    """The ticket whose card is the parent of the thread (channel, thread_ts), if any."""
    stmt = select(Ticket).where(Ticket.channel == channel, Ticket.slack_ts == thread_ts)
    return (await session.exec(stmt.limit(1))).first()


async def note_for_message(session: AsyncSession, *, channel: str, ts: str) -> Note | None:
    stmt = select(Note).where(Note.slack_channel == channel, Note.slack_ts == ts)
    return (await session.exec(stmt)).first()


async def claim_note_send(session: AsyncSession, *, note: Note, actor: str) -> bool:
    """Claim the right to publish a note, once: False if another click already claimed it."""
    assert note.id is not None
    claimed = await execute(
        session, update(Note).where(col(Note.id) == note.id, col(Note.sent_by).is_(None)).values(sent_by=actor)
    )
    if claimed != 1:
        return False
    log_event(session, ticket_id=note.ticket_id, actor=actor, action="note_sent", detail=f"note {note.id}")
    return True


async def release_note_send(session: AsyncSession, *, note: Note, reason: str) -> None:
    """Undo a claim whose reply was refused, so the note can be sent once the problem is fixed."""
    await execute(session, update(Note).where(col(Note.id) == note.id).values(sent_by=None))
    log_event(
        session,
        ticket_id=note.ticket_id,
        actor=note.author_slack_id,
        action="note_send_refused",
        detail=f"note {note.id}: {reason}",
    )


async def open_tickets_assigned(session: AsyncSession, *, assignee: str, limit: int) -> list[Ticket]:
    """The open tickets an agent has claimed (waiting on the customer or not), oldest first."""
    stmt = (
        select(Ticket)
        .where(col(Ticket.state).in_([TicketState.OPEN, TicketState.WAITING]), Ticket.assignee_slack_id == assignee)
        .order_by(col(Ticket.created_at), col(Ticket.id))
        .limit(limit)
    )
    return list(await session.exec(stmt))


async def unclaimed_open_tickets(session: AsyncSession, *, limit: int) -> list[Ticket]:
    """Open tickets nobody has claimed, oldest first: the queue to pick from."""
    stmt = (
        select(Ticket)
        .where(Ticket.state == TicketState.OPEN, col(Ticket.assignee_slack_id).is_(None))
        .order_by(col(Ticket.created_at), col(Ticket.id))
        .limit(limit)
    )
    return list(await session.exec(stmt))


async def count_notes(session: AsyncSession, *, ticket_id: int) -> int:
    stmt = select(func.count()).select_from(Note).where(Note.ticket_id == ticket_id)
    return (await session.exec(stmt)).one()


async def ticket_replies(session: AsyncSession, *, ticket_id: int) -> list[Reply]:
    stmt = select(Reply).where(Reply.ticket_id == ticket_id).order_by(col(Reply.created_at), col(Reply.id))
    return list(await session.exec(stmt))


@dataclass(frozen=True)
class DayStats:
    mentions: int
    complaints: int
    opened: int
    resolved: int
    responded_in_sla: int
    responded_late: int
    open_now: int
    open_overdue: int


async def _count(session: AsyncSession, model: type[Mention] | type[Ticket], *where: ColumnElement[bool]) -> int:
    stmt = select(func.count()).select_from(model).where(*where)
    return (await session.exec(stmt)).one()


async def day_stats(session: AsyncSession, *, since: datetime, now: datetime) -> DayStats:
    """Counts for the day that began at since (mentions, tickets, first responses) and the open queue at now."""
    responded_today = [col(Ticket.first_response_at) >= since]
    open_unanswered = [col(Ticket.state) == TicketState.OPEN, col(Ticket.first_response_at).is_(None)]
    return DayStats(
        mentions=await _count(session, Mention, col(Mention.received_at) >= since),
        complaints=await _count(session, Mention, col(Mention.received_at) >= since, col(Mention.label) == "complaint"),
        opened=await _count(session, Ticket, col(Ticket.created_at) >= since, was_on_desk(table_of(Ticket))),
        resolved=await _count(session, Ticket, col(Ticket.resolved_at) >= since),
        responded_in_sla=await _count(
            session, Ticket, *responded_today, col(Ticket.first_response_at) <= col(Ticket.first_response_due_at)
        ),
        responded_late=await _count(
            session, Ticket, *responded_today, col(Ticket.first_response_at) > col(Ticket.first_response_due_at)
        ),
        open_now=await _count(session, Ticket, col(Ticket.state) == TicketState.OPEN),
        open_overdue=await _count(session, Ticket, *open_unanswered, col(Ticket.first_response_due_at) < now),
    )
