"""The batched ingest pipeline: posts stored together keep every rule a post stored alone keeps."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mastodon_mock.testing.server import MockServer
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.events import AccountRef, MentionReceived, Post, PostChange, PostDeleted
from mentiondesk.bot.ingest import IngestPipeline
from mentiondesk.storage.cursors import get_cursor
from mentiondesk.storage.models import Mention, OutboxKind, SlackOutbox, Ticket
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows

Start = Callable[[Config], Awaitable[Daemon]]

FOLLOW_UP = "@brand still nothing two weeks later, this is ridiculous, worst service ever"
NOTIFICATION_POLLS = "/api/v1/notifications"
CUSTOMERS = ("alice", "bob", "carol", "dan")


# --- the pipeline on its own -----------------------------------------------------------------------------------


def _post(n: int) -> MentionReceived:
    account = AccountRef(id=str(n), acct=f"user{n}", display_name="", url="")
    return MentionReceived(
        post=Post(
            id=str(n),
            uri=f"https://example.test/{n}",
            url=f"https://example.test/@user{n}/{n}",
            account=account,
            text=f"post {n}",
            created_at=datetime.now(UTC),
            visibility="public",
            language=None,
            in_reply_to_id=None,
            in_reply_to_account_id=None,
            tags=(),
        ),
        source="notification",
    )


class Recorder:
    """A posts handler that stores nothing: it notes each batch and can be held shut."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.changes: list[str] = []
        self.open = asyncio.Event()
        self.open.set()
        self.refuse: set[str] = set()

    async def posts(self, mentions: Sequence[MentionReceived]) -> list[BaseException | None]:
        await self.open.wait()
        self.batches.append([m.post.id for m in mentions])
        return [ValueError(f"refused {m.post.id}") if m.post.id in self.refuse else None for m in mentions]

    async def change(self, change: PostChange) -> None:
        assert isinstance(change, PostDeleted)
        self.changes.append(change.status_id)
        self.batches.append([f"delete {change.status_id}"])


@asynccontextmanager
async def running(pipeline: IngestPipeline) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(pipeline.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait([task])


async def test_what_has_queued_is_taken_as_one_batch_in_order() -> None:
    recorder = Recorder()
    pipeline = IngestPipeline(on_posts=recorder.posts, on_change=recorder.change, batch_size=3)
    async with running(pipeline):
        # Queued before the worker runs: it takes them in batches of at most three, in the order queued.
        done = [await pipeline.submit(_post(n)) for n in range(7)]
        await asyncio.gather(*done)
    assert recorder.batches == [["0", "1", "2"], ["3", "4", "5"], ["6"]]


async def test_a_change_is_applied_between_the_posts_around_it() -> None:
    recorder = Recorder()
    pipeline = IngestPipeline(on_posts=recorder.posts, on_change=recorder.change)
    async with running(pipeline):
        queued = [
            await pipeline.submit(_post(1)),
            await pipeline.submit(PostDeleted(status_id="1")),
            await pipeline.submit(_post(2)),
        ]
        await asyncio.gather(*queued)
    assert recorder.batches == [["1"], ["delete 1"], ["2"]]


async def test_one_post_refused_fails_only_its_own_future() -> None:
    recorder = Recorder()
    recorder.refuse = {"2"}
    pipeline = IngestPipeline(on_posts=recorder.posts, on_change=recorder.change)
    async with running(pipeline):
        queued = [await pipeline.submit(_post(n)) for n in range(1, 4)]
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], ValueError)


async def test_a_full_queue_makes_the_feed_wait_and_drops_nothing() -> None:
    recorder = Recorder()
    recorder.open.clear()  # the database is slow: the first batch does not finish until the test says so
    pipeline = IngestPipeline(on_posts=recorder.posts, on_change=recorder.change, batch_size=2, capacity=3)
    async with running(pipeline):
        submitted: list[asyncio.Future[None]] = []

        async def feed() -> None:
            for n in range(10):
                submitted.append(await pipeline.submit(_post(n)))

        feeding = asyncio.create_task(feed())
        # The worker holds one batch of two and three more wait: the feed is stuck on its sixth post.
        await eventually(lambda: _true(len(submitted) == 5 and pipeline.waiting == 3), what="the queue full")
        assert not feeding.done()
        recorder.open.set()
        await feeding
        await asyncio.gather(*submitted)
    assert [p for batch in recorder.batches for p in batch] == [str(n) for n in range(10)]


async def test_items_queued_when_the_worker_stops_are_cancelled_not_lost_silently() -> None:
    recorder = Recorder()
    recorder.open.clear()
    pipeline = IngestPipeline(on_posts=recorder.posts, on_change=recorder.change, batch_size=1)
    async with running(pipeline):
        first = await pipeline.submit(_post(1))
        second = await pipeline.submit(_post(2))
        await eventually(lambda: _true(pipeline.waiting == 1), what="the first post taken")
    # Whoever waits for them learns they were not stored (a poll then reads its page again).
    assert first.cancelled() and second.cancelled()


async def _true(value: bool) -> bool:
    return value


# --- the daemon ----------------------------------------------------------------------------------------------


async def _read(daemon: Daemon, status: dict[str, Any]) -> Post:
    assert daemon.context is not None
    found = await daemon.context.mastodon.status(str(status["id"]))
    assert found is not None
    return found


async def _quiet_daemon(mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start) -> Daemon:
    """A daemon whose feeds bring nothing: the test hands it posts itself."""
    daemon = await start_daemon(make_config(mastodon={"streaming": False}))
    await eventually(lambda: _polled(daemon), what="first poll")
    mastodon.fault(path=NOTIFICATION_POLLS, status=503)
    return daemon


async def test_a_follow_up_in_the_same_batch_as_its_parent_joins_its_ticket(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await _quiet_daemon(mastodon, make_config, start_daemon)
    assert daemon.pipeline is not None
    complaint = await post(mastodon, "alice", COMPLAINT)
    reply = await post(mastodon, "alice", FOLLOW_UP, in_reply_to_id=complaint["id"])
    again = await post(mastodon, "alice", "@brand hello?? anyone there")
    posts = [await _read(daemon, status) for status in (complaint, reply, again)]
    batches_before = daemon.pipeline.batches
    queued = [await daemon.pipeline.submit(MentionReceived(post=p, source="notification")) for p in posts]
    await asyncio.gather(*queued)
    assert daemon.pipeline.batches == batches_before + 1, "all three were stored as one batch"

    [ticket] = await rows(daemon, Ticket)
    assert ticket.root_status_id == str(complaint["id"])
    assert ticket.last_customer_activity_at == posts[2].created_at
    assert [m.ticket_id for m in await rows(daemon, Mention)] == [ticket.id] * 3
    outbox = await rows(daemon, SlackOutbox)
    assert sorted(r.kind for r in outbox) == [OutboxKind.CARD, OutboxKind.FOLLOWUP, OutboxKind.FOLLOWUP]
    # One card, and both follow-ups in its thread, in the order written.
    await slack.wait_for(lambda: _thread_len(slack, 2), timeout_s=15)
    [card] = slack.messages("C0SUPPORT")
    thread = [m["text"] for m in slack.thread("C0SUPPORT", card["ts"])]
    assert "still nothing" in thread[0] and "anyone there" in thread[1]


async def test_a_duplicate_within_a_batch_and_across_batches_is_stored_once(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await _quiet_daemon(mastodon, make_config, start_daemon)
    assert daemon.pipeline is not None
    first = await _read(daemon, await post(mastodon, "alice", COMPLAINT))
    second = await _read(daemon, await post(mastodon, "bob", COMPLAINT))
    # The stream and a poll bring the same post: twice in one batch, then again in a later one.
    await asyncio.gather(
        *[await daemon.pipeline.submit(MentionReceived(post=p, source="notification")) for p in (first, first, second)]
    )
    await asyncio.gather(
        *[await daemon.pipeline.submit(MentionReceived(post=p, source="notification")) for p in (second, first)]
    )
    assert sorted(m.status_id for m in await rows(daemon, Mention)) == sorted([first.id, second.id])
    assert len(await rows(daemon, Ticket)) == 2
    assert [r.kind for r in await rows(daemon, SlackOutbox)] == [OutboxKind.CARD, OutboxKind.CARD]


async def test_a_slow_database_slows_the_poll_and_loses_nothing(
    mastodon: MockServer, slack: FakeSlack, db_url: str, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(mastodon={"streaming": False}, ingest={"batch_size": 2, "queue_size": 2}))
    await eventually(lambda: _polled(daemon), what="first poll")
    cursor_before = await _cursor(daemon)
    polls_down = mastodon.fault(path=NOTIFICATION_POLLS, status=503)
    posted = [await post(mastodon, CUSTOMERS[n % 4], f"{COMPLAINT} ({n})") for n in range(8)]
    assert daemon.pipeline is not None
    async with _writes_blocked(db_url):
        polls = daemon.watchers[0].polls_completed
        await asyncio.to_thread(polls_down.delete)
        # The poll read all eight, the worker holds two, two wait: the poll waits for room, its cursor unmoved.
        pipeline = daemon.pipeline
        await eventually(lambda: _true(pipeline.waiting == 2), what="the queue full")
        assert daemon.watchers[0].polls_completed == polls
        assert await _cursor(daemon) == cursor_before
    await eventually(lambda: _count(daemon, Mention, 8), timeout_s=20, what="all eight stored")
    assert sorted(m.status_id for m in await rows(daemon, Mention)) == sorted(str(p["id"]) for p in posted)
    assert len(await rows(daemon, Ticket)) == 4
    await eventually(lambda: _cursor_is(daemon, cursor_before, moved=True), what="the cursor past them")


async def test_a_crash_mid_batch_leaves_nothing_half_stored_and_skips_nothing(
    mastodon: MockServer, slack: FakeSlack, db_url: str, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    config = make_config(mastodon={"streaming": False})
    daemon = await start_daemon(config)
    await eventually(lambda: _polled(daemon), what="first poll")
    polls_down = mastodon.fault(path=NOTIFICATION_POLLS, status=503)
    posted = [await post(mastodon, CUSTOMERS[n % 4], f"{COMPLAINT} ({n})") for n in range(6)]
    assert daemon.pipeline is not None
    async with _writes_blocked(db_url):
        batches = daemon.pipeline.batches
        await asyncio.to_thread(polls_down.delete)
        await eventually(
            lambda: _true(daemon.pipeline is not None and daemon.pipeline.batches > batches), what="a batch"
        )
        # The daemon stops while the batch is writing: its transaction never commits.
        await daemon.stop()
    assert await _all_rows(db_url) == {"mentions": 0, "tickets": 0, "slack_outbox": 0}, "nothing half-stored"

    daemon = await start_daemon(config)
    await eventually(lambda: _count(daemon, Mention, 6), timeout_s=20, what="every post after the restart")
    assert sorted(m.status_id for m in await rows(daemon, Mention)) == sorted(str(p["id"]) for p in posted)
    tickets = await rows(daemon, Ticket)
    assert len(tickets) == 4
    cards = [r for r in await rows(daemon, SlackOutbox) if r.kind == OutboxKind.CARD]
    assert sorted(r.ticket_id for r in cards) == sorted(t.id for t in tickets)


# --- helpers ---------------------------------------------------------------------------------------------------


@asynccontextmanager
async def _writes_blocked(db_url: str) -> AsyncIterator[None]:
    """Another session holds the write lock (a long migration, a backup): reads go on, writes wait for it."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        holder = sqlite3.connect(Path(url.database), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn, conn.begin():
            # Blocks inserts into mentions (row-exclusive), not reads (access-share).
            await conn.execute(text("LOCK TABLE mentions IN SHARE ROW EXCLUSIVE MODE"))
            yield
    finally:
        await engine.dispose()


async def _all_rows(db_url: str) -> dict[str, int]:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            return {
                table: (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                for table in ("mentions", "tickets", "slack_outbox")
            }
    finally:
        await engine.dispose()


async def _cursor(daemon: Daemon) -> str | None:
    assert daemon.context is not None
    async with daemon.context.sessions() as session:
        return await get_cursor(session, name="notifications:mention")


async def _cursor_is(daemon: Daemon, before: str | None, *, moved: bool) -> bool:
    return (await _cursor(daemon) != before) == moved


async def _polled(daemon: Daemon) -> bool:
    return all(w.polls_completed > 0 for w in daemon.watchers)


async def _count(daemon: Daemon, model: type[Any], n: int) -> bool:
    return len(await rows(daemon, model)) == n


def _thread_len(slack: FakeSlack, n: int) -> bool:
    cards = slack.messages("C0SUPPORT")
    return len(cards) == 1 and len(slack.thread("C0SUPPORT", cards[0]["ts"])) == n
