"""Feed integrity: whatever stops ingest part-way through a page, no post of it is lost; a post read twice
(by the stream and then a poll) does not hold the feed up.

The stored cursor is where the next poll reads from, so it must never pass a post that is not stored yet.
The tests drive the daemon against mastodon-mock and judge by the database alone: which posts are stored,
where the cursor is, what was set aside.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from mastodon_mock.testing.server import MockServer
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from mentiondesk.bot.config import Config, Secrets, parse_settings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.mastodon.watcher import PAGE_LIMIT
from mentiondesk.storage.cursors import all_cursors
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import DeadLetter, Mention, Ticket
from mentiondesk.storage.ticket_actions import close
from tests.conftest import BRAND_TOKEN, eventually, settings_dict
from tests.fakeslack import FakeSlack
from tests.loopback import serving
from tests.test_e2e import COMPLAINT, COMPLAINT_2, PRAISE, post, rows

Start = Callable[[Config], Awaitable[Daemon]]

MENTIONS_CURSOR = "notifications:mention"
POLLS_ONLY = {"streaming": False}
PAGE_AUTHORS = ("bob", "carol", "dan")
_PAGE_POST = re.compile(r"\(page post (\d+)\)")
_STREAMING = "/api/v1/streaming/"
# Not forwarded: hop-by-hop headers, and the encodings the proxy would have to undo.
_DROPPED_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class MastodonProxy:
    """mastodon-mock behind a loopback proxy that can fail or hold the requests for one path, and end streams."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rstrip("/")
        self.base_url = ""
        self._failing: str | None = None
        self._holding: str | None = None
        self.hit = asyncio.Event()  # a request for the failing or held path came
        self._released = asyncio.Event()
        self._streams: set[aiohttp.ClientResponse] = set()

    def fail(self, path: str | None) -> None:
        """Answer every request for path with HTTP 503, as a Mastodon that is overloaded; None: stop."""
        self._failing = path
        self.hit.clear()

    def hold(self, path: str) -> None:
        """Leave every request for path unanswered until release()."""
        self._holding = path
        self.hit.clear()
        self._released.clear()

    def release(self) -> None:
        self._holding = None
        self._released.set()

    def end_streams(self) -> None:
        """End every open streaming connection, as Mastodon does when it restarts."""
        for upstream in list(self._streams):
            upstream.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MastodonProxy]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
        async with (
            aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as self._session,
            serving(self._forward) as self.base_url,
        ):
            try:
                yield self
            finally:
                # A held request's thread in a stopped daemon gets its answer and ends.
                self.release()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if request.path == self._failing:
            self.hit.set()
            return web.Response(status=503, text="overloaded (test proxy)")
        if request.path == self._holding:
            self.hit.set()
            await self._released.wait()
        # The Host header goes through unchanged so the mock names this proxy as the streaming server.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED_HEADERS}
        headers["Accept-Encoding"] = "identity"
        body = await request.read()
        async with self._session.request(
            request.method, self._upstream + request.path_qs, headers=headers, data=body or None
        ) as upstream:
            reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROPPED_HEADERS}
            if request.path.startswith(_STREAMING):
                return await self._stream(request, upstream, reply_headers)
            return web.Response(status=upstream.status, body=await upstream.read(), headers=reply_headers)

    async def _stream(
        self, request: web.Request, upstream: aiohttp.ClientResponse, headers: dict[str, str]
    ) -> web.StreamResponse:
        reply = web.StreamResponse(status=upstream.status, headers=headers)
        await reply.prepare(request)
        self._streams.add(upstream)
        try:
            # Ended by end_streams() (the upstream connection closes) or by the daemon hanging up.
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                async for chunk in upstream.content.iter_any():
                    await reply.write(chunk)
        finally:
            self._streams.discard(upstream)
        return reply


@pytest.fixture
async def proxy(mastodon: MockServer) -> AsyncIterator[MastodonProxy]:
    async with MastodonProxy(mastodon.base_url).running() as running:
        yield running


def proxied_config(proxy: MastodonProxy, slack: FakeSlack, db_url: str, **sections: dict[str, Any]) -> Config:
    data = settings_dict(mastodon_url=proxy.base_url, slack_url=slack.base_url, db_url=db_url, **sections)
    return Config(
        settings=parse_settings(data, source="test"),
        secrets=Secrets(mastodon_token=BRAND_TOKEN, slack_bot_token=slack.bot_token, slack_app_token=slack.app_token),
    )


async def _page_missed_while_down(
    config: Config,
    mastodon: MockServer,
    start_daemon: Start,
    *,
    reply_at: int | None = None,
    marked_at: int | None = None,
) -> str:
    """A whole page of mentions arrives while the daemon is down, numbered "(page post N)" oldest first.

    Post reply_at is alice's reply to a post of bob's: alice's only ticket is closed, so placing her reply
    asks Mastodon for its thread (the `ancestors` call). Post marked_at says "boom". Returns the reply's id.
    """
    daemon = await start_daemon(config)
    await eventually(lambda: _polled(daemon), what="the first poll")
    reply_id = ""
    if reply_at is not None:
        await post(mastodon, "alice", COMPLAINT)
        await eventually(lambda: _count(daemon, Ticket, 1), what="alice's first ticket")
        [ticket] = await rows(daemon, Ticket)
        assert daemon.context is not None and ticket.id is not None
        async with transaction(daemon.context.sessions) as session:
            assert await close(session, ticket_id=ticket.id, actor="U0AGENT", reason="sorted out by phone")
    await daemon.stop()

    # Mentions no one: not in the brand's feed, only the post alice replies to.
    parent = await post(mastodon, "bob", "the courier left my parcel out in the rain again")
    for i in range(PAGE_LIMIT):
        if i == reply_at:
            reply = await post(
                mastodon, "alice", f"@brand same here, mine got soaked too (page post {i})", in_reply_to_id=parent["id"]
            )
            reply_id = str(reply["id"])
        else:
            boom = " boom" if i == marked_at else ""
            await post(mastodon, PAGE_AUTHORS[i % len(PAGE_AUTHORS)], f"{PRAISE}{boom} (page post {i})")
    return reply_id


async def test_mastodon_failing_mid_page_loses_no_post_of_the_page(
    proxy: MastodonProxy, mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    config = proxied_config(proxy, slack, db_url, mastodon=POLLS_ONLY)
    middle = PAGE_LIMIT // 2
    reply_id = await _page_missed_while_down(config, mastodon, start_daemon, reply_at=middle)

    proxy.fail(_context_path(reply_id))
    daemon = await start_daemon(config)
    await eventually(lambda: _is_set(proxy.hit), timeout_s=30, what="the reply's thread to be asked for")
    # The rest of the page is not held up by the reply; the reply waits, and the cursor with it.
    others = [i for i in range(PAGE_LIMIT) if i != middle]
    await eventually(lambda: _page_posts_are(daemon, others), what="the posts around the reply")
    assert await _cursor(daemon) < await _notification_id(mastodon, reply_id)
    await daemon.stop()

    proxy.fail(None)
    daemon = await start_daemon(config)
    await eventually(lambda: _polled(daemon), timeout_s=30, what="a whole poll after the restart")
    await _assert_whole_page_stored(daemon)


async def test_daemon_stopped_mid_page_loses_no_post_of_the_page(
    proxy: MastodonProxy, mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    config = proxied_config(proxy, slack, db_url, mastodon=POLLS_ONLY)
    middle = PAGE_LIMIT // 2
    reply_id = await _page_missed_while_down(config, mastodon, start_daemon, reply_at=middle)

    proxy.hold(_context_path(reply_id))
    daemon = await start_daemon(config)
    await eventually(lambda: _is_set(proxy.hit), timeout_s=30, what="the reply's thread to be asked for")
    assert middle not in await _page_posts(daemon)
    assert await _cursor(daemon) < await _notification_id(mastodon, reply_id)
    # Stopped while the reply waits for Mastodon: its watcher is cancelled half-way through the page.
    await daemon.stop()
    proxy.release()

    daemon = await start_daemon(config)
    await eventually(lambda: _polled(daemon), timeout_s=30, what="a whole poll after the restart")
    await _assert_whole_page_stored(daemon)


async def test_database_failing_on_the_third_post_of_a_page_loses_no_post_of_it(
    mastodon: MockServer,
    make_config: Callable[..., Config],
    db_url: str,
    start_daemon: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # On Postgres the trigger's error reads as the database failing, tried until it passes. On SQLite it reads as
    # the database refusing the post, set aside at the third try: the daemon is stopped at the first, and
    # max_backoff_s keeps the third 1.5 s or more away.
    config = make_config(mastodon={**POLLS_ONLY, "max_backoff_s": 5.0})
    await _page_missed_while_down(config, mastodon, start_daemon, marked_at=2)

    async with _inserts_failing(db_url, marked="%boom%"):
        daemon = await start_daemon(config)
        await eventually(lambda: _logged(caplog, "refused by the test trigger"), what="the third post to fail")
        assert 2 not in await _page_posts(daemon)
        await daemon.stop()

    daemon = await start_daemon(config)
    await eventually(lambda: _polled(daemon), timeout_s=30, what="a whole poll after the restart")
    await _assert_whole_page_stored(daemon)
    assert await rows(daemon, DeadLetter) == []


async def test_post_read_by_the_stream_and_then_a_poll_does_not_hold_up_the_feed(
    proxy: MastodonProxy, mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    # No timed polls: only a stream's connect and end start one, so the test decides which route reads first.
    config = proxied_config(
        proxy, slack, db_url, mastodon={"poll_interval_s": 600.0, "stream_down_poll_interval_s": 600.0}
    )
    daemon = await start_daemon(config)
    # The first poll, then the one the stream's connect starts; after it, the stream's posts go straight in.
    await eventually(lambda: _streaming_after_polls(daemon, 2), what="the stream connected and caught up")

    first = await post(mastodon, "alice", COMPLAINT)
    await eventually(lambda: _count(daemon, Mention, 1), what="the stream to store the post")
    first_at = await _notification_id(mastodon, first["id"])
    assert await _cursor(daemon) < first_at, "no poll read the post yet"
    # The stream ends; the catch-up poll after it reads the post again.
    proxy.end_streams()
    await eventually(lambda: _cursor_reached(daemon, first_at), what="the poll to move the cursor past the post")
    assert await rows(daemon, DeadLetter) == [], "a post stored once is not set aside for being read twice"

    # The feed goes on: a later post is stored, and the next poll moves the cursor past it too.
    second = await post(mastodon, "bob", COMPLAINT_2)
    await eventually(lambda: _count(daemon, Mention, 2), what="the later post stored")
    second_at = await _notification_id(mastodon, second["id"])
    proxy.end_streams()
    await eventually(lambda: _cursor_reached(daemon, second_at), what="the poll to move the cursor past the later post")
    assert [m.account_acct for m in await rows(daemon, Mention)] == ["alice", "bob"]
    assert len(await rows(daemon, Ticket)) == 2 and await rows(daemon, DeadLetter) == []


def _context_path(status_id: str) -> str:
    """Where Mastodon.py asks for a post's thread (its ancestors)."""
    return f"/api/v1/statuses/{status_id}/context"


@contextlib.asynccontextmanager
async def _inserts_failing(db_url: str, *, marked: str) -> AsyncIterator[None]:
    """Storing a mention whose text matches `marked` fails (a trigger), until the block ends."""
    engine = create_async_engine(db_url)
    sqlite = make_url(db_url).get_backend_name() == "sqlite"
    try:
        async with engine.begin() as conn:
            if sqlite:
                await conn.execute(
                    text(
                        "CREATE TRIGGER fail_marked BEFORE INSERT ON mentions "
                        f"WHEN NEW.text LIKE '{marked}' "
                        "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
                    )
                )
            else:
                await conn.execute(
                    text(
                        "CREATE FUNCTION fail_marked() RETURNS trigger AS $$ BEGIN "
                        f"IF NEW.text LIKE '{marked}' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF; "
                        "RETURN NEW; END $$ LANGUAGE plpgsql"
                    )
                )
                await conn.execute(
                    text(
                        "CREATE TRIGGER fail_marked BEFORE INSERT ON mentions "
                        "FOR EACH ROW EXECUTE FUNCTION fail_marked()"
                    )
                )
        yield
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER fail_marked" + ("" if sqlite else " ON mentions")))
            if not sqlite:
                await conn.execute(text("DROP FUNCTION fail_marked()"))
    finally:
        await engine.dispose()


async def _notification_id(mastodon: MockServer, status_id: Any) -> int:
    """The id of the brand's mention notification for a status: what the feed's cursor counts in."""

    def find() -> int:
        notifications = mastodon.client("brand").notifications(types=["mention"], limit=PAGE_LIMIT)
        return next(int(n["id"]) for n in notifications if str(n["status"]["id"]) == str(status_id))

    return await asyncio.to_thread(find)


async def _cursor(daemon: Daemon) -> int:
    assert daemon.context is not None
    async with daemon.context.sessions() as session:
        return int((await all_cursors(session))[MENTIONS_CURSOR])


async def _cursor_reached(daemon: Daemon, notification_id: int) -> bool:
    return await _cursor(daemon) >= notification_id


async def _page_posts(daemon: Daemon) -> list[int]:
    """The numbers of the page's posts stored, in the order they were stored."""
    found = (_PAGE_POST.search(m.text) for m in await rows(daemon, Mention))
    return [int(match.group(1)) for match in found if match is not None]


async def _assert_whole_page_stored(daemon: Daemon) -> None:
    stored = await _page_posts(daemon)
    missing = sorted(set(range(PAGE_LIMIT)) - set(stored))
    assert sorted(stored) == list(range(PAGE_LIMIT)), f"every post of the page, once each; missing {missing}"
    # A post that failed is stored after the ones behind it, but each customer's posts stay in the order written.
    by_author: dict[str, list[int]] = {}
    for mention in await rows(daemon, Mention):
        found = _PAGE_POST.search(mention.text)
        if found is not None:
            by_author.setdefault(mention.account_acct, []).append(int(found.group(1)))
    assert all(numbers == sorted(numbers) for numbers in by_author.values()), by_author


async def _page_posts_are(daemon: Daemon, numbers: list[int]) -> bool:
    return await _page_posts(daemon) == numbers


async def _is_set(event: asyncio.Event) -> bool:
    await asyncio.sleep(0)
    return event.is_set()


async def _count(daemon: Daemon, model: type[Any], n: int) -> bool:
    return len(await rows(daemon, model)) == n


async def _polled(daemon: Daemon) -> bool:
    await asyncio.sleep(0)
    return all(w.polls_completed > 0 for w in daemon.watchers)


async def _streaming_after_polls(daemon: Daemon, n: int) -> bool:
    await asyncio.sleep(0)
    return all(w.stream_connected.is_set() and w.polls_completed >= n for w in daemon.watchers)


async def _logged(caplog: pytest.LogCaptureFixture, words: str) -> bool:
    await asyncio.sleep(0)
    return any(words in record.getMessage() for record in caplog.records)
