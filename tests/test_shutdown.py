"""Stopping is bounded: SIGTERM ends `mentiondesk run` within daemon.shutdown_timeout_s, even while a call hangs."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from tests.conftest import eventually, spawn_run
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT_2, Start, post
from tests.test_mastodon_timeouts import HoldingProxy
from tests.test_slack_reply import AGENT, AGENTS, click_reply, new_ticket
from tests.test_slack_setup import tokens, write_config

SHUTDOWN_TIMEOUT_S = 2.0
# Starting the interpreter is not in it (the clock starts at SIGTERM); closing the database and Slack is.
EXIT_MARGIN_S = 3.0
# Longer than the test: only the daemon's stop can end its wait for the held call (mastodon.request_timeout_s
# is 30 s by default).
EXIT_WAIT_S = 25.0


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("/api/v1/notifications", "notifications"),  # the first poll, with the daemon running
        ("/api/v1/accounts/verify_credentials", "account_verify_credentials"),  # the daemon still starting
    ],
    ids=["poll", "start"],
)
async def test_sigterm_during_a_hung_mastodon_call_exits_within_the_shutdown_timeout(
    tmp_path: Path, mastodon: MockServer, slack: FakeSlack, path: str, call: str
) -> None:
    # Held by a proxy rather than delayed by mastodon-mock's latency fault: a delayed request would still be
    # running in the mock's thread after this test, and race the next test's mock inside pydantic.
    async with HoldingProxy(mastodon.base_url, hold=path).running() as proxy:
        code, took_s, err = await _sigterm_once_held(tmp_path, proxy, slack, call)
    assert code == 0, err
    assert took_s < SHUTDOWN_TIMEOUT_S + EXIT_MARGIN_S, f"took {took_s:.1f}s to stop; it logged:\n{err}"
    assert "Traceback" not in err and "Unclosed" not in err
    # The operator learns which call was left behind.
    assert any("abandoned" in line and f" {call} " in line for line in err.splitlines()), err


async def _sigterm_once_held(
    tmp_path: Path, proxy: HoldingProxy, slack: FakeSlack, call: str
) -> tuple[int, float, str]:
    """Run `mentiondesk run`, SIGTERM it once the held call is in flight: (exit code, seconds to exit, its log)."""
    config = write_config(
        tmp_path,
        mastodon_url=proxy.base_url,
        slack_url=slack.base_url,
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'md.db'}",
        extra=f"[daemon]\nshutdown_timeout_s = {SHUTDOWN_TIMEOUT_S}\n",
    )
    proc = await spawn_run(config, tokens(slack.bot_token, slack.app_token))
    assert proc.stderr is not None
    reader = asyncio.create_task(proc.stderr.read())
    try:
        await eventually(lambda: _held(proxy), timeout_s=60, what=f"{call} to be in flight")
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await asyncio.wait_for(proc.wait(), timeout=EXIT_WAIT_S)
        took_s = time.monotonic() - signalled
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return code, took_s, (await reader).decode()


async def _held(proxy: HoldingProxy) -> bool:
    return bool(proxy.held())


async def test_stop_waits_at_most_the_shutdown_timeout_in_all_for_slack_calls_that_hang(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    # An agent's action and a card on its way both wait on Slack calls that will not answer within the shutdown
    # timeout (slack.request_timeout_s is 30 s): each gets what is left of it, not a timeout of its own.
    config = make_config(slack=AGENTS, daemon={"shutdown_timeout_s": SHUTDOWN_TIMEOUT_S})
    daemon = await start_daemon(config)
    card, ticket = await new_ticket(daemon, mastodon, slack)
    slack.slow_next("views.open", delay_s=60)
    slack.slow_next("chat.postMessage", delay_s=60)
    await click_reply(slack, card, AGENT, ticket)
    await post(mastodon, "carol", COMPLAINT_2)
    await slack.wait_for(lambda: slack.call_count("views.open") == 1 and slack.call_count("chat.postMessage") == 2)

    started = time.monotonic()
    await daemon.stop()
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT_S + 1.5
