"""Shared fixtures: a real Mastodon server (mastodon-mock), the fake Slack, databases and daemon factories."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from mastodon_mock.config import DatabaseConfig, MastodonMockConfig, SeedAccount, SeedConfig, StreamingConfig
from mastodon_mock.testing.server import MockServer
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from mentiondesk.bot.config import Config, Secrets, parse_settings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.slack.app import listeners_in_progress
from mentiondesk.bot.slack.sender import SlackSender
from mentiondesk.storage.db import create_engine, session_factory, upgrade
from mentiondesk.storage.outbox import pending_count
from mentiondesk.storage.urls import safe_url
from tests.fakeslack import FakeSlack

PG_ENV = "MENTIONDESK_TEST_DATABASE_URL"
# The Postgres tests never touch the database named in PG_ENV: they connect through it to create their own,
# uniquely named per run so that runs side by side on one server never meet, and drop it at the end.
RUN_DATABASE_PREFIX = "mentiondesk_test_"
RUN_DATABASE = RUN_DATABASE_PREFIX + uuid.uuid4().hex[:12]
PG_CONNECT_TIMEOUT_S = 10.0
BRAND_TOKEN = "brand_token"  # a token for the local mock server, not a credential

SEED = SeedConfig(
    accounts=[
        SeedAccount(username="brand", display_name="Acme Support", access_token=BRAND_TOKEN),
        SeedAccount(username="alice", display_name="Alice", access_token="alice_token"),
        SeedAccount(username="bob", display_name="Bob <!channel>", access_token="bob_token"),
        SeedAccount(username="carol", display_name="Carol", access_token="carol_token"),
        SeedAccount(username="dan", display_name="Dan", access_token="dan_token"),
        SeedAccount(username="robot", display_name="Robot", bot=True, access_token="robot_token"),
        SeedAccount(username="mallory", display_name="\u202eevil\u202c Support\u200f", access_token="mallory_token"),
    ],
)

_postgres_outcomes: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") == "postgres":
            item.add_marker(pytest.mark.postgres)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: runs against the Postgres named by " + PG_ENV)
    config.addinivalue_line(
        "markers", "slack_fast(reason): the fake Slack enforces no rate limit in this test; the reason says why"
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "postgres" in report.keywords and report.when == "call":
        _postgres_outcomes.append(report.outcome)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # With a Postgres URL given, a run where no Postgres test actually passed is a failed run,
    # whatever else passed: otherwise CI could go green on SQLite alone. Under pytest-xdist the controller
    # sees every worker's reports and judges; a worker alone may rightly have run none.
    if hasattr(session.config, "workerinput"):
        return
    if os.environ.get(PG_ENV) and "passed" not in _postgres_outcomes and exitstatus == 0:
        session.exitstatus = 1
        print(f"\n{PG_ENV} is set but no Postgres test passed", flush=True)


def pytest_report_header(config: pytest.Config) -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        return None
    if config.getoption("numprocesses", None):
        own = "each test process its own database mentiondesk_test_<random>"
    else:
        own = f"this run's own database {RUN_DATABASE}"
    return f"postgres: {own}, made through {safe_url(url)} and dropped at the end"


def _db_params() -> list[Any]:
    params: list[Any] = ["sqlite"]
    params.append(
        "postgres"
        if os.environ.get(PG_ENV)
        else pytest.param("postgres", marks=pytest.mark.skip(reason=f"{PG_ENV} not set"))
    )
    return params


def postgres_only() -> list[Any]:
    """db_url's parameters for a test that only Postgres can run (skipped, as every Postgres test, without PG_ENV)."""
    return _db_params()[1:]


@asynccontextmanager
async def autocommit(url: str | URL) -> AsyncIterator[AsyncConnection]:
    """A connection outside any transaction block, as CREATE and DROP DATABASE require."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", connect_args={"timeout": PG_CONNECT_TIMEOUT_S})
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def _execute_on(url: URL, statement: str) -> None:
    async with autocommit(url) as conn:
        await conn.execute(text(statement))


def _on_server(url: URL, statement: str, *, hint: str) -> None:
    """Run one statement through the database named in PG_ENV; a failure fails the test with a one-line reason."""
    try:
        asyncio.run(_execute_on(url, statement))
        return
    except OSError as exc:
        problem = f"Postgres at {safe_url(str(url))} is unreachable: {exc}"
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        problem = f"`{statement}` failed on {safe_url(str(url))}: {cause} ({hint})"
    # Outside the except clauses, so that the report is this line and not a chain of tracebacks.
    pytest.fail(f"{PG_ENV} is set but {problem}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_run_url() -> Iterator[str]:
    """This run's own database on the server named by PG_ENV; dropped at the end, whatever the outcome."""
    server = make_url(os.environ[PG_ENV])
    # template0 holds nothing anyone added to template1, and no one can be connected to it to block the copy.
    create = f'CREATE DATABASE "{RUN_DATABASE}" TEMPLATE template0'
    _on_server(server, create, hint="the tests create their own database there: the role needs CREATEDB")
    yield server.set(database=RUN_DATABASE).render_as_string(hide_password=False)
    # FORCE ends connections a failed test left open, which would otherwise block the drop.
    drop = f'DROP DATABASE IF EXISTS "{RUN_DATABASE}" WITH (FORCE)'
    _on_server(server, drop, hint="DROP DATABASE ... WITH (FORCE) needs Postgres 13 or later")


@pytest.fixture
async def postgres_url(postgres_run_url: str) -> str:
    """This run's Postgres database with an empty public schema."""
    engine = create_async_engine(postgres_run_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()
    return postgres_run_url


@pytest.fixture(params=_db_params())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or an empty schema in this run's own Postgres database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'mentiondesk.db'}"
    # Looked up only here, so that a run without PG_ENV never asks for a Postgres server.
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Any]:
    """A session factory over a migrated database."""
    engine = create_engine(db_url)
    await upgrade(engine)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
def mastodon_mock_config() -> MastodonMockConfig:
    # Picked up by mastodon-mock's own `mastodon_mock_server` fixture.
    return MastodonMockConfig(
        database=DatabaseConfig(path=":memory:"),
        seed=SEED,
        streaming=StreamingConfig(heartbeat_seconds=0.2),
    )


@pytest.fixture
def mastodon(mastodon_mock_server: MockServer) -> MockServer:
    return mastodon_mock_server


def _slack_rate_limited(request: pytest.FixtureRequest) -> bool:
    """Slack's rate limits hold unless the test is marked slack_fast, with its reason."""
    marker = request.node.get_closest_marker("slack_fast")
    if marker is None:
        return True
    if not (marker.args and isinstance(marker.args[0], str) and marker.args[0].strip()):
        pytest.fail("@pytest.mark.slack_fast needs a reason: why this test must post faster than Slack allows")
    return False


@pytest.fixture
async def slack(request: pytest.FixtureRequest, mastodon_mock_config: MastodonMockConfig) -> AsyncIterator[FakeSlack]:
    """The fake Slack, with Slack's rate limits; the test fails if a customer's mention or link reached Slack live.

    The product links only to the Mastodon server, so that is the one host a link may go to.
    """
    mastodon_host = urlsplit(mastodon_mock_config.base_url).hostname or ""
    async with FakeSlack(
        enforce_rate_limit=_slack_rate_limited(request), link_hosts=frozenset({mastodon_host})
    ) as fake:
        yield fake
        if fake.markup_violations:
            found = "\n".join(f"  {v}" for v in fake.markup_violations)
            pytest.fail(f"Slack was sent markup the product did not add on purpose:\n{found}", pytrace=False)


def settings_dict(*, mastodon_url: str, slack_url: str, db_url: str, **sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "mastodon": {
            "base_url": mastodon_url,
            "poll_interval_s": 1.0,
            "stream_down_poll_interval_s": 0.3,
            "max_backoff_s": 1.0,
            # Ten times Mastodon's rate (the mock sets no limit): polls spaced by 0.3 s, reconnects by 1 s.
            "rate_limit_window_s": 30.0,
        },
        "slack": {
            "base_url": slack_url,
            "default_channel": "C0SUPPORT",
            "max_retry_delay_s": 0.5,
            "post_interval_s": 1.0,
        },
        "database": {"url": db_url},
        # Any free port: tests run daemons side by side, and the server is on by default.
        "http": {"port": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


@pytest.fixture
def make_config(mastodon: MockServer, slack: FakeSlack, db_url: str) -> Callable[..., Config]:
    def make(**sections: dict[str, Any]) -> Config:
        data = settings_dict(mastodon_url=mastodon.base_url, slack_url=slack.base_url, db_url=db_url, **sections)
        return Config(
            settings=parse_settings(data, source="test"),
            secrets=Secrets(
                mastodon_token=BRAND_TOKEN, slack_bot_token=slack.bot_token, slack_app_token=slack.app_token
            ),
        )

    return make


@pytest.fixture
async def start_daemon() -> AsyncIterator[Callable[[Config], Awaitable[Daemon]]]:
    """Start daemons; every one still running is stopped at teardown."""
    running: list[Daemon] = []

    async def start(config: Config) -> Daemon:
        daemon = Daemon(config)
        await daemon.start()
        running.append(daemon)
        return daemon

    yield start
    for daemon in running:
        await daemon.stop()


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll an async predicate until it holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def post_as(server: MockServer, username: str, text: str, **kwargs: Any) -> dict[str, Any]:
    """Post a status as a seeded user (blocking; call through asyncio.to_thread inside tests)."""
    return dict(server.client(username).status_post(text, **kwargs))


# Polls each watcher completes in settled(): the first may have begun before the call, so this makes two that began
# after it.
SETTLE_POLLS = 3
# Refresh sweeps completed in settled(), with sweeps=True: the first may have begun before the call.
SETTLE_SWEEPS = 2


async def settled(*daemons: Daemon, sweeps: bool = False, timeout_s: float = 20.0) -> None:
    """Wait for positive signs that nothing the daemons were doing can still change what a test sees.

    A "nothing more happened" check after a fixed sleep passes whenever the duplicate is later than the sleep. This
    waits instead until every feed watcher has completed two polls begun after the call (each one kicked, so that
    takes about a second), with ``sweeps`` until the refresh sweeper has completed a sweep begun after it (it cannot
    be kicked: give the test a short mastodon.refresh_interval_s), and then until no Slack action is running, the
    ingest pipeline is idle, the outbox holds no pending message and every sender is between passes. Whatever those
    found is in Slack by then.
    """
    watchers = [w for daemon in daemons for w in daemon.watchers]
    polls_before = [w.polls_completed for w in watchers]
    for more in range(1, SETTLE_POLLS + 1):
        for watcher in watchers:
            watcher.kick()

        async def polled(more: int = more) -> bool:
            return all(w.polls_completed >= before + more for w, before in zip(watchers, polls_before, strict=True))

        await eventually(polled, timeout_s=timeout_s, what=f"every feed polled {more} more time(s)")
    if sweeps:
        sweepers = [d.sweeper for d in daemons if d.sweeper is not None]
        sweeps_before = [s.sweeps_completed for s in sweepers]

        async def swept() -> bool:
            return all(
                s.sweeps_completed >= before + SETTLE_SWEEPS for s, before in zip(sweepers, sweeps_before, strict=True)
            )

        await eventually(swept, timeout_s=timeout_s, what="a refresh sweep begun after the call")

    senders: list[SlackSender] = []
    for daemon in daemons:
        assert isinstance(daemon.sender, SlackSender), "a dry run never empties the outbox: nothing to settle"
        senders.append(daemon.sender)

    async def quiet() -> bool:
        # Posts a stream brought may still be on their way to the database (and the outbox).
        if not all(d.pipeline is not None and d.pipeline.is_idle for d in daemons):
            return False
        for daemon in daemons:
            assert daemon.context is not None
            async with daemon.context.sessions() as session:
                if await pending_count(session):
                    return False
        # Read after the outbox: a send that began while it was read shows here.
        return all(s.idle for s in senders) and not listeners_in_progress()

    await eventually(quiet, timeout_s=timeout_s, what="an empty outbox, idle senders and no Slack action running")


# Of the test run's own environment, what must not reach a daemon under test: its config and tokens come from the
# test, and a test runner started by systemd must not hand it the runner's notify socket or journal.
_NOT_INHERITED = ("MENTIONDESK_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM")


async def spawn_run(
    config: Path, env: Mapping[str, str], *, stdout: int = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """`mentiondesk run --config FILE` in a process of its own (it owns its signals), stderr piped; ``env`` on top
    of this process's environment, less the variables above."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mentiondesk.bot",
        "run",
        "--config",
        str(config),
        env={**clean, **env},
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )
