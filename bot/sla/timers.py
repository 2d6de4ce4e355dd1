"""The SLA timers: APScheduler (3.x, AsyncIOScheduler in the daemon's loop) fires each warning and escalation.

The tickets and clocks tables are the source of truth, not the scheduler: it has no job store, nothing is
pickled, and every job only asks the database "what is due now?" (bot/sla/alerts.py send_due_alerts), so a job
that fires for a clock which has since stopped, paused or moved sends nothing. Jobs are built from the stored
instants, two ways:

- a reconcile, at start and every `reconcile_s` after: it sends whatever is due already (an instant passed while
  the daemon was down goes out at once at start) and schedules one job per alert instant falling within the next
  `horizon_s` (more than one reconcile period, so consecutive reconciles overlap and none is missed).
- poke(): after something changed clocks (a batch of mentions, a reply, an agent's click), a reconcile soon, the
  pokes of a burst folded into one. It rides on the outbox's wake-up, which every such change already calls
  after its commit, so ingest does no work per post for the timers: one query per batch at most.

Why one job per instant plus a periodic reconcile, rather than jobs kept in step with every clock change: the
reconcile alone guarantees no alert is lost (a missed poke, a change made by another daemon sharing the
database, a job that failed on a database hiccup: the next reconcile sees the instant and sends), and the
per-instant jobs make alerts go on time rather than up to a period late. Sending is idempotent (a row per clock
and level), so a job fired twice, or by two daemons, sends once.

Tests drive it with a controllable clock (`now`) and call reconcile()/fire() directly; nothing waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.sla.alerts import send_due_alerts
from mentiondesk.bot.sla.policy import SlaBook
from mentiondesk.storage import sla
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)

RECONCILE_S = 30.0
HORIZON_S = 120.0
# A poke waits this long, so a burst of changes (a batch of posts, several clicks) costs one reconcile.
POKE_DELAY_S = 1.0
_RECONCILE_JOB = "sla-reconcile"
_POKE_JOB = "sla-poke"


class SlaTimers:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        book: SlaBook,
        *,
        on_sent: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = utcnow,
        reconcile_s: float = RECONCILE_S,
        horizon_s: float = HORIZON_S,
    ) -> None:
        if horizon_s <= reconcile_s:
            raise ValueError("horizon_s must exceed reconcile_s, or an instant could fall between two reconciles")
        self._sessions = sessions
        self._book = book
        self._on_sent = on_sent
        self._now = now
        self._reconcile_s = reconcile_s
        self._horizon = timedelta(seconds=horizon_s)
        self._scheduler: AsyncIOScheduler | None = None
        # One pass over the due alerts at a time in this daemon; other daemons are kept out by the alert rows.
        self._lock = asyncio.Lock()
        # Jobs in flight, so that stop() lets their transactions finish before the database closes.
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self.sent = 0

    @property
    def scheduled(self) -> list[tuple[str, datetime]]:
        """(job id, run time) of each alert job waiting, soonest first."""
        if self._scheduler is None:
            return []
        jobs = [(j.id, j.next_run_time) for j in self._scheduler.get_jobs() if j.id.startswith("sla-alert-")]
        return sorted(jobs, key=lambda job: job[1])

    async def start(self) -> None:
        """Send what is due already, then keep watching. Paired with stop()."""
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            # A job that runs late still runs (it only sends what is due), and a backlog of them runs once.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self._scheduler.start()
        await self.reconcile()
        self._scheduler.add_job(
            self.reconcile, "interval", seconds=self._reconcile_s, id=_RECONCILE_JOB, replace_existing=True
        )

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Start no more jobs and let those in flight finish (within timeout_s) before the scheduler goes.

        The scheduler's shutdown cancels coroutine jobs still running; cancelled mid-transaction, a job would leave
        its database connection to be reset by the garbage collector after the engine is gone.
        """
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    @contextlib.asynccontextmanager
    async def _job(self) -> AsyncIterator[bool]:
        """Count a job in flight; yields False when the timers are stopping and the job should do nothing."""
        if self._stopping:
            yield False
            return
        self._running += 1
        self._idle.clear()
        try:
            yield True
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    def use_book(self, book: SlaBook) -> None:
        """Reload: send by these policies and escalation settings from now on, and look again soon.

        Jobs already scheduled only ask the database what is due, so those of the old book cost nothing.
        """
        self._book = book
        self.poke()

    def poke(self) -> None:
        """Clocks changed: reconcile soon (once for a burst of pokes)."""
        scheduler = self._scheduler
        if scheduler is None or scheduler.get_job(_POKE_JOB) is not None:
            return
        run_at = datetime.now(UTC) + timedelta(seconds=POKE_DELAY_S)
        scheduler.add_job(self.reconcile, "date", run_date=run_at, id=_POKE_JOB, replace_existing=True)

    async def fire(self) -> int:
        """Send every alert due now; how many were sent."""
        async with self._job() as going:
            return await self._fire() if going else 0

    async def _fire(self) -> int:
        async with self._lock:
            try:
                sent = await send_due_alerts(self._sessions, self._book, now=self._now())
            except Exception:  # the database went away: the next reconcile tries again
                logger.exception("SLA alerts could not be sent now; trying again at the next reconcile")
                return 0
        if sent:
            self.sent += sent
            self._on_sent()
        return sent

    async def reconcile(self) -> int:
        """Send what is due, and schedule a job at each alert instant of the next horizon; returns how many sent."""
        async with self._job() as going:
            return await self._reconcile() if going else 0

    async def _reconcile(self) -> int:
        sent = await self._fire()
        now = self._now()
        try:
            async with self._sessions() as session:
                upcoming = await sla.due_alerts(session, until=now + self._horizon)
        except Exception:
            logger.exception("SLA clocks could not be read; trying again at the next reconcile")
            return sent
        scheduler = self._scheduler
        if scheduler is not None:
            for at in sorted({alert.at for alert in upcoming if alert.at > now}):
                # One job per instant: alerts falling at the same instant go together.
                job_id = f"sla-alert-{at.isoformat()}"
                if scheduler.get_job(job_id) is None:
                    scheduler.add_job(self.fire, "date", run_date=self._wall(at, now), id=job_id)
        return sent

    def _wall(self, at: datetime, now: datetime) -> datetime:
        """When the scheduler, which runs on the real clock, should fire for an instant of `now`'s clock."""
        return datetime.now(UTC) + (at - now)
