"""The scheduled summaries: when each is due, and posting each exactly once.

The report_summaries table is the source of truth, not the scheduler (as for the SLA timers, bot/sla/timers.py):
APScheduler (3.x, AsyncIOScheduler in the daemon's loop) only wakes run_due() at each configured time (a
CronTrigger in the [reports] time zone) and every RECONCILE_S, and run_due() asks the database what is due.

- Periods. A summary covers whole days in the configured zone ending at the midnight that starts the day it is
  due: the daily one the day before, the weekly one the seven days before. Its row is keyed by (kind, start of
  the period), so two firings on the same day, two daemons or a restart find the same row.
- Never dropped. Each pass writes the row of the next summary of each kind before it is due. After a stop, the
  rows due meanwhile (and those of any firings after the newest row, up to MAX_CATCH_UP a kind) are posted at
  the next start, marked late ("late: this summary was due at ..."). The very first start owes nothing from
  before it: a summary is due only from the first configured time after [reports] was set up.
- Exactly once. A daemon claims a row with one conditional UPDATE (storage/summaries.py) before posting, and
  records the message's ts right after Slack answers; the chart then goes into the summary's thread
  (files_upload_v2) and the row is marked posted. A claim older than LEASE belongs to a daemon that stopped
  mid-post: another takes the row over, and first looks in the channel for the summary (it carries message
  metadata naming its kind and period), so a post whose answer was lost is not repeated.
- Slack failures. Calls go through one retry loop: a rate limit waits Retry-After, a transient failure backs
  off (SLACK_ATTEMPTS tries in all), after which the row goes back to scheduled and the next pass (at most
  RECONCILE_S later) tries again. A refusal a person must fix (missing files:write, the bot not in the
  channel, a revoked token) parks the row with a log line saying what to fix; parked rows are tried again at
  each start. The outbox (storage/outbox.py) is for ticket messages; a summary is one message a day, so its
  claim row does the outbox's job here.

Tests drive it with a controllable clock (``now``) and ``sleep``, and call run_due() directly.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Protocol, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot import metrics
from mentiondesk.bot.config import ReportSettings
from mentiondesk.bot.reports.chart import chart_png
from mentiondesk.bot.reports.figures import Figures, Period, compute_figures
from mentiondesk.bot.reports.summaries import build_summary, period_label
from mentiondesk.bot.retry import Verdict, backoff_delay, sort_slack_error
from mentiondesk.bot.slack.problems import ChannelRef, refusal
from mentiondesk.storage import summaries
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import ReportSummary
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)

T = TypeVar("T")

PERIOD_DAYS = {"daily": 1, "weekly": 7}
# The chart shows a trend, longer than the period itself: two weeks for the daily summary, four for the weekly.
CHART_DAYS = {"daily": 14, "weekly": 28}
# Posted this long after it was due, a summary says it is late.
LATE_AFTER = timedelta(minutes=5)
# A claim older than this is a daemon that stopped mid-post; another takes the summary over.
LEASE = timedelta(minutes=10)
RECONCILE_S = 300.0
SLACK_ATTEMPTS = 5
MAX_RETRY_WAIT_S = 60.0
METADATA_EVENT = "mentiondesk_summary"
CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")


class ComputeFigures(Protocol):
    def __call__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        period: Period,
        *,
        with_previous: bool = ...,
        zone: ZoneInfo = ...,
        now: datetime | None = ...,
    ) -> Awaitable[Figures]: ...


class _Parked(Exception):
    """Slack refused for good; the message says what to fix."""


class _TryLater(Exception):
    """Slack did not answer after SLACK_ATTEMPTS tries."""


def summary_period(kind: str, due_at: datetime, zone: ZoneInfo) -> Period:
    """The whole days in ``zone`` a summary due at ``due_at`` covers: up to the midnight that starts its day."""
    day = due_at.astimezone(zone).date()
    end = datetime.combine(day, time(0), tzinfo=zone)
    start = datetime.combine(day - timedelta(days=PERIOD_DAYS[kind]), time(0), tzinfo=zone)
    return Period(start.astimezone(UTC), end.astimezone(UTC))


def fire_times(trigger: CronTrigger, after: datetime, until: datetime) -> list[datetime]:
    """The trigger's times in (after, until], oldest first."""
    found: list[datetime] = []
    at = trigger.get_next_fire_time(None, after + timedelta(seconds=1))
    while at is not None and at <= until:
        found.append(at.astimezone(UTC))
        at = trigger.get_next_fire_time(at, at + timedelta(seconds=1))
    return found


@dataclass(frozen=True)
class PostedSummary:
    kind: str
    period: Period
    late: bool
    ts: str
    chart_file_id: str | None


class SummaryScheduler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: ReportSettings,
        slack: AsyncWebClient,
        *,
        now: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        compute: ComputeFigures = compute_figures,
    ) -> None:
        assert settings.channel is not None, "the config requires a channel when a summary is scheduled"
        self._sessions = sessions
        self._settings = settings
        self._channel = settings.channel
        self._slack = slack
        self._now = now
        self._sleep = sleep
        self._compute = compute
        self._zone = ZoneInfo(settings.timezone)
        self._triggers = _triggers(settings, self._zone)
        # Kinds whose schedule a reload changed: the next pass drops their rows not due yet before writing new ones.
        self._rescheduled: set[str] = set()
        self._scheduler: AsyncIOScheduler | None = None
        # One pass at a time in this daemon; other daemons are kept out by the claims.
        self._lock = asyncio.Lock()
        self._passes: set[asyncio.Task[None]] = set()
        self.posted: list[PostedSummary] = []

    async def start(self) -> None:
        """Start watching; the first pass (parked summaries too) runs in the background, so a slow Slack does not
        hold up the daemon's start. Paired with stop()."""
        self._scheduler = AsyncIOScheduler(
            timezone=self._zone, job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
        )
        for kind, trigger in self._triggers.items():
            self._scheduler.add_job(self._pass, trigger, id=f"summary-{kind}", replace_existing=True)
        self._scheduler.add_job(
            self._pass, "interval", seconds=RECONCILE_S, id="summary-reconcile", replace_existing=True
        )
        self._scheduler.start()
        self._passes.add(asyncio.create_task(self._pass(retry_parked=True), name="summaries at start"))

    def reschedule(self, settings: ReportSettings) -> None:
        """Put new [reports] settings in force (a config reload): jobs replaced, upcoming rows written again.

        A summary already due is still posted; one not due yet follows the new schedule. At least one summary
        must stay scheduled (the daemon stops the scheduler otherwise).
        """
        assert settings.channel is not None, "the config requires a channel when a summary is scheduled"
        zone = ZoneInfo(settings.timezone)
        triggers = _triggers(settings, zone)
        self._rescheduled |= {
            kind
            for kind in self._triggers.keys() | triggers.keys()
            if zone != self._zone or str(self._triggers.get(kind)) != str(triggers.get(kind))
        }
        self._settings, self._channel, self._zone, self._triggers = settings, settings.channel, zone, triggers
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                if job.id.startswith("summary-") and job.id.removeprefix("summary-") in PERIOD_DAYS:
                    job.remove()
            for kind, trigger in triggers.items():
                self._scheduler.add_job(self._pass, trigger, id=f"summary-{kind}", replace_existing=True)
        self._passes.add(asyncio.create_task(self._pass(), name="summaries after reload"))

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        # A pass cut short leaves its claim: after the lease, the next start looks in Slack before posting again.
        for task in list(self._passes):
            task.cancel()
        if self._passes:
            await asyncio.wait(self._passes)

    async def _pass(self, *, retry_parked: bool = False) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._passes.add(task)
        try:
            await self.run_due(retry_parked=retry_parked)
        finally:
            self._passes.discard(task)

    async def run_due(self, *, retry_parked: bool = False) -> int:
        """Write the rows of the summaries due by now and the next ones, post every one due; how many posted."""
        async with self._lock:
            try:
                await self._drop_rescheduled(self._now())
                await self._schedule(self._now())
                async with self._sessions() as session:
                    rows = await summaries.due(
                        session, list(self._triggers), now=self._now(), lease=LEASE, parked=retry_parked
                    )
            except Exception:  # the database went away: the next pass tries again
                logger.exception("scheduled summaries could not be read; trying again at the next pass")
                return 0
            posted = 0
            for row in rows:
                assert row.id is not None
                posted += await self._post(row.id, retry_parked=retry_parked)
            return posted

    async def _drop_rescheduled(self, now: datetime) -> None:
        # Under the pass lock: a pass of the old schedule in flight has written its rows before these go.
        if not self._rescheduled:
            return
        kinds = sorted(self._rescheduled)
        async with transaction(self._sessions) as session:
            await summaries.drop_upcoming(session, kinds=kinds, now=now)
        self._rescheduled.clear()

    async def _schedule(self, now: datetime) -> None:
        for kind, trigger in self._triggers.items():
            async with transaction(self._sessions) as session:
                newest = await summaries.latest_due(session, kind)
            missed = [] if newest is None else fire_times(trigger, newest, now)
            if missed:
                # Never dropped, however long the stop: each is posted, oldest first, marked late.
                logger.info("%d %s summaries were missed while no daemon ran: posting them late", len(missed), kind)
            upcoming = trigger.get_next_fire_time(None, now + timedelta(seconds=1))
            for due_at in [*missed, *([upcoming.astimezone(UTC)] if upcoming is not None else [])]:
                period = summary_period(kind, due_at, self._zone)
                async with transaction(self._sessions) as session:
                    await summaries.add_scheduled(
                        session, kind=kind, period_start=period.start, period_end=period.end, due_at=due_at
                    )

    async def _post(self, row_id: int, *, retry_parked: bool) -> int:
        token = uuid.uuid4().hex
        now = self._now()
        async with transaction(self._sessions) as session:
            row = await summaries.claim(session, row_id, token=token, now=now, lease=LEASE, parked=retry_parked)
        if row is None:
            return 0  # another daemon has it, or it is done
        taken_over = row.attempts > 1
        kind = row.kind
        period = Period(row.period_start, row.period_end)
        what = f"the {kind} summary of {period_label(kind, period.start, period.end, self._zone)}"
        try:
            ts, channel, late = row.slack_ts, row.channel, row.late
            if ts is None:
                found = await self._call(lambda: self._find_posted(row)) if taken_over else None
                if found is not None:
                    channel, ts = found
                    logger.info("%s was already in Slack (a stopped daemon's post): not posting it again", what)
                else:
                    late = now - row.due_at > LATE_AFTER
                    channel, ts = await self._post_message(row, late=late)
                async with transaction(self._sessions) as session:
                    if not await summaries.record_message(
                        session, row_id, token=token, channel=channel, ts=ts, late=late
                    ):
                        return 0  # taken over meanwhile (we stalled past the lease); the other daemon finishes
            assert channel is not None
            file_id, chart_error = await self._upload_chart(row, channel=channel, ts=ts, what=what)
        except _Parked as exc:
            logger.error("%s is parked: %s; it is tried again at the next start", what, exc)
            async with transaction(self._sessions) as session:
                await summaries.park(session, row_id, token=token, error=str(exc))
            return 0
        except _TryLater as exc:
            logger.warning("%s not posted yet (%s); trying again at the next pass", what, exc)
            async with transaction(self._sessions) as session:
                await summaries.release(session, row_id, token=token, error=str(exc))
            return 0
        async with transaction(self._sessions) as session:
            await summaries.finish(
                session, row_id, token=token, now=self._now(), chart_file_id=file_id, error=chart_error
            )
        logger.info("posted %s%s", what, " (late)" if late else "")
        self.posted.append(PostedSummary(kind, period, late, ts, file_id))
        return 1

    async def _post_message(self, row: ReportSummary, *, late: bool) -> tuple[str, str]:
        figures = await self._compute(
            self._sessions, Period(row.period_start, row.period_end), zone=self._zone, now=self._now()
        )
        message = build_summary(row.kind, figures, zone=self._zone, late_due_at=row.due_at if late else None)
        metadata = {
            "event_type": METADATA_EVENT,
            "event_payload": {"kind": row.kind, "period_start": row.period_start.isoformat()},
        }
        sent = False

        async def post() -> tuple[str, str]:
            nonlocal sent
            if sent:
                # The last try's answer was lost (a timeout, a dropped connection): Slack may have the message.
                found = await self._find_posted(row)
                if found is not None:
                    return found
            sent = True
            response = await self._slack.chat_postMessage(
                channel=self._channel,
                text=message.text,
                blocks=message.blocks,
                metadata=metadata,
                unfurl_links=False,
                unfurl_media=False,
            )
            return str(response["channel"]), str(response["ts"])

        return await self._call(post)

    async def _upload_chart(
        self, row: ReportSummary, *, channel: str, ts: str, what: str
    ) -> tuple[str | None, str | None]:
        """The chart in the summary's thread: (file ID, None), or (None, why not) when Slack refused it for good.

        A refused chart does not hold back the summary, which is in Slack already; it is logged and noted on
        the row. A chart that Slack did not take yet raises _TryLater, so the next pass uploads it.
        """
        span = timedelta(days=CHART_DAYS[row.kind])
        window = Period.last(max(span, row.period_end - row.period_start), until=row.period_end)
        figures = await self._compute(self._sessions, window, with_previous=False, zone=self._zone, now=self._now())
        label = period_label("weekly", window.start, window.end, self._zone)
        png = await chart_png(figures.daily, title=f"First response per day, {label}")
        day = row.period_start.astimezone(self._zone).date().isoformat()
        try:
            response = await self._call(
                lambda: self._slack.files_upload_v2(
                    channel=channel,
                    thread_ts=ts,
                    file=png,
                    filename=f"first-response-{row.kind}-{day}.png",
                    title=f"First response per day, {label}",
                    alt_txt=(
                        "Chart: median and 90th percentile of the first response per day (minutes), "
                        f"and the share within SLA, {label}"
                    ),
                )
            )
        except _Parked as exc:
            logger.error("the chart of %s was not uploaded: %s", what, exc)
            return None, f"chart not uploaded: {exc}"
        file = response.get("file") or {}
        return str(file.get("id")) if file.get("id") else None, None

    async def _find_posted(self, row: ReportSummary) -> tuple[str, str] | None:
        """The summary in Slack already, posted by a daemon that stopped before recording it; None if not there."""
        channel = row.channel or (self._channel if CHANNEL_ID.fullmatch(self._channel) else None)
        if channel is None or row.claimed_at is None:
            return None  # a #name cannot be read back without looking the channel up; documented in the README
        # Not before the summary was first claimed: a daemon posts only after its claim.
        oldest = (row.due_at - LEASE).timestamp()
        response = await self._slack.conversations_history(
            channel=channel, oldest=f"{oldest:.6f}", include_all_metadata=True, limit=200
        )
        for message in response.get("messages") or []:
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if (message.get("metadata") or {}).get("event_type") == METADATA_EVENT and payload == {
                "kind": row.kind,
                "period_start": row.period_start.isoformat(),
            }:
                return channel, str(message["ts"])
        return None

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """A Slack call, retried while Slack is busy or unreachable; _Parked when it refuses, _TryLater at the end."""
        reason = ""
        for attempt in range(1, SLACK_ATTEMPTS + 1):
            try:
                return await make()
            except SlackRequestError as exc:  # the upload URL did not take the file
                verdict, wait_s, reason = Verdict.TRANSIENT, None, str(exc)
            except (SlackApiError, OSError, TimeoutError, aiohttp.ClientError) as exc:
                found = refusal(exc, channel=ChannelRef(self._channel, key="reports.channel"))
                if found is not None:
                    raise _Parked(found.explanation) from exc
                sorted_ = sort_slack_error(exc)
                verdict, wait_s, reason = sorted_.verdict, sorted_.wait_s, sorted_.reason
            if attempt == SLACK_ATTEMPTS:
                break
            if verdict is Verdict.RATE_LIMITED and wait_s is not None:
                metrics.rate_limit_waited("slack", min(wait_s, MAX_RETRY_WAIT_S))
                await self._sleep(min(wait_s, MAX_RETRY_WAIT_S))
            else:
                await self._sleep(backoff_delay(attempt, cap_s=MAX_RETRY_WAIT_S))
        raise _TryLater(reason)


def _triggers(settings: ReportSettings, zone: ZoneInfo) -> dict[str, CronTrigger]:
    return {kind: CronTrigger(**fields, timezone=zone) for kind, fields in settings.schedules().items()}


def summaries_configured(settings: ReportSettings) -> bool:
    return bool(settings.schedules())
