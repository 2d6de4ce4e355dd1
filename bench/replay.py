"""A Mastodon stand-in that streams recorded mentions at a set rate, for throughput past what mastodon-mock serves.

mastodon-mock stores and serves a few dozen notifications a second here, far below what the daemon is meant to
ingest. This server sits in front of it on loopback: every request is passed through to mastodon-mock (the
daemon's start-up calls, its polls, replies), except

- ``/api/v1/streaming/user``: served here, sending the benchmark's synthetic notifications (bench/posts.py, copies
  of mastodon-mock's own JSON) at the rate the benchmark asks, to every reader connected;
- ``/api/v1/instance`` and ``/api/v2/instance``: mastodon-mock's answer with the streaming URL pointed here;
- ``/api/v1/statuses/:id`` for a synthetic id: the post as it was sent (the daemon's refresh sweep re-reads posts
  of open tickets; a 404 would mark them deleted and close their tickets).

Polling returns only mastodon-mock's own posts, so the daemon's catch-up finds none of the synthetic ones: each
reaches it once, by the stream. The server logs every notifications request, which is how the benchmark sees a
daemon's catch-up poll start and finish.

``python -m bench.replay read URL TOKEN COUNT`` is the plain reader: it reads COUNT notifications from the stream,
parsing each as the daemon does but doing nothing else, and prints when each arrived. Its rate and latency are the
ceiling the daemon is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from bench.mastodon_side import HarnessError
from bench.posts import SYNTHETIC_ID_BASE, Planned, PostFactory, at, generic_status, ticks
from mentiondesk.bot.mastodon.streaming import read_events
from tests.loopback import serving

STREAM_PATH = "/api/v1/streaming/user"
HEARTBEAT_S = 15.0  # Mastodon's own heartbeat interval
_STATUS_RE = re.compile(r"/api/v1/statuses/(?P<id>[0-9]+)(?P<context>/context)?")
_FORWARDED = ("Authorization", "Content-Type", "Idempotency-Key", "User-Agent", "Accept")
_PASSED_BACK = (
    "Content-Type",
    "Link",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
)


@dataclass(frozen=True)
class Poll:
    """A notifications request the server passed through: when it came and went, from where, how many it returned."""

    started: float
    finished: float
    min_id: str | None
    returned: int


class ReplayServer:
    """``async with ReplayServer(upstream, token=..., factory=...) as replay``: serving at replay.base_url."""

    def __init__(self, upstream: str, *, token: str, factory: PostFactory) -> None:
        self._upstream = upstream.rstrip("/")
        self._token = token
        self._factory = factory
        self._readers: list[asyncio.Queue[bytes | None]] = []  # None: end the stream
        self._sent: dict[str, tuple[Planned, float]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._serving: Any = None
        self.base_url = ""
        self.connections = 0  # stream connections ever opened (a second one in a run means a reader dropped)
        self.stream_opened_at = 0.0
        self.polls: list[Poll] = []

    async def __aenter__(self) -> ReplayServer:
        self._http = aiohttp.ClientSession()
        self._serving = serving(self._handle)
        self.base_url = await self._serving.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A reader that left is noticed only at a write; told to end, its handler does not hold up the shutdown.
        for queue in self._readers:
            queue.put_nowait(None)
        await self._serving.__aexit__(exc_type, exc, tb)
        assert self._http is not None
        await self._http.close()

    async def wait_connection(self, *, after: int, timeout_s: float) -> None:
        """Wait for stream connection number after + 1 (a reader that left is noticed only at the next write)."""
        deadline = time.monotonic() + timeout_s
        while self.connections <= after:
            if time.monotonic() > deadline:
                raise HarnessError(f"no stream reader connected to the replay server within {timeout_s:.0f}s")
            await asyncio.sleep(0.02)

    def stream_released(self, *, settle_s: float = 0.2) -> bool:
        """Whether the daemon now handles what the stream brings at once, instead of holding it.

        From a connect, the daemon holds stream events (at most 1,000; the rest are left to polls, which never
        return synthetic posts) until a poll that began after the connect is done. Its poll loop notes the connect
        count at the top of each round, and its first round starts before the stream can connect; every later
        round starts when the connect's kick (or the 60 s poll interval) ends the wait. So: a notifications
        request other than the first, begun after the stream opened, answered settle_s ago. (On the benchmark's
        databases each round is one request: there is never a page of real mentions to read.)
        """
        now = time.time()
        return bool(self.connections) and any(
            p.started >= self.stream_opened_at and p.finished <= now - settle_s for p in self.polls[1:]
        )

    async def send(self, planned: list[Planned], *, rate_per_s: float | None) -> list[float]:
        """Create each post at its time and stream it to every reader; returns when each was handed over (epoch s).

        At a rate, post i is created at start + i / rate and handed over then (a reader that falls behind gets it
        later, as from a real server, with its creation time unchanged). Without one, every post is rendered first
        (all created when rendering began) and then all are handed over at once: a backlog as large as the run.
        """
        if not self._readers:
            raise HarnessError("no stream reader is connected to the replay server")
        if rate_per_s is None:
            now = time.time()
            chunks = [self._render(p, now) for p in planned]
            start = time.time()
            for p, chunk in zip(planned, chunks, strict=True):
                self._sent[p.status_id] = (p, now)
                self._publish(chunk)
            return [start] * len(planned)
        created = []
        for p, when in zip(planned, ticks(time.time(), rate_per_s), strict=False):
            delay = when - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._sent[p.status_id] = (p, when)
            self._publish(self._render(p, when))
            created.append(when)
        return created

    def _render(self, planned: Planned, created: float) -> bytes:
        data = json.dumps(self._factory.notification(planned, at(created)), separators=(",", ":"))
        return f"event: notification\ndata: {data}\n\n".encode()

    def _publish(self, chunk: bytes) -> None:
        for queue in self._readers:
            queue.put_nowait(chunk)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.rstrip("/") == STREAM_PATH:
            return await self._stream(request)
        found = _STATUS_RE.fullmatch(request.path)
        if request.method == "GET" and found and int(found["id"]) >= SYNTHETIC_ID_BASE:
            return self._synthetic(found["id"], context=bool(found["context"]))
        return await self._proxy(request)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self._token}":
            return web.json_response({"error": "The access token is invalid"}, status=401)
        # Before the answer: the daemon counts the connect when the answer's headers reach it.
        self.stream_opened_at = time.time()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        await response.write(b":)\n\n")
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._readers.append(queue)
        self.connections += 1
        try:
            while True:
                try:
                    first = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_S)
                except TimeoutError:
                    await response.write(b":thump\n\n")
                    continue
                batch = _batch(first, queue)
                if batch is None:
                    break  # the server is shutting down
                await response.write(b"".join(batch))
        except ConnectionResetError:
            pass  # the reader went away
        finally:
            self._readers.remove(queue)
        return response

    def _synthetic(self, status_id: str, *, context: bool) -> web.Response:
        if context:
            ancestors: list[dict[str, Any]] = []
            parent = self._sent.get(status_id, (None, 0.0))[0]
            while parent is not None and parent.in_reply_to_id in self._sent:
                planned, created = self._sent[parent.in_reply_to_id]
                ancestors.insert(0, self._factory.status(planned, at(created)))
                parent = planned
            return web.json_response({"ancestors": ancestors, "descendants": []})
        sent = self._sent.get(status_id)
        if sent is None:
            return web.json_response(generic_status(self._factory.templates, status_id))
        return web.json_response(self._factory.status(sent[0], at(sent[1])))

    async def _proxy(self, request: web.Request) -> web.Response:
        assert self._http is not None
        headers = {name: value for name in _FORWARDED if (value := request.headers.get(name))}
        body = await request.read()
        started = time.time()
        async with self._http.request(
            request.method, self._upstream + request.path_qs, headers=headers, data=body or None
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            back = {name: value for name in _PASSED_BACK if (value := upstream.headers.get(name))}
        path = request.path.rstrip("/")  # Mastodon.py asks for /api/v2/instance/
        if status == 200 and path in ("/api/v1/instance", "/api/v2/instance"):
            payload = self._point_streaming_here(payload)
        if "Link" in back:
            back["Link"] = back["Link"].replace(self._upstream, self.base_url)
        if path == "/api/v1/notifications":
            returned = len(json.loads(payload)) if status == 200 else -1
            self.polls.append(Poll(started, time.time(), request.query.get("min_id"), returned))
        return web.Response(status=status, body=payload, headers=back)

    def _point_streaming_here(self, payload: bytes) -> bytes:
        data = json.loads(payload)
        here = self.base_url.replace("http://", "ws://", 1)
        if isinstance(data.get("configuration"), dict):
            data["configuration"].setdefault("urls", {})["streaming"] = here
        if isinstance(data.get("urls"), dict):
            data["urls"]["streaming_api"] = here
        return json.dumps(data).encode()


def _batch(first: bytes | None, queue: asyncio.Queue[bytes | None], *, most: int = 256) -> list[bytes] | None:
    """first and what else has piled up, for one write (a reader that fell behind catches up in large reads).

    None when the end marker came: what is left is not worth sending to a server shutting down.
    """
    batch = []
    chunk = first
    while chunk is not None:
        batch.append(chunk)
        if queue.empty() or len(batch) >= most:
            return batch
        chunk = queue.get_nowait()
    return None


@dataclass(frozen=True)
class Received:
    """What the plain reader saw: each notification's arrival time and how long after its creation that was."""

    arrivals: list[float]
    latencies_s: list[float]


class PlainReader:
    """The plain reader (``python -m bench.replay read``) in a child process of its own, as the daemon runs."""

    def __init__(self, base_url: str, token: str, count: int, *, timeout_s: float) -> None:
        self._args = [base_url, token, str(count), str(timeout_s)]
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.replay", "read", *self._args, stdout=asyncio.subprocess.PIPE
        )

    async def result(self) -> Received:
        assert self._proc is not None
        out, _ = await self._proc.communicate()
        if self._proc.returncode != 0:
            raise HarnessError(f"the plain stream reader failed (exit {self._proc.returncode})")
        data = json.loads(out)
        return Received(arrivals=data["arrivals"], latencies_s=data["latencies_s"])


async def read_stream(base_url: str, token: str, count: int, timeout_s: float) -> Received:
    arrivals: list[float] = []
    latencies: list[float] = []
    # What came in time is the answer: the benchmark compares the count with what it sent.
    with contextlib.suppress(TimeoutError):
        async with (
            asyncio.timeout(timeout_s),
            aiohttp.ClientSession(read_bufsize=2**20) as http,
            http.get(base_url + STREAM_PATH, headers={"Authorization": f"Bearer {token}"}) as resp,
        ):
            resp.raise_for_status()
            async for event in read_events(resp.content):
                if event is None or event.name != "notification":
                    continue
                now = time.time()
                created = json.loads(event.data)["status"]["created_at"]
                arrivals.append(now)
                latencies.append(now - datetime.fromisoformat(created).timestamp())
                if len(arrivals) >= count:
                    break
    return Received(arrivals=arrivals, latencies_s=latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description="the plain stream reader of bench/ingest.py")
    sub = parser.add_subparsers(dest="command", required=True)
    read = sub.add_parser("read")
    read.add_argument("base_url")
    read.add_argument("token")
    read.add_argument("count", type=int)
    read.add_argument("timeout_s", type=float)
    args = parser.parse_args()
    received = asyncio.run(read_stream(args.base_url, args.token, args.count, args.timeout_s))
    json.dump({"arrivals": received.arrivals, "latencies_s": received.latencies_s}, sys.stdout)


if __name__ == "__main__":
    main()
