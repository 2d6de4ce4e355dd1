"""The managers' figures against a seeded database whose expected numbers the test works out itself.

The rows are inserted directly (tickets, their SLA clocks as stopped or breached, the published replies), and
every expectation is computed here from the same hand-written list with Python's statistics and a sorted-list
linear interpolation, never through the module under test. Both backends, so SQLite and Postgres agree.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.reports.figures import Figures, Period, card_url, change, compute_figures, figures_json
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import Reply, ReplyState, SlaClock, Ticket, TicketState

START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday
PERIOD = Period(START, START + timedelta(days=7))
NOW = START + timedelta(days=8)
HOUR = 3600.0


def at(days: float, hours: float = 0.0) -> datetime:
    return START + timedelta(days=days, hours=hours)


@dataclass
class Clock:
    kind: str
    business_s: float | None  # None: still running
    wall_s: float | None = None
    breached: bool = False
    stopped: datetime | None = None  # achieved_at
    breached_at: datetime | None = None
    target_s: int = 3600


@dataclass
class Seed:
    id: int
    created: datetime
    channel: str = "C1"
    priority: str = "normal"
    state: str = TicketState.RESOLVED
    assignee: str | None = None
    answered_by: str | None = None  # the author of the first published reply
    answered: datetime | None = None
    resolved: datetime | None = None
    slack_ts: str | None = "1700000000.000100"
    clocks: list[Clock] = field(default_factory=list)


def fr(business_s: float, stopped: datetime, *, wall_s: float | None = None, breached: bool = False) -> Clock:
    return Clock("first_response", business_s, wall_s if wall_s is not None else business_s, breached, stopped)


TICKETS = [
    Seed(
        1,
        at(0, 1),
        assignee="U1",
        answered_by="U1",
        answered=at(0, 2),
        resolved=at(1),
        clocks=[
            fr(600, at(0, 2), wall_s=900),
            Clock("next_response", 120, 150, False, at(0, 5)),
            Clock("resolution", 3 * HOUR, 23 * HOUR, False, at(1)),
        ],
    ),
    Seed(
        2,
        at(0, 3),
        priority="high",
        assignee="U1",
        answered_by="U2",
        answered=at(0, 4),
        resolved=at(2),
        clocks=[fr(1800, at(0, 4)), Clock("resolution", 9 * HOUR, 45 * HOUR, True, at(2), breached_at=at(1, 12))],
    ),
    Seed(
        3,
        at(1, 1),
        channel="C2",
        assignee="U2",
        answered_by="U2",
        answered=at(2, 2),
        state=TicketState.OPEN,
        clocks=[fr(2 * HOUR, at(2, 2), wall_s=25 * HOUR, breached=True)],
    ),
    Seed(
        4,
        at(1, 2),
        channel="C2",
        assignee="U2",
        answered_by="U1",
        answered=at(1, 3),
        state=TicketState.WAITING,
        clocks=[fr(300, at(1, 3))],
    ),
    # Not answered: its first-response clock still runs, breached; it counts as a breach but is not measured.
    Seed(
        5,
        at(3),
        state=TicketState.OPEN,
        slack_ts=None,
        clocks=[Clock("first_response", None, None, True, None, breached_at=at(3, 1))],
    ),
    Seed(
        6,
        at(4),
        priority="high",
        assignee="U1",
        answered_by="U1",
        answered=at(4, 2),
        state=TicketState.OPEN,
        clocks=[fr(1.5 * HOUR, at(4, 2), wall_s=6000, breached=True)],
    ),
    Seed(
        7,
        at(5),
        assignee="U3",
        answered_by="U3",
        answered=at(5, 1),
        resolved=at(5, 3),
        clocks=[fr(450.5, at(5, 1)), Clock("resolution", 2 * HOUR, 2 * HOUR, False, at(5, 3))],
    ),
    # The previous week: one ticket, answered by U1 in 20 minutes, within SLA.
    Seed(
        8,
        at(-3),
        assignee="U1",
        answered_by="U1",
        answered=at(-3, 1),
        resolved=at(-2),
        clocks=[fr(1200, at(-3, 1)), Clock("resolution", 5 * HOUR, 24 * HOUR, False, at(-2))],
    ),
    # After the period: counts nowhere in it.
    Seed(9, at(8, 1), answered_by="U2", answered=at(8, 2), clocks=[fr(60, at(8, 2))]),
]


def breached_at(t: Seed, c: Clock) -> datetime | None:
    """When the clock breached: as given, else at its due time for a breached one."""
    if c.breached_at is not None or not c.breached:
        return c.breached_at
    return t.created + timedelta(seconds=c.target_s)


async def seed(sessions: async_sessionmaker[AsyncSession], tickets: Sequence[Seed]) -> None:
    async with transaction(sessions) as session:
        await (await session.connection()).execute(
            insert(Ticket),
            [
                {
                    "id": t.id,
                    "state": t.state,
                    "priority": t.priority,
                    "customer_account_id": f"a{t.id}",
                    "customer_acct": f"customer{t.id}@example.social",
                    "root_status_id": str(1000 + t.id),
                    "posted_at": t.created,
                    "received_at": t.created,
                    "created_at": t.created,
                    "updated_at": t.created,
                    "score": 0.9,
                    "channel": t.channel,
                    "slack_ts": t.slack_ts,
                    "assignee_slack_id": t.assignee,
                    "first_response_at": t.answered,
                    "resolved_at": t.resolved,
                }
                for t in tickets
            ],
        )
        clocks = [
            {
                "ticket_id": t.id,
                "kind": c.kind,
                "seq": 1 if c.kind == "next_response" else 0,
                "policy": "default",
                "calendar": "always",
                "target_s": c.target_s,
                "started_at": t.created,
                "due_at": t.created + timedelta(seconds=c.target_s),
                "achieved_at": c.stopped,
                "business_s": c.business_s,
                "wall_s": c.wall_s,
                "breached": c.breached,
                "breached_at": breached_at(t, c),
            }
            for t in tickets
            for c in t.clocks
        ]
        if clocks:
            await (await session.connection()).execute(insert(SlaClock), clocks)
        replies = []
        for t in tickets:
            if t.answered is None or t.answered_by is None:
                continue
            common = {"ticket_id": t.id, "text": "hi", "visibility": "public", "in_reply_to_status_id": "1"}
            replies.append(
                {**common, "author_slack_id": t.answered_by, "state": ReplyState.PUBLISHED, "published_at": t.answered}
            )
            # A later reply by someone else, and a rejected draft before it: neither answered the ticket.
            replies.append(
                {
                    **common,
                    "author_slack_id": "U9",
                    "state": ReplyState.PUBLISHED,
                    "published_at": t.answered + timedelta(hours=1),
                }
            )
            replies.append({**common, "author_slack_id": "U8", "state": ReplyState.REJECTED, "published_at": None})
        if replies:
            await (await session.connection()).execute(insert(Reply), replies)


# --- the expected numbers, worked out from the list ------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks, on a sorted list."""
    ordered = sorted(values)
    h = (len(ordered) - 1) * p
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (h - low)


def within(t: datetime, period: Period) -> bool:
    return period.start <= t < period.end


def in_period(t: datetime | None, period: Period = PERIOD) -> bool:
    return t is not None and within(t, period)


def stopped_in(period: Period, kind: str, tickets: Sequence[Seed] = TICKETS) -> list[Clock]:
    return [c for t in tickets for c in t.clocks if c.kind == kind and c.stopped and within(c.stopped, period)]


def approx(value: float | None) -> Any:
    return pytest.approx(value, rel=1e-12, abs=1e-9)


@pytest.fixture
async def figures(sessions: async_sessionmaker[AsyncSession]) -> Figures:
    await seed(sessions, TICKETS)
    return await compute_figures(sessions, PERIOD, now=NOW)


async def test_ticket_counts(figures: Figures) -> None:
    in_period = [t for t in TICKETS if within(t.created, PERIOD)]
    assert figures.opened == len(in_period) == 7
    assert figures.answered == sum(1 for t in TICKETS if t.answered and within(t.answered, PERIOD)) == 6
    assert figures.resolved == sum(1 for t in TICKETS if t.resolved and within(t.resolved, PERIOD)) == 3
    assert figures.still_open == sum(1 for t in in_period if t.state in ("open", "waiting")) == 4


@pytest.mark.parametrize("kind", ["first_response", "next_response", "resolution"])
async def test_each_clock_median_p90_mean_and_share_within_sla(figures: Figures, kind: str) -> None:
    clocks = stopped_in(PERIOD, kind)
    business = [c.business_s for c in clocks if c.business_s is not None]
    wall = [c.wall_s for c in clocks if c.wall_s is not None]
    got = figures.clocks[kind]
    assert got.business.count == len(business) and got.wall.count == len(wall)
    assert got.business.median_s == approx(statistics.median(business))
    assert got.business.p90_s == approx(percentile(business, 0.9))
    assert got.business.mean_s == approx(statistics.fmean(business))
    assert got.wall.median_s == approx(statistics.median(wall))
    assert got.wall.p90_s == approx(percentile(wall, 0.9))
    assert got.wall.mean_s == approx(statistics.fmean(wall))
    assert got.measured == len(clocks)
    assert got.within_sla == approx(sum(not c.breached for c in clocks) / len(clocks))
    breaches = [c for t in TICKETS for c in t.clocks if c.kind == kind and in_period(breached_at(t, c))]
    assert got.breaches == len(breaches)


async def test_first_response_figures_spelled_out(figures: Figures) -> None:
    # The same numbers by hand, so that a mistake shared by the test's helpers and the code shows too.
    first = figures.clocks["first_response"]
    # Stopped this week, sorted: 300, 450.5, 600, 1800, 5400, 7200.
    assert first.business.median_s == 1200.0
    assert first.business.p90_s == pytest.approx(5400 + 0.5 * 1800)
    assert first.within_sla == pytest.approx(4 / 6)
    # Tickets 3 and 6 (stopped late) and 5 (still running) breached this week.
    assert first.breaches == 3


async def test_breaches_newest_first_with_links_to_the_cards(figures: Figures) -> None:
    expected = sorted(
        ((breached_at(t, c), t.id, c.kind) for t in TICKETS for c in t.clocks if in_period(breached_at(t, c))),
        reverse=True,
    )
    assert [(b.breached_at, b.ticket_id, b.clock) for b in figures.breaches] == expected
    by_ticket = {b.ticket_id: b for b in figures.breaches}
    assert by_ticket[3].card_url == "https://slack.com/archives/C2/p1700000000000100"
    assert by_ticket[5].card_url is None  # no card posted yet
    assert by_ticket[3].assignee == "U2" and by_ticket[3].channel == "C2"


def group_rows(by: str, period: Period = PERIOD) -> dict[str, tuple[int, int, float | None, float | None]]:
    """(opened, answered, first-response median, within-SLA share) per agent, channel or priority."""

    def opened_key(t: Seed) -> str | None:
        return {"agent": t.assignee, "channel": t.channel, "priority": t.priority}[by]

    def answered_key(t: Seed) -> str | None:
        return t.answered_by if by == "agent" else opened_key(t)

    keys = {opened_key(t) for t in TICKETS if within(t.created, period)}
    keys |= {answered_key(t) for t in TICKETS if t.answered and within(t.answered, period)}
    rows = {}
    for key in sorted(k for k in keys if k is not None):
        mine = [t for t in TICKETS if answered_key(t) == key]
        clocks = stopped_in(period, "first_response", mine)
        rows[key] = (
            sum(1 for t in TICKETS if opened_key(t) == key and within(t.created, period)),
            sum(1 for t in mine if t.answered and within(t.answered, period)),
            statistics.median([c.business_s for c in clocks if c.business_s is not None]) if clocks else None,
            sum(not c.breached for c in clocks) / len(clocks) if clocks else None,
        )
    return rows


@pytest.mark.parametrize("by", ["agent", "channel", "priority"])
async def test_rows_per_agent_channel_and_priority(figures: Figures, by: str) -> None:
    expected = group_rows(by)
    got = {r.key: (r.opened, r.answered, r.first_response_median_s, r.within_sla) for r in figures.groups(by)}
    assert got.keys() == expected.keys()
    for key, row in expected.items():
        assert got[key] == pytest.approx(row), key
    if by == "agent":
        # U1 answered tickets 1, 4 and 6 (600, 300 and 5400 s, the last one breached); U2 was assigned
        # tickets 3 and 4 but U1 answered 4; U9's later replies and U8's rejected draft answered nothing.
        assert got["U1"] == (3, 3, 600.0, pytest.approx(2 / 3))
        assert got["U2"] == (2, 2, 0.5 * (1800 + 7200), 0.5)
        assert "U9" not in got and "U8" not in got


async def test_the_previous_period_and_each_change(figures: Figures) -> None:
    previous = figures.previous
    assert previous is not None and previous.previous is None
    assert previous.period == Period(START - timedelta(days=7), START)
    assert previous.opened == 1 and previous.answered == 1
    assert previous.clocks["first_response"].business.median_s == 1200.0
    assert previous.clocks["first_response"].within_sla == 1.0
    data = figures_json(figures)
    assert data["change"]["tickets"]["opened"] == pytest.approx((7 - 1) / 1)
    assert data["change"]["clocks"]["first_response"]["median_s"] == pytest.approx(0.0)
    assert data["change"]["clocks"]["first_response"]["within_sla"] == pytest.approx((4 / 6 - 1) / 1)
    assert data["change"]["clocks"]["next_response"]["median_s"] is None  # nothing measured the week before
    u1 = next(row for row in data["by_agent"] if row["key"] == "U1")
    assert u1["change"]["answered"] == pytest.approx((3 - 1) / 1)
    assert u1["change"]["first_response_median_s"] == pytest.approx((600 - 1200) / 1200)


async def test_backlog_by_age_now(figures: Figures) -> None:
    ages = [NOW - t.created for t in TICKETS if t.state in ("open", "waiting")]
    assert all(age > timedelta(days=3) for age in ages)
    assert figures.backlog == [("<1h", 0), ("1-4h", 0), ("4-24h", 0), ("1-3d", 0), (">3d", len(ages))]


async def test_backlog_buckets_split_at_their_bounds(sessions: async_sessionmaker[AsyncSession]) -> None:
    ages_h = [0.5, 1.5, 3.9, 4.1, 23, 25, 71, 73, 200]
    await seed(sessions, [Seed(i + 1, NOW - timedelta(hours=h), state=TicketState.OPEN) for i, h in enumerate(ages_h)])
    got = await compute_figures(sessions, PERIOD, with_previous=False, now=NOW)
    assert got.backlog == [("<1h", 1), ("1-4h", 2), ("4-24h", 2), ("1-3d", 2), (">3d", 2)]


async def test_priority_rows_run_from_urgent_to_low(sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(
        sessions, [Seed(i + 1, at(0, i + 1), priority=p) for i, p in enumerate(["low", "urgent", "normal", "high"])]
    )
    got = await compute_figures(sessions, PERIOD, with_previous=False, now=NOW)
    assert [row.key for row in got.by_priority] == ["urgent", "high", "normal", "low"]


async def test_daily_points_follow_the_zones_calendar_days(sessions: async_sessionmaker[AsyncSession]) -> None:
    # Answers at 23:30 UTC fall on the next day in Paris (UTC+1 in March before the switch).
    tickets = [
        Seed(1, at(0, 22), answered=at(0, 23.5), clocks=[fr(100, at(0, 23.5))]),
        Seed(2, at(0, 1), answered=at(0, 2), clocks=[fr(300, at(0, 2), breached=True)]),
        Seed(3, at(0, 3), answered=at(0, 4), clocks=[fr(500, at(0, 4))]),
    ]
    await seed(sessions, tickets)
    period = Period(START, START + timedelta(days=2))
    utc = await compute_figures(sessions, period, with_previous=False, now=NOW)
    assert [(p.day, p.first_response_median_s, p.within_sla) for p in utc.daily] == [
        (date(2025, 3, 3), 300.0, pytest.approx(2 / 3)),
        (date(2025, 3, 4), None, None),
    ]
    paris = await compute_figures(sessions, period, with_previous=False, now=NOW, zone=ZoneInfo("Europe/Paris"))
    assert [(p.day, p.first_response_median_s, p.first_response_p90_s) for p in paris.daily] == [
        (date(2025, 3, 3), 400.0, pytest.approx(300 + 0.9 * 200)),
        (date(2025, 3, 4), 100.0, 100.0),
        (date(2025, 3, 5), None, None),
    ]


@pytest.mark.parametrize("count", [1, 2, 3, 10, 11, 37])
async def test_percentiles_match_numpys_linear_interpolation(
    sessions: async_sessionmaker[AsyncSession], count: int
) -> None:
    rng = random.Random(count)
    values = [round(rng.uniform(1, 100_000), 3) for _ in range(count)]
    await seed(sessions, [Seed(i + 1, at(0, 1), clocks=[fr(v, at(1))]) for i, v in enumerate(values)])
    got = (await compute_figures(sessions, PERIOD, with_previous=False, now=NOW)).clocks["first_response"].business
    assert got.count == count
    assert got.median_s == approx(float(np.percentile(values, 50)))
    assert got.p90_s == approx(float(np.percentile(values, 90)))
    assert got.mean_s == approx(float(np.mean(values)))


async def test_an_empty_period_has_counts_of_zero_and_no_statistics(sessions: async_sessionmaker[AsyncSession]) -> None:
    got = await compute_figures(sessions, PERIOD, now=NOW)
    assert (got.opened, got.answered, got.resolved, got.still_open) == (0, 0, 0, 0)
    first = got.clocks["first_response"]
    assert (first.business.count, first.business.median_s, first.within_sla, first.breaches) == (0, None, None, 0)
    assert got.by_agent == [] and got.breaches == [] and len(got.daily) == 7
    assert figures_json(got)["change"]["tickets"]["opened"] is None


def test_change_is_relative_and_none_when_not_comparable() -> None:
    assert change(150, 100) == 0.5
    assert change(0.5, 1.0) == -0.5
    assert change(3, 0) is None and change(None, 2) is None and change(2, None) is None


def test_card_url_drops_the_timestamps_dot() -> None:
    assert card_url("C0SUPPORT", "1712345678.123456") == "https://slack.com/archives/C0SUPPORT/p1712345678123456"
    assert card_url("C0SUPPORT", None) is None


def test_periods_previous_and_last() -> None:
    until = datetime(2025, 3, 10, tzinfo=UTC)
    week = Period.last(timedelta(days=7), until=until)
    assert week == Period(START, until)
    assert week.previous() == Period(START - timedelta(days=7), START)
    with pytest.raises(ValueError):
        Period(until, START)
