"""The ingest pipeline: every route's posts go onto one bounded queue and one worker stores them in batches.

Streams and polls put what they read here, edits and deletes too, so a change never overtakes its post. The
worker takes what has gathered (up to a batch size), hands each run of posts to the batch handler in one call
and applies changes one at a time, all in the order they came. Each item carries a future: a poll waits for
its page's futures before it moves its cursor, a stream does not wait at all.

A full queue makes `submit` wait: the feeds slow down, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mentiondesk.bot.events import MentionReceived, PostChange

logger = logging.getLogger(__name__)

IngestEvent = MentionReceived | PostChange
# Returns one outcome per post, in order: None when it was stored (or rightly ignored), else why not.
# Raising says the whole run failed for the same reason (the database went away).
PostsHandler = Callable[[Sequence[MentionReceived]], Awaitable[list[BaseException | None]]]
ChangeHandler = Callable[[PostChange], Awaitable[None]]

DEFAULT_BATCH_SIZE = 500
DEFAULT_CAPACITY = 2000


@dataclass(frozen=True)
class _Item:
    event: IngestEvent
    done: asyncio.Future[None]


class IngestPipeline:
    """One bounded queue in front of one worker: `run()` it as a task, `submit()` from the feeds."""

    def __init__(
        self,
        *,
        on_posts: PostsHandler,
        on_change: ChangeHandler,
        batch_size: int = DEFAULT_BATCH_SIZE,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if batch_size < 1 or capacity < 1:
            raise ValueError("batch_size and capacity must be at least 1")
        self._on_posts = on_posts
        self._on_change = on_change
        self._batch_size = batch_size
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=capacity)
        self._idle = asyncio.Event()
        self._idle.set()
        self._between_batches = asyncio.Event()
        self._between_batches.set()
        self._closing = False
        self.batches = 0  # batches handled since the start (what tests and the benchmark watch)
        self.posts = 0

    @property
    def waiting(self) -> int:
        """Items queued and not yet taken by the worker."""
        return self._queue.qsize()

    async def submit(self, event: IngestEvent) -> asyncio.Future[None]:
        """Queue event (waiting while the queue is full); the future resolves once it is stored or has failed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.clear()
        await self._queue.put(_Item(event, done))
        return done

    async def process(self, event: IngestEvent) -> None:
        """Queue event and wait until it is stored; raises what storing it raised."""
        await (await self.submit(event))

    @property
    def is_idle(self) -> bool:
        """Nothing queued and nothing being stored."""
        return self._idle.is_set()

    async def run(self) -> None:
        """Take and handle batches until cancelled; items still queued then are cancelled (their feeds re-read them)."""
        try:
            while not self._closing:
                batch = [await self._queue.get()]
                while len(batch) < self._batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                self._between_batches.clear()
                try:
                    await self._handle(batch)
                finally:
                    self._between_batches.set()
                    for item in batch:
                        if not item.done.done():
                            item.done.cancel()
                if self._queue.empty():
                    self._idle.set()
        finally:
            while not self._queue.empty():
                self._queue.get_nowait().done.cancel()
            self._idle.set()

    async def close(self, timeout_s: float) -> None:
        """Take no more batches; wait (up to timeout_s) for the one being written to commit or fail."""
        self._closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._between_batches.wait(), timeout_s)

    async def _handle(self, batch: list[_Item]) -> None:
        self.batches += 1
        run: list[_Item] = []
        for item in batch:
            if isinstance(item.event, MentionReceived):
                run.append(item)
                continue
            await self._store_posts(run)
            run = []
            await self._apply_change(item)
        await self._store_posts(run)

    async def _store_posts(self, run: list[_Item]) -> None:
        if not run:
            return
        self.posts += len(run)
        events = [item.event for item in run if isinstance(item.event, MentionReceived)]
        try:
            outcomes = await self._on_posts(events)
            if len(outcomes) != len(run):
                raise RuntimeError(f"the posts handler gave {len(outcomes)} outcomes for {len(run)} posts")
        except Exception as exc:
            outcomes = [exc] * len(run)
        for item, outcome in zip(run, outcomes, strict=True):
            _settle(item.done, outcome)

    async def _apply_change(self, item: _Item) -> None:
        assert not isinstance(item.event, MentionReceived)
        try:
            await self._on_change(item.event)
        except Exception as exc:
            _settle(item.done, exc)
        else:
            _settle(item.done, None)


def _settle(done: asyncio.Future[None], outcome: BaseException | None) -> None:
    # Whoever waited may have given up (a poll cancelled at shutdown): the item is stored all the same.
    if done.done():
        return
    if outcome is None:
        done.set_result(None)
    else:
        done.set_exception(outcome)


def log_failure(what: str) -> Callable[[asyncio.Future[None]], None]:
    """A done-callback for items nobody waits for (the stream's): a failure is logged, not left unretrieved."""

    def callback(done: asyncio.Future[None]) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            logger.warning("%s: %s", what, exc, extra={"feed": what})

    return callback
