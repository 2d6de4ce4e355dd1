"""Shared fixtures: a real Mastodon server (mastodon-mock), the fake Slack, databases and daemon factories."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from mastodon_mock.config import DatabaseConfig, MastodonMockConfig, SeedAccount, SeedConfig, StreamingConfig
from mastodon_mock.testing.server import MockServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mentiondesk.bot.config import Config, Secrets, parse_settings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.db import create_engine, session_factory, upgrade
from tests.fakeslack import FakeSlack

PG_ENV = "MENTIONDESK_TEST_DATABASE_URL"
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


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "postgres" in report.keywords and report.when == "call":
        _postgres_outcomes.append(report.outcome)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # With a Postgres URL given, a run where no Postgres test actually passed is a failed run,
    # whatever else passed: otherwise CI could go green on SQLite alone.
    if os.environ.get(PG_ENV) and "passed" not in _postgres_outcomes and exitstatus == 0:
        session.exitstatus = 1
        print(f"\n{PG_ENV} is set but no Postgres test passed", flush=True)


def _db_params() -> list[Any]:
    params: list[Any] = ["sqlite"]
    params.append(
        "postgres"
        if os.environ.get(PG_ENV)
        else pytest.param("postgres", marks=pytest.mark.skip(reason=f"{PG_ENV} not set"))
    )
    return params


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    except OSError as exc:
        pytest.fail(f"{PG_ENV} is set but Postgres is unreachable: {exc}")
    finally:
        await engine.dispose()


@pytest.fixture(params=_db_params())
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or the Postgres test database wiped clean."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'mentiondesk.db'}"
    url = os.environ[PG_ENV]
    await _reset_postgres(url)
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


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


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
