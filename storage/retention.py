"""Erasing customers' data, keeping the figures: by age (the retention job) or one person's (`mentiondesk forget`).

Erased: what a customer wrote and what names them. Mentions lose their text, tags, handle, display name,
profile URL and post ids and URLs; tickets lose the customer's handle, name, URL and first post's id; replies
(which address the customer by handle) and agents' notes lose their text; the customer's events lose their
detail (it holds post URLs); Slack outbox rows lose their text and blocks; set-aside feed entries lose the entry
and the reason. Kept: ids, timestamps, states, labels, scores, channels, assignees, priorities, SLA clocks and
counts, so the reports and SLA figures of any period stay the same.

An erased account id becomes a placeholder of its own ticket (or mention), never a shared value: a customer
posting again is not threaded into an erased ticket, and two erased customers are never merged into one.
Every step runs in chunks, one transaction each, and skips rows erased already, so it can be repeated.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, exists, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.db import core_connection, in_chunks, table_of, transaction
from mentiondesk.storage.models import (
    DeadLetter,
    Mention,
    Note,
    OutboxKind,
    OutboxState,
    Reply,
    ReplyState,
    SlackOutbox,
    Ticket,
    TicketEvent,
    TicketState,
)
from mentiondesk.storage.ticket_actions import queue_card_refresh
from mentiondesk.storage.types import utcnow

ERASED = "[erased]"
# Rows per transaction: short enough that the daemon's own writes never wait long behind one.
CHUNK = 200

MENTIONS = table_of(Mention)
TICKETS = table_of(Ticket)
REPLIES = table_of(Reply)
NOTES = table_of(Note)
EVENTS = table_of(TicketEvent)
OUTBOX = table_of(SlackOutbox)
DEAD_LETTERS = table_of(DeadLetter)

# Items nobody took out of triage are erased like closed tickets: they were never on the desk.
_FINISHED = (TicketState.RESOLVED, TicketState.CLOSED, TicketState.TRIAGE)


@dataclass(frozen=True)
class Erasure:
    """How many rows of each kind were erased, and how many Slack cards were queued to show it."""

    mentions: int = 0
    tickets: int = 0
    replies: int = 0
    notes: int = 0
    dead_letters: int = 0
    cards: int = 0

    def __add__(self, other: Erasure) -> Erasure:
        return Erasure(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


def _placeholder(kind: str, key: Any) -> ColumnElement[str]:
    # Per row, from its own key: unique columns stay unique and no two erased customers share an account id.
    return literal(f"erased:{kind}:", String) + cast(key, String)


async def erase_tickets(session: AsyncSession, ticket_ids: Collection[int], *, finished_only: bool) -> Erasure:
    """Erase these tickets' customer data (with finished_only, only those still resolved or closed now)."""
    conn = await core_connection(session)
    total = Erasure()
    for chunk in in_chunks(ticket_ids):
        where = [TICKETS.c.id.in_(chunk), TICKETS.c.customer_acct != ERASED]
        if finished_only:
            # In the UPDATE itself: a ticket an agent reopened since it was picked keeps its data.
            where.append(TICKETS.c.state.in_(_FINISHED))
        erased = await conn.execute(
            update(TICKETS)
            .where(*where)
            .values(
                customer_account_id=_placeholder("ticket", TICKETS.c.id),
                customer_acct=ERASED,
                customer_display_name="",
                customer_url="",
                root_status_id="",
                version=TICKETS.c.version + 1,
            )
            .returning(TICKETS.c.id, TICKETS.c.slack_ts, TICKETS.c.triage_ts)
        )
        rows = list(erased)
        ids = [int(row[0]) for row in rows]
        if not ids:
            continue
        mentions = await conn.execute(
            _erase_mentions(MENTIONS.c.ticket_id.in_(ids), account=_placeholder("ticket", MENTIONS.c.ticket_id))
        )
        # A reply still waiting for approval can never go out: its text and the post it answers are gone.
        await conn.execute(
            update(REPLIES)
            .where(REPLIES.c.ticket_id.in_(ids), REPLIES.c.state == ReplyState.PENDING_APPROVAL)
            .values(state=ReplyState.REJECTED, decided_at=utcnow())
        )
        replies = await conn.execute(
            update(REPLIES)
            .where(REPLIES.c.ticket_id.in_(ids), REPLIES.c.text != ERASED)
            .values(text=ERASED, in_reply_to_status_id="", error=None)
        )
        notes = await conn.execute(
            update(NOTES).where(NOTES.c.ticket_id.in_(ids), NOTES.c.text != ERASED).values(text=ERASED)
        )
        await conn.execute(
            update(EVENTS)
            .where(
                EVENTS.c.ticket_id.in_(ids),
                or_(EVENTS.c.actor == "customer", EVENTS.c.action == "reply_failed"),
                EVENTS.c.detail != ERASED,
            )
            .values(detail=ERASED)
        )
        # Thread messages and alerts carry their text as queued; a card is rendered from the ticket when sent.
        await conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.ticket_id.in_(ids), OUTBOX.c.kind != OutboxKind.UPDATE, OUTBOX.c.text != ERASED)
            .values(text=ERASED, blocks=[])
        )
        carded = sorted(int(row[0]) for row in rows if row[1] is not None)
        for ticket_id in carded:
            await queue_card_refresh(session, ticket_id=ticket_id)
        # A triage message shows the post too, whether or not the item became a ticket with a card.
        now = utcnow()
        triaged = sorted(int(row[0]) for row in rows if row[2] is not None)
        if triaged:
            await conn.execute(
                insert(OUTBOX),
                [
                    {"kind": OutboxKind.TRIAGE_UPDATE, "ticket_id": t, "channel": "", "text": "", "blocks": []}
                    | {"created_at": now, "next_attempt_at": now, "state": OutboxState.PENDING, "attempts": 0}
                    for t in triaged
                ],
            )
        total += Erasure(
            mentions=int(mentions.rowcount),
            tickets=len(ids),
            replies=int(replies.rowcount),
            notes=int(notes.rowcount),
            cards=len(carded),
        )
    return total


def _erase_mentions(where: ColumnElement[bool], *, account: ColumnElement[str]) -> Any:
    return (
        update(MENTIONS)
        .where(where, MENTIONS.c.account_acct != ERASED)
        .values(
            status_uri=_placeholder("mention", MENTIONS.c.id),
            status_id=_placeholder("mention", MENTIONS.c.id),
            status_url="",
            in_reply_to_id=None,
            account_id=account,
            account_acct=ERASED,
            account_display_name="",
            account_url="",
            text=ERASED,
            tags=[],
        )
    )


async def erase_loose_mentions(session: AsyncSession, mention_ids: Collection[int]) -> int:
    """Erase mentions that belong to no ticket."""
    conn = await core_connection(session)
    count = 0
    for chunk in in_chunks(mention_ids):
        where = and_(MENTIONS.c.id.in_(chunk), MENTIONS.c.ticket_id.is_(None))
        result = await conn.execute(_erase_mentions(where, account=_placeholder("mention", MENTIONS.c.id)))
        count += int(result.rowcount)
    return count


async def erase_dead_letters(session: AsyncSession, ids: Collection[int]) -> int:
    conn = await core_connection(session)
    count = 0
    for chunk in in_chunks(ids):
        result = await conn.execute(
            update(DEAD_LETTERS)
            .where(DEAD_LETTERS.c.id.in_(chunk), DEAD_LETTERS.c.payload != ERASED)
            .values(payload=ERASED, reason=ERASED, status_id=None, status_uri=None)
        )
        count += int(result.rowcount)
    return count


# Retention: by age.


async def expired_tickets(session: AsyncSession, *, before: datetime, limit: int) -> list[int]:
    """Resolved or closed tickets not erased yet, untouched since before and with no post since then."""
    conn = await core_connection(session)
    recent_post = exists().where(MENTIONS.c.ticket_id == TICKETS.c.id, MENTIONS.c.received_at >= before)
    stmt = (
        select(TICKETS.c.id)
        .where(
            TICKETS.c.state.in_(_FINISHED),
            TICKETS.c.updated_at < before,
            TICKETS.c.customer_acct != ERASED,
            ~recent_post,
        )
        .order_by(TICKETS.c.id)
        .limit(limit)
    )
    return [int(row[0]) for row in await conn.execute(stmt)]


async def expired_loose_mentions(session: AsyncSession, *, before: datetime, limit: int) -> list[int]:
    conn = await core_connection(session)
    stmt = (
        select(MENTIONS.c.id)
        .where(MENTIONS.c.ticket_id.is_(None), MENTIONS.c.received_at < before, MENTIONS.c.account_acct != ERASED)
        .order_by(MENTIONS.c.id)
        .limit(limit)
    )
    return [int(row[0]) for row in await conn.execute(stmt)]


async def expired_dead_letters(session: AsyncSession, *, before: datetime, limit: int) -> list[int]:
    conn = await core_connection(session)
    stmt = (
        select(DEAD_LETTERS.c.id)
        .where(DEAD_LETTERS.c.last_seen_at < before, DEAD_LETTERS.c.payload != ERASED)
        .order_by(DEAD_LETTERS.c.id)
        .limit(limit)
    )
    return [int(row[0]) for row in await conn.execute(stmt)]


async def erase_expired(sessions: async_sessionmaker[AsyncSession], *, before: datetime, chunk: int = CHUNK) -> Erasure:
    """Erase every conversation that ended before `before`, one transaction per chunk.

    A ticket is erased once resolved or closed and untouched (no change, no post) since then, as is an item left
    in triage: an open one, or one waiting on the customer, keeps its data until it is finished. A mention
    without a ticket is erased by when it was received; a set-aside feed entry by when it was last read.
    """
    total = Erasure()
    while True:
        async with transaction(sessions) as session:
            ids = await expired_tickets(session, before=before, limit=chunk)
            total += await erase_tickets(session, ids, finished_only=True)
        if len(ids) < chunk:
            break
    while True:
        async with transaction(sessions) as session:
            ids = await expired_loose_mentions(session, before=before, limit=chunk)
            total += Erasure(mentions=await erase_loose_mentions(session, ids))
        if len(ids) < chunk:
            break
    while True:
        async with transaction(sessions) as session:
            ids = await expired_dead_letters(session, before=before, limit=chunk)
            total += Erasure(dead_letters=await erase_dead_letters(session, ids))
        if len(ids) < chunk:
            break
    return total


# One person: `mentiondesk forget`.


@dataclass(frozen=True)
class PersonData:
    """What is stored of one person, found by their handle."""

    account_ids: frozenset[str]
    ticket_ids: tuple[int, ...]
    active_ticket_ids: tuple[int, ...]
    loose_mention_ids: tuple[int, ...]
    dead_letter_ids: tuple[int, ...]


async def find_person(session: AsyncSession, accts: Sequence[str]) -> PersonData:
    """Everything stored of the person with any of these accts (compared case-insensitively, as Mastodon does).

    Their posts give their account ids, which find their tickets even if the handle changed since; set-aside
    entries are matched by the account in their JSON.
    """
    conn = await core_connection(session)
    wanted = sorted({acct.lower() for acct in accts})
    by_acct = func.lower(MENTIONS.c.account_acct).in_(wanted)
    account_ids = {str(row[0]) for row in await conn.execute(select(MENTIONS.c.account_id).where(by_acct).distinct())}
    account_ids |= {
        str(row[0])
        for row in await conn.execute(
            select(TICKETS.c.customer_account_id).where(func.lower(TICKETS.c.customer_acct).in_(wanted)).distinct()
        )
    }
    tickets: list[tuple[int, str]] = []
    loose: list[int] = []
    for chunk in in_chunks(account_ids):
        rows = await conn.execute(select(TICKETS.c.id, TICKETS.c.state).where(TICKETS.c.customer_account_id.in_(chunk)))
        tickets.extend((int(ticket_id), str(state)) for ticket_id, state in rows)
        rows = await conn.execute(
            select(MENTIONS.c.id).where(MENTIONS.c.account_id.in_(chunk), MENTIONS.c.ticket_id.is_(None))
        )
        loose.extend(int(row[0]) for row in rows)
    return PersonData(
        account_ids=frozenset(account_ids),
        ticket_ids=tuple(sorted(t for t, _ in tickets)),
        active_ticket_ids=tuple(sorted(t for t, state in tickets if state not in _FINISHED)),
        loose_mention_ids=tuple(sorted(loose)),
        dead_letter_ids=tuple(await _dead_letters_of(session, wanted, account_ids)),
    )


async def _dead_letters_of(session: AsyncSession, accts: Sequence[str], account_ids: Collection[str]) -> list[int]:
    conn = await core_connection(session)
    # The username narrows the scan in SQL; the JSON then says whose entry it is.
    usernames = sorted({acct.split("@")[0] for acct in accts})
    rough = or_(*(func.lower(DEAD_LETTERS.c.payload).contains(name) for name in usernames))
    found = []
    rows = await conn.execute(
        select(DEAD_LETTERS.c.id, DEAD_LETTERS.c.payload).where(rough, DEAD_LETTERS.c.payload != ERASED)
    )
    for dead_letter_id, payload in rows:
        account = _account_of(payload)
        if account is not None and (
            str(account.get("acct", "")).lower() in accts or str(account.get("id", "")) in account_ids
        ):
            found.append(int(dead_letter_id))
    return sorted(found)


def _account_of(payload: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    status = entry.get("status")
    account = status.get("account") if isinstance(status, dict) else entry.get("account")
    return account if isinstance(account, dict) else None
