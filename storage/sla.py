"""SLA clocks and pauses as stored: the reads the timers, the card and the reports need, and the writes behind them.

The rules (when a clock starts, stops and pauses, and the business-time arithmetic) live in bot/sla/clocks.py;
this module only moves rows. For readers:

- running_clocks(): every clock still running, of tickets not closed, with its due, warning and escalation
  instants and whether it is paused now: what timers are built from.
- current_clock(): the clock a ticket shows (the running response clock, else its resolution clock, ...).
- ticket_clocks(): all of a ticket's clocks, in the order they started.

A clock runs while achieved_at is None. While its ticket is paused (waiting on the customer, or resolved until
reopened) a running clock's instants still ahead are None, and `paused` says why.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.db import core_connection, in_chunks, table_of
from mentiondesk.storage.models import (
    SlaAlert,
    SlaAlertLevel,
    SlaClock,
    SlaClockKind,
    SlaPause,
    Ticket,
    TicketState,
)

CLOCKS = table_of(SlaClock)
PAUSES = table_of(SlaPause)
TICKETS = table_of(Ticket)
ALERTS = table_of(SlaAlert)

# A closed ticket keeps its clocks as they stood; a resolved one's running clocks are paused until a reopen.
NOT_CLOSED = (TicketState.OPEN, TicketState.WAITING, TicketState.RESOLVED)
ON_DESK = (TicketState.OPEN, TicketState.WAITING)

# Which clock a ticket shows when several exist: a running response clock first (there is at most one).
_SHOWN_FIRST = {SlaClockKind.NEXT_RESPONSE: 0, SlaClockKind.FIRST_RESPONSE: 1, SlaClockKind.RESOLUTION: 2}


@dataclass(frozen=True)
class ClockState:
    """One stored clock, as read."""

    id: int
    ticket_id: int
    kind: str  # SlaClockKind
    seq: int
    policy: str
    calendar: str
    target: timedelta
    started_at: datetime
    due_at: datetime | None
    warn_at: datetime | None
    escalate_at: datetime | None
    achieved_at: datetime | None
    wall_s: float | None
    business_s: float | None
    breached: bool
    breached_at: datetime | None
    # The reason of the ticket's open pause (SlaPauseReason) when it is paused now, else None.
    paused: str | None = None

    @property
    def running(self) -> bool:
        return self.achieved_at is None


@dataclass(frozen=True)
class PauseSpan:
    started_at: datetime
    ended_at: datetime | None  # None: still paused
    reason: str


_CLOCK_COLUMNS = (
    CLOCKS.c.id,
    CLOCKS.c.ticket_id,
    CLOCKS.c.kind,
    CLOCKS.c.seq,
    CLOCKS.c.policy,
    CLOCKS.c.calendar,
    CLOCKS.c.target_s,
    CLOCKS.c.started_at,
    CLOCKS.c.due_at,
    CLOCKS.c.warn_at,
    CLOCKS.c.escalate_at,
    CLOCKS.c.achieved_at,
    CLOCKS.c.wall_s,
    CLOCKS.c.business_s,
    CLOCKS.c.breached,
    CLOCKS.c.breached_at,
)


def _clock(values: RowMapping, paused: str | None) -> ClockState:
    return ClockState(
        id=values["id"],
        ticket_id=values["ticket_id"],
        kind=values["kind"],
        seq=values["seq"],
        policy=values["policy"],
        calendar=values["calendar"],
        target=timedelta(seconds=values["target_s"]),
        started_at=values["started_at"],
        due_at=values["due_at"],
        warn_at=values["warn_at"],
        escalate_at=values["escalate_at"],
        achieved_at=values["achieved_at"],
        wall_s=values["wall_s"],
        business_s=values["business_s"],
        breached=bool(values["breached"]),
        breached_at=values["breached_at"],
        paused=paused,
    )


async def open_pauses(session: AsyncSession, ticket_ids: Collection[int]) -> dict[int, PauseSpan]:
    """The open pause of each of these tickets that is paused now."""
    conn = await core_connection(session)
    found: dict[int, PauseSpan] = {}
    for chunk in in_chunks(ticket_ids):
        stmt = select(PAUSES.c.ticket_id, PAUSES.c.started_at, PAUSES.c.reason).where(
            PAUSES.c.ticket_id.in_(chunk), PAUSES.c.ended_at.is_(None)
        )
        for ticket_id, started_at, reason in await conn.execute(stmt):
            found[ticket_id] = PauseSpan(started_at, None, reason)
    return found


async def open_pause(session: AsyncSession, ticket_id: int) -> PauseSpan | None:
    return (await open_pauses(session, [ticket_id])).get(ticket_id)


async def ticket_clocks(session: AsyncSession, ticket_id: int) -> list[ClockState]:
    """Every clock of the ticket, in the order they started."""
    paused = await open_pause(session, ticket_id)
    conn = await core_connection(session)
    rows = (await conn.execute(select(*_CLOCK_COLUMNS).where(CLOCKS.c.ticket_id == ticket_id))).mappings()
    clocks = [_clock(row, paused.reason if paused else None) for row in rows]
    return sorted(clocks, key=_started_order)


def _started_order(clock: ClockState) -> tuple[int, datetime, int, int]:
    return (clock.ticket_id, clock.started_at, _SHOWN_FIRST[clock.kind], clock.seq)


def shown_clock(clocks: Sequence[ClockState]) -> ClockState | None:
    """The clock a ticket shows: its running response clock, else its running resolution clock, else the one that
    stopped last (met or breached)."""
    running = [c for c in clocks if c.running]
    if running:
        return min(running, key=lambda c: (_SHOWN_FIRST[c.kind], -c.seq))
    return max(
        (c for c in clocks if c.achieved_at is not None),
        key=lambda c: (c.achieved_at, -_SHOWN_FIRST[c.kind], c.seq),
        default=None,
    )


async def current_clock(session: AsyncSession, ticket_id: int) -> ClockState | None:
    """The clock the ticket shows now (see shown_clock); None when its policy sets no target at all."""
    return shown_clock(await ticket_clocks(session, ticket_id))


async def running_clocks(
    session: AsyncSession,
    *,
    ticket_ids: Collection[int] | None = None,
    include_paused: bool = True,
    states: Collection[str] = NOT_CLOSED,
) -> list[ClockState]:
    """Every running clock of tickets in these states (of these tickets only, if given), ordered by ticket, then as
    they started.

    A paused clock has None for each instant it had not reached when the pause began: its warning and breach wait
    for the ticket to resume. Timers want include_paused=False: the clocks with something ahead to watch for.
    """
    conn = await core_connection(session)
    stmt = (
        select(*_CLOCK_COLUMNS)
        .join(TICKETS, TICKETS.c.id == CLOCKS.c.ticket_id)
        .where(CLOCKS.c.achieved_at.is_(None), TICKETS.c.state.in_(list(states)))
    )
    if not include_paused:
        open_pause = select(PAUSES.c.id).where(PAUSES.c.ticket_id == CLOCKS.c.ticket_id, PAUSES.c.ended_at.is_(None))
        stmt = stmt.where(~open_pause.exists())
    rows: list[RowMapping] = []
    if ticket_ids is None:
        rows.extend((await conn.execute(stmt)).mappings())
    else:
        for chunk in in_chunks(ticket_ids):
            rows.extend((await conn.execute(stmt.where(CLOCKS.c.ticket_id.in_(chunk)))).mappings())
    paused = await open_pauses(session, {row["ticket_id"] for row in rows})
    clocks = [_clock(row, p.reason if (p := paused.get(row["ticket_id"])) else None) for row in rows]
    return sorted(clocks, key=_started_order)


async def ticket_pauses(session: AsyncSession, ticket_ids: Collection[int]) -> dict[int, list[PauseSpan]]:
    """Each ticket's pauses, oldest first (tickets without any are left out)."""
    conn = await core_connection(session)
    found: dict[int, list[PauseSpan]] = {}
    for chunk in in_chunks(ticket_ids):
        stmt = (
            select(PAUSES.c.ticket_id, PAUSES.c.started_at, PAUSES.c.ended_at, PAUSES.c.reason)
            .where(PAUSES.c.ticket_id.in_(chunk))
            .order_by(PAUSES.c.started_at, PAUSES.c.id)
        )
        for ticket_id, started_at, ended_at, reason in await conn.execute(stmt):
            found.setdefault(ticket_id, []).append(PauseSpan(started_at, ended_at, reason))
    return found


@dataclass(frozen=True)
class ClockGap:
    """An open ticket and the kinds of clock it has: one its policy targets but it lacks was never started (the
    ticket is older than the SLA engine, or than the target)."""

    ticket_id: int
    facts: TicketFacts
    posted_at: datetime
    first_response_at: datetime | None
    kinds: frozenset[str]


async def clock_kinds(session: AsyncSession) -> list[ClockGap]:
    """Every ticket on the desk (open, or waiting on the customer) with the kinds of clock it has."""
    conn = await core_connection(session)
    stmt = (
        select(
            TICKETS.c.id,
            TICKETS.c.priority,
            TICKETS.c.channel,
            TICKETS.c.state,
            TICKETS.c.posted_at,
            TICKETS.c.first_response_at,
            CLOCKS.c.kind,
        )
        .outerjoin(CLOCKS, CLOCKS.c.ticket_id == TICKETS.c.id)
        .where(TICKETS.c.state.in_(ON_DESK))
    )
    tickets: dict[int, tuple[TicketFacts, datetime, datetime | None]] = {}
    kinds: dict[int, set[str]] = {}
    for ticket_id, priority, channel, state, posted_at, first_response_at, kind in await conn.execute(stmt):
        facts = TicketFacts(priority, channel, state, answered=first_response_at is not None)
        tickets[ticket_id] = (facts, posted_at, first_response_at)
        kinds.setdefault(ticket_id, set()).update([kind] if kind is not None else [])
    return [
        ClockGap(ticket_id, facts, posted_at, first_response_at, frozenset(kinds[ticket_id]))
        for ticket_id, (facts, posted_at, first_response_at) in sorted(tickets.items())
    ]


async def response_clocks(session: AsyncSession, ticket_ids: Collection[int]) -> dict[int, list[tuple[str, int, bool]]]:
    """Each ticket's response clocks (first and next) as (kind, seq, running)."""
    conn = await core_connection(session)
    found: dict[int, list[tuple[str, int, bool]]] = {}
    kinds = [SlaClockKind.FIRST_RESPONSE, SlaClockKind.NEXT_RESPONSE]
    for chunk in in_chunks(ticket_ids):
        stmt = select(CLOCKS.c.ticket_id, CLOCKS.c.kind, CLOCKS.c.seq, CLOCKS.c.achieved_at).where(
            CLOCKS.c.ticket_id.in_(chunk), CLOCKS.c.kind.in_(kinds)
        )
        for ticket_id, kind, seq, achieved_at in await conn.execute(stmt):
            found.setdefault(ticket_id, []).append((kind, seq, achieved_at is None))
    return found


@dataclass(frozen=True)
class TicketFacts:
    """What choosing a ticket's SLA policy needs of it."""

    priority: str
    channel: str
    state: str
    answered: bool  # the brand has replied publicly


async def ticket_facts(session: AsyncSession, ticket_ids: Collection[int]) -> dict[int, TicketFacts]:
    conn = await core_connection(session)
    found: dict[int, TicketFacts] = {}
    columns = (TICKETS.c.id, TICKETS.c.priority, TICKETS.c.channel, TICKETS.c.state, TICKETS.c.first_response_at)
    for chunk in in_chunks(ticket_ids):
        for ticket_id, priority, channel, state, answered in await conn.execute(
            select(*columns).where(TICKETS.c.id.in_(chunk))
        ):
            found[ticket_id] = TicketFacts(priority, channel, state, answered=answered is not None)
    return found


# --- writes ----------------------------------------------------------------------------------------------------


async def insert_clocks(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert clock rows (every column but id given) in one statement."""
    if rows:
        conn = await core_connection(session)
        await conn.execute(insert(CLOCKS), list(rows))


async def update_clocks(session: AsyncSession, changes: Sequence[Mapping[str, Any]]) -> None:
    """Apply changes to clocks: each mapping holds "clock_id" and the same set of columns to set."""
    if not changes:
        return
    conn = await core_connection(session)
    columns = sorted(set(changes[0]) - {"clock_id"})
    stmt = update(CLOCKS).where(CLOCKS.c.id == bindparam("clock_id")).values({c: bindparam(c) for c in columns})
    # Sorted, so two writers touching the same clocks take their row locks in one order.
    await conn.execute(stmt, sorted(changes, key=lambda c: int(c["clock_id"])))


async def set_first_response_due(session: AsyncSession, due: Mapping[int, datetime | None]) -> None:
    """Mirror first-response clocks' due times on their tickets (ticket id -> due), which cards and reports read."""
    if not due:
        return
    conn = await core_connection(session)
    stmt = update(TICKETS).where(TICKETS.c.id == bindparam("ticket_id")).values(first_response_due_at=bindparam("due"))
    await conn.execute(stmt, [{"ticket_id": ticket_id, "due": at} for ticket_id, at in sorted(due.items())])


async def start_pause(session: AsyncSession, ticket_id: int, *, at: datetime, reason: str) -> None:
    conn = await core_connection(session)
    await conn.execute(insert(PAUSES).values(ticket_id=ticket_id, started_at=at, ended_at=None, reason=reason))


async def end_pause(session: AsyncSession, ticket_id: int, *, at: datetime) -> PauseSpan | None:
    """End the ticket's open pause at `at` (never before it began); returns it as ended, or None if there was none."""
    paused = await open_pause(session, ticket_id)
    if paused is None:
        return None
    ended = max(at, paused.started_at)
    conn = await core_connection(session)
    stmt = update(PAUSES).where(PAUSES.c.ticket_id == ticket_id, PAUSES.c.ended_at.is_(None)).values(ended_at=ended)
    await conn.execute(stmt)
    return PauseSpan(paused.started_at, ended, paused.reason)


# --- alerts (warnings and escalations) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DueAlert:
    """A warning or escalation whose instant has come (or comes by the time asked about), not yet sent."""

    clock_id: int
    ticket_id: int
    level: str  # SlaAlertLevel
    at: datetime


# Which instant of a clock each alert level goes at.
ALERT_INSTANTS = (
    (SlaAlertLevel.WARNING, CLOCKS.c.warn_at),
    (SlaAlertLevel.BREACH, CLOCKS.c.due_at),
    (SlaAlertLevel.MANAGER, CLOCKS.c.escalate_at),
)


async def due_alerts(session: AsyncSession, *, until: datetime) -> list[DueAlert]:
    """The alerts not yet sent whose instant is at or before `until`, of running clocks of open tickets that are
    not paused, soonest first: what the timers watch for. Alerts already sent are left out by their row, so
    however long ago an instant passed it is read only until its alert goes."""
    conn = await core_connection(session)
    found: list[DueAlert] = []
    open_pause = select(PAUSES.c.id).where(PAUSES.c.ticket_id == CLOCKS.c.ticket_id, PAUSES.c.ended_at.is_(None))
    for level, instant in ALERT_INSTANTS:
        sent = select(ALERTS.c.id).where(ALERTS.c.clock_id == CLOCKS.c.id, ALERTS.c.level == level)
        stmt = (
            select(CLOCKS.c.id, CLOCKS.c.ticket_id, instant)
            .join(TICKETS, TICKETS.c.id == CLOCKS.c.ticket_id)
            .where(
                CLOCKS.c.achieved_at.is_(None),
                TICKETS.c.state == TicketState.OPEN,
                instant.is_not(None),
                instant <= until,
                ~sent.exists(),
                ~open_pause.exists(),
            )
        )
        found.extend(DueAlert(clock_id, ticket_id, level, at) for clock_id, ticket_id, at in await conn.execute(stmt))
    return sorted(found, key=lambda a: (a.at, a.clock_id, a.level))


async def record_alert(session: AsyncSession, *, ticket_id: int, clock_id: int, level: str, at: datetime) -> bool:
    """Claim the sending of one alert: True when this transaction inserted its row, False when it exists already.

    One statement that never fails on the unique key: two daemons claiming the same alert at once both get an
    answer, and exactly one gets True (the other waits for its commit, then finds the row).
    """
    conn = await core_connection(session)
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = (
        dialect_insert(ALERTS)
        .values(ticket_id=ticket_id, clock_id=clock_id, level=level, sent_at=at)
        .on_conflict_do_nothing(index_elements=["clock_id", "level"])
        .returning(ALERTS.c.id)
    )
    return (await conn.execute(stmt)).first() is not None


async def lock_ticket(session: AsyncSession, ticket_id: int) -> RowMapping | None:
    """The ticket's row, locked until the transaction ends (on Postgres): a concurrent reply, resolve or pause,
    which changes the ticket before its clocks, then waits for this transaction, or this one for it."""
    conn = await core_connection(session)
    stmt = select(TICKETS).where(TICKETS.c.id == ticket_id).with_for_update()
    return (await conn.execute(stmt)).mappings().first()


async def mark_breached(session: AsyncSession, *, clock_id: int, at: datetime) -> None:
    """A running clock's breach, as the timers saw it: recorded on the clock (a stop later keeps the flag)."""
    conn = await core_connection(session)
    stmt = (
        update(CLOCKS)
        .where(CLOCKS.c.id == clock_id, CLOCKS.c.achieved_at.is_(None))
        .values(breached=True, breached_at=at)
    )
    await conn.execute(stmt)


async def shown_clocks(session: AsyncSession, ticket_ids: Collection[int]) -> dict[int, ClockState]:
    """The clock each of these tickets shows (see shown_clock); tickets without any are left out."""
    conn = await core_connection(session)
    rows: list[RowMapping] = []
    for chunk in in_chunks(ticket_ids):
        rows.extend((await conn.execute(select(*_CLOCK_COLUMNS).where(CLOCKS.c.ticket_id.in_(chunk)))).mappings())
    paused = await open_pauses(session, {row["ticket_id"] for row in rows})
    by_ticket: dict[int, list[ClockState]] = {}
    for row in rows:
        p = paused.get(row["ticket_id"])
        by_ticket.setdefault(row["ticket_id"], []).append(_clock(row, p.reason if p else None))
    return {t: shown for t, clocks in by_ticket.items() if (shown := shown_clock(clocks)) is not None}
