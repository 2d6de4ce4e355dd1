"""CONTRACT STUB of i12-h11's figures API (/tmp/h/i12-contract.md), so that the summaries build before their
branch lands; replaced by theirs at the merge (take theirs). compute_figures is theirs to write."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def previous(self) -> Period:
        return Period(self.start - (self.end - self.start), self.start)

    @classmethod
    def last(cls, duration: timedelta, *, until: datetime) -> Period:
        return cls(until - duration, until)


@dataclass(frozen=True)
class Spread:
    count: int
    median_s: float | None
    p90_s: float | None
    mean_s: float | None


@dataclass(frozen=True)
class ClockFigures:
    clock: str
    business: Spread
    wall: Spread
    measured: int
    within_sla: float | None
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
    card_url: str | None


@dataclass(frozen=True)
class GroupRow:
    key: str
    opened: int
    answered: int
    first_response_median_s: float | None
    within_sla: float | None


@dataclass(frozen=True)
class DayPoint:
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
    clocks: dict[str, ClockFigures]
    breaches: list[Breach]
    backlog: list[tuple[str, int]]
    by_agent: list[GroupRow]
    by_channel: list[GroupRow]
    by_priority: list[GroupRow]
    daily: list[DayPoint]
    previous: Figures | None


async def compute_figures(
    sessions: async_sessionmaker[AsyncSession],
    period: Period,
    *,
    with_previous: bool = True,
    zone: ZoneInfo = UTC_ZONE,
) -> Figures:
    raise NotImplementedError("i12-h11 writes compute_figures")


def change(current: float | int | None, previous: float | int | None) -> float | None:
    if current is None or previous is None or previous == 0:
        return None
    return (current - previous) / previous


def figures_json(figures: Figures) -> dict[str, Any]:
    raise NotImplementedError("i12-h11 writes figures_json")


def card_url(channel: str, ts: str | None) -> str | None:
    return None if ts is None else f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"
