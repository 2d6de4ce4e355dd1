"""Queries over mentions and tickets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.db import execute
from mentiondesk.storage.models import Mention, Ticket, TicketState


async def mention_exists(session: AsyncSession, *, status_uri: str) -> bool:
    result = await session.exec(select(Mention.id).where(Mention.status_uri == status_uri))
    return result.first() is not None


async def status_stored(session: AsyncSession, *, status_id: str) -> bool:
    """Whether a post with this status id was stored already (by id: all a reply knows of its parent)."""
    result = await session.exec(select(Mention.id).where(Mention.status_id == status_id).limit(1))
    return result.first() is not None


async def open_ticket_for_thread(session: AsyncSession, *, account_id: str, status_ids: Sequence[str]) -> Ticket | None:
    """The customer's open ticket that holds any of status_ids (the posts this one replies under)."""
    if not status_ids:
        return None
    stmt = (
        select(Ticket)
        .join(Mention, col(Mention.ticket_id) == col(Ticket.id))
        .where(col(Mention.status_id).in_(list(status_ids)))
        .where(Ticket.customer_account_id == account_id)
        .where(Ticket.state == TicketState.OPEN)
        .order_by(col(Ticket.id).desc())
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def has_open_ticket(session: AsyncSession, *, account_id: str) -> bool:
    stmt = select(Ticket.id).where(Ticket.customer_account_id == account_id, Ticket.state == TicketState.OPEN)
    return (await session.exec(stmt.limit(1))).first() is not None


async def ticket_mentions(session: AsyncSession, *, ticket_id: int) -> list[Mention]:
    stmt = select(Mention).where(Mention.ticket_id == ticket_id).order_by(col(Mention.id))
    return list(await session.exec(stmt))


async def count_mentions(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(Mention))).one()


async def list_tickets(session: AsyncSession, *, limit: int = 100) -> list[Ticket]:
    return list(await session.exec(select(Ticket).order_by(col(Ticket.id)).limit(limit)))


async def latest_open_ticket(session: AsyncSession, *, account_id: str) -> Ticket | None:
    """The customer's most recent open ticket: where a new post of theirs belongs, thread or not."""
    stmt = (
        select(Ticket)
        .where(Ticket.customer_account_id == account_id, Ticket.state == TicketState.OPEN)
        .order_by(col(Ticket.id).desc())
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def latest_resolved_ticket(session: AsyncSession, *, account_id: str) -> Ticket | None:
    """The customer's most recently resolved ticket (closed ones are left alone: never reopened automatically)."""
    stmt = (
        select(Ticket)
        .where(Ticket.customer_account_id == account_id, Ticket.state == TicketState.RESOLVED)
        .order_by(col(Ticket.resolved_at).desc(), col(Ticket.id).desc())
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def latest_ticket(session: AsyncSession, *, account_id: str) -> Ticket | None:
    stmt = select(Ticket).where(Ticket.customer_account_id == account_id).order_by(col(Ticket.id).desc()).limit(1)
    return (await session.exec(stmt)).first()


async def ticket_for_thread(session: AsyncSession, *, account_id: str, status_ids: Sequence[str]) -> Ticket | None:
    """The customer's latest ticket, in any state, that holds any of status_ids."""
    if not status_ids:
        return None
    stmt = (
        select(Ticket)
        .join(Mention, col(Mention.ticket_id) == col(Ticket.id))
        .where(col(Mention.status_id).in_(list(status_ids)), Ticket.customer_account_id == account_id)
        .order_by(col(Ticket.id).desc())
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def mention_by_uri(session: AsyncSession, *, status_uri: str) -> Mention | None:
    return (await session.exec(select(Mention).where(Mention.status_uri == status_uri))).first()


async def record_mention_edit(session: AsyncSession, *, mention_id: int, text: str, edited_at: datetime) -> bool:
    """Store a newer version of a post; False when this edit (or a later one) was stored already.

    The condition in the UPDATE makes the stream and the refresh sweep (or two daemons) apply one edit once.
    """
    stmt = (
        update(Mention)
        .where(col(Mention.id) == mention_id, col(Mention.deleted_at).is_(None))
        .where(col(Mention.edited_at).is_(None) | (col(Mention.edited_at) < edited_at))
        .values(text=text, edited_at=edited_at)
    )
    return await execute(session, stmt) == 1


async def record_mention_deleted(session: AsyncSession, *, status_id: str, at: datetime) -> list[Mention]:
    """Mark the post deleted; returns the mentions this call marked (none when it was marked already)."""
    stmt = select(Mention).where(Mention.status_id == status_id, col(Mention.deleted_at).is_(None))
    marked = []
    for mention in list(await session.exec(stmt)):
        mark = (
            update(Mention)
            .where(col(Mention.id) == mention.id, col(Mention.deleted_at).is_(None))
            .values(deleted_at=at)
        )
        if await execute(session, mark) == 1:
            marked.append(mention)
    return marked


async def all_posts_deleted(session: AsyncSession, *, ticket_id: int) -> bool:
    stmt = select(Mention.id).where(Mention.ticket_id == ticket_id, col(Mention.deleted_at).is_(None))
    return (await session.exec(stmt.limit(1))).first() is None


async def posts_to_refresh(session: AsyncSession, *, after_id: int, limit: int) -> list[Mention]:
    """Live customer posts of open tickets (waiting on the customer, or in triage, too) with an id above after_id,
    in id order (the sweep walks them round)."""
    stmt = (
        select(Mention)
        .join(Ticket, col(Ticket.id) == col(Mention.ticket_id))
        .where(
            # Posts in triage too: an agent deciding on one should see what it says now.
            col(Ticket.state).in_([TicketState.OPEN, TicketState.WAITING, TicketState.TRIAGE]),
            col(Mention.deleted_at).is_(None),
            col(Mention.id) > after_id,
        )
        .order_by(col(Mention.id))
        .limit(limit)
    )
    return list(await session.exec(stmt))
