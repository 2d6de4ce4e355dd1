"""Every Mastodon call gives up at mastodon.request_timeout_s, however the server stalls."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from mastodon.errors import MastodonNetworkError
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.cli import main
from mentiondesk.bot.config import Config
from mentiondesk.bot.mastodon.calls import BlockingCalls
from mentiondesk.bot.mastodon.client import MastodonClient
from tests.conftest import BRAND_TOKEN, eventually
from tests.loopback import serving
from tests.test_e2e import Start
from tests.test_mastodon_budget import STREAMING, StreamCuttingProxy
from tests.test_mastodon_errors import write_config

TIMEOUT_S = 1.0
# Longer than any test waits: only the client's own bound can end the call.
DRIP_FOR_S = 30.0
DRIP_EVERY_S = 0.2
# What the loop and a loaded machine may add to a call given up at TIMEOUT_S.
MARGIN_S = 2.0
# Longer than any test: streams through HoldingProxy end when the daemon leaves, not before.
STREAM_UNCUT_S = 3600.0


@pytest.fixture
async def dripping() -> AsyncIterator[str]:
    """A server that answers every request one byte at a time, never going quiet for long: requests' timeout,
    which counts each socket read on its own, never fires."""
    done = asyncio.Event()

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        deadline = time.monotonic() + DRIP_FOR_S
        with contextlib.suppress(ConnectionError):
            await response.write(b"[")
            while time.monotonic() < deadline and not done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), DRIP_EVERY_S)
                await response.write(b" ")
            await response.write(b"]")
        return response

    async with serving(drip) as url:
        yield url
        done.set()


async def test_a_call_to_a_server_dripping_its_answer_is_given_up_at_request_timeout_s(dripping: str) -> None:
    client = MastodonClient(dripping, BRAND_TOKEN, timeout_s=TIMEOUT_S)
    started = time.monotonic()
    with pytest.raises(MastodonNetworkError, match="notifications timed out after 1s"):
        await client.mentions_after("1")
    assert time.monotonic() - started < TIMEOUT_S + MARGIN_S


async def test_check_says_a_dripping_server_did_not_answer_in_time(
    dripping: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", BRAND_TOKEN)
    path = write_config(tmp_path, dripping, request_timeout_s=TIMEOUT_S)
    started = time.monotonic()
    assert await asyncio.to_thread(main, ["check", "--config", str(path)]) == 1
    assert time.monotonic() - started < TIMEOUT_S + MARGIN_S + 3  # and the checks of Slack and the database
    [line] = [line for line in capsys.readouterr().out.splitlines() if " mastodon: " in line]
    assert line == (
        f"FAIL mastodon: Mastodon at mastodon.base_url = {dripping} did not answer within "
        f"mastodon.request_timeout_s = {TIMEOUT_S:g} s: check the address, or raise the timeout for a slow server"
    )


async def test_calls_stuck_in_every_thread_make_the_next_fail_at_once_and_are_named_at_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = BlockingCalls(timeout_s=0.2, max_threads=2)
    unblock = threading.Event()
    try:
        for _ in range(2):
            with pytest.raises(MastodonNetworkError, match=r"timed out after 0\.2s"):
                await calls.run("status_context", unblock.wait)
        started = time.monotonic()
        with pytest.raises(MastodonNetworkError, match=r"2 calls still wait \(status_context\); notifications is not"):
            await calls.run("notifications", unblock.wait)
        assert time.monotonic() - started < 0.2  # refused at once, not after a timeout of its own
        assert calls.abandon() == ["status_context", "status_context"]
        assert "stopping without waiting for Mastodon call status_context" in caplog.text
    finally:
        unblock.set()

    async def goes_through() -> bool:
        try:
            return await calls.run("notifications", lambda: "page") == "page"
        except MastodonNetworkError:
            return False

    # Once the server lets go, the stuck threads end and calls go through again.
    await eventually(goes_through, what="a call accepted after the stuck ones ended")


class HoldingProxy(StreamCuttingProxy):
    """Forwards to mastodon-mock, streams uncut, but takes each request whose path starts with ``hold`` and
    answers it only when the proxy closes: a server that never answers that call, however long one waits."""

    def __init__(self, upstream: str, *, hold: str) -> None:
        super().__init__(upstream, cut_after_s=STREAM_UNCUT_S)
        self._hold = hold
        self._release = asyncio.Event()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HoldingProxy]:
        async with super().running():
            try:
                yield self
            finally:
                self._release.set()  # the held requests end, so the server can shut down

    def held(self) -> list[float]:
        """When each held request came."""
        return [at for at, path in self.requests if path.startswith(self._hold)]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if not request.path.startswith(self._hold):
            return await super()._forward(request)
        self.requests.append((time.monotonic(), request.path))
        await self._release.wait()
        return web.Response(status=503)


async def test_a_stream_that_never_answers_is_given_up_at_request_timeout_s(
    mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    async with HoldingProxy(mastodon.base_url, hold=STREAMING).running() as proxy:
        config = make_config(mastodon={"base_url": proxy.base_url, "request_timeout_s": 2 * TIMEOUT_S})
        daemon = await start_daemon(config)
        # Given up after 2 s, the stream is opened again once its backoff and spacing allow (about 1 s each here);
        # left to aiohttp's read timeout, the first attempt would hang for a minute and a half.
        await eventually(
            lambda: _at_least(proxy.held(), 2), timeout_s=2 * TIMEOUT_S + 6, what="a second stream attempt"
        )
        connects = proxy.held()
        assert connects[1] - connects[0] >= 2 * TIMEOUT_S
        await daemon.stop()


async def _at_least(items: list[float], count: int) -> bool:
    return len(items) >= count
