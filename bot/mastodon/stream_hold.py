"""Holding what a stream brings until the catch-up poll before it is done.

A freshly connected stream brings new posts while the catch-up poll may still be reading older ones
(after a restart, or after the stream was down). Handled at once, a customer's reply would open the ticket
and their earlier complaint would join it as a follow-up. So from each connect, stream events wait until
a catch-up that started after that connect is done, then follow in the order they came.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from mentiondesk.bot.events import Post, PostChange

logger = logging.getLogger(__name__)

StreamEvent = Post | PostChange
# Events kept while a catch-up is pending; past this the poll (posts) and the refresh sweep (edits) cover them.
MAX_HELD_EVENTS = 1000


class StreamHold:
    """One feed's stream events, applied at once or held from a connect until the catch-up after it."""

    def __init__(self, apply: Callable[[StreamEvent], Awaitable[None]], *, name: str) -> None:
        self._apply = apply
        self._name = name
        self.connects = 0
        self._held: list[StreamEvent] | None = None  # None: nothing waits, events go straight through
        self._overflow = 0

    def connected(self) -> None:
        """The stream (re)connected: hold what it brings until a catch-up that starts from now is done."""
        self.connects += 1
        if self._held is None:
            self._held = []

    async def deliver(self, event: StreamEvent) -> None:
        if self._held is None:
            await self._apply(event)
        elif len(self._held) < MAX_HELD_EVENTS:
            self._held.append(event)
        else:
            self._overflow += 1

    async def release(self, connects: int) -> None:
        """A catch-up that began when `connects` connects had been made is done: apply what waited for it."""
        # Stop if the stream reconnected meanwhile: what it brings now waits for the next catch-up.
        while self._held and connects == self.connects:
            await self._apply(self._held.pop(0))
        if connects != self.connects:
            return
        self._held = None
        if self._overflow:
            logger.warning(
                "%s: %d stream events came while %d waited for the catch-up: left to the poll and the sweep",
                self._name,
                self._overflow,
                MAX_HELD_EVENTS,
            )
            self._overflow = 0
