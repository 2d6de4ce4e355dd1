"""Scheduled summaries: posted once per period across restarts and daemons, late when missed, with their chart.

The clock is the test's (``Clock``): each test calls run_due() itself, as the scheduler's cron jobs would at the
configured times, and nothing waits for real time to pass. The figures come from a stand-in for compute_figures
that describes the period it was asked for, so what the summary shows can be traced to the period it covers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.config import Config, ConfigError, ReportSettings, parse_settings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.reports.figures import (
    Breach,
    ClockFigures,
    DayPoint,
    Figures,
    GroupRow,
    Period,
    Spread,
)
from mentiondesk.bot.reports.schedule import LEASE, SummaryScheduler, fire_times, summary_period
from mentiondesk.bot.reports.summaries import build_summary
from mentiondesk.storage import summaries
from mentiondesk.storage.db import create_engine, session_factory, transaction
from mentiondesk.storage.models import ReportSummary, SummaryState
from tests.conftest import eventually, postgres_only, settings_dict
from tests.fakeslack import FakeSlack, validate_blocks
from tests.test_report_figures import PERIOD, TICKETS, seed

BERLIN = ZoneInfo("Europe/Berlin")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def set(self, local: str) -> None:
        """Move to a wall-clock time in Berlin, like "2026-11-24 08:00:01"."""
        self.at = datetime.fromisoformat(local).replace(tzinfo=BERLIN).astimezone(UTC)


def berlin(local: str) -> datetime:
    return datetime.fromisoformat(local).replace(tzinfo=BERLIN).astimezone(UTC)


def figures_for(period: Period, *, breaches: int = 2, agents: int = 3) -> Figures:
    """Figures that name their period: opened is the period's length in hours, so a summary shows which it is."""
    hours = int((period.end - period.start).total_seconds() // 3600)
    spread = Spread(count=10, median_s=720.0, p90_s=3600.0, mean_s=900.0)
    first = ClockFigures("first_response", spread, spread, measured=10, within_sla=0.9, breaches=breaches)
    days = []
    day = period.start.astimezone(BERLIN).date()
    while day < period.end.astimezone(BERLIN).date():
        days.append(DayPoint(day, 600.0, 1800.0, 0.85))
        day += timedelta(days=1)
    return Figures(
        period=period,
        opened=hours,
        answered=hours - 1,
        resolved=3,
        still_open=4,
        clocks={"first_response": first},
        breaches=[
            Breach(
                ticket_id=100 + i,
                clock="first_response",
                channel="C0SUPPORT",
                slack_ts=f"1700000000.{i:06d}",
                due_at=period.start,
                breached_at=period.start,
                assignee="U0AGENT",
                card_url=f"https://slack.com/archives/C0SUPPORT/p1700000000{i:06d}",
            )
            for i in range(breaches)
        ],
        backlog=[("<1h", 2), ("1-4h", 1), ("4-24h", 0), ("1-3d", 1), (">3d", 0)],
        by_agent=[GroupRow(f"U0AGENT{i}", 5, 5 - i, 600.0, 0.8) for i in range(agents)],
        by_channel=[],
        by_priority=[],
        daily=days,
        previous=None,
    )


class FakeFigures:
    """Stands in for compute_figures; records the periods asked for."""

    def __init__(self) -> None:
        self.asked: list[Period] = []

    async def __call__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        period: Period,
        *,
        with_previous: bool = True,
        zone: ZoneInfo = BERLIN,
        now: datetime | None = None,
    ) -> Figures:
        self.asked.append(period)
        figures = figures_for(period)
        if not with_previous:
            return figures
        previous = figures_for(period.previous())
        return Figures(**{**figures.__dict__, "previous": previous})


@pytest.fixture
async def managers(slack: FakeSlack) -> str:
    # Summaries link to the cards of breached tickets, in the Slack workspace.
    slack.link_hosts.add("slack.com")
    return slack.add_channel("managers")


@pytest.fixture
async def slack_client(slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    async with aiohttp.ClientSession() as http:
        yield AsyncWebClient(token=slack.bot_token, base_url=slack.base_url, session=http, retry_handlers=[])


def report_settings(channel: str, **overrides: Any) -> ReportSettings:
    values: dict[str, Any] = {"channel": channel, "timezone": "Europe/Berlin", "daily": "08:00"}
    return ReportSettings(**{**values, **overrides})


def summaries_in(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [
        m for m in slack.messages(channel) if m["metadata"] and m["metadata"]["event_type"] == "mentiondesk_summary"
    ]


def header(message: dict[str, Any]) -> str:
    text: str = message["blocks"][0]["text"]["text"]
    return text


async def rows(sessions: async_sessionmaker[AsyncSession]) -> list[ReportSummary]:
    async with sessions() as session:
        return list((await session.exec(select(ReportSummary).order_by(col(ReportSummary.due_at)))).all())


# ---------------------------------------------------------------------------------------------- exactly once


async def test_a_summary_is_posted_once_with_its_chart_across_a_restart(
    sessions: async_sessionmaker[AsyncSession], slack: FakeSlack, managers: str, slack_client: AsyncWebClient
) -> None:
    clock = Clock(berlin("2026-11-24 07:00"))
    compute = FakeFigures()
    first = SummaryScheduler(sessions, report_settings(managers), slack_client, now=clock, compute=compute)
    # The first start owes nothing from before it.
    assert await first.run_due(retry_parked=True) == 0
    assert summaries_in(slack, managers) == []

    clock.set("2026-11-24 08:00:01")
    assert await first.run_due() == 1
    [message] = summaries_in(slack, managers)
    assert header(message) == "Daily summary: Mon 23 Nov 2026"
    assert "late" not in message["text"]
    # The figures are those of Monday in Berlin, midnight to midnight (23 hours opened: 1 per hour in the fake).
    assert compute.asked[0] == Period(berlin("2026-11-23 00:00"), berlin("2026-11-24 00:00"))
    assert "24" in message["blocks"][2]["fields"][0]["text"]

    [upload] = slack.uploads
    assert upload.channel == managers and upload.thread_ts == message["ts"]
    assert upload.data is not None and upload.data.startswith(PNG_SIGNATURE)
    assert 10_000 < upload.length == len(upload.data)
    assert upload.filename.endswith(".png") and upload.title is not None and "First response" in upload.title

    # A restart (a new scheduler on the same database), and another firing the same day: nothing more.
    clock.set("2026-11-24 08:00:30")
    second = SummaryScheduler(sessions, report_settings(managers), slack_client, now=clock, compute=compute)
    assert await second.run_due(retry_parked=True) == 0
    assert await first.run_due() == 0
    assert len(summaries_in(slack, managers)) == 1
    assert len(slack.uploads) == 1
    posted = [r for r in await rows(sessions) if r.state == SummaryState.POSTED]
    assert [(r.kind, r.slack_ts, r.chart_file_id) for r in posted] == [("daily", message["ts"], upload.file_id)]


@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_two_daemons_on_postgres_post_a_summary_once(
    db_url: str, sessions: async_sessionmaker[AsyncSession], slack: FakeSlack, managers: str
) -> None:
    clock = Clock(berlin("2026-11-24 07:00"))
    # Each daemon its own engine, connection pool and Slack client, as two processes would have.
    other_engine = create_engine(db_url)
    try:
        async with aiohttp.ClientSession() as http_a, aiohttp.ClientSession() as http_b:
            daemons = [
                SummaryScheduler(
                    own_sessions,
                    report_settings(managers, weekly="tue 08:00"),
                    AsyncWebClient(token=slack.bot_token, base_url=slack.base_url, session=http, retry_handlers=[]),
                    now=clock,
                    compute=FakeFigures(),
                )
                for own_sessions, http in ((sessions, http_a), (session_factory(other_engine), http_b))
            ]
            await asyncio.gather(*(d.run_due(retry_parked=True) for d in daemons))
            clock.set("2026-11-24 08:00:01")
            for _ in range(3):  # three firings, both daemons at once each time
                await asyncio.gather(*(d.run_due() for d in daemons))
    finally:
        await other_engine.dispose()
    headers = sorted(header(m) for m in summaries_in(slack, managers))
    assert headers == ["Daily summary: Mon 23 Nov 2026", "Weekly summary: 17 Nov – 23 Nov 2026"]
    assert len(slack.uploads) == 2
    assert sum(len(d.posted) for d in daemons) == 2


async def test_of_two_daemons_claiming_one_summary_at_once_one_gets_it(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    period = summary_period("daily", berlin("2026-11-24 08:00"), BERLIN)
    async with transaction(sessions) as session:
        assert await summaries.add_scheduled(
            session, kind="daily", period_start=period.start, period_end=period.end, due_at=berlin("2026-11-24 08:00")
        )
        # Its period has a row already: a second daemon writing it changes nothing.
        assert not await summaries.add_scheduled(
            session, kind="daily", period_start=period.start, period_end=period.end, due_at=berlin("2026-11-24 09:00")
        )
    [row] = await rows(sessions)
    assert row.id is not None
    now = berlin("2026-11-24 08:00:01")
    other_engine = create_engine(db_url)
    try:

        async def claim(own: async_sessionmaker[AsyncSession], token: str) -> bool:
            assert row.id is not None
            async with transaction(own) as session:
                taken = await summaries.claim(session, row.id, token=token, now=now, lease=LEASE, parked=False)
            return taken is not None

        won = await asyncio.gather(claim(sessions, "a"), claim(session_factory(other_engine), "b"))
        assert sorted(won) == [False, True]
        # Until the lease has passed: then a daemon that stalled mid-post is taken over.
        assert not await claim(sessions, "c")
        now += LEASE + timedelta(seconds=1)
        assert await claim(sessions, "d")
    finally:
        await other_engine.dispose()


async def test_a_summary_missed_while_down_is_posted_late_and_marked(
    sessions: async_sessionmaker[AsyncSession], slack: FakeSlack, managers: str, slack_client: AsyncWebClient
) -> None:
    clock = Clock(berlin("2026-11-24 07:00"))
    before = SummaryScheduler(sessions, report_settings(managers), slack_client, now=clock, compute=FakeFigures())
    await before.run_due(retry_parked=True)
    # The daemon stops at 07:00 on Tuesday and starts again on Wednesday at 10:00: two summaries were due.
    clock.set("2026-11-25 10:00")
    after = SummaryScheduler(sessions, report_settings(managers), slack_client, now=clock, compute=FakeFigures())
    assert await after.run_due(retry_parked=True) == 2
    tuesday, wednesday = summaries_in(slack, managers)
    assert header(tuesday) == "Daily summary: Mon 23 Nov 2026"
    assert header(wednesday) == "Daily summary: Tue 24 Nov 2026"
    late = tuesday["blocks"][1]["elements"][0]["text"]
    assert "late: this summary was due at 08:00 Tue 24 Nov (Europe/Berlin)" in late
    assert "late: this summary was due at 08:00 Wed 25 Nov" in wednesday["blocks"][1]["elements"][0]["text"]
    assert all(r.late for r in await rows(sessions) if r.state == SummaryState.POSTED)
    assert len(slack.uploads) == 2


async def test_a_daemon_taking_over_a_stalled_post_finds_the_summary_in_slack(
    sessions: async_sessionmaker[AsyncSession], slack: FakeSlack, managers: str, slack_client: AsyncWebClient
) -> None:
    clock = Clock(berlin("2026-11-24 07:00"))
    scheduler = SummaryScheduler(sessions, report_settings(managers), slack_client, now=clock, compute=FakeFigures())
    await scheduler.run_due(retry_parked=True)
    clock.set("2026-11-24 08:00:01")
    # Slack takes the post but the connection drops before its answer: the retry must not post it again.
    slack.drop_next("chat.postMessage")
    assert await scheduler.run_due() == 1
    assert len(summaries_in(slack, managers)) == 1
    assert len(slack.uploads) == 1


async def test_the_daemon_schedules_summaries_when_reports_are_configured(
    make_config: Callable[..., Config],
    start_daemon: Callable[[Config], Awaitable[Daemon]],
    sessions: async_sessionmaker[AsyncSession],
    managers: str,
) -> None:
    config = make_config(reports={"channel": managers, "timezone": "Europe/Berlin", "daily": "08:00"})
    daemon = await start_daemon(config)
    assert daemon.summaries is not None

    async def next_one_written() -> bool:
        return [(r.kind, r.state) for r in await rows(sessions)] == [("daily", SummaryState.SCHEDULED)]

    await eventually(next_one_written, what="the row of the next daily summary")
    [row] = await rows(sessions)
    assert row.due_at > datetime.now(UTC) and row.due_at.astimezone(BERLIN).strftime("%H:%M") == "08:00"
    await daemon.stop()
    assert daemon.summaries is None


async def test_a_weekly_summary_of_a_seeded_database_shows_its_figures(
    sessions: async_sessionmaker[AsyncSession], slack: FakeSlack, managers: str, slack_client: AsyncWebClient
) -> None:
    """The real figures (tests/test_report_figures.py's seeded week, whose numbers that test computes
    independently), through the summary and the chart, to Slack."""
    await seed(sessions, TICKETS)
    settings = report_settings(managers, timezone="UTC", daily=None, weekly="mon 08:00")
    clock = Clock(PERIOD.end + timedelta(hours=7))
    scheduler = SummaryScheduler(sessions, settings, slack_client, now=clock)
    await scheduler.run_due(retry_parked=True)
    clock.at = PERIOD.end + timedelta(hours=8, seconds=1)
    assert await scheduler.run_due() == 1
    [message] = summaries_in(slack, managers)
    assert header(message) == "Weekly summary: 03 Mar – 09 Mar 2025"
    counts = [f["text"] for f in message["blocks"][2]["fields"]]
    # 7 opened in the week against 1 the week before; 6 answered against 1.
    assert counts[:2] == ["*Opened*\n7 (+600%)", "*Answered*\n6 (+500%)"]
    first_response = message["blocks"][3]["fields"][0]["text"]
    assert first_response.startswith("*First response*\nmedian 20m (no change)")
    breaches = message["blocks"][5]["text"]["text"]
    assert breaches.startswith("*Breaches*: 4\n")
    assert "<https://slack.com/archives/C1/p1700000000000100|#6> first response, `U1`" in breaches
    [upload] = slack.uploads
    assert upload.data is not None and upload.data.startswith(PNG_SIGNATURE) and upload.thread_ts == message["ts"]


# ---------------------------------------------------------------------------------------------- Slack refusals


async def test_a_summary_slack_refuses_is_parked_then_posted_once_the_cause_is_fixed(
    sessions: async_sessionmaker[AsyncSession],
    slack: FakeSlack,
    managers: str,
    slack_client: AsyncWebClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(berlin("2026-11-24 07:00"))
    scheduler = SummaryScheduler(sessions, report_settings(managers), slack_client, now=clock, compute=FakeFigures())
    await scheduler.run_due(retry_parked=True)
    slack.remove_bot(managers)
    clock.set("2026-11-24 08:00:01")
    with caplog.at_level(logging.ERROR):
        assert await scheduler.run_due() == 0
    assert "is parked" in caplog.text and "/invite @mentiondesk" in caplog.text and "reports.channel" in caplog.text
    assert [r.kind for r in await rows(sessions) if r.state == SummaryState.PARKED] == ["daily"]
    # Passes between starts leave it parked; the next start tries again.
    assert await scheduler.run_due() == 0
    slack.invite_bot(managers)
    clock.set("2026-11-24 09:00")
    restarted = SummaryScheduler(sessions, report_settings(managers), slack_client, now=clock, compute=FakeFigures())
    assert await restarted.run_due(retry_parked=True) == 1
    [message] = summaries_in(slack, managers)
    assert "late: this summary was due at 08:00 Tue 24 Nov" in message["text"]


async def test_without_files_write_the_summary_goes_out_and_the_chart_is_noted_as_missing(
    sessions: async_sessionmaker[AsyncSession],
    slack: FakeSlack,
    managers: str,
    slack_client: AsyncWebClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slack.scopes.discard("files:write")
    clock = Clock(berlin("2026-11-24 07:00"))
    scheduler = SummaryScheduler(sessions, report_settings(managers), slack_client, now=clock, compute=FakeFigures())
    await scheduler.run_due(retry_parked=True)
    clock.set("2026-11-24 08:00:01")
    with caplog.at_level(logging.ERROR):
        assert await scheduler.run_due() == 1
    assert len(summaries_in(slack, managers)) == 1 and slack.uploads == []
    assert "files:write" in caplog.text
    [row] = [r for r in await rows(sessions) if r.state == SummaryState.POSTED]
    assert row.chart_file_id is None and row.last_error is not None and "files:write" in row.last_error


@pytest.mark.slack_fast("the test's sleep returns at once, so a Retry-After would not be waited out in real time")
async def test_a_summary_is_retried_through_slack_outages_and_posted_once(
    sessions: async_sessionmaker[AsyncSession], slack: FakeSlack, managers: str, slack_client: AsyncWebClient
) -> None:
    waited: list[float] = []

    async def no_wait(seconds: float) -> None:
        waited.append(seconds)

    clock = Clock(berlin("2026-11-24 07:00"))
    scheduler = SummaryScheduler(
        sessions, report_settings(managers), slack_client, now=clock, compute=FakeFigures(), sleep=no_wait
    )
    await scheduler.run_due(retry_parked=True)
    clock.set("2026-11-24 08:00:01")
    slack.fail_next("chat.postMessage", status=503, count=2)
    slack.fail_next("upload", status=500)
    assert await scheduler.run_due() == 1
    assert len(waited) == 3
    assert len(summaries_in(slack, managers)) == 1 and len(slack.uploads) == 1

    # Down for longer than one pass tries: the summary waits for the next pass, and is posted then, once.
    clock.set("2026-11-25 08:00:01")
    slack.set_down(True)
    assert await scheduler.run_due() == 0
    assert [r.state for r in await rows(sessions)][-2:] == [SummaryState.SCHEDULED, SummaryState.SCHEDULED]
    slack.set_down(False)
    assert await scheduler.run_due() == 1
    assert len(summaries_in(slack, managers)) == 2 and len(slack.uploads) == 2


# ---------------------------------------------------------------------------------------------- the message


def test_a_summary_with_many_breaches_and_agents_stays_within_block_kit_limits() -> None:
    period = Period(berlin("2026-11-16 00:00"), berlin("2026-11-23 00:00"))
    busy = figures_for(period, breaches=50, agents=40)
    message = build_summary(
        "weekly", Figures(**{**busy.__dict__, "previous": figures_for(period.previous())}), zone=BERLIN
    )
    assert validate_blocks(message.blocks) == []
    assert len(message.blocks) <= 50
    text = "\n".join(b["text"]["text"] for b in message.blocks if b["type"] == "section" and "text" in b)
    assert "<https://slack.com/archives/C0SUPPORT/p1700000000000000|#100>" in text
    assert "…and 40 more" in text
    # Agents are named, never mentioned: a summary must not notify the people it lists.
    assert "<@" not in text and "`U0AGENT0`" in text


def test_the_summary_shows_each_figure_against_the_period_before() -> None:
    period = Period(berlin("2026-11-23 00:00"), berlin("2026-11-24 00:00"))
    now = figures_for(period)
    before = figures_for(period.previous())
    changed = ClockFigures(
        "first_response", Spread(10, 600.0, 1800.0, 700.0), before.clocks["first_response"].wall, 10, 0.8, 1
    )
    before = Figures(**{**before.__dict__, "opened": 12, "clocks": {"first_response": changed}})
    message = build_summary("daily", Figures(**{**now.__dict__, "previous": before}), zone=BERLIN)
    fields = [f["text"] for f in message.blocks[2]["fields"]]
    assert fields[0] == "*Opened*\n24 (+100%)"
    times = message.blocks[3]["fields"][0]["text"]
    assert "median 12m (+20%)" in times and "p90 1h 00m (+100%)" in times and "within SLA 90% (+10 pts)" in times


# ---------------------------------------------------------------------------------------------- schedule


def test_periods_are_whole_days_in_the_zone_across_a_clock_change() -> None:
    # Berlin leaves summer time on 25 Oct 2026: that Sunday has 25 hours.
    period = summary_period("daily", berlin("2026-10-26 08:00"), BERLIN)
    assert (period.start, period.end) == (berlin("2026-10-25 00:00"), berlin("2026-10-26 00:00"))
    assert period.end - period.start == timedelta(hours=25)
    week = summary_period("weekly", berlin("2026-11-23 08:00"), BERLIN)
    assert (week.start, week.end) == (berlin("2026-11-16 00:00"), berlin("2026-11-23 00:00"))


def test_cron_weekdays_are_read_as_cron_reads_them() -> None:
    from apscheduler.triggers.cron import CronTrigger

    fields = report_settings("C0X", daily="0 8 * * 1-5").schedules()["daily"]
    trigger = CronTrigger(**fields, timezone=BERLIN)
    # Friday 27 Nov 2026 to Tuesday 1 Dec: Monday to Friday only, as cron's 1-5 means.
    found = fire_times(trigger, berlin("2026-11-27 00:00"), berlin("2026-12-01 23:00"))
    assert [t.astimezone(BERLIN).strftime("%a") for t in found] == ["Fri", "Mon", "Tue"]


@pytest.mark.parametrize(
    ("reports", "expected"),
    [
        ({"channel": "C0X", "daily": "25:00"}, "reports.daily: '25:00' is not a time of day"),
        (
            {"channel": "C0X", "weekly": "08:00"},
            "reports.weekly: '08:00' names no day: write a day and a time, like \"mon 08:00\"",
        ),
        (
            {"channel": "C0X", "daily": "0 8 * *"},
            "reports.daily: '0 8 * *' is neither \"08:00\" nor a 5-field cron string",
        ),
        ({"channel": "C0X", "daily": "0 8 * * 9"}, "reports.daily: '0 8 * * 9': a weekday is 0 to 7"),
        (
            {"channel": "C0X", "daily": "08:00", "timezone": "Mars/Base"},
            "reports.timezone: unknown time zone 'Mars/Base'",
        ),
        ({"daily": "08:00"}, "daily set, so channel must name the managers' channel"),
        ({"channel": "C0X", "hourly": "08:00"}, "reports.hourly: unknown key"),
    ],
)
def test_reports_config_mistakes_name_the_key(reports: dict[str, str], expected: str) -> None:
    data = settings_dict(
        mastodon_url="https://m.example", slack_url="https://slack.com/api/", db_url="sqlite+aiosqlite:///x.db"
    )
    with pytest.raises(ConfigError) as caught:
        parse_settings({**data, "reports": reports}, source="config.toml")
    assert expected in str(caught.value)


# ---------------------------------------------------------------------------------------------- the fake's uploads


async def test_the_fake_checks_uploads_like_slack(
    slack: FakeSlack, managers: str, slack_client: AsyncWebClient
) -> None:
    async def code(call: Any) -> str:
        with pytest.raises(SlackApiError) as caught:
            await call
        return str(caught.value.response["error"])

    start = await slack_client.files_getUploadURLExternal(filename="a.png", length=4)
    file_id, url = start["file_id"], start["upload_url"]
    async with aiohttp.ClientSession() as http:
        # Completing before the bytes arrived, and bytes of another length than declared, are refused.
        assert (
            await code(slack_client.files_completeUploadExternal(files=[{"id": file_id}])) == "file_upload_not_received"
        )
        async with http.post(url, data=b"12345") as wrong:
            assert wrong.status == 400
        async with http.post(url, data=b"1234") as right:
            assert right.status == 200
    slack.remove_bot(managers)
    assert (
        await code(slack_client.files_completeUploadExternal(files=[{"id": file_id}], channel_id=managers))
        == "not_in_channel"
    )
    slack.invite_bot(managers)
    assert (
        await code(slack_client.files_completeUploadExternal(files=[{"id": "F0NOPE"}], channel_id=managers))
        == "file_not_found"
    )
    await slack_client.files_completeUploadExternal(files=[{"id": file_id, "title": "A"}], channel_id=managers)
    assert await code(slack_client.files_completeUploadExternal(files=[{"id": file_id}], channel_id=managers)) == (
        "file_upload_already_completed"
    )
    assert [(u.file_id, u.title, u.data, u.channel) for u in slack.uploads] == [(file_id, "A", b"1234", managers)]
    slack.scopes.discard("files:write")
    assert await code(slack_client.files_getUploadURLExternal(filename="b.png", length=4)) == "missing_scope"
