"""Watching Mastodon: catch-up paging from the cursor, first start, rate limits, bad credentials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.mastodon.explain import MastodonSetupError
from mentiondesk.storage.models import Mention, Ticket
from tests.conftest import eventually
from tests.test_e2e import COMPLAINT, PRAISE, _count, post, rows

Start = Callable[[Config], Awaitable[Daemon]]


async def test_catch_up_pages_through_everything_missed(
    mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    config = make_config(mastodon={"streaming": False})
    daemon = await start_daemon(config)
    await eventually(lambda: _polled(daemon), what="first poll")
    await daemon.stop()
    # More than one page (40) arrives while the daemon is down.
    for i in range(45):
        await post(mastodon, "alice" if i % 2 else "bob", f"{PRAISE} number {i}")
    daemon = await start_daemon(config)
    await eventually(lambda: _count(daemon, Mention, 45), timeout_s=20, what="45 mentions")
    texts = [m.text for m in await rows(daemon, Mention)]
    assert [int(t.rsplit(" ", 1)[1]) for t in texts] == list(range(45)), "stored oldest first, none twice"


async def test_first_start_takes_only_the_backfill(
    mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    for i in range(3):
        await post(mastodon, "alice", f"{PRAISE} old {i}")
    daemon = await start_daemon(make_config(mastodon={"backfill": 2}))
    await eventually(lambda: _polled(daemon), what="first poll")
    assert sorted(m.text[-5:] for m in await rows(daemon, Mention)) == ["old 1", "old 2"]
    await post(mastodon, "bob", COMPLAINT)
    await eventually(lambda: _count(daemon, Ticket, 1), what="new complaint after the backfill")


async def test_backfill_zero_starts_from_now(
    mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    await post(mastodon, "alice", COMPLAINT)
    daemon = await start_daemon(make_config(mastodon={"backfill": 0}))
    await eventually(lambda: _polled(daemon), what="first poll")
    assert await rows(daemon, Mention) == []
    await post(mastodon, "bob", PRAISE)
    await eventually(lambda: _count(daemon, Mention, 1), what="the new mention")


async def test_rate_limited_poll_waits_for_reset(
    mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    reset = str(int(time.time()) + 2)
    mastodon.fault(
        path="/api/v1/notifications",
        type="ratelimit",
        count=1,
        headers={"X-RateLimit-Reset": reset, "Retry-After": "2", "X-RateLimit-Remaining": "0"},
    )
    await post(mastodon, "alice", COMPLAINT)
    started = time.monotonic()
    daemon = await start_daemon(make_config(mastodon={"streaming": False, "max_backoff_s": 5.0}))
    await eventually(lambda: _count(daemon, Ticket, 1), what="ticket after the rate limit reset")
    assert time.monotonic() - started >= 0.9, "polled again before the rate-limit window reset"


async def test_rejected_token_stops_start_with_a_clear_error(
    mastodon: MockServer, make_config: Callable[..., Config]
) -> None:
    config = make_config()
    bad = config.model_copy(update={"secrets": config.secrets.model_copy(update={"mastodon_token": "wrong"})})
    daemon = Daemon(bad)
    with pytest.raises(MastodonSetupError, match=r"^Mastodon refused MENTIONDESK_MASTODON_TOKEN \(401 Unauthorized"):
        await daemon.start()


async def _polled(daemon: Daemon) -> bool:
    await asyncio.sleep(0)
    return all(w.polls_completed > 0 for w in daemon.watchers)
