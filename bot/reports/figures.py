"""One set of figures for any period: what the report command, the scheduled summaries and the dashboard show.

The numbers come from storage/reports.py, aggregated in SQL (see its docstring for what counts where); this
module names them, adds the previous period's figures beside them and writes the JSON that `mentiondesk report
--format json` prints (its keys are documented in the README's "Reports" section).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage import reports
from mentiondesk.storage.models import SlaClockKind
from mentiondesk.storage.types import utcnow

UTC_ZONE = ZoneInfo("UTC")
CLOCKS = (SlaClockKind.FIRST_RESPONSE, SlaClockKind.NEXT_RESPONSE, SlaClockKind.RESOLUTION)
BREACHES_SHOWN = 50
# Open and waiting tickets by how long ago they were opened: (label, lower bound of the age).
BACKLOG_AGES: tuple[tuple[str, timedelta], ...] = (
    ("<1h", timedelta(0)),
    ("1-4h", timedelta(hours=1)),
    ("4-24h", timedelta(hours=4)),
    ("1-3d", timedelta(days=1)),
    (">3d", timedelta(days=3)),
)


@dataclass(frozen=True)
class Period:
    start: datetime  # aware UTC, inclusive
    end: datetime  # aware UTC, exclusive

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a period's instants must be aware")
        if self.end <= self.start:
            raise ValueError(f"a period must end after it starts: {self.start} .. {self.end}")

    def previous(self) -> Period:
        """The period of the same length just before this one."""
        return Period(self.start - (self.end - self.start), self.start)

    @classmethod
    def last(cls, duration: timedelta, *, until: datetime) -> Period:
        """The `duration` up to `until`."""
        return cls(until - duration, until)


@dataclass(frozen=True)
class Spread:
    """A clock's durations in the period, seconds."""

    count: int
    median_s: float | None
    p90_s: float | None
    mean_s: float | None


@dataclass(frozen=True)
class ClockFigures:
    clock: str  # "first_response" | "next_response" | "resolution"
    business: Spread  # business time (what SLA counts)
    wall: Spread  # wall-clock beside it
    measured: int  # clocks with a target that stopped in the period
    within_sla: float | None  # share (0..1) of those met; None when none measured
    breaches: int


@dataclass(frozen=True)
class Breach:
    ticket_id: int
    clock: str
    channel: str
    slack_ts: str | None
    due_at: datetime
    breached_at: datetime | None
    assignee: str | None
    card_url: str | None  # None before the card is posted


@dataclass(frozen=True)
class GroupRow:
    """One agent, channel or priority."""

    key: str
    opened: int
    answered: int
    first_response_median_s: float | None  # business
    within_sla: float | None  # first-response share within SLA


@dataclass(frozen=True)
class DayPoint:
    """For charts: one calendar day (UTC, or the zone given)."""

    day: date
    first_response_median_s: float | None
    first_response_p90_s: float | None
    within_sla: float | None


@dataclass(frozen=True)
class Figures:
    period: Period
    opened: int
    answered: int
    resolved: int
    still_open: int
    clocks: dict[str, ClockFigures]  # keyed by clock
    breaches: list[Breach]  # in the period, newest first (at most 50)
    backlog: list[tuple[str, int]]  # open+waiting tickets by age now
    by_agent: list[GroupRow]
    by_channel: list[GroupRow]
    by_priority: list[GroupRow]
    daily: list[DayPoint]
    previous: Figures | None  # the previous period (its own previous is None)

    def groups(self, by: str) -> list[GroupRow]:
        """by_agent, by_channel or by_priority, by name ("agent", "channel", "priority")."""
        return {"agent": self.by_agent, "channel": self.by_channel, "priority": self.by_priority}[by]


def card_url(channel: str, ts: str | None) -> str | None:
    """Slack's permalink form for the card's message."""
    if not ts:
        return None
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def change(current: float | int | None, previous: float | int | None) -> float | None:
    """The relative change from previous to current (0.25: up a quarter); None when not comparable."""
    if current is None or previous is None or previous == 0:
        return None
    return (current - previous) / previous


def _share(met: int, measured: int) -> float | None:
    return met / measured if measured else None


def _spread(durations: reports.Durations) -> Spread:
    return Spread(durations.count, durations.median_s, durations.p90_s, durations.mean_s)


def days_of(period: Period, zone: ZoneInfo) -> list[tuple[date, datetime, datetime]]:
    """The calendar days (in zone) the period touches, each as its [start, end) within the period, in UTC."""
    first = period.start.astimezone(zone).date()
    last = (period.end - timedelta(microseconds=1)).astimezone(zone).date()
    days = []
    day = first
    while day <= last:
        begins = datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)
        ends = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)
        days.append((day, max(begins, period.start), min(ends, period.end)))
        day += timedelta(days=1)
    return days


async def compute_figures(
    sessions: async_sessionmaker[AsyncSession],
    period: Period,
    *,
    with_previous: bool = True,
    zone: ZoneInfo = UTC_ZONE,
    now: datetime | None = None,
) -> Figures:
    """The figures of the period (and of the previous one with with_previous); backlog ages are counted at now."""
    start, end = period.start, period.end
    now = now or utcnow()
    async with sessions() as session:
        tickets = await reports.ticket_counts(session, start, end)
        business = await reports.clock_durations(session, start, end)
        wall = await reports.clock_durations(session, start, end, wall=True)
        counts = await reports.clock_counts(session, start, end)
        breach_rows = await reports.breaches(session, start, end, limit=BREACHES_SHOWN)
        backlog = await reports.backlog(session, [now - age for _, age in BACKLOG_AGES[1:]])
        groups = {by: await reports.group_counts(session, start, end, by) for by in reports.GROUPINGS}
        days = days_of(period, zone)
        daily = await reports.daily_first_responses(session, [(s, e) for _, s, e in days])

    clocks = {}
    for kind in CLOCKS:
        counted = counts.get(kind, reports.ClockCounts(0, 0, 0))
        clocks[kind] = ClockFigures(
            clock=kind,
            business=_spread(business.get(kind, reports.NO_DURATIONS)),
            wall=_spread(wall.get(kind, reports.NO_DURATIONS)),
            measured=counted.measured,
            within_sla=_share(counted.met, counted.measured),
            breaches=counted.breaches,
        )
    rows = {
        by: [
            GroupRow(
                key=key,
                opened=group.opened,
                answered=group.answered,
                first_response_median_s=group.first_response.median_s,
                within_sla=_share(group.met, group.measured),
            )
            for key, group in found.items()
        ]
        for by, found in groups.items()
    }
    previous = (
        await compute_figures(sessions, period.previous(), with_previous=False, zone=zone, now=now)
        if with_previous
        else None
    )
    return Figures(
        period=period,
        opened=tickets.opened,
        answered=tickets.answered,
        resolved=tickets.resolved,
        still_open=tickets.still_open,
        clocks=clocks,
        breaches=[
            Breach(
                ticket_id=row.ticket_id,
                clock=row.clock,
                channel=row.channel,
                slack_ts=row.slack_ts,
                due_at=row.due_at,
                breached_at=row.breached_at,
                assignee=row.assignee,
                card_url=card_url(row.channel, row.slack_ts),
            )
            for row in breach_rows
        ],
        backlog=[(label, count) for (label, _), count in zip(BACKLOG_AGES, backlog, strict=True)],
        by_agent=rows["agent"],
        by_channel=rows["channel"],
        by_priority=rows["priority"],
        daily=[
            DayPoint(day, durations.median_s, durations.p90_s, _share(met, measured))
            for (day, _, _), (durations, measured, met) in zip(days, daily, strict=True)
        ],
        previous=previous,
    )


# --- JSON ------------------------------------------------------------------------------------------------------


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _spread_json(spread: Spread) -> dict[str, Any]:
    return {"count": spread.count, "median_s": spread.median_s, "p90_s": spread.p90_s, "mean_s": spread.mean_s}


def _clock_json(clock: ClockFigures) -> dict[str, Any]:
    return {
        "business": _spread_json(clock.business),
        "wall": _spread_json(clock.wall),
        "measured": clock.measured,
        "within_sla": clock.within_sla,
        "breaches": clock.breaches,
    }


GROUP_FIGURES = ("opened", "answered", "first_response_median_s", "within_sla")


def _group_json(row: GroupRow, previous: GroupRow | None) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in GROUP_FIGURES}
    return {
        "key": row.key,
        **values,
        "change": {name: change(values[name], getattr(previous, name, None)) for name in GROUP_FIGURES},
    }


TICKET_FIGURES = ("opened", "answered", "resolved", "still_open")


def _figures_body(figures: Figures) -> dict[str, Any]:
    return {
        "period": {"start": _instant(figures.period.start), "end": _instant(figures.period.end)},
        "tickets": {name: getattr(figures, name) for name in TICKET_FIGURES},
        "clocks": {kind: _clock_json(clock) for kind, clock in figures.clocks.items()},
        "breaches": [
            {
                "ticket_id": b.ticket_id,
                "clock": b.clock,
                "channel": b.channel,
                "slack_ts": b.slack_ts,
                "due_at": _instant(b.due_at),
                "breached_at": _instant(b.breached_at),
                "assignee": b.assignee,
                "card_url": b.card_url,
            }
            for b in figures.breaches
        ],
        "backlog": dict(figures.backlog),
        **{f"by_{by}": [_group_json(row, None) for row in figures.groups(by)] for by in reports.GROUPINGS},
        "daily": [
            {
                "day": point.day.isoformat(),
                "first_response_median_s": point.first_response_median_s,
                "first_response_p90_s": point.first_response_p90_s,
                "within_sla": point.within_sla,
            }
            for point in figures.daily
        ],
    }


def _changes(current: Figures, previous: Figures) -> dict[str, Any]:
    clocks = {}
    for kind, clock in current.clocks.items():
        before = previous.clocks[kind]
        clocks[kind] = {
            "median_s": change(clock.business.median_s, before.business.median_s),
            "p90_s": change(clock.business.p90_s, before.business.p90_s),
            "mean_s": change(clock.business.mean_s, before.business.mean_s),
            "within_sla": change(clock.within_sla, before.within_sla),
            "breaches": change(clock.breaches, before.breaches),
        }
    return {
        "tickets": {name: change(getattr(current, name), getattr(previous, name)) for name in TICKET_FIGURES},
        "clocks": clocks,
    }


def figures_json(figures: Figures) -> dict[str, Any]:
    """The documented JSON of `mentiondesk report --format json` (README, "Reports")."""
    body = _figures_body(figures)
    previous = figures.previous
    for by in reports.GROUPINGS:
        before = {row.key: row for row in previous.groups(by)} if previous else {}
        body[f"by_{by}"] = [_group_json(row, before.get(row.key)) for row in figures.groups(by)]
    if previous is None:
        body["previous"] = None
        body["change"] = None
    else:
        body["previous"] = _figures_body(previous)
        body["change"] = _changes(figures, previous)
    return body
