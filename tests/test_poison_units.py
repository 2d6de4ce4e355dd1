"""The pieces behind setting poison posts aside: reading times, telling a refusal from an outage, the card's note."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mastodon.errors import MastodonError
from mastodon_mock.testing.server import MockServer
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from mentiondesk.bot.mastodon.fields import MAX_CLOCK_SKEW, time_field
from mentiondesk.bot.mastodon.set_aside import failure_reason, is_transient
from mentiondesk.bot.slack.cards import followup_message, render_plain, ticket_card
from mentiondesk.storage.db import session_factory, transaction
from mentiondesk.storage.models import Mention
from tests.test_slack_cards import CARD, POSTED

READ_AT = datetime(2026, 11, 25, 12, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-25T11:00:00Z", datetime(2026, 11, 25, 11, 0, tzinfo=UTC)),
        ("2026-11-25T12:00:00+01:00", datetime(2026, 11, 25, 11, 0, tzinfo=UTC)),
        ("2026-11-25T11:00:00", datetime(2026, 11, 25, 11, 0, tzinfo=UTC)),  # no zone: Mastodon means UTC
        (datetime(2026, 11, 25, 11, 0, tzinfo=UTC), datetime(2026, 11, 25, 11, 0, tzinfo=UTC)),
        (READ_AT + MAX_CLOCK_SKEW, READ_AT + MAX_CLOCK_SKEW),  # a remote clock a little ahead
        (READ_AT + MAX_CLOCK_SKEW + timedelta(seconds=1), None),
        ("9999-12-31T23:59:59Z", None),
        ("0001-01-01T00:00:00+01:00", None),  # before year 1 once in UTC
        (None, None),
        ("None", None),
        ("", None),
        (1700000000, None),
        ({"at": "2026-11-25"}, None),
        (["2026-11-25T11:00:00Z"], None),
    ],
)
def test_a_post_time_is_read_or_left_unknown(value: Any, expected: datetime | None) -> None:
    assert time_field(value, latest=READ_AT + MAX_CLOCK_SKEW) == expected


def test_card_says_when_the_post_time_is_unknown() -> None:
    _, blocks = ticket_card(replace(CARD, posted_at_known=False))
    meta = str(blocks[3])
    assert f"Posted: unknown (received <!date^{int(POSTED.timestamp())}^" in meta
    assert "Posted: unknown (received 2024-05-01 12:30 UTC)" in render_plain("", blocks)
    _, known = ticket_card(CARD)
    assert "unknown" not in str(known)


def test_follow_up_says_when_the_post_time_is_unknown() -> None:
    _, blocks = followup_message(
        number=42,
        author_acct="alice",
        author_url="https://other.example/@alice",
        text="still broken",
        post_url="https://other.example/@alice/2",
        posted_at=POSTED,
        posted_at_known=False,
    )
    assert "Posted: unknown (received 2024-05-01 12:30 UTC)" in render_plain("", blocks)


async def _failure(sessions: Any, mention: Mention) -> BaseException:
    try:
        async with transaction(sessions) as session:
            session.add(mention)
    except Exception as exc:
        return exc
    raise AssertionError("the database stored it")


def _mention(**values: Any) -> Mention:
    fields: dict[str, Any] = {
        "status_uri": "https://mock.local/@alice/1",
        "status_id": "1",
        "status_url": "https://mock.local/@alice/1",
        "account_id": "7",
        "account_acct": "alice",
        "text": "my order never arrived",
        "source": "notification",
        "posted_at": READ_AT,
        "label": "complaint",
        "score": 0.9,
    }
    return Mention(**{**fields, **values})


async def test_what_the_database_refuses_counts_towards_setting_aside(sessions: Any, db_url: str) -> None:
    async with transaction(sessions) as session:
        session.add(_mention())
    duplicate = await _failure(sessions, _mention(status_id="2"))
    refused = [duplicate]
    if make_url(db_url).get_backend_name() == "postgresql":
        # What Postgres said about the poison posts, before the edge cut and cleaned them (SQLite stores both).
        refused.append(await _failure(sessions, _mention(status_uri="u2", account_display_name="D" * 600)))
        refused.append(await _failure(sessions, _mention(status_uri="u3", text="nul\x00byte")))
    assert [is_transient(exc) for exc in refused] == [False] * len(refused), [failure_reason(e) for e in refused]
    reasons = [failure_reason(exc) for exc in refused]
    assert all("\n" not in reason and "INSERT" not in reason for reason in reasons), reasons


async def test_a_database_away_or_locked_is_transient(db_url: str, sessions: Any, tmp_path: Path) -> None:
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        holder = sqlite3.connect(url.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process writing: this one finds the database locked
        engine = create_async_engine(db_url, connect_args={"timeout": 0})
    else:
        holder = None
        engine = create_async_engine(url.set(port=9))  # nothing listens there: the server is down
    try:
        failure = await _failure(session_factory(engine), _mention())
    finally:
        await engine.dispose()
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
    assert is_transient(failure), failure_reason(failure)


async def test_mastodon_refusing_a_post_counts_and_mastodon_away_does_not(mastodon: MockServer) -> None:
    async def failure(call: Any) -> MastodonError:
        try:
            await asyncio.to_thread(call)
        except MastodonError as exc:
            return exc
        raise AssertionError("Mastodon answered")

    alice = mastodon.client("alice")
    gone = await failure(lambda: alice.status("1"))
    with mastodon.fault(path_regex=r"^/api/v1/statuses/.*", status=503, count=None):
        away = await failure(lambda: alice.status("1"))
    with mastodon.fault(path_regex=r"^/api/v1/statuses/.*", status=401, count=None):
        token = await failure(lambda: alice.status("1"))
    assert not is_transient(gone)
    assert is_transient(away) and is_transient(token), "not the post's fault: retried, never set aside"
