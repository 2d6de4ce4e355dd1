"""Pure pieces: routing, SSE parsing, error sorting, backoff."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mentiondesk.bot.config import RoutingRule
from mentiondesk.bot.events import AccountRef, Post
from mentiondesk.bot.mastodon.streaming import SseEvent, read_events
from mentiondesk.bot.retry import Verdict, backoff_delay, parse_retry_after, sort_mastodon_error
from mentiondesk.bot.routing import route


def post(text: str = "", tags: tuple[str, ...] = (), language: str | None = None) -> Post:
    return Post(
        id="1",
        uri="u",
        url="u",
        account=AccountRef("7", "alice", "Alice", "https://x/@alice"),
        text=text,
        created_at=datetime.now(UTC),
        visibility="public",
        language=language,
        in_reply_to_id=None,
        in_reply_to_account_id=None,
        tags=tags,
    )


RULES = [
    RoutingRule(channel="#billing-de", keywords=("refund",), languages=("de",)),
    RoutingRule(channel="#billing", keywords=("refund", "invoice")),
    RoutingRule(channel="#app", hashtags=("#AcmeApp",)),
]


@pytest.mark.parametrize(
    ("p", "channel"),
    [
        (post("I want a REFUND now"), "#billing"),
        (post("Rückerstattung? refunded never", language="de-AT"), "#billing-de"),
        (post("where is my invoice?"), "#billing"),
        (post("my reinvoice tool"), "#support"),  # keywords match at word starts only
        (post("crash", tags=("acmeapp",)), "#app"),
        (post("hello"), "#support"),
    ],
)
def test_first_matching_rule_wins(p: Post, channel: str) -> None:
    assert route(p, RULES, "#support") == channel


async def _lines(*chunks: bytes) -> Any:
    for chunk in chunks:
        yield chunk


async def test_sse_parser_handles_comments_multiline_and_crlf() -> None:
    lines = [
        b":connected\n",
        b"\n",
        b"event: notification\r\n",
        b'data: {"a":\n',
        b"data: 1}\n",
        b"\n",
        b":thump\n",
        b"event: update\n",
        b"data:x\n",
        b"\n",
    ]
    events = [e async for e in read_events(_lines(*lines))]
    assert events == [None, SseEvent("notification", '{"a":\n1}'), None, SseEvent("update", "x")]


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None, default_s=7) == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("garbage", default_s=2) == 2


def test_backoff_grows_with_jitter_and_caps() -> None:
    delays = [backoff_delay(n, base_s=1, cap_s=30) for n in range(1, 10)]
    assert 0.5 <= delays[0] <= 1.0
    assert all(d <= 30 for d in delays) and max(delays) >= 15


def test_mastodon_errors_are_sorted() -> None:
    from mastodon.errors import MastodonNetworkError, MastodonRatelimitError, MastodonUnauthorizedError

    assert sort_mastodon_error(MastodonRatelimitError("x"), ratelimit_reset=None).verdict is Verdict.RATE_LIMITED
    assert sort_mastodon_error(MastodonNetworkError("x")).verdict is Verdict.TRANSIENT
    assert sort_mastodon_error(MastodonUnauthorizedError("x")).verdict is Verdict.FATAL
