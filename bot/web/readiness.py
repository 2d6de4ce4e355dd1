"""The checks behind /readyz: database, Mastodon feeds, Slack, outbox. Each answers (passes, one line why)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.config import MastodonSettings
from mentiondesk.bot.mastodon.pacing import POLL_SHARE, min_interval_s
from mentiondesk.bot.mastodon.set_aside import failure_reason
from mentiondesk.bot.mastodon.watcher import FeedWatcher
from mentiondesk.bot.slack.reachability import SlackReachability
from mentiondesk.bot.web.health import Probe
from mentiondesk.storage.outbox import outbox_backlog
from mentiondesk.storage.types import utcnow

# A database that takes longer than this for SELECT 1 cannot keep up with the daemon's own work either.
DATABASE_TIMEOUT_S = 2.0
# Slack's auth.test, made only when no Slack call was seen for a minute (see SlackReachability).
SLACK_TEST_TIMEOUT_S = 2.0


def database_check(engine: AsyncEngine) -> Probe:
    async def check() -> tuple[bool, str]:
        started = time.monotonic()
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_S):
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except TimeoutError:
            return False, f"SELECT 1 got no answer within {DATABASE_TIMEOUT_S:g}s"
        except Exception as exc:
            return False, f"SELECT 1 failed: {failure_reason(exc)}"
        return True, f"SELECT 1 answered in {(time.monotonic() - started) * 1000:.0f} ms"

    return check


def poll_allowance_s(settings: MastodonSettings) -> float:
    """How old a feed's last poll may be while its stream is down.

    A poll follows the one before after stream_down_poll_interval_s (or the budget's spacing, if longer), and
    may itself take up to request_timeout_s per page; one missed beat is allowed before the feed counts as down.
    """
    interval_s = max(settings.stream_down_poll_interval_s, min_interval_s(settings, POLL_SHARE))
    return 2 * interval_s + settings.request_timeout_s


def mastodon_check(
    watchers: Callable[[], Sequence[FeedWatcher]],
    settings: MastodonSettings,
    *,
    is_leader: Callable[[], bool] = lambda: True,
) -> Probe:
    """Each feed passes with its stream connected, or else with a poll within poll_allowance_s.

    A follower (several processes on Postgres) reads no feed: the leader's own probe answers for them.
    """
    allowance_s = poll_allowance_s(settings)

    async def check() -> tuple[bool, str]:
        if not is_leader():
            return True, "follower: the leader process reads the feeds"
        feeds = watchers()
        if not feeds:
            return False, "not watching yet (starting)"
        now = time.monotonic()
        failing: list[str] = []
        passing: list[str] = []
        for watcher in feeds:
            name = watcher.feed.cursor_name
            if watcher.stream_connected.is_set():
                passing.append(f"{name}: stream connected")
                continue
            stream = "stream down, " if settings.streaming else ""
            polled = watcher.last_poll_ok_at
            if polled is None:
                failing.append(f"{name}: {stream}no poll has succeeded yet")
            elif now - polled > allowance_s:
                failing.append(f"{name}: {stream}last good poll {now - polled:.0f}s ago (allowed {allowance_s:g}s)")
            else:
                passing.append(f"{name}: {stream}polled {now - polled:.0f}s ago")
        return not failing, "; ".join(failing or passing)

    return check


def slack_check(
    reachability: SlackReachability | None, *, socket_mode_up: Callable[[], Awaitable[bool | None]] | None = None
) -> Probe:
    """None: a dry run, which never calls Slack. ``socket_mode_up``: whether agents' clicks can reach this
    process (None when it takes them over HTTP instead)."""

    async def check() -> tuple[bool, str]:
        if reachability is None:
            return True, "dry run"
        if socket_mode_up is not None and await socket_mode_up() is False:
            return False, "Socket Mode not connected: agents' clicks cannot reach this process (slack-sdk reconnects)"
        return await reachability.check(timeout_s=SLACK_TEST_TIMEOUT_S)

    return check


def outbox_check(sessions: async_sessionmaker[AsyncSession], *, stuck_after_s: float) -> Probe:
    """Fails when a pending message has waited longer than stuck_after_s since it was queued.

    Parked messages are counted in the detail but never fail it: they wait on a person (invite the bot, fix a
    channel name, replace the token), which `mentiondesk check` and the log already say, and no restart or
    rerouting of traffic would send them.
    """

    async def check() -> tuple[bool, str]:
        async with sessions() as session:
            backlog = await outbox_backlog(session)
        parked = f", {backlog.parked} parked (waiting on a person, see `mentiondesk check`)" if backlog.parked else ""
        if backlog.oldest_pending_at is None:
            return True, f"nothing pending{parked}"
        age_s = (utcnow() - backlog.oldest_pending_at).total_seconds()
        summary = f"{backlog.pending} pending, the oldest queued {age_s:.0f}s ago"
        if age_s > stuck_after_s:
            return False, f"{summary} (more than http.outbox_stuck_after_s = {stuck_after_s:g}){parked}"
        return True, summary + parked

    return check
