"""The reads behind the managers' figures: counts, durations and shares over a period, aggregated in SQL.

Every function takes a half-open period [start, end) of aware UTC instants and returns a handful of rows per
group, never a row per ticket. What counts where:

- opened: tickets created in the period; answered: tickets whose first public reply was in it
  (tickets.first_response_at); resolved: resolved_at in it (a reopen clears it); still open: opened in the
  period and open or waiting now.
- durations: the SLA clocks that stopped in the period (achieved_at), as they measured themselves (business
  and wall seconds, pauses left out). Every stored clock has a target, so each one stopped is measured, and
  it was within SLA unless flagged breached.
- breaches: clocks whose breach instant (breached_at) lies in the period, stopped or still running.
- per agent: the author of a ticket's first published reply answered it; tickets opened count for their
  assignee.

Percentiles interpolate linearly between the closest ranks (PostgreSQL's percentile_cont, numpy's default).
SQLite has no percentile function, so on both backends row_number() numbers each group's values and the query
reads the one or two values around the wanted rank, found by integer comparisons only (no division a dialect
might round its own way); the interpolation between those two values is then the same Python arithmetic for
both backends, once per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mentiondesk.storage.db import table_of
from mentiondesk.storage.models import Reply, ReplyState, SlaClock, SlaClockKind, Ticket, TicketState
from mentiondesk.storage.priorities import priority_rank
from mentiondesk.storage.triage import was_on_desk

TICKETS = table_of(Ticket)
CLOCKS = table_of(SlaClock)
REPLIES = table_of(Reply)

ON_DESK = (TicketState.OPEN, TicketState.WAITING)

# (numerator, denominator) of each percentile read: exact fractions keep the rank arithmetic in integers.
MEDIAN = (1, 2)
P90 = (9, 10)


@dataclass(frozen=True)
class Durations:
    """One group's durations, in seconds; the statistics are None when count is 0."""

    count: int
    median_s: float | None
    p90_s: float | None
    mean_s: float | None


NO_DURATIONS = Durations(0, None, None, None)


@dataclass(frozen=True)
class ClockCounts:
    measured: int  # stopped in the period
    met: int  # of those, not breached
    breaches: int  # breach instants in the period


@dataclass(frozen=True)
class TicketCounts:
    opened: int
    answered: int
    resolved: int
    still_open: int


@dataclass(frozen=True)
class BreachRow:
    ticket_id: int
    clock: str
    channel: str
    slack_ts: str | None
    due_at: datetime
    breached_at: datetime | None
    assignee: str | None


@dataclass(frozen=True)
class GroupCounts:
    opened: int
    answered: int
    first_response: Durations
    measured: int
    met: int


async def _run(session: AsyncSession, statement: Any) -> Any:
    # Through the connection: sqlmodel's session warns on execute() for anything not an ORM select.
    return await (await session.connection()).execute(statement)


def _in(column: Any, start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(column >= start, column < end)


def interpolate(low: float, high: float | None, count: int, fraction: tuple[int, int]) -> float:
    """The percentile between the values at its two closest ranks (high: None when the rank is exact)."""
    num, den = fraction
    excess = (count - 1) * num % den
    if excess == 0 or high is None:
        return float(low)
    return float(low) + (float(high) - float(low)) * excess / den


def _rank_is(rank: Any, count: Any, fraction: tuple[int, int], offset: int) -> ColumnElement[bool]:
    """rank (1-based) is floor((count - 1) * num / den) + offset, written without a division."""
    num, den = fraction
    position = (count - 1) * num
    return and_((rank - offset) * den <= position, position < (rank - offset + 1) * den)


def _spread_statement(source: Select[Any]) -> Select[Any]:
    """Per group g of source's (g, v) rows: count, sum and the values either side of the median and the p90."""
    values = source.subquery("durations")
    ranked = select(
        values.c.g,
        values.c.v,
        func.row_number().over(partition_by=values.c.g, order_by=values.c.v).label("rank"),
        func.count().over(partition_by=values.c.g).label("n"),
    ).subquery("ranked")
    rank, n = ranked.c.rank, ranked.c.n

    def around(fraction: tuple[int, int], offset: int) -> Any:
        return func.max(case((_rank_is(rank, n, fraction, offset), ranked.c.v)))

    return select(
        ranked.c.g,
        func.max(n).label("n"),
        func.sum(ranked.c.v).label("total"),
        around(MEDIAN, 1).label("median_lo"),
        around(MEDIAN, 2).label("median_hi"),
        around(P90, 1).label("p90_lo"),
        around(P90, 2).label("p90_hi"),
    ).group_by(ranked.c.g)


async def _spreads(session: AsyncSession, source: Select[Any]) -> dict[Any, Durations]:
    result = await _run(session, _spread_statement(source))
    spreads: dict[Any, Durations] = {}
    for row in result.mappings():
        count = int(row["n"])
        spreads[row["g"]] = Durations(
            count=count,
            median_s=interpolate(row["median_lo"], row["median_hi"], count, MEDIAN),
            p90_s=interpolate(row["p90_lo"], row["p90_hi"], count, P90),
            mean_s=float(row["total"]) / count,
        )
    return spreads


def _stopped_clocks(start: datetime, end: datetime, value: Any, key: Any) -> Select[Any]:
    return select(key.label("g"), value.label("v")).where(_in(CLOCKS.c.achieved_at, start, end), value.is_not(None))


async def clock_durations(
    session: AsyncSession, start: datetime, end: datetime, *, wall: bool = False
) -> dict[str, Durations]:
    """Each kind of clock's durations (business time, or wall-clock with wall), for the clocks stopped in the period."""
    value = CLOCKS.c.wall_s if wall else CLOCKS.c.business_s
    return await _spreads(session, _stopped_clocks(start, end, value, CLOCKS.c.kind))


async def clock_counts(session: AsyncSession, start: datetime, end: datetime) -> dict[str, ClockCounts]:
    stopped = _in(CLOCKS.c.achieved_at, start, end)
    breached_in = _in(CLOCKS.c.breached_at, start, end)
    statement = (
        select(
            CLOCKS.c.kind,
            func.count(case((stopped, 1))).label("measured"),
            func.count(case((and_(stopped, CLOCKS.c.breached.is_(False)), 1))).label("met"),
            func.count(case((breached_in, 1))).label("breaches"),
        )
        .where(stopped | breached_in)
        .group_by(CLOCKS.c.kind)
    )
    result = await _run(session, statement)
    return {row.kind: ClockCounts(row.measured, row.met, row.breaches) for row in result}


async def ticket_counts(session: AsyncSession, start: datetime, end: datetime) -> TicketCounts:
    t = TICKETS.c
    # Items put in triage count once an agent opens them (dated by when the post came in, as other tickets are).
    opened = and_(_in(t.created_at, start, end), was_on_desk(TICKETS))

    def count_where(condition: ColumnElement[bool]) -> Any:
        return select(func.count()).select_from(TICKETS).where(condition).scalar_subquery()

    statement = select(
        count_where(opened).label("opened"),
        count_where(_in(t.first_response_at, start, end)).label("answered"),
        count_where(_in(t.resolved_at, start, end)).label("resolved"),
        count_where(and_(opened, t.state.in_(ON_DESK))).label("still_open"),
    )
    row = (await _run(session, statement)).one()
    return TicketCounts(row.opened, row.answered, row.resolved, row.still_open)


async def breaches(session: AsyncSession, start: datetime, end: datetime, *, limit: int = 50) -> list[BreachRow]:
    """The clocks breached in the period, newest breach first."""
    statement = (
        select(
            CLOCKS.c.ticket_id,
            CLOCKS.c.kind,
            TICKETS.c.channel,
            TICKETS.c.slack_ts,
            # A breach kept its due time unless a pause began before it was reached: the breach instant then.
            func.coalesce(CLOCKS.c.due_at, CLOCKS.c.breached_at).label("due_at"),
            CLOCKS.c.due_at.label("own_due_at"),
            CLOCKS.c.breached_at,
            TICKETS.c.assignee_slack_id,
        )
        .join(TICKETS, TICKETS.c.id == CLOCKS.c.ticket_id)
        .where(_in(CLOCKS.c.breached_at, start, end))
        .order_by(CLOCKS.c.breached_at.desc(), CLOCKS.c.id.desc())
        .limit(limit)
    )
    result = await _run(session, statement)
    return [
        BreachRow(
            ticket_id=row.ticket_id,
            clock=row.kind,
            channel=row.channel,
            slack_ts=row.slack_ts,
            # coalesce() loses the column's type, so the due time is read through the column when it has one.
            due_at=row.own_due_at if row.own_due_at is not None else row.breached_at,
            breached_at=row.breached_at,
            assignee=row.assignee_slack_id,
        )
        for row in result
    ]


async def backlog(session: AsyncSession, bounds: Sequence[datetime]) -> list[int]:
    """Tickets open or waiting now, counted by creation time between bounds (newest first, descending instants).

    bounds b0 > b1 > ... split time into len(bounds) + 1 buckets: created at or after b0, in [b1, b0), ...,
    before the last.
    """
    created = TICKETS.c.created_at
    bucket = case(*((created >= bound, index) for index, bound in enumerate(bounds)), else_=len(bounds))
    statement = (
        select(bucket.label("bucket"), func.count().label("n")).where(TICKETS.c.state.in_(ON_DESK)).group_by(bucket)
    )
    counts = [0] * (len(bounds) + 1)
    for row in await _run(session, statement):
        counts[row.bucket] = row.n
    return counts


def _first_reply_author() -> Any:
    """The author of the ticket's first published reply: who answered it."""
    return (
        select(REPLIES.c.author_slack_id)
        .where(REPLIES.c.ticket_id == TICKETS.c.id, REPLIES.c.state == ReplyState.PUBLISHED)
        .order_by(REPLIES.c.published_at, REPLIES.c.id)
        .limit(1)
        .correlate(TICKETS)
        .scalar_subquery()
    )


GROUPINGS = ("agent", "channel", "priority")


def _count_by(keys: Select[Any]) -> Select[Any]:
    # Grouped outside: the agent's key is a correlated subquery, which GROUP BY cannot name on every backend.
    rows = keys.subquery("keys")
    return select(rows.c.g, func.count().label("n")).group_by(rows.c.g)


async def group_counts(session: AsyncSession, start: datetime, end: datetime, by: str) -> dict[str, GroupCounts]:
    """Per agent, channel or priority: tickets opened and answered, and the first responses measured."""
    if by not in GROUPINGS:
        raise ValueError(f"no such grouping: {by!r}")
    answerer = _first_reply_author()
    opened_key: Any = {"agent": TICKETS.c.assignee_slack_id, "channel": TICKETS.c.channel}.get(by, TICKETS.c.priority)
    answered_key: Any = answerer if by == "agent" else opened_key

    opened_rows = await _run(
        session,
        _count_by(select(opened_key.label("g")).where(_in(TICKETS.c.created_at, start, end), was_on_desk(TICKETS))),
    )
    opened = {row.g: row.n for row in opened_rows if row.g is not None}
    answered_rows = await _run(
        session, _count_by(select(answered_key.label("g")).where(_in(TICKETS.c.first_response_at, start, end)))
    )
    answered = {row.g: row.n for row in answered_rows if row.g is not None}

    first_responses = (
        select(answered_key.label("g"), CLOCKS.c.business_s.label("v"), CLOCKS.c.breached.label("breached"))
        .select_from(CLOCKS.join(TICKETS, TICKETS.c.id == CLOCKS.c.ticket_id))
        .where(CLOCKS.c.kind == SlaClockKind.FIRST_RESPONSE, _in(CLOCKS.c.achieved_at, start, end))
        .subquery("first_responses")
    )
    durations = await _spreads(
        session, select(first_responses.c.g, first_responses.c.v).where(first_responses.c.v.is_not(None))
    )
    measured_rows = await _run(
        session,
        select(
            first_responses.c.g,
            func.count().label("measured"),
            func.count(case((first_responses.c.breached.is_(False), 1))).label("met"),
        ).group_by(first_responses.c.g),
    )
    measured = {row.g: (row.measured, row.met) for row in measured_rows if row.g is not None}

    keys = sorted({*opened, *answered, *measured} - {None})
    if by == "priority":
        keys.sort(key=priority_rank)  # urgent first, as agents rank them; stable, so unknown values stay in order
    return {
        key: GroupCounts(
            opened=opened.get(key, 0),
            answered=answered.get(key, 0),
            first_response=durations.get(key, NO_DURATIONS),
            measured=measured.get(key, (0, 0))[0],
            met=measured.get(key, (0, 0))[1],
        )
        for key in keys
    }


async def daily_first_responses(
    session: AsyncSession, days: Sequence[tuple[datetime, datetime]]
) -> list[tuple[Durations, int, int]]:
    """Per day given (consecutive [start, end) spans): first-response durations, and how many were measured and met."""
    if not days:
        return []
    achieved = CLOCKS.c.achieved_at
    day = case(*((achieved < end, index) for index, (_, end) in enumerate(days)))
    window = _in(achieved, days[0][0], days[-1][1])
    first = CLOCKS.c.kind == SlaClockKind.FIRST_RESPONSE
    durations = await _spreads(
        session,
        select(day.label("g"), CLOCKS.c.business_s.label("v")).where(first, window, CLOCKS.c.business_s.is_not(None)),
    )
    counted = await _run(
        session,
        select(
            day.label("g"),
            func.count().label("measured"),
            func.count(case((CLOCKS.c.breached.is_(False), 1))).label("met"),
        )
        .where(first, window)
        .group_by(day),
    )
    counts = {row.g: (row.measured, row.met) for row in counted}
    return [(durations.get(i, NO_DURATIONS), *counts.get(i, (0, 0))) for i in range(len(days))]
