"""A proxy in front of mastodon-mock that breaks the JSON of chosen notifications on their way to the daemon.

mastodon-mock validates what its API accepts (a status always has an author, a date, a short language), so a
status with broken fields cannot be created through it. A test posts a normal status whose text names a poison
(`poison:<name>`), and this proxy applies that poison to every notification (polled or streamed) and hashtag
timeline entry that carries the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from tests.loopback import serving

# A poison gets the feed entry (a notification, or a status on a hashtag timeline) and returns what to send.
Poison = Callable[[Any], Any]

STREAMING = "/api/v1/streaming/"
_POISON_RE = re.compile(r"poison:(\w+)")
# Not forwarded: hop-by-hop headers, and the encodings the proxy would have to undo.
_DROPPED_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
_PAGES = re.compile(r"^/api/v1/(notifications|timelines/tag/[^/]+)$")
_STATUS = re.compile(r"^/api/v1/statuses/[0-9]+$")


def on_status(change: Callable[[dict[str, Any]], Any]) -> Poison:
    """A poison for the status in the entry (a notification's `status`, or the timeline entry itself)."""

    def poison(entry: Any) -> Any:
        if "status" in entry:
            entry["status"] = change(entry["status"])
            return entry
        return change(entry)

    return poison


def setting(path: str, value: Any) -> Poison:
    """A poison that sets one field of the status, e.g. setting("account.display_name", "x" * 600)."""
    *parents, name = path.split(".")

    def change(status: dict[str, Any]) -> dict[str, Any]:
        target = status
        for parent in parents:
            target = target[parent]
        target[name] = value
        return status

    return on_status(change)


def removing(name: str) -> Poison:
    def change(status: dict[str, Any]) -> dict[str, Any]:
        del status[name]
        return status

    return on_status(change)


class PoisoningProxy:
    """Forwards every request to mastodon-mock, poisoning the entries whose status names a poison.

    With streams_up=False every streaming request gets a 502, as when the stream is down and only polls read.
    `routes` says where poisons apply: "poll" (notification and hashtag pages), "stream", "status" (one status
    read by its id, as the refresh sweep and a parent's fetch do).
    """

    def __init__(
        self,
        upstream: str,
        poisons: dict[str, Poison],
        *,
        streams_up: bool,
        routes: frozenset[str] = frozenset({"poll", "stream"}),
    ) -> None:
        self._upstream = upstream.rstrip("/")
        self._poisons = poisons
        self._streams_up = streams_up
        self.routes = routes
        self.requests: list[tuple[float, str]] = []  # (monotonic time, path)
        # How many times each poison was applied, by route: ("no_account", "poll") or ("no_account", "stream").
        self.poisoned: dict[tuple[str, str], int] = {}
        self.base_url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PoisoningProxy]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
        async with (
            aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as self._session,
            serving(self._forward) as self.base_url,
        ):
            yield self

    def polls(self, path: str = "/api/v1/notifications", *, since: float = 0.0) -> int:
        return sum(1 for at, seen in self.requests if seen == path and at >= since)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((time.monotonic(), request.path))
        if request.path.startswith(STREAMING) and not self._streams_up:
            return web.Response(status=502, text="stream down (test proxy)")
        # The Host header goes through unchanged so the mock names this proxy as the streaming server.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED_HEADERS}
        # Uncompressed, so the proxy can read what it rewrites.
        headers["Accept-Encoding"] = "identity"
        body = await request.read()
        async with self._session.request(
            request.method, self._upstream + request.path_qs, headers=headers, data=body or None
        ) as upstream:
            reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROPPED_HEADERS}
            if request.path.startswith(STREAMING):
                return await self._stream(request, upstream, reply_headers)
            payload = await upstream.read()
            if _PAGES.match(request.path) and upstream.status == 200:
                payload = json.dumps([self._poison(entry, "poll") for entry in json.loads(payload)]).encode()
            elif _STATUS.match(request.path) and request.method == "GET" and upstream.status == 200:
                payload = json.dumps(self._poison(json.loads(payload), "status")).encode()
            return web.Response(status=upstream.status, body=payload, headers=reply_headers)

    async def _stream(
        self, request: web.Request, upstream: aiohttp.ClientResponse, headers: dict[str, str]
    ) -> web.StreamResponse:
        reply = web.StreamResponse(status=upstream.status, headers=headers)
        await reply.prepare(request)
        event = ""
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, asyncio.CancelledError):
            async for line in upstream.content:
                text = line.decode()
                if text.startswith("event:"):
                    event = text[len("event:") :].strip()
                elif text.startswith("data:") and event in ("notification", "update"):
                    entry = self._poison(json.loads(text[len("data:") :]), "stream")
                    line = f"data: {json.dumps(entry)}\n".encode()
                await reply.write(line)
        return reply

    def _poison(self, entry: Any, route: str) -> Any:
        status = entry.get("status") or entry if isinstance(entry, dict) else None
        found = _POISON_RE.search(str(status.get("content", ""))) if isinstance(status, dict) else None
        if found is None or found.group(1) not in self._poisons or route not in self.routes:
            return entry
        key = (found.group(1), route)
        self.poisoned[key] = self.poisoned.get(key, 0) + 1
        return self._poisons[found.group(1)](entry)
