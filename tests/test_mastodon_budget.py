"""Mastodon's request budget holds whatever the stream does, counted at the server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config, MastodonSettings, Secrets, parse_settings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.mastodon.pacing import POLL_SHARE, STREAM_SHARE, STREAM_STABLE_S, min_interval_s, next_attempt
from mentiondesk.storage.models import Ticket
from tests.conftest import BRAND_TOKEN, eventually, settings_dict
from tests.fakeslack import FakeSlack
from tests.loopback import serving
from tests.test_e2e import COMPLAINT, post, rows

Start = Callable[[Config], Awaitable[Daemon]]
STREAMING = "/api/v1/streaming/"
# Not forwarded: hop-by-hop headers, and the encodings the proxy would have to undo.
_DROPPED_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class StreamCuttingProxy:
    """Forwards every request to mastodon-mock, noting when each came, and ends each stream cleanly after a while.

    mastodon-mock keeps a stream open until the client leaves, and its fault injection answers before a
    stream starts; a server that closes streams normally after a second takes this small proxy in front.
    """

    def __init__(self, upstream: str, *, cut_after_s: float) -> None:
        self._upstream = upstream.rstrip("/")
        self._cut_after_s = cut_after_s
        self.requests: list[tuple[float, str]] = []  # (monotonic time, path)
        self.base_url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[StreamCuttingProxy]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
        async with (
            aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as self._session,
            serving(self._forward) as self.base_url,
        ):
            yield self

    def stream_connects(self) -> list[float]:
        return [at for at, path in self.requests if path.startswith(STREAMING)]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((time.monotonic(), request.path))
        # The Host header goes through unchanged so the mock names this proxy as the streaming server.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED_HEADERS}
        body = await request.read()
        async with self._session.request(
            request.method, self._upstream + request.path_qs, headers=headers, data=body or None
        ) as upstream:
            reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROPPED_HEADERS}
            if not request.path.startswith(STREAMING):
                return web.Response(status=upstream.status, body=await upstream.read(), headers=reply_headers)
            reply = web.StreamResponse(status=upstream.status, headers=reply_headers)
            await reply.prepare(request)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cut_after_s):
                    async for chunk in upstream.content.iter_any():
                        await reply.write(chunk)
            await reply.write_eof()  # a normal end of the stream, not an error
            return reply


@pytest.fixture
async def cutting_proxy(mastodon: MockServer) -> AsyncIterator[StreamCuttingProxy]:
    async with StreamCuttingProxy(mastodon.base_url, cut_after_s=1.0).running() as proxy:
        yield proxy


def _config(proxy: StreamCuttingProxy, slack: FakeSlack, tmp_path: Path, **mastodon: Any) -> Config:
    # The budget is about Mastodon requests, whatever the database: one SQLite run is enough.
    data = settings_dict(
        mastodon_url=proxy.base_url, slack_url=slack.base_url, db_url=f"sqlite+aiosqlite:///{tmp_path / 'md.db'}"
    )
    data["mastodon"].update(mastodon)
    return Config(
        settings=parse_settings(data, source="test"),
        secrets=Secrets(mastodon_token=BRAND_TOKEN, slack_bot_token=slack.bot_token, slack_app_token=slack.app_token),
    )


# Mastodon's 300 requests per 5 minutes scaled down twentyfold in time (15 per 15 s, the same one request a
# second), with the daemon's intervals scaled alike. The stream is still cut every second, so against the
# window it ends twenty times more often than in the two-minute run that broke the budget.
WINDOW_S = 15.0
BUDGET = 15
SCALED = {
    "rate_limit_window_s": WINDOW_S,
    "rate_limit_requests": BUDGET,
    "poll_interval_s": 3.0,
    "stream_down_poll_interval_s": 0.75,
    "max_backoff_s": WINDOW_S,
}
RUN_S = 1.2 * WINDOW_S


async def test_stream_closed_cleanly_every_second_keeps_requests_within_the_budget(
    cutting_proxy: StreamCuttingProxy, mastodon: MockServer, slack: FakeSlack, tmp_path: Path, start_daemon: Start
) -> None:
    started = time.monotonic()
    daemon = await start_daemon(_config(cutting_proxy, slack, tmp_path, **SCALED))
    await post(mastodon, "alice", COMPLAINT)
    await eventually(lambda: _has_ticket(daemon), timeout_s=WINDOW_S, what="the complaint read meanwhile")
    # The scenario itself, not a wait for a condition: the server keeps ending the stream for this long.
    await asyncio.sleep(max(0.0, started + RUN_S - time.monotonic()))
    await daemon.stop()

    times = [at for at, _ in cutting_proxy.requests]
    busiest = max(sum(1 for t in times if start <= t < start + WINDOW_S) for start in times)
    assert busiest <= BUDGET, f"{busiest} requests in one {WINDOW_S:.0f}s window, budget {BUDGET}"
    assert len(cutting_proxy.stream_connects()) >= 2, "the stream was cut and reconnected"


async def test_stream_that_keeps_ending_cleanly_is_retried_ever_later(
    mastodon: MockServer, slack: FakeSlack, tmp_path: Path, start_daemon: Start
) -> None:
    async with StreamCuttingProxy(mastodon.base_url, cut_after_s=0.2).running() as proxy:
        await start_daemon(_config(proxy, slack, tmp_path, max_backoff_s=60.0))
        await eventually(lambda: _connects(proxy, 4), timeout_s=20, what="four stream connects")
    gaps = [b - a for a, b in zip(proxy.stream_connects(), proxy.stream_connects()[1:], strict=False)]
    # Backoff with jitter waits between half and all of 1, 2, 4... seconds after the 1st, 2nd, 3rd... end.
    assert gaps[2] >= 2.0, f"reconnected {gaps[2]:.1f}s after the third clean end: no backoff ({gaps})"


@pytest.mark.parametrize(
    ("requests", "window_s", "hashtags", "share", "expected_s"),
    [
        (300, 300.0, (), POLL_SHARE, 3.0),
        (300, 300.0, ("a", "b"), POLL_SHARE, 9.0),
        (300, 300.0, (), STREAM_SHARE, 10.0),
        (15, 15.0, ("a",), STREAM_SHARE, 20.0),
    ],
)
def test_spacing_comes_from_the_budget_and_the_number_of_feeds(
    requests: int, window_s: float, hashtags: tuple[str, ...], share: float, expected_s: float
) -> None:
    settings = MastodonSettings(
        base_url="https://example.social",
        hashtags=hashtags,
        rate_limit_requests=requests,
        rate_limit_window_s=window_s,
    )
    assert min_interval_s(settings, share) == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("attempt", "up_s", "expected"),
    [(0, 0.5, 1), (3, 1.0, 4), (3, STREAM_STABLE_S - 1, 4), (5, STREAM_STABLE_S, 1), (5, 3600.0, 1)],
)
def test_only_a_stream_that_stayed_up_a_while_starts_the_backoff_afresh(
    attempt: int, up_s: float, expected: int
) -> None:
    assert next_attempt(attempt, up_s=up_s) == expected


async def _has_ticket(daemon: Daemon) -> bool:
    return len(await rows(daemon, Ticket)) == 1


async def _connects(proxy: StreamCuttingProxy, n: int) -> bool:
    await asyncio.sleep(0)
    return len(proxy.stream_connects()) >= n
