"""/healthz and /readyz on a running daemon: what each says when all is well, and when each part is not."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from mastodon_mock.testing.server import MockServer
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from mentiondesk.bot.config import Config, HttpSettings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.web.health import HealthProbes, LoopLag
from mentiondesk.bot.web.server import WebServer
from tests.conftest import eventually, postgres_only, settled
from tests.fakeslack import FakeSlack
from tests.loopback import serving
from tests.test_e2e import COMPLAINT, COMPLAINT_2, post

Start = Callable[[Config], Awaitable[Daemon]]
CHECKS = {"database", "mastodon", "slack", "outbox"}
STREAMING = "/api/v1/streaming"
# Not forwarded by the proxy: hop-by-hop headers, and the ones it would have to recompute.
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, daemon: Daemon, path: str) -> tuple[int, dict[str, Any]]:
    """GET path on the daemon's own HTTP server, once it listens: (status, JSON body)."""
    web_server = daemon.web
    assert web_server is not None, "the HTTP server is on by default"

    async def listening() -> bool:
        return web_server.port is not None

    await eventually(listening, what="the HTTP server to listen")
    async with http.get(f"http://127.0.0.1:{web_server.port}{path}") as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def until_ready(http: aiohttp.ClientSession, daemon: Daemon, *, timeout_s: float = 15.0) -> dict[str, Any]:
    """Wait for /readyz to answer 200; its body."""
    seen: dict[str, Any] = {}

    async def ready() -> bool:
        status, seen["body"] = await get(http, daemon, "/readyz")
        return status == 200

    try:
        await eventually(ready, timeout_s=timeout_s, what="/readyz to answer 200")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last body: {seen.get('body')}") from None
    return seen["body"]


async def until_failing(
    http: aiohttp.ClientSession, daemon: Daemon, check: str, *, timeout_s: float = 15.0
) -> dict[str, Any]:
    """Wait for /readyz to answer 503 with ``check`` failing; the body."""
    seen: dict[str, Any] = {}

    async def failing() -> bool:
        status, body = await get(http, daemon, "/readyz")
        seen.update(status=status, body=body)
        return status == 503 and body["ready"] is False and body["checks"][check]["ok"] is False

    try:
        await eventually(failing, timeout_s=timeout_s, what=f"/readyz to fail on {check}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer: {seen.get('status')} {seen.get('body')}") from None
    return seen["body"]


async def _connected(daemon: Daemon) -> bool:
    return bool(daemon.watchers) and all(w.stream_connected.is_set() for w in daemon.watchers)


# ---------------------------------------------------------------- all well


async def test_both_probes_pass_after_real_traffic_and_need_no_token(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(http={"token_env": "DESK_DASHBOARD_TOKEN"})
    # The dashboard asks for a token; the probes, which show no customer data, do not.
    secrets = config.secrets.model_copy(update={"dashboard_token": "dash-token"})
    daemon = await start_daemon(config.model_copy(update={"secrets": secrets}))
    await eventually(lambda: _connected(daemon), what="stream connected")
    await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    await settled(daemon)  # the card's own refresh, say, goes out too

    body = await until_ready(http, daemon)
    assert body["ready"] is True and set(body["checks"]) == CHECKS
    checks = body["checks"]
    assert all(check["ok"] for check in checks.values())
    assert re.fullmatch(r"SELECT 1 answered in \d+ ms", checks["database"]["detail"])
    assert checks["mastodon"]["detail"] == "notifications:mention: stream connected"
    assert re.fullmatch(r"chat\.postMessage answered \d+s ago", checks["slack"]["detail"])
    assert checks["outbox"]["detail"] == "nothing pending"

    status, health = await get(http, daemon, "/healthz")
    assert status == 200
    assert health["status"] == "ok" and health["dead_workers"] == [] and health["problems"] == []
    assert 0 <= health["loop_lag_s"] < 1

    assert daemon.web is not None
    async with http.get(f"http://127.0.0.1:{daemon.web.port}/") as response:
        assert response.status == 401  # the dashboard still asks for its token


async def test_readiness_does_not_call_slack_for_every_probe(
    slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start, http: aiohttp.ClientSession
) -> None:
    daemon = await start_daemon(make_config())
    before = slack.call_count("auth.test")  # the start's own token check
    body = await until_ready(http, daemon)
    # No Slack call yet since the start: one auth.test says Slack answers, and is trusted for a minute.
    assert re.fullmatch(r"auth\.test answered \d+s ago", body["checks"]["slack"]["detail"])
    for _ in range(5):
        assert (await get(http, daemon, "/readyz"))[0] == 200
    assert slack.call_count("auth.test") == before + 1


# ---------------------------------------------------------------- /healthz


async def test_healthz_names_a_worker_that_stopped(
    slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start, http: aiohttp.ClientSession
) -> None:
    daemon = await start_daemon(make_config())
    assert (await get(http, daemon, "/healthz"))[0] == 200
    [sweeper] = [t for t in asyncio.all_tasks() if t.get_name() == "refresh posts"]
    sweeper.cancel()
    await asyncio.wait([sweeper])

    assert daemon.dead_workers() == ["refresh posts"]
    status, body = await get(http, daemon, "/healthz")
    assert status == 503
    assert body["status"] == "fail" and body["dead_workers"] == ["refresh posts"]
    assert body["problems"] == ["worker 'refresh posts' stopped"]


async def test_healthz_fails_while_the_event_loop_is_blocked(http: aiohttp.ClientSession) -> None:
    lag = LoopLag(sample_s=0.1)
    probes = HealthProbes(dead_workers=list, loop_lag=lag, checks={}, max_loop_lag_s=0.5)
    server = WebServer(HttpSettings(port=0))
    server.add_routes(probes.routes())
    sampler = asyncio.create_task(lag.run())
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"

        async def answers(status: int) -> bool:
            async with http.get(url) as response:
                return response.status == status

        await eventually(lambda: answers(200), what="/healthz to pass with the loop free")
        # A handler that blocks the loop (a synchronous call where an await belonged) holds up every task.
        asyncio.get_running_loop().call_soon(time.sleep, 1.0)
        async with http.get(url) as response:
            assert response.status == 503
            body = await response.json()
        assert body["dead_workers"] == [] and body["loop_lag_s"] > 0.5
        assert re.fullmatch(r"event loop \d+\.\ds late \(more than 0\.5s\)", body["problems"][0])
        await eventually(lambda: answers(200), what="/healthz to pass again once the loop is free")
    finally:
        sampler.cancel()
        await server.stop()


# ---------------------------------------------------------------- /readyz, one failing check at a time


# Postgres only: a SQLite file cannot refuse connections.
@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_readyz_fails_while_the_database_refuses_connections(
    db_url: str, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start, http: aiohttp.ClientSession
) -> None:
    daemon = await start_daemon(make_config())
    await until_ready(http, daemon)
    admin = create_async_engine(str(make_url(db_url).set(database="postgres")), isolation_level="AUTOCOMMIT")
    dbname = make_url(db_url).database
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false'))
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": dbname},
            )
        body = await until_failing(http, daemon, "database")
        detail = body["checks"]["database"]["detail"]
        assert detail.startswith("SELECT 1 failed: ") and "\n" not in detail
        status, health = await get(http, daemon, "/healthz")
        assert status == 200, health  # alive, only not ready: a restart would not bring the database back
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true'))
        await admin.dispose()
    await until_ready(http, daemon)


class OutageProxy:
    """mastodon-mock behind a switch: while down, streams end and every request is answered 503."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rstrip("/")
        self._down = asyncio.Event()
        self.base_url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[OutageProxy]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
        async with aiohttp.ClientSession(timeout=timeout) as self._session, serving(self._forward) as self.base_url:
            yield self

    def set_down(self, down: bool) -> None:
        if down:
            self._down.set()
        else:
            self._down.clear()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self._down.is_set():
            return web.Response(status=503, text="Mastodon is down (test proxy)")
        # The Host header goes through unchanged so the mock names this proxy as the streaming server.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["Accept-Encoding"] = "identity"
        body = await request.read()
        async with self._session.request(
            request.method, self._upstream + request.path_qs, headers=headers, data=body or None
        ) as upstream:
            reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
            if not request.path.startswith(STREAMING):
                return web.Response(status=upstream.status, body=await upstream.read(), headers=reply_headers)
            reply = web.StreamResponse(status=upstream.status, headers=reply_headers)
            await reply.prepare(request)
            relay = asyncio.ensure_future(self._relay(upstream, reply))
            outage = asyncio.ensure_future(self._down.wait())
            await asyncio.wait([relay, outage], return_when=asyncio.FIRST_COMPLETED)
            for task in (relay, outage):
                task.cancel()
            await asyncio.wait([relay, outage])
            return reply

    @staticmethod
    async def _relay(upstream: aiohttp.ClientResponse, reply: web.StreamResponse) -> None:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            async for chunk in upstream.content.iter_any():
                await reply.write(chunk)


@pytest.fixture
async def outage_proxy(mastodon: MockServer) -> AsyncIterator[OutageProxy]:
    async with OutageProxy(mastodon.base_url).running() as proxy:
        yield proxy


async def test_readyz_fails_once_the_stream_is_down_and_polls_fail_past_their_interval(
    outage_proxy: OutageProxy,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    http: aiohttp.ClientSession,
) -> None:
    # Allowed age of the last poll with the stream down: 2 x 0.3 s + request_timeout_s. mastodon-mock behind a
    # proxy on a busy machine can take seconds to open a stream: a shorter timeout would keep it from connecting.
    config = make_config(mastodon={"base_url": outage_proxy.base_url, "request_timeout_s": 5.0})
    daemon = await start_daemon(config)
    await eventually(lambda: _connected(daemon), timeout_s=30, what="stream connected")
    await until_ready(http, daemon)

    outage_proxy.set_down(True)
    body = await until_failing(http, daemon, "mastodon")
    assert re.fullmatch(
        r"notifications:mention: stream down, last good poll \d+s ago \(allowed 5\.6s\)",
        body["checks"]["mastodon"]["detail"],
    )
    assert all(body["checks"][name]["ok"] for name in CHECKS - {"mastodon"})

    outage_proxy.set_down(False)
    body = await until_ready(http, daemon)
    # Polls pass first; the stream reconnects after its backoff.
    assert re.fullmatch(
        r"notifications:mention: (stream connected|stream down, polled \d+s ago)", body["checks"]["mastodon"]["detail"]
    )


async def test_readyz_fails_while_slack_does_not_answer(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon(make_config())
    await eventually(lambda: _connected(daemon), what="stream connected")
    await until_ready(http, daemon)

    slack.set_down(True)
    await post(mastodon, "alice", COMPLAINT)  # its card is the call that finds Slack down
    body = await until_failing(http, daemon, "slack")
    assert re.fullmatch(
        r"chat\.postMessage failed \d+s ago: Slack answered HTTP 503", body["checks"]["slack"]["detail"]
    )

    slack.set_down(False)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    body = await until_ready(http, daemon)
    assert re.fullmatch(r"chat\.postMessage answered \d+s ago", body["checks"]["slack"]["detail"])


async def test_readyz_fails_while_the_socket_mode_connection_is_down(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon(make_config())
    await until_ready(http, daemon)

    # Slack's Web API keeps answering; only the websocket that brings agents' clicks is gone, and slack-sdk's
    # reconnect hangs at the upgrade.
    slack.slow_socket_upgrade(delay_s=30.0, count=100)
    await slack.drop_clients()
    body = await until_failing(http, daemon, "slack")
    assert body["checks"]["slack"]["detail"].startswith("Socket Mode not connected")
    assert body["checks"]["database"]["ok"] and body["checks"]["outbox"]["ok"], body


async def test_readyz_fails_when_slack_refuses_the_bot_token(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon(make_config())
    await eventually(lambda: _connected(daemon), what="stream connected")
    await until_ready(http, daemon)

    slack.revoke_token(slack.bot_token)  # Slack answers, but will take nothing from this bot
    await post(mastodon, "alice", COMPLAINT)
    body = await until_failing(http, daemon, "slack")
    assert re.fullmatch(
        r"chat\.postMessage failed \d+s ago: Slack refuses the bot token \(token_revoked\)",
        body["checks"]["slack"]["detail"],
    )


async def test_readyz_fails_when_a_message_waits_in_the_outbox_past_the_threshold(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon(make_config(http={"outbox_stuck_after_s": 1.0}))
    await eventually(lambda: _connected(daemon), what="stream connected")
    await until_ready(http, daemon)

    slack.fail_next("chat.postMessage", status=500, count=1000)
    await post(mastodon, "alice", COMPLAINT)
    body = await until_failing(http, daemon, "outbox")
    assert re.fullmatch(
        r"1 pending, the oldest queued \d+s ago \(more than http\.outbox_stuck_after_s = 1\)",
        body["checks"]["outbox"]["detail"],
    )
    assert body["checks"]["database"]["ok"] and body["checks"]["mastodon"]["ok"], body


async def test_parked_messages_are_counted_but_do_not_fail_readiness(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    http: aiohttp.ClientSession,
) -> None:
    slack.remove_bot("C0SUPPORT")  # a person must invite it: the card is parked, not retried blindly
    daemon = await start_daemon(make_config(http={"outbox_stuck_after_s": 1.0}))
    await eventually(lambda: _connected(daemon), what="stream connected")
    await post(mastodon, "alice", COMPLAINT)
    await post(mastodon, "bob", COMPLAINT_2)

    async def both_parked() -> bool:
        _, body = await get(http, daemon, "/readyz")
        return bool(body["checks"]["outbox"]["detail"].startswith("nothing pending, 2 parked"))

    await eventually(both_parked, timeout_s=15, what="both cards parked")
    body = await until_ready(http, daemon)
    assert body["checks"]["outbox"]["detail"] == (
        "nothing pending, 2 parked (waiting on a person, see `mentiondesk check`)"
    )
