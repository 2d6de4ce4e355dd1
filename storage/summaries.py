"""The scheduled summaries' rows (report_summaries): which are due, and who posts each, once.

A row is claimed by one conditional UPDATE (scheduled -> posting, or a posting claim older than the lease), so
of several daemons reaching for the same summary exactly one gets it; every later step is conditional on that
claim's token, so a daemon whose claim was taken over (it stalled past the lease) changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.db import execute
from mentiondesk.storage.models import ReportSummary, SummaryState

TABLE = ReportSummary.__table__  # type: ignore[attr-defined]


async def latest_due(session: AsyncSession, kind: str) -> datetime | None:
    """When the newest summary of this kind known to the database is (or was) due; None for none yet."""
    result = await session.exec(select(func.max(ReportSummary.due_at)).where(col(ReportSummary.kind) == kind))
    # max() keeps the column's type, so the value comes back as an aware UTC datetime on SQLite too.
    return result.first()


async def drop_upcoming(session: AsyncSession, *, kinds: list[str], now: datetime) -> int:
    """Delete the rows of these kinds not due yet and not claimed (their schedule changed); how many."""
    stmt = delete(ReportSummary).where(
        col(ReportSummary.kind).in_(kinds),
        col(ReportSummary.state) == SummaryState.SCHEDULED,
        col(ReportSummary.due_at) > now,
    )
    return await execute(session, stmt)


async def add_scheduled(
    session: AsyncSession, *, kind: str, period_start: datetime, period_end: datetime, due_at: datetime
) -> bool:
    """Write the row of a summary that is (or will be) due; False when its period has one already."""
    bind = session.get_bind()
    dialect_insert = postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert
    stmt = (
        dialect_insert(TABLE)
        .values(
            kind=kind,
            period_start=period_start,
            period_end=period_end,
            due_at=due_at,
            state=SummaryState.SCHEDULED,
            attempts=0,
            late=False,
        )
        .on_conflict_do_nothing(index_elements=["kind", "period_start"])
        .returning(TABLE.c.id)
    )
    return (await session.exec(stmt)).first() is not None  # type: ignore[call-overload]


def _claimable(now: datetime, lease: timedelta, *, parked: bool) -> ColumnElement[bool]:
    states = [
        and_(col(ReportSummary.state) == SummaryState.SCHEDULED, col(ReportSummary.due_at) <= now),
        # A daemon that claimed it stopped (or hung) before finishing: another takes over after the lease.
        and_(col(ReportSummary.state) == SummaryState.POSTING, col(ReportSummary.claimed_at) < now - lease),
    ]
    if parked:
        states.append(col(ReportSummary.state) == SummaryState.PARKED)
    return or_(*states)


async def due(
    session: AsyncSession, kinds: list[str], *, now: datetime, lease: timedelta, parked: bool
) -> list[ReportSummary]:
    """The summaries to post now, oldest first."""
    stmt = (
        select(ReportSummary)
        .where(col(ReportSummary.kind).in_(kinds), _claimable(now, lease, parked=parked))
        .order_by(col(ReportSummary.due_at), col(ReportSummary.id))
    )
    return list((await session.exec(stmt)).all())  # type: ignore[call-overload]


async def claim(
    session: AsyncSession, row_id: int, *, token: str, now: datetime, lease: timedelta, parked: bool
) -> ReportSummary | None:
    """Take the summary for posting: the row as claimed, or None when another daemon has it (or it is done)."""
    stmt = (
        update(ReportSummary)
        .where(col(ReportSummary.id) == row_id, _claimable(now, lease, parked=parked))
        .values(
            state=SummaryState.POSTING,
            claim_token=token,
            claimed_at=now,
            attempts=ReportSummary.attempts + 1,
        )
    )
    if await execute(session, stmt) != 1:
        return None
    return await session.get(ReportSummary, row_id, populate_existing=True)


async def _mine(session: AsyncSession, row_id: int, token: str, **values: object) -> bool:
    stmt = (
        update(ReportSummary)
        .where(col(ReportSummary.id) == row_id, col(ReportSummary.claim_token) == token)
        .values(**values)
    )
    return await execute(session, stmt) == 1


async def record_message(session: AsyncSession, row_id: int, *, token: str, channel: str, ts: str, late: bool) -> bool:
    """The summary message is in Slack: never post it again, whatever happens to the chart."""
    return await _mine(session, row_id, token, channel=channel, slack_ts=ts, late=late)


async def finish(
    session: AsyncSession, row_id: int, *, token: str, now: datetime, chart_file_id: str | None, error: str | None
) -> bool:
    return await _mine(
        session,
        row_id,
        token,
        state=SummaryState.POSTED,
        posted_at=now,
        chart_file_id=chart_file_id,
        last_error=error,
        claim_token=None,
    )


async def release(session: AsyncSession, row_id: int, *, token: str, error: str) -> bool:
    """Slack did not answer: back to scheduled, for the next pass to try again (what was posted stays posted)."""
    return await _mine(session, row_id, token, state=SummaryState.SCHEDULED, last_error=error, claim_token=None)


async def park(session: AsyncSession, row_id: int, *, token: str, error: str) -> bool:
    """Slack refused for good: parked until a start finds the cause fixed."""
    return await _mine(session, row_id, token, state=SummaryState.PARKED, last_error=error, claim_token=None)
