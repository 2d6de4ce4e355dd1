"""Watching Mastodon: each feed is streamed for speed and polled from its stored cursor for completeness.

The stream delivers posts within a second, but a stream can drop at any time and says nothing about
what it missed. So the stored cursor only ever moves after a poll has ingested every post up to it:
after a restart or a dropped stream, the next poll picks up exactly where the last one stopped, and
the unique key on each status makes posts that arrived by both routes count once.

Edits and deletes come as stream events too (`status.update`, `delete`), but a server need not push them
to the accounts a post mentions, and a dropped stream loses them for good: bot/mastodon/post_sweeper.py re-reads
the customer posts of open tickets now and then, and both routes feed the same handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot import metrics
from mentiondesk.bot.config import MastodonSettings
from mentiondesk.bot.events import MentionReceived, Post, PostChange
from mentiondesk.bot.ingest import IngestEvent, log_failure
from mentiondesk.bot.mastodon.client import (
    CHANGE_EVENTS,
    FeedItem,
    MastodonClient,
    notification_item,
    post_change_from_stream,
    status_item,
)
from mentiondesk.bot.mastodon.pacing import POLL_SHARE, STREAM_SHARE, min_interval_s, next_attempt
from mentiondesk.bot.mastodon.set_aside import MAX_TRIES, SetAside
from mentiondesk.bot.mastodon.stream_hold import StreamEvent, StreamHold
from mentiondesk.bot.mastodon.streaming import read_events
from mentiondesk.bot.retry import (
    Verdict,
    backoff_delay,
    error_kind,
    parse_retry_after,
    rate_limit_pause_s,
    sort_mastodon_error,
)
from mentiondesk.storage.cursors import get_cursor, set_cursor
from mentiondesk.storage.db import transaction

logger = logging.getLogger(__name__)

PAGE_LIMIT = 40
# Mastodon sends a heartbeat comment every 15 s; this much silence (six missed) means a dead connection.
STREAM_READ_TIMEOUT_S = 90.0

# Queues an event for the ingest pipeline (waiting while it is full); the future says when it is stored.
Ingest = Callable[[IngestEvent], Awaitable[asyncio.Future[None]]]
OnChange = Callable[[PostChange], Awaitable[None]]
Fetch = Callable[[str | None, int], Awaitable[list[FeedItem]]]


class IngestError(Exception):
    """A post could not be stored: retried while the cause may pass (database away), else set aside after a few."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Feed:
    cursor_name: str
    source: str
    stream_path: str
    stream_event: str
    fetch: Fetch
    parse_event: Callable[[Mapping[str, Any]], FeedItem]


def notification_feed(client: MastodonClient) -> Feed:
    return Feed(
        cursor_name="notifications:mention",
        source="notification",
        # The whole user stream, not /user/notification: edits and deletes of posts come only on this one.
        stream_path="/api/v1/streaming/user",
        stream_event="notification",
        fetch=lambda cursor, limit: client.mentions_after(cursor, limit=limit),
        parse_event=notification_item,
    )


def hashtag_feed(client: MastodonClient, tag: str) -> Feed:
    return Feed(
        cursor_name=f"hashtag:{tag}",
        source=f"hashtag:{tag}",
        stream_path=f"/api/v1/streaming/hashtag?tag={tag}",
        stream_event="update",
        fetch=lambda cursor, limit: client.hashtag_after(tag, cursor, limit=limit),
        parse_event=status_item,
    )


class FeedWatcher:
    """Streams and polls one feed until cancelled."""

    def __init__(
        self,
        feed: Feed,
        *,
        client: MastodonClient,
        sessions: async_sessionmaker[AsyncSession],
        ingest: Ingest,
        settings: MastodonSettings,
        http: aiohttp.ClientSession,
        stream_base_url: str,
    ) -> None:
        self.feed = feed
        self._client = client
        self._sessions = sessions
        self._ingest = ingest
        self._settings = settings
        self._http = http
        self._stream_url = stream_base_url.rstrip("/") + feed.stream_path
        self._kick = asyncio.Event()
        self.stream_connected = asyncio.Event()
        # Set once a catch-up poll has read the feed to its end: the daemon tells systemd it is ready then.
        self.caught_up = asyncio.Event()
        self.polls_completed = 0
        # Monotonic time of the last page read by a poll: while the stream is down, /readyz judges the feed by it.
        self.last_poll_ok_at: float | None = None
        self.stream_items_read = 0
        self._hold = StreamHold(self._apply, name=feed.cursor_name)
        self.set_aside = SetAside(sessions, feed=feed.cursor_name)
        self._poll_spacing_s = min_interval_s(settings, POLL_SHARE)
        self._stream_spacing_s = min_interval_s(settings, STREAM_SHARE)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._poll_loop(), name=f"poll {self.feed.cursor_name}")
            if self._settings.streaming:
                group.create_task(self._stream_loop(), name=f"stream {self.feed.cursor_name}")

    def kick(self) -> None:
        """Ask for a catch-up poll now (after a reconnect, or from outside)."""
        self._kick.set()

    # --- polling ---------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        attempt = 0
        while True:
            # Cleared before the catch-up, not after: a kick during it (a reconnect) asks for another one.
            self._kick.clear()
            connects = self._hold.connects
            started = time.monotonic()
            try:
                await self.catch_up()
                await self._hold.release(connects)
                attempt = 0
                self.polls_completed += 1
                self.last_poll_ok_at = time.monotonic()
                self.caught_up.set()
                wait_s = max(
                    self._rate_limit_pause_s(),
                    self._settings.poll_interval_s
                    if self.stream_connected.is_set()
                    else self._settings.stream_down_poll_interval_s,
                )
            except IngestError as exc:
                attempt += 1
                wait_s = backoff_delay(attempt, cap_s=self._settings.max_backoff_s)
                logger.warning(
                    "%s: %s; retrying in %.1fs",
                    self.feed.cursor_name,
                    exc,
                    wait_s,
                    extra={"feed": self.feed.cursor_name, "attempt": attempt},
                )
            except Exception as exc:
                attempt += 1
                wait_s = self._wait_after(exc, attempt)
            await self._until_next_poll(wait_s, started=started)

    async def _until_next_poll(self, wait_s: float, *, started: float) -> None:
        """Wait wait_s or until kicked, and in any case until the budget allows this feed another poll."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._kick.wait(), timeout=wait_s)
        # Every stream connect and end kicks a poll: spaced, a flapping stream cannot spend the budget on them.
        await asyncio.sleep(max(0.0, started + self._poll_spacing_s - time.monotonic()))

    def _rate_limit_pause_s(self) -> float:
        return rate_limit_pause_s(
            self._client, cap_s=self._settings.max_backoff_s, what=f"{self.feed.cursor_name} polls"
        )

    def _wait_after(self, exc: Exception, attempt: int) -> float:
        sorted_ = sort_mastodon_error(exc, ratelimit_reset=self._client.ratelimit_reset)
        if sorted_.verdict is Verdict.RATE_LIMITED and sorted_.wait_s is not None:
            wait_s = min(sorted_.wait_s, self._settings.max_backoff_s)
            metrics.rate_limit_waited("mastodon", wait_s)
        else:
            wait_s = backoff_delay(attempt, cap_s=self._settings.max_backoff_s)
        log = logger.error if sorted_.verdict is Verdict.FATAL else logger.warning
        log(
            "%s: polling failed: %s; retrying in %.1fs",
            self.feed.cursor_name,
            sorted_.reason,
            wait_s,
            extra={"feed": self.feed.cursor_name, "attempt": attempt},
        )
        return wait_s

    async def catch_up(self) -> int:
        """Ingest everything after the stored cursor, oldest first; returns how many items were read.

        The next page is fetched while the one before it is being stored; the cursor moves past a page only
        once every post on it is stored (or set aside).
        """
        async with self._sessions() as session:
            cursor = await get_cursor(session, name=self.feed.cursor_name)
        if cursor is None:
            return await self._first_start()
        read = 0
        page = await self.feed.fetch(cursor, PAGE_LIMIT)
        while True:
            queued = await self._submit_page(page)
            read += len(page)
            # An empty page, or one whose entries all came without an id (set aside), leaves nothing to page from.
            cursor = _last_cursor(page)
            fetching = asyncio.ensure_future(self.feed.fetch(cursor, PAGE_LIMIT)) if cursor is not None else None
            try:
                await self._finish_page(page, queued)
            except BaseException:
                if fetching is not None:
                    fetching.cancel()
                    await asyncio.wait([fetching])
                    if not fetching.cancelled():
                        fetching.exception()  # retrieved: the failure being raised is the one that counts
                raise
            if fetching is None:
                return read
            page = await fetching
            # A long catch-up is a working feed too, not one that stopped polling.
            self.last_poll_ok_at = time.monotonic()

    async def _first_start(self) -> int:
        # No cursor yet: take the latest `backfill` items rather than the account's whole history.
        backfill = self._settings.backfill
        items = await self.feed.fetch(None, max(1, backfill))
        if backfill:
            await self._finish_page(items, await self._submit_page(items))
        await self._save_cursor(_last_cursor(items) or "0")
        return len(items) if backfill else 0

    async def _submit_page(self, items: list[FeedItem]) -> list[asyncio.Future[None] | None]:
        """Queue a page's posts for storing (waiting while the queue is full); one future per item, None for no post."""
        queued: list[asyncio.Future[None] | None] = []
        for item in items:
            if item.post is None or item.unreadable is not None:
                queued.append(None)
            else:
                queued.append(await self._ingest(MentionReceived(post=item.post, source=self.feed.source)))
        return queued

    async def _finish_page(self, items: list[FeedItem], queued: list[asyncio.Future[None] | None]) -> None:
        """Wait until the page is stored, in order; then move the cursor past it."""
        try:
            for item, done in zip(items, queued, strict=True):
                await self._finish_item(item, done)
        finally:
            # The posts after a failure are still being stored; their outcome no longer matters to this poll.
            for done in queued:
                if done is not None:
                    done.add_done_callback(_retrieve)
        last = _last_cursor(items)
        if last is not None:
            await self._save_cursor(last)

    async def _finish_item(self, item: FeedItem, done: asyncio.Future[None] | None) -> None:
        """One entry's outcome; one that cannot be read, or stored after a few tries, is set aside instead."""
        if item.unreadable is not None:
            await self._set_aside(item, f"unreadable: {item.unreadable}")
            return
        if done is None:
            return
        try:
            await done
        except IngestError as exc:
            tries = self.set_aside.failed(item) if not exc.transient else 0
            if tries < MAX_TRIES:
                raise  # the poll backs off and reads the page again
            await self._set_aside(item, str(exc), attempts=tries)
        else:
            self.set_aside.stored(item)

    async def _set_aside(self, item: FeedItem, reason: str, *, attempts: int = 1) -> None:
        try:
            await self.set_aside.put(item, reason, attempts=attempts)
        except Exception as exc:
            raise IngestError(f"cannot set aside {item.key}: {exc}") from exc

    async def _save_cursor(self, value: str) -> None:
        try:
            async with transaction(self._sessions) as session:
                await set_cursor(session, name=self.feed.cursor_name, value=value)
        except Exception as exc:
            raise IngestError(f"cannot store cursor: {exc}") from exc

    async def _apply(self, event: StreamEvent) -> None:
        # Not waited for: the stream reads on while the post is stored. A post that fails is brought back by the
        # poll once storage is healthy again, an edit or delete by the refresh sweep.
        queued = await self._ingest(
            MentionReceived(post=event, source=self.feed.source) if isinstance(event, Post) else event
        )
        queued.add_done_callback(log_failure(self.feed.cursor_name))

    # --- streaming -------------------------------------------------------------------------------

    async def _stream_loop(self) -> None:
        attempt = 0
        while True:
            started = time.monotonic()
            wait_s: float | None = None
            try:
                wait_s = await self._stream_once()
            except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
                logger.warning(
                    "%s: stream dropped: %s",
                    self.feed.cursor_name,
                    exc or type(exc).__name__,
                    extra={"feed": self.feed.cursor_name},
                )
                if not isinstance(exc, ValueError):  # a garbled event is the stream's, not a failed call
                    metrics.API_ERRORS.labels(api="mastodon", kind=error_kind(exc)).inc()
            finally:
                self.stream_connected.clear()
            metrics.STREAM_RECONNECTS.labels(feed=self.feed.cursor_name).inc()
            # A server that keeps ending the stream normally costs requests like one that keeps failing it.
            attempt = next_attempt(attempt, up_s=time.monotonic() - started)
            # Poll soon so the gap while the stream is down is covered.
            self.kick()
            delay = wait_s if wait_s is not None else backoff_delay(attempt, cap_s=self._settings.max_backoff_s)
            delay = max(delay, started + self._stream_spacing_s - time.monotonic())
            logger.info(
                "%s: stream closed; reconnecting in %.1fs",
                self.feed.cursor_name,
                delay,
                extra={"feed": self.feed.cursor_name, "attempt": attempt},
            )
            await asyncio.sleep(delay)

    async def _stream_once(self) -> float | None:
        """One streaming connection; returns a server-requested wait when it refused us."""
        request_timeout_s = self._settings.request_timeout_s
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=request_timeout_s, sock_read=STREAM_READ_TIMEOUT_S)
        # Opening the stream is a request like any other, answered within request_timeout_s; only after that
        # does the long silence allowance apply.
        async with asyncio.timeout(request_timeout_s):
            opened = await self._http.get(self._stream_url, headers=self._client.auth_header, timeout=timeout)
        async with opened as resp:
            if resp.status == 429:
                reset = resp.headers.get("X-RateLimit-Reset")
                wait_s = parse_retry_after(resp.headers.get("Retry-After"), default_s=60.0)
                if reset and "Retry-After" not in resp.headers:
                    wait_s = max(1.0, _reset_in_s(reset))
                logger.warning(
                    "%s: stream rate-limited; waiting %.0fs",
                    self.feed.cursor_name,
                    wait_s,
                    extra={"feed": self.feed.cursor_name},
                )
                metrics.API_ERRORS.labels(api="mastodon", kind="rate_limited").inc()
                metrics.rate_limit_waited("mastodon", min(wait_s, self._settings.max_backoff_s))
                return min(wait_s, self._settings.max_backoff_s)
            if resp.status >= 400:
                raise aiohttp.ClientResponseError(
                    _without_headers(resp.request_info),
                    (),
                    status=resp.status,
                    message=f"streaming endpoint answered HTTP {resp.status}",
                )
            self._hold.connected()
            self.stream_connected.set()
            logger.info("%s: stream connected", self.feed.cursor_name, extra={"feed": self.feed.cursor_name})
            self.kick()
            async for event in read_events(resp.content):
                if event is None:
                    continue
                if event.name == self.feed.stream_event:
                    await self._on_stream_event(event.data)
                elif event.name in CHANGE_EVENTS:
                    await self._on_change_event(event.name, event.data)
        return None

    async def _on_stream_event(self, data: str) -> None:
        try:
            item = self.feed.parse_event(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "%s: unreadable stream event skipped (%s); the next poll covers it", self.feed.cursor_name, exc
            )
            return
        self.stream_items_read += 1
        if item.unreadable is not None:
            try:
                await self._set_aside(item, f"unreadable: {item.unreadable}")
            except IngestError as exc:
                logger.warning("%s: %s; the next poll sets it aside", self.feed.cursor_name, exc)
        elif item.post is not None:
            await self._hold.deliver(item.post)

    async def _on_change_event(self, name: str, data: str) -> None:
        try:
            change = post_change_from_stream(name, data)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "%s: unreadable %s event skipped (%s); the refresh sweep covers it", self.feed.cursor_name, name, exc
            )
            return
        if change is not None:
            await self._hold.deliver(change)


def _without_headers(info: aiohttp.RequestInfo) -> aiohttp.RequestInfo:
    """The request as an error may carry it: the error's repr shows its headers, and they hold the token."""
    return aiohttp.RequestInfo(info.url, info.method, CIMultiDictProxy(CIMultiDict()), info.real_url)


def _retrieve(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()


def _last_cursor(items: list[FeedItem]) -> str | None:
    """The cursor after a page (sorted oldest first): its last entry that has an id."""
    return next((item.cursor_id for item in reversed(items) if item.cursor_id is not None), None)


def _reset_in_s(reset: str) -> float:
    try:
        return datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp() - time.time()
    except ValueError:
        return 60.0
