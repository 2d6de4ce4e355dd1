"""A small Server-Sent Events reader for Mastodon's streaming API."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SseEvent:
    name: str
    data: str


async def read_events(lines: AsyncIterable[bytes]) -> AsyncIterator[SseEvent | None]:
    """Yield each event, and None for every comment line (Mastodon's heartbeat), so callers see liveness."""
    name = "message"
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(name, "\n".join(data))
            name, data = "message", []
        elif line.startswith(":"):
            yield None
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
