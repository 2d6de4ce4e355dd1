"""Bulk reads and writes for a batch of mentions: a few statements per batch, whatever its size.

The ORM costs a round trip and an object per row; a batch of hundreds of posts is read with one query per
question and written with one multi-row statement per table (SQLAlchemy Core, on the session's connection, so
it all commits or rolls back with the rest of the batch).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.db import core_connection, in_chunks, table_of
from mentiondesk.storage.models import Mention, OutboxState, SlackOutbox, Ticket, TicketEvent

MENTIONS = table_of(Mention)
TICKETS = table_of(Ticket)
OUTBOX = table_of(SlackOutbox)
EVENTS = table_of(TicketEvent)


@dataclass(frozen=True)
class TicketSummary:
    """What placing a post needs to know of one of the customer's tickets."""

    id: int
    account_id: str
    state: str
    resolved_at: datetime | None
    created_at: datetime  # when the desk opened it: how many tickets a customer had lately is a judging cue


async def stored_uris(session: AsyncSession, uris: Collection[str]) -> set[str]:
    """Which of these status URIs are stored already."""
    conn = await core_connection(session)
    found: set[str] = set()
    for chunk in in_chunks(uris):
        rows = await conn.execute(select(MENTIONS.c.status_uri).where(MENTIONS.c.status_uri.in_(chunk)))
        found.update(row[0] for row in rows)
    return found


async def stored_status_ids(session: AsyncSession, status_ids: Collection[str]) -> set[str]:
    """Which of these status ids are stored already (by id: all a reply knows of its parent)."""
    conn = await core_connection(session)
    found: set[str] = set()
    for chunk in in_chunks(status_ids):
        rows = await conn.execute(select(MENTIONS.c.status_id).where(MENTIONS.c.status_id.in_(chunk)).distinct())
        found.update(row[0] for row in rows)
    return found


async def customer_tickets(session: AsyncSession, account_ids: Collection[str]) -> list[TicketSummary]:
    """Every ticket of these customers, oldest first."""
    conn = await core_connection(session)
    found: list[TicketSummary] = []
    columns = (
        TICKETS.c.id,
        TICKETS.c.customer_account_id,
        TICKETS.c.state,
        TICKETS.c.resolved_at,
        TICKETS.c.created_at,
    )
    for chunk in in_chunks(account_ids):
        rows = await conn.execute(select(*columns).where(TICKETS.c.customer_account_id.in_(chunk)))
        found.extend(TicketSummary(*row) for row in rows)
    return sorted(found, key=lambda t: t.id)


async def tickets_holding(session: AsyncSession, status_ids: Collection[str]) -> dict[str, list[tuple[int, str]]]:
    """For each of these status ids that is stored in a ticket: (ticket id, the ticket's customer) pairs."""
    conn = await core_connection(session)
    found: dict[str, list[tuple[int, str]]] = {}
    stmt = select(MENTIONS.c.status_id, TICKETS.c.id, TICKETS.c.customer_account_id).join(
        TICKETS, TICKETS.c.id == MENTIONS.c.ticket_id
    )
    for chunk in in_chunks(status_ids):
        for status_id, ticket_id, account_id in await conn.execute(stmt.where(MENTIONS.c.status_id.in_(chunk))):
            found.setdefault(status_id, []).append((ticket_id, account_id))
    return found


async def _insert_returning_ids(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    if not rows:
        return []
    conn = await core_connection(session)
    stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    result = await conn.execute(stmt, list(rows))
    return [int(row[0]) for row in result]


async def insert_tickets(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert ticket rows (every column given); returns their ids in the order of rows."""
    return await _insert_returning_ids(session, TICKETS, rows)


async def insert_mentions(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert mention rows (every column given); returns their ids in the order of rows."""
    return await _insert_returning_ids(session, MENTIONS, rows)


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        conn = await core_connection(session)
        await conn.execute(insert(table), list(rows))


async def record_customer_posts(session: AsyncSession, latest: Mapping[int, datetime], *, now: datetime) -> None:
    """Stamp each ticket's latest customer activity (ticket id -> time) and bump its version, as agents' changes do."""
    if not latest:
        return
    conn = await core_connection(session)
    stmt = (
        update(TICKETS)
        .where(TICKETS.c.id == bindparam("ticket_id"))
        .values(last_customer_activity_at=bindparam("at"), updated_at=now, version=TICKETS.c.version + 1)
    )
    # Sorted, so two writers touching the same tickets take their row locks in one order.
    await conn.execute(stmt, [{"ticket_id": tid, "at": at} for tid, at in sorted(latest.items())])


def outbox_row(
    *,
    kind: str,
    ticket_id: int,
    channel: str,
    now: datetime,
    mention_id: int | None = None,
    text: str = "",
    blocks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "ticket_id": ticket_id,
        "mention_id": mention_id,
        "channel": channel,
        "text": text,
        "blocks": blocks or [],
        "state": OutboxState.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": None,
        "slack_ts": None,
        "created_at": now,
        "sent_at": None,
    }


def event_row(*, ticket_id: int, actor: str, action: str, detail: str, now: datetime) -> dict[str, Any]:
    return {"ticket_id": ticket_id, "actor": actor, "action": action, "detail": detail, "created_at": now}
