"""Mastodon.py's blocking calls, each in a thread the daemon can walk away from.

Mastodon.py is synchronous, so its calls run in threads. Not asyncio.to_thread's: that executor's threads are
joined when asyncio.run() ends and again at interpreter exit, so one call stuck in a socket read would hold a
stopping daemon until the read ends, however long that is. And requests' timeout counts each socket operation
on its own, so a server that sends a byte now and then is never timed out by it. Here every call is bounded
as a whole, and its thread is a daemon thread: a call still running at exit is abandoned, and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from mastodon.errors import MastodonNetworkError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Threads a server can hold at once (each stuck call keeps one until its read ends); calls beyond this fail fast
# rather than pile up threads. Far above what the daemon runs at once: a poll per feed, a sweep, a few replies.
MAX_THREADS = 16


@dataclass(frozen=True)
class _Running:
    what: str
    started: float  # time.monotonic()


class BlockingCalls:
    """Runs blocking calls in daemon threads; each await gives up after timeout_s (MastodonNetworkError)."""

    def __init__(self, *, timeout_s: float, max_threads: int = MAX_THREADS) -> None:
        self._timeout_s = timeout_s
        self._max_threads = max_threads
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}  # calls whose thread has not returned, abandoned ones included

    def abandon(self) -> list[str]:
        """Log each call still in a thread, which nobody will wait for now; returns their names."""
        now = time.monotonic()
        with self._lock:
            calls = list(self._running.values())
        for call in calls:
            logger.warning(
                "stopping without waiting for Mastodon call %s (running for %.1fs): abandoned",
                call.what,
                now - call.started,
            )
        return [c.what for c in calls]

    async def run(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) in a thread of its own; ``what`` names the call in logs and errors."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        call_id = self._enter(what)
        thread = threading.Thread(
            target=self._work, args=(call_id, loop, future, fn, args, kwargs), name=f"mastodon {what}", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            self._leave(call_id)
            raise
        bound = asyncio.timeout(self._timeout_s)
        try:
            async with bound:
                return await future
        except TimeoutError as exc:
            if not bound.expired():
                raise  # fn's own error, not the bound
            logger.warning(
                "Mastodon call %s gave no answer within mastodon.request_timeout_s = %gs; its thread is abandoned",
                what,
                self._timeout_s,
            )
            raise MastodonNetworkError(f"Mastodon call {what} timed out after {self._timeout_s:g}s") from exc

    def _enter(self, what: str) -> int:
        with self._lock:
            if len(self._running) >= self._max_threads:
                stuck = ", ".join(sorted({c.what for c in self._running.values()}))
                raise MastodonNetworkError(
                    f"Mastodon is not answering: {len(self._running)} calls still wait ({stuck}); "
                    f"{what} is not started until one ends"
                )
            call_id = next(self._ids)
            self._running[call_id] = _Running(what, time.monotonic())
            return call_id

    def _leave(self, call_id: int) -> None:
        with self._lock:
            self._running.pop(call_id, None)

    def _work(
        self,
        call_id: int,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[T],
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            settle = partial(_fail, future, exc)
        else:
            settle = partial(_succeed, future, result)
        finally:
            self._leave(call_id)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon stopped while this call ran
            loop.call_soon_threadsafe(settle)


# On the loop's thread. Nobody waits for an abandoned call's answer: its future was cancelled.
def _succeed(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
