"""Queries over mentions and tickets."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import Mention, Ticket, TicketState


async def mention_exists(session: AsyncSession, *, status_uri: str) -> bool:
    result = await session.exec(select(Mention.id).where(Mention.status_uri == status_uri))
    return result.first() is not None


async def open_ticket_for_thread(
    session: AsyncSession, *, account_id: str, status_ids: Sequence[str]
) -> Ticket | None:
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
