"""Every Slack call the sender makes gives up at slack.request_timeout_s, and the outbox lease outlasts the
longest send: a second sender on the same database never posts a card the first is still sending."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from mentiondesk.bot.config import SlackSettings
from mentiondesk.bot.slack.sender import LOOKUP_MAX_PAGES, LOOKUP_PAGE_SIZE, SlackSender
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import OutboxState, SlackOutbox
from mentiondesk.storage.outbox import mark_retry
from mentiondesk.storage.types import utcnow
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_slack_sender import Sessions, get, new_ticket

# fill_channel posts 2000 messages at once, and the senders pace nothing (post_interval_s=0).
pytestmark = pytest.mark.slack_fast("thousands of messages at once; pacing against Slack's limit is test_e2e's")

CHANNEL = "C0SUPPORT"
# Slow enough to matter, quick enough for a test; each slow answer comes half a second inside the timeout.
REQUEST_TIMEOUT_S = 2.5
JUST_IN_TIME_S = 2.0
# What a sender's own clock may add to a call it gives up on (the loop, the database write after it).
GIVE_UP_MARGIN_S = 1.5


@pytest.fixture
async def plain_session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session with aiohttp's own 300 s default: slack-sdk then applies no timeout of its own."""
    async with aiohttp.ClientSession() as session:
        yield session


def sender(slack: FakeSlack, sessions: Sessions, http: aiohttp.ClientSession) -> SlackSender:
    # The cards link to the posts new_ticket makes up on social.example, as if it were the Mastodon server.
    slack.link_hosts.add("social.example")
    # Built as the issue found the daemon's: its own session, so slack-sdk's `timeout` is ignored.
    client = AsyncWebClient(
        token=slack.bot_token,
        base_url=slack.base_url,
        timeout=int(REQUEST_TIMEOUT_S),
        session=http,
        retry_handlers=[],
    )
    settings = SlackSettings(
        default_channel=CHANNEL,
        base_url=slack.base_url,
        request_timeout_s=REQUEST_TIMEOUT_S,
        post_interval_s=0,
        max_retry_delay_s=0.2,
    )
    return SlackSender(sessions, settings, client=client)


def cards_for(slack: FakeSlack, row_id: int) -> list[dict[str, Any]]:
    return [
        m
        for m in slack.messages(CHANNEL)
        if ((m.get("metadata") or {}).get("event_payload") or {}).get("outbox_id") == row_id
    ]


async def fill_channel(slack: FakeSlack, count: int) -> None:
    """``count`` messages from people in the channel, so a lookup has that many to page through."""
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
    batch = 100
    for start in range(0, count, batch):
        await asyncio.gather(
            *(
                client.chat_postMessage(channel=CHANNEL, text=f"chatter {i}")
                for i in range(start, min(count, start + batch))
            )
        )


async def mark_in_doubt(sessions: Sessions, row_id: int) -> None:
    """As after an attempt whose answer was lost: the next attempt looks in Slack before posting."""
    async with transaction(sessions) as session:
        await mark_retry(
            session, row_id=row_id, at=utcnow() - timedelta(seconds=1), error="TimeoutError", ambiguous=True
        )


async def test_a_hung_post_is_given_up_at_request_timeout_s_and_not_posted_by_a_second_sender(
    slack: FakeSlack, sessions: Sessions, plain_session: aiohttp.ClientSession
) -> None:
    _, row_id = await new_ticket(sessions)
    slack.slow_next("chat.postMessage", delay_s=60)  # Slack takes the card but never answers
    first, second = sender(slack, sessions, plain_session), sender(slack, sessions, plain_session)

    started = time.monotonic()
    attempt = asyncio.create_task(first.send_due())
    await slack.wait_for(lambda: slack.call_count("chat.postMessage") == 1)  # the first sender has the row
    while not attempt.done():
        assert time.monotonic() - started < REQUEST_TIMEOUT_S + GIVE_UP_MARGIN_S, "the post was not given up"
        await second.send_due()  # the row is leased: nothing for it to do
        assert slack.call_count("chat.postMessage") == 1, "the second sender posted the card the first is sending"
        await asyncio.sleep(0.05)
    await attempt
    assert time.monotonic() - started >= REQUEST_TIMEOUT_S

    # The second sender takes the row after the first gave up, finds the card in Slack and records it.
    async def recorded() -> bool:
        await second.send_due()
        return (await get(sessions, SlackOutbox, row_id)).state == OutboxState.SENT

    await eventually(recorded, timeout_s=10, what="the card recorded from Slack")
    assert len(cards_for(slack, row_id)) == 1 and slack.call_count("chat.postMessage") == 1


async def test_the_longest_send_a_sender_can_make_ends_inside_its_lease(
    slack: FakeSlack, sessions: Sessions, plain_session: aiohttp.ClientSession
) -> None:
    # The longest legitimate attempt: a card in doubt, more messages in the channel than the lookup pages
    # through, and every call (each page, then the post) answered just inside request_timeout_s.
    await fill_channel(slack, LOOKUP_MAX_PAGES * LOOKUP_PAGE_SIZE + 1)
    _, row_id = await new_ticket(sessions)
    await mark_in_doubt(sessions, row_id)
    slack.slow_next("conversations.history", delay_s=JUST_IN_TIME_S, count=LOOKUP_MAX_PAGES)
    slack.slow_next("chat.postMessage", delay_s=JUST_IN_TIME_S)
    first, second = sender(slack, sessions, plain_session), sender(slack, sessions, plain_session)

    attempt = asyncio.create_task(first.send_due())
    await slack.wait_for(lambda: slack.call_count("conversations.history") == 1)  # the first sender has the row
    while not attempt.done():
        await second.send_due()  # must find the row leased for as long as the first sender can be at it
        await asyncio.sleep(0.1)
    await attempt
    assert len(cards_for(slack, row_id)) == 1, "the second sender posted the card the first was still sending"
    assert slack.call_count("conversations.history") <= LOOKUP_MAX_PAGES  # the first sender's pages only
    assert (await get(sessions, SlackOutbox, row_id)).state == OutboxState.SENT
