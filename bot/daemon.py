"""The daemon: owns every resource, starts them in order and stops them in reverse."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import aiohttp
from mastodon.errors import MastodonError
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.classify.loading import CHOICES, Classifier, load_classifier
from mentiondesk.bot.classify.model import ClassifierError
from mentiondesk.bot.config import Config, ConfigError, Settings
from mentiondesk.bot.context import AppContext, Tuning
from mentiondesk.bot.dispatch import Dispatcher
from mentiondesk.bot.erasure import retention_job
from mentiondesk.bot.events import MentionReceived, MentionsReceived, Post, PostChange, PostEdited
from mentiondesk.bot.ingest import IngestPipeline
from mentiondesk.bot.mastodon.client import MastodonClient
from mentiondesk.bot.mastodon.post_sweeper import PostSweeper
from mentiondesk.bot.mastodon.set_aside import failure_reason, is_transient
from mentiondesk.bot.mastodon.watcher import FeedWatcher, IngestError, hashtag_feed, notification_feed
from mentiondesk.bot.reload import Reload, plan_reload
from mentiondesk.bot.reports.schedule import SummaryScheduler
from mentiondesk.bot.retry import backoff_delay
from mentiondesk.bot.sla.clocks import recompute_open_clocks
from mentiondesk.bot.sla.policy import sla_book
from mentiondesk.bot.sla.timers import SlaTimers
from mentiondesk.bot.slack.app import SlackIntake, SocketModeConnection, build_app, finish_listeners
from mentiondesk.bot.slack.dry_run import DryRunSender
from mentiondesk.bot.slack.metered import MeteredWebClient
from mentiondesk.bot.slack.permissions import Permissions
from mentiondesk.bot.slack.preflight import channel_keys, configured_channels, verify_app_token, verify_bot_token
from mentiondesk.bot.slack.problems import DEFAULT_BOT_NAME, SlackUnavailable
from mentiondesk.bot.slack.sender import SlackSender
from mentiondesk.bot.web.dashboard import dashboard_routes
from mentiondesk.bot.web.health import HealthProbes, LoopLag
from mentiondesk.bot.web.metrics import metrics_routes
from mentiondesk.bot.web.readiness import database_check, mastodon_check, outbox_check, slack_check
from mentiondesk.bot.web.server import WebServer
from mentiondesk.handlers import build_router, slack_listeners, slack_payload_rules
from mentiondesk.storage.db import (
    DatabaseError,
    current_revision,
    head_revision,
    open_engine,
    session_factory,
    upgrade,
)
from mentiondesk.storage.gauges import tickets_on_desk
from mentiondesk.storage.leader import LeaderLock, leader_lock
from mentiondesk.storage.outbox import outbox_backlog, pending_count
from mentiondesk.storage.single_daemon import DaemonLock, lock_single_daemon
from mentiondesk.storage.urls import describe_database

logger = logging.getLogger(__name__)

# Tasks that end once their job is done (connected, listening); every other task must run as long as the daemon.
_ONE_SHOT_TASKS = frozenset({"slack intake", "http server"})
# Of daemon.shutdown_timeout_s (a quarter at most), what the outbox flush leaves for closing connections.
CLOSE_RESERVE_S = 1.0
# How long a reload waits for batches begun under the old settings before recomputing SLA clocks.
RELOAD_WAIT_S = 30.0
# status_line() is asked every few seconds: a database that takes longer than this counts as unreachable.
STATUS_QUERY_TIMEOUT_S = 5.0


class LeadershipError(RuntimeError):
    """Leadership was lost and the leader work would not stop: the process must end rather than lead twice."""


class Daemon:
    """Watch Mastodon, open tickets, post them to Slack. `async with Daemon(config): ...` or start()/stop()."""

    def __init__(self, config: Config, *, dry_run_out: TextIO | None = None) -> None:
        config.require_secrets()
        self.config = config
        self._dry_run_out = dry_run_out or sys.stdout
        self._engine: AsyncEngine | None = None
        self._http: aiohttp.ClientSession | None = None
        self._slack_http: aiohttp.ClientSession | None = None
        self._mastodon: MastodonClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sender_task: asyncio.Task[None] | None = None
        self._slack_intake: SlackIntake | None = None
        self.web: WebServer | None = None
        self.pipeline: IngestPipeline | None = None
        self.context: AppContext | None = None
        self.watchers: list[FeedWatcher] = []
        self.sweeper: PostSweeper | None = None
        self.sender: SlackSender | DryRunSender | None = None
        self._dispatcher: Dispatcher | None = None
        self.timers: SlaTimers | None = None
        self.summaries: SummaryScheduler | None = None
        self._sqlite_lock: DaemonLock | None = None
        self._lock: LeaderLock | None = None
        self._leading = False
        # The leader's work: the feed watchers and the post sweeper (the timers and summaries run in the scheduler).
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._election_task: asyncio.Task[None] | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._slack: AsyncWebClient | None = None
        self._stream_base = ""

    @property
    def is_leader(self) -> bool:
        """True while this process consumes the feeds and runs the schedules (always, on SQLite)."""
        return self._leading

    @property
    def slack_intake(self) -> SlackIntake | None:
        """How Slack reaches this daemon (Socket Mode or the HTTP server); None in dry-run mode."""
        return self._slack_intake

    def _streams(self) -> dict[str, bool]:
        if not self.config.settings.mastodon.streaming:
            return {}
        return {w.feed.cursor_name: w.stream_connected.is_set() for w in self.watchers}

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.config.settings
        secrets = self.config.secrets
        logger.info("starting with database %s", describe_database(settings.database.url))
        self._engine = await open_engine(settings.database.url, create=True)
        # Once the path is known to be usable, before the database is touched: a second daemon on the same SQLite
        # file must not use it at all.
        self._sqlite_lock = lock_single_daemon(settings.database.url)
        await self._prepare_schema(self._engine)
        sessions = self._sessions = session_factory(self._engine)
        # Policies or calendars may have changed since the last run: open tickets' due times follow them.
        await recompute_open_clocks(sessions, sla_book(settings.sla))

        classifier = await asyncio.to_thread(load_classifier, settings.classifier.model_choice())

        assert secrets.mastodon_token is not None
        mastodon = self._mastodon = MastodonClient(
            settings.mastodon.base_url, secrets.mastodon_token, timeout_s=settings.mastodon.request_timeout_s
        )
        brand = await mastodon.verify_credentials()
        logger.info("watching mentions of @%s on %s", brand.acct, settings.mastodon.base_url)
        self._http = aiohttp.ClientSession(read_bufsize=2**20)

        slack: AsyncWebClient | None = None
        bot_name = DEFAULT_BOT_NAME
        if not settings.slack.dry_run:
            # slack-sdk ignores its own timeout on a session it is given: the session carries it instead.
            self._slack_http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=settings.slack.request_timeout_s)
            )
            # No retry handlers: slack-sdk's default re-sends after a dropped connection, which can post a card
            # twice; the sender retries itself and looks in Slack first when an answer was lost.
            slack = MeteredWebClient(
                token=secrets.slack_bot_token,
                base_url=settings.slack.base_url,
                timeout=int(settings.slack.request_timeout_s),
                session=self._slack_http,
                retry_handlers=[],
            )
            bot_name = await self._verify_slack(slack)
        self._slack = slack
        self.sender = await self._outbox_sender(sessions, slack, bot_name)
        sender = self.sender

        def changed() -> None:
            # Every change that moves a clock queues a card or a refresh and wakes the sender after its commit:
            # the timers look again then too (one reconcile for a burst). On a follower there are none: the
            # leader's periodic reconcile sees the change.
            sender.wake()
            if self.timers is not None:
                self.timers.poke()

        self.context = AppContext(
            settings=settings,
            sessions=sessions,
            classifier=classifier,
            mastodon=mastodon,
            brand=brand,
            wake_outbox=changed,
            limits=await mastodon.status_limits(),
            slack=slack,
        )
        self._dispatcher = Dispatcher(build_router(), self.context)
        self.pipeline = IngestPipeline(
            on_posts=self._store_posts,
            on_change=self._apply_change,
            batch_size=settings.ingest.batch_size,
            capacity=settings.ingest.queue_size,
        )
        http = settings.http_server()
        loop_lag = LoopLag()
        if http is not None:
            self.web = WebServer(http, max_body_bytes=settings.slack.max_body_bytes)
            self.web.add_routes(self._health_probes(loop_lag, http.outbox_stuck_after_s).routes())
            self.web.add_routes(dashboard_routes(sessions, token=secrets.dashboard_token))
            self.web.add_routes(
                metrics_routes(
                    sessions,
                    is_leader=lambda: self.is_leader,
                    mastodon_remaining=lambda: mastodon.ratelimit_remaining,
                    streams=self._streams,
                    channels=[c.channel for c in configured_channels(settings)],
                )
            )
        if slack is not None:
            app = build_app(self.context, Permissions(settings.slack, slack), slack, slack_listeners())
            self._slack_intake = self._slack_connection(app)
            self._tasks.append(asyncio.create_task(self._connect_slack(), name="slack intake"))
        if self.web is not None:
            self._tasks.append(asyncio.create_task(self._serve_http(self.web), name="http server"))
            self._tasks.append(asyncio.create_task(loop_lag.run(), name="loop lag"))

        self._stream_base = await mastodon.streaming_base_url() if settings.mastodon.streaming else mastodon.base_url
        if settings.reports.schedules() and slack is None:
            logger.info("[reports] summaries are not posted in a dry run")
        self._sender_task = asyncio.create_task(self.sender.run(), name="slack sender")
        self._tasks.append(self._sender_task)
        self._tasks.append(asyncio.create_task(self.pipeline.run(), name="ingest"))
        # Tried once here, so a daemon alone on its database leads as soon as start() returns.
        self._lock = leader_lock(settings.database.url, check_s=settings.database.leader_check_s)
        if await self._lock.try_acquire():
            await self._lead()
        elif not self._lock.single_process:
            logger.info(
                "follower: another process leads (consumes the feeds, runs the schedules); "
                "trying to take over every %gs",
                settings.database.leader_check_s,
            )
        self._election_task = asyncio.create_task(self._elect(), name="leader election")
        self._tasks.append(self._election_task)

    async def _lead(self) -> None:
        """Start the leader's work: the feeds from their stored cursors, the post sweeper, the timers, summaries."""
        assert self._sessions is not None and self._mastodon is not None and self._http is not None
        assert self.sender is not None and self.pipeline is not None and self._lock is not None
        settings, sessions, mastodon = self.config.settings, self._sessions, self._mastodon
        self._leading = True
        if not self._lock.single_process:
            logger.info(
                "leader: this process now consumes the feeds and runs the schedules (pid %d on %s)",
                os.getpid(),
                socket.gethostname(),
            )
        feeds = [notification_feed(mastodon)] + [hashtag_feed(mastodon, tag) for tag in settings.mastodon.hashtags]
        self.watchers = [
            FeedWatcher(
                feed,
                client=mastodon,
                sessions=sessions,
                ingest=self.pipeline.submit,
                settings=settings.mastodon,
                http=self._http,
                stream_base_url=self._stream_base,
            )
            for feed in feeds
        ]
        self.sweeper = PostSweeper(
            client=mastodon, sessions=sessions, on_change=self.post_changed, settings=settings.mastodon
        )
        # After the outbox sender exists (alerts wake it); an alert due while no one led goes out now.
        self.timers = SlaTimers(sessions, sla_book(settings.sla), on_sent=self.sender.wake)
        await self.timers.start()
        if settings.reports.schedules() and self._slack is not None:
            self.summaries = SummaryScheduler(sessions, settings.reports, self._slack)
            await self.summaries.start()
        self._leader_tasks = [asyncio.create_task(w.run(), name=f"watch {w.feed.cursor_name}") for w in self.watchers]
        self._leader_tasks.append(asyncio.create_task(self.sweeper.run(), name="refresh posts"))
        if settings.retention.customer_data_days:
            assert self.context is not None
            retention = retention_job(sessions, settings.retention, on_erased=self.context.wake_outbox)
            self._leader_tasks.append(asyncio.create_task(retention, name="retention"))

    async def _elect(self) -> None:
        """Keep the leadership in step with the lock, and fail the daemon if a leader task fails (a bug)."""
        assert self._lock is not None
        check_s = self.config.settings.database.leader_check_s
        while True:
            if not self._leading:
                await asyncio.sleep(check_s)
                if await self._lock.try_acquire():
                    await self._lead()
                continue
            if self._leader_tasks:
                done, _ = await asyncio.wait(self._leader_tasks, timeout=check_s)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        raise RuntimeError(f"{task.get_name()} stopped") from task.exception()
                self._leader_tasks = [t for t in self._leader_tasks if not t.done()]
            else:
                await asyncio.sleep(check_s)
            if not await self._lock.still_held():
                await self._step_down()

    async def _step_down(self) -> None:
        """Leadership is lost: stop the leader's work at once, or end the process if it will not stop."""
        settings = self.config.settings
        logger.warning(
            "leader: lost the leader lock (its database connection failed or the lock is gone); "
            "stopping the feeds and the schedules, then trying to lead again every %gs",
            settings.database.leader_check_s,
        )
        deadline = asyncio.get_running_loop().time() + settings.daemon.shutdown_timeout_s
        if not await self._stop_leader_work(deadline):
            logger.error(
                "leader work did not stop within daemon.shutdown_timeout_s after losing the leader lock; "
                "exiting rather than risk two leaders"
            )
            raise LeadershipError("leader work did not stop after leadership was lost")

    async def _stop_leader_work(self, deadline: float) -> bool:
        """Stop the timers, the summaries, the watchers and the sweeper by the loop time deadline; True when all did."""
        loop = asyncio.get_running_loop()
        self._leading = False
        if self.timers is not None:
            await self.timers.stop(timeout_s=max(0.0, deadline - loop.time()))
            self.timers = None
        if self.summaries is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    await self.summaries.stop()
            except TimeoutError:
                return False
            self.summaries = None
        tasks, self._leader_tasks = self._leader_tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
            if pending:
                self._leader_tasks = list(pending)
                return False
        self.watchers = []
        self.sweeper = None
        return True

    def _health_probes(self, loop_lag: LoopLag, outbox_stuck_after_s: float) -> HealthProbes:
        assert self._engine is not None and self.context is not None
        reachability = self.sender.reachability if isinstance(self.sender, SlackSender) else None
        checks = {
            "database": database_check(self._engine),
            # Read at each probe: the watchers are made after the server's routes.
            "mastodon": mastodon_check(
                lambda: self.watchers, self.config.settings.mastodon, is_leader=lambda: self.is_leader
            ),
            "slack": slack_check(reachability, socket_mode_up=self._socket_mode_up),
            "outbox": outbox_check(self.context.sessions, stuck_after_s=outbox_stuck_after_s),
        }
        return HealthProbes(dead_workers=self.dead_workers, loop_lag=loop_lag, checks=checks)

    async def _socket_mode_up(self) -> bool | None:
        """None unless Slack reaches this process over Socket Mode; else whether its websocket is up."""
        intake = self._slack_intake
        return await intake.connected() if isinstance(intake, SocketModeConnection) else None

    def dead_workers(self) -> list[str]:
        """Names of the background tasks that must run as long as the daemon but have ended (crashed or cancelled)."""
        tasks = [*self._tasks, *self._leader_tasks]
        return [t.get_name() for t in tasks if t.done() and t.get_name() not in _ONE_SHOT_TASKS]

    async def _outbox_sender(
        self, sessions: async_sessionmaker[AsyncSession], slack: AsyncWebClient | None, bot_name: str
    ) -> SlackSender | DryRunSender:
        settings = self.config.settings
        if slack is not None:
            return SlackSender(
                sessions,
                settings.slack,
                client=slack,
                channel_keys=channel_keys(configured_channels(settings)),
                bot_name=bot_name,
            )
        printer = DryRunSender(sessions, out=self._dry_run_out)
        await printer.announce()
        return printer

    async def _verify_slack(self, slack: AsyncWebClient) -> str:
        """The bot's name, once Slack has accepted the tokens; a refused token stops the start (SlackSetupError).

        Slack not answering does not: tickets are opened and queued until it is back.
        """
        secrets, settings = self.config.secrets, self.config.settings.slack
        try:
            bot = await verify_bot_token(slack, secrets.slack_bot_token, settings)
            if settings.mode == "socket":
                await verify_app_token(slack, secrets.slack_app_token, settings)
        except SlackUnavailable as exc:
            logger.warning("%s; starting anyway: Slack messages wait in the outbox until Slack answers", exc)
            return DEFAULT_BOT_NAME
        logger.info("Slack: signed in as bot %s in workspace %s", bot.name, bot.team)
        return bot.name

    def _slack_connection(self, app: AsyncApp) -> SlackIntake:
        secrets, slack = self.config.secrets, self.config.settings.slack
        if slack.mode == "http":
            from mentiondesk.bot.slack.http import SlackHttpEndpoints

            assert secrets.slack_signing_secret is not None and self.web is not None
            endpoints = SlackHttpEndpoints(
                app, slack, signing_secret=secrets.slack_signing_secret, rules=slack_payload_rules()
            )
            self.web.add_routes(endpoints.routes())
            return endpoints
        assert secrets.slack_app_token is not None and app.client is not None
        return SocketModeConnection(
            app,
            app_token=secrets.slack_app_token,
            web_client=app.client,
            rules=slack_payload_rules(),
            request_timeout_s=slack.request_timeout_s,
        )

    async def _connect_slack(self) -> None:
        """Connect to Slack, retrying: while Slack is unreachable, tickets are still opened and queued."""
        assert self._slack_intake is not None
        attempt = 0
        while True:
            try:
                await self._slack_intake.start()
                return
            except Exception as exc:
                attempt += 1
                wait_s = backoff_delay(attempt, cap_s=self.config.settings.slack.max_retry_delay_s)
                logger.warning("cannot connect to Slack (%s); retrying in %.0fs", exc, wait_s)
                await asyncio.sleep(wait_s)

    async def _serve_http(self, server: WebServer) -> None:
        """Listen, retrying while the port is taken (a previous daemon still exiting, say)."""
        attempt = 0
        while True:
            try:
                await server.start()
                return
            except OSError as exc:
                attempt += 1
                wait_s = backoff_delay(attempt, cap_s=self.config.settings.slack.max_retry_delay_s)
                logger.warning("cannot listen for HTTP (%s); retrying in %.0fs", exc, wait_s)
                await asyncio.sleep(wait_s)

    async def _prepare_schema(self, engine: AsyncEngine) -> None:
        if self.config.settings.database.auto_migrate:
            await upgrade(engine)
            return
        current, head = await current_revision(engine), head_revision()
        if current != head:
            raise DatabaseError(
                f"database schema is at {current or 'nothing'}, this version needs {head}: run `mentiondesk db upgrade`"
            )

    async def ingest(self, post: Post, source: str) -> None:
        """Store one post through the pipeline; a failure raises IngestError, saying whether another try can help."""
        assert self.pipeline is not None
        await self.pipeline.process(MentionReceived(post=post, source=source))

    async def post_changed(self, change: PostChange) -> None:
        """Apply one edit or delete through the pipeline, after any post queued before it."""
        assert self.pipeline is not None
        await self.pipeline.process(change)

    async def _store_posts(self, mentions: Sequence[MentionReceived]) -> list[BaseException | None]:
        """The unit of work for a batch of posts: one IngestError per post that was not stored."""
        assert self._dispatcher is not None and self.context is not None
        batch = MentionsReceived(mentions=tuple(mentions))
        try:
            # One batch, one set of settings: a reload meanwhile applies from the next batch on.
            with self.context.pinned() as ctx:
                await self._dispatcher.dispatch(batch, ctx)
        except Exception as exc:
            return [self._ingest_error(m.post, exc) for m in mentions]
        return [
            None if error is None else self._ingest_error(m.post, error)
            for m, error in zip(mentions, batch.outcomes, strict=True)
        ]

    @staticmethod
    def _ingest_error(post: Post, exc: BaseException) -> IngestError:
        if isinstance(exc, IngestError):
            return exc
        if isinstance(exc, SQLAlchemyError | OSError | MastodonError):
            return IngestError(f"post {post.id} not stored: {failure_reason(exc)}", transient=is_transient(exc))
        logger.error("post %s could not be processed", post.url, exc_info=exc, extra={"status_id": post.id})
        return IngestError(f"post {post.id} not processed: {failure_reason(exc)}", transient=False)

    async def _apply_change(self, change: PostChange) -> None:
        """The unit of work for one edit or delete, with the same error boundary as posts."""
        assert self._dispatcher is not None and self.context is not None
        what = f"edit of {change.post.url}" if isinstance(change, PostEdited) else f"delete of {change.status_id}"
        status_id = change.post.id if isinstance(change, PostEdited) else change.status_id
        try:
            with self.context.pinned() as ctx:
                await self._dispatcher.dispatch(change, ctx)
        except (SQLAlchemyError, OSError, MastodonError) as exc:
            raise IngestError(f"{what} not applied yet: {exc}") from exc
        except Exception:
            logger.exception("%s could not be processed and was skipped", what, extra={"status_id": status_id})

    async def reload(self, config: Config) -> Reload:
        """Put a new config in force without dropping the Mastodon stream or the Slack connection (SIGHUP).

        Routing, thresholds, SLA policies and calendars, alert and escalation settings and report schedules apply
        to the work that starts from now on; open tickets' due times follow the new policies. Keys only a restart
        can change keep their running values and are listed in the result. Secrets are never taken from config.
        """
        if self.context is None:
            raise RuntimeError("daemon not started")
        plan = plan_reload(self.config.settings, config.settings)
        settings = plan.settings
        # Everything built before anything is swapped: a failure leaves the running config whole.
        classifier = await self._model_for(settings.classifier.model_choice())
        tuning = Tuning.with_model(settings, classifier)
        old = self.context.swap(tuning)
        self.config = Config(settings=settings, secrets=self.config.secrets, source=config.source)
        if "sla" in plan.changed:
            await self._follow_sla(old, tuning)
        if "reports" in plan.changed:
            await self._apply_reports(settings)
        return plan

    async def _model_for(self, choice: str | Path) -> Classifier:
        """The model a reload puts in force: the running one unless the choice, or the file behind it, changed.

        A path is read again on every reload, since `mentiondesk classifier train` replaces current.npz in place.
        """
        assert self.context is not None
        running = self.context.classifier
        if choice == self.config.settings.classifier.model_choice() and choice in CHOICES:
            return running  # a built-in model does not change under a running daemon
        try:
            loaded = await asyncio.to_thread(load_classifier, choice)
        except ClassifierError as exc:
            reason = str(exc)
            raise ConfigError(
                reason if reason.startswith("classifier.model") else f"classifier.model = {str(choice)!r}: {reason}"
            ) from exc
        if dict(loaded.metadata) == dict(running.metadata):
            return running
        logger.info("classifier: now using the model %s (its ticket threshold %.2f)", choice, loaded.threshold)
        return loaded

    async def _follow_sla(self, old: Tuning, tuning: Tuning) -> None:
        """New SLA book: alerts follow it, and so do open tickets' clocks, once no batch still uses the old one."""
        assert self.context is not None
        if self.timers is not None:
            self.timers.use_book(tuning.sla)
        if not await self.context.retired(old, timeout_s=RELOAD_WAIT_S):
            logger.warning("work begun before the reload still runs; recomputing open tickets' clocks anyway")
        try:
            changed = await recompute_open_clocks(self.context.sessions, tuning.sla)
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("open tickets' due times were not recomputed (%s); the next start does it", exc)
            return
        if changed:
            logger.info("SLA clocks of open tickets recomputed for the new policies: %d changed", changed)
        self.context.wake_outbox()  # refreshed cards, and alerts that are due now

    async def _apply_reports(self, settings: Settings) -> None:
        assert self.context is not None
        if not settings.reports.schedules():
            if self.summaries is not None:
                await self.summaries.stop()
                self.summaries = None
        elif self.summaries is not None:
            self.summaries.reschedule(settings.reports)
        elif self.context.slack is not None and self.is_leader:
            # A follower has none: the leader's scheduler posts them, and a new leader starts from the new config.
            self.summaries = SummaryScheduler(self.context.sessions, settings.reports, self.context.slack)
            await self.summaries.start()

    async def wait(self) -> None:
        """Run until a background task fails (which is a bug) or the daemon is stopped."""
        if not self._tasks:
            raise RuntimeError("daemon not started")
        pending = set(self._tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                # Connecting to Slack and starting the HTTP server are the tasks that are meant to finish.
                if not task.cancelled() and task.exception() is not None:
                    raise RuntimeError(f"{task.get_name()} stopped") from task.exception()

    async def wait_caught_up(self, timeout_s: float) -> bool:
        """Wait until every feed watcher has read its feed to the end once; False if that took over timeout_s."""
        try:
            async with asyncio.timeout(timeout_s):
                for watcher in self.watchers:
                    await watcher.caught_up.wait()
        except TimeoutError:
            return False
        return True

    async def status_line(self) -> str:
        """One line for `systemctl status`, e.g. "streaming, 3 open tickets, outbox 0"."""
        parts = [self._feed_state()]
        try:
            assert self.context is not None
            async with asyncio.timeout(STATUS_QUERY_TIMEOUT_S), self.context.sessions() as session:
                on_desk, outbox = sum((await tickets_on_desk(session)).values()), await pending_count(session)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            logger.debug("status: database query failed: %s", exc)
            parts.append("database unreachable")
        else:
            parts += [f"{on_desk} open ticket{'' if on_desk == 1 else 's'}", f"outbox {outbox}"]
        dead = self.dead_workers()
        if dead:
            parts.append(f"stopped: {', '.join(dead)}")
        return ", ".join(parts)

    def _feed_state(self) -> str:
        if not self.is_leader:
            return "follower (another process reads Mastodon)"
        if not self.watchers:
            return "not watching Mastodon"
        if not all(w.caught_up.is_set() for w in self.watchers):
            return "catching up with Mastodon"
        if not self.config.settings.mastodon.streaming:
            return "polling"
        if all(w.stream_connected.is_set() for w in self.watchers):
            return "streaming"
        return "polling (stream down)"

    async def stop(self) -> None:
        # Reverse order of start: stop intake, finish the mentions in flight, flush the outbox, then close
        # clients, then the database. One deadline covers every wait, so the whole stop takes at most
        # shutdown_timeout_s (plus closing connections), whatever is hung.
        loop = asyncio.get_running_loop()
        timeout_s = self.config.settings.daemon.shutdown_timeout_s
        deadline = loop.time() + timeout_s
        sent_before = self.sender.sent if self.sender is not None else 0

        def left_s() -> float:
            return max(0.0, deadline - loop.time())

        intake, self._slack_intake = self._slack_intake, None
        if intake is not None:
            await self._stop_by(intake, deadline)
        if self.web is not None:
            # Waits for requests in flight (Slack's, until their listener acked; the dashboard's, which need the
            # database), so before anything closes.
            await self._stop_by(self.web, deadline)
            self.web = None
        if intake is not None:
            await finish_listeners(left_s())
        if self._election_task is not None:
            self._election_task.cancel()  # first: it must not start the leader work again while that stops
            await asyncio.wait([self._election_task], timeout=left_s())
            self._election_task = None
        if not await self._stop_leader_work(deadline):
            logger.warning("the feeds or the schedules did not stop within daemon.shutdown_timeout_s; leaving them")
        if self._lock is not None:
            await self._lock.release()  # once the leader work has stopped: another process may take over now
            self._lock = None
        ingest = [t for t in self._tasks if t.get_name() == "ingest"]
        watchers = [t for t in self._tasks if t is not self._sender_task and t not in ingest]
        for task in watchers:
            task.cancel()
        if watchers:
            await asyncio.wait(watchers, timeout=left_s())
        if self.pipeline is not None:
            # The batch being written commits (or fails) rather than being cut off mid-transaction; what is still
            # queued is read again by the next start's poll.
            await self.pipeline.close(timeout_s=left_s())
        for task in ingest:
            task.cancel()
        if ingest:
            await asyncio.wait(ingest, timeout=left_s())
        if self.sender is not None and self._sender_task is not None:
            # Flush: what is due goes out, paced and within rate limits, until the deadline is near; the rest
            # waits in the outbox for the next start. Time is kept back for closing what follows.
            flush_by = deadline - min(CLOSE_RESERVE_S, timeout_s / 4)
            self.sender.finish(flush_by)
            _, pending = await asyncio.wait([self._sender_task], timeout=max(0.0, flush_by - loop.time()))
            for task in pending:
                task.cancel()  # the claimed row stays in doubt; the next sender checks Slack before reposting
            await asyncio.wait([self._sender_task])
            await self._log_stopped(self.sender.sent - sent_before)
        self._tasks.clear()
        self._sender_task = None
        if self._mastodon is not None:
            # A call stuck in a worker thread is not waited for: its thread is abandoned (and logged).
            self._mastodon.close()
            await self._mastodon.aclose()
            self._mastodon = None
        for session in (self._http, self._slack_http):
            if session is not None:
                await session.close()
        self._http = self._slack_http = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        if self._sqlite_lock is not None:
            self._sqlite_lock.release()
            self._sqlite_lock = None

    async def _log_stopped(self, sent: int) -> None:
        left: int | str = "an unknown number of"
        if self.context is not None:
            try:
                async with asyncio.timeout(CLOSE_RESERVE_S), self.context.sessions() as session:
                    backlog = await outbox_backlog(session)
                    left = backlog.pending + backlog.parked
            except (TimeoutError, SQLAlchemyError, OSError):
                pass  # the database is away: the count is all that is missing
        logger.info("stopped: %d messages sent while stopping, %s left in the outbox", sent, left)

    @staticmethod
    async def _stop_by(intake: SlackIntake | WebServer, deadline: float) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await intake.stop()
        except TimeoutError:
            logger.warning("%s did not close within daemon.shutdown_timeout_s; leaving it", _described(intake))


def _described(intake: SlackIntake | WebServer) -> str:
    return "the HTTP server" if isinstance(intake, WebServer) else "the Slack connection"


__all__ = ["ConfigError", "Daemon"]
