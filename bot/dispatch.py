"""Event dispatch: handlers register by decorator and are called with the daemon's context."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

E = TypeVar("E")
Handler = Callable[[Any, Any], Awaitable[None]]
TypedHandler = Callable[[E, Any], Awaitable[None]]


class Router:
    """Maps event types to the async handlers registered for them."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = defaultdict(list)

    def on(self, event_type: type[E]) -> Callable[[TypedHandler[E]], TypedHandler[E]]:
        """Decorator: register an async handler for events of event_type."""

        def register(func: TypedHandler[E]) -> TypedHandler[E]:
            if not inspect.iscoroutinefunction(func):
                raise TypeError(f"handler {func.__qualname__} must be an async function")
            self._handlers[event_type].append(func)
            return func

        return register

    def include(self, other: Router) -> None:
        for event_type, handlers in other._handlers.items():
            self._handlers[event_type].extend(handlers)

    def handlers_for(self, event: object) -> list[Handler]:
        return list(self._handlers.get(type(event), ()))


class Dispatcher:
    """Delivers events to their handlers in registration order.

    Errors propagate: the caller owns the unit of work (one post, one message) and so is the one
    that knows whether to retry it, skip it or stop.
    """

    def __init__(self, router: Router, context: object) -> None:
        self._router = router
        self._context = context

    async def dispatch(self, event: object, context: object | None = None) -> None:
        """Deliver event; ``context`` replaces the dispatcher's own for this event (a pinned view of it)."""
        for handler in self._router.handlers_for(event):
            await handler(event, self._context if context is None else context)
