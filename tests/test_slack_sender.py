"""The Slack outbox sender against the fake Slack: retries, and no duplicate when an answer is lost."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from mentiondesk.bot.config import SlackSettings
from mentiondesk.bot.slack.sender import SlackSender
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import Mention, OutboxKind, OutboxState, SlackOutbox, Ticket
from mentiondesk.storage.outbox import AMBIGUOUS, enqueue, mark_retry
from tests.conftest import eventually
from tests.fakeslack import FakeSlack

# The sender here paces nothing (post_interval_s=0): these tests are about retries and lookups, and count calls.
pytestmark = pytest.mark.slack_fast("post_interval_s=0; pacing against Slack's limit is test_e2e's")

CLIENT_TIMEOUT_S = 1
SLOWER_THAN_CLIENT_S = 1.5
# A card's retry time in the future: long enough that it is surely not due yet when the sender first looks, on a
# loaded machine too, and far below the sender's 30 s idle poll.
CARD_RETRY_IN_S = 2.0
NOW = datetime.now(UTC)

Sessions = Any


def sender_for(
    slack: FakeSlack,
    sessions: Sessions,
    *,
    token: str | None = None,
    channel_keys: dict[str, str] | None = None,
    **settings: Any,
) -> SlackSender:
    # The cards link to the posts new_ticket makes up on social.example, as if it were the Mastodon server.
    slack.link_hosts.add("social.example")
    client = AsyncWebClient(
        token=token or slack.bot_token, base_url=slack.base_url, timeout=CLIENT_TIMEOUT_S, retry_handlers=[]
    )
    values: dict[str, Any] = dict(
        default_channel="C0SUPPORT", base_url=slack.base_url, post_interval_s=0, max_retry_delay_s=0.2
    )
    extra: dict[str, Any] = {} if channel_keys is None else {"channel_keys": channel_keys}
    return SlackSender(sessions, SlackSettings(**{**values, **settings}), client=client, **extra)


def blocks(text: str) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]


async def new_ticket(sessions: Sessions, *, channel: str = "C0SUPPORT", text: str = "Ticket card") -> tuple[int, int]:
    """A ticket and its queued card, as ingest writes them; returns (ticket id, outbox row id)."""
    async with transaction(sessions) as session:
        ticket = Ticket(
            customer_account_id="7",
            customer_acct="alice",
            root_status_id="100",
            posted_at=NOW,
            received_at=NOW,
            score=0.9,
            channel=channel,
            first_response_due_at=NOW + timedelta(hours=1),
        )
        session.add(ticket)
        await session.flush()
        assert ticket.id is not None
        session.add(
            Mention(
                status_uri=f"https://social.example/statuses/100/{ticket.id}",
                status_id="100",
                status_url="https://social.example/@alice/100",
                account_id="7",
                account_acct="alice",
                text=text,
                source="notification",
                posted_at=NOW,
                label="complaint",
                score=0.9,
                ticket_id=ticket.id,
            )
        )
        row = enqueue(
            session, kind=OutboxKind.CARD, ticket_id=ticket.id, channel=channel, text=text, blocks=blocks(text)
        )
        await session.flush()
        assert row.id is not None
        return ticket.id, row.id


async def new_followup(sessions: Sessions, ticket_id: int, text: str = "Follow-up") -> int:
    async with transaction(sessions) as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        row = enqueue(
            session,
            kind=OutboxKind.FOLLOWUP,
            ticket_id=ticket_id,
            channel=ticket.channel,
            text=text,
            blocks=blocks(text),
        )
        await session.flush()
        assert row.id is not None
        return row.id


async def get(sessions: Sessions, model: type[Any], row_id: int) -> Any:
    async with sessions() as session:
        return await session.get(model, row_id)


async def drive(sender: SlackSender, until: Callable[[], Awaitable[bool]], *, timeout_s: float = 3.0) -> None:
    """Run the sender's loop body until ``until`` holds."""
    deadline = time.monotonic() + timeout_s
    while not await until():
        assert time.monotonic() < deadline, "the outbox did not reach the expected state in time"
        await sender.send_due()
        await asyncio.sleep(0.02)


def is_sent(sessions: Sessions, row_id: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await get(sessions, SlackOutbox, row_id)).state == OutboxState.SENT

    return check


def in_state(sessions: Sessions, state: str, *row_ids: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        states = [(await get(sessions, SlackOutbox, row_id)).state for row_id in row_ids]
        return all(found == state for found in states)

    return check


def attempted(sessions: Sessions, row_id: int, times: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await get(sessions, SlackOutbox, row_id)).attempts >= times

    return check


async def test_card_whose_answer_times_out_is_found_not_posted_again(slack: FakeSlack, sessions: Sessions) -> None:
    ticket_id, row_id = await new_ticket(sessions)
    slack.slow_next("chat.postMessage", delay_s=SLOWER_THAN_CLIENT_S)
    sender = sender_for(slack, sessions)

    await drive(sender, attempted(sessions, row_id, 1))
    row = await get(sessions, SlackOutbox, row_id)
    assert row.state == OutboxState.PENDING and (row.last_error or "").startswith(AMBIGUOUS)
    assert len(slack.messages("C0SUPPORT")) == 1  # Slack did post it

    await drive(sender, is_sent(sessions, row_id))
    [card] = slack.messages("C0SUPPORT")
    assert slack.call_count("chat.postMessage") == 1 and slack.call_count("conversations.history") == 1
    row = await get(sessions, SlackOutbox, row_id)
    assert row.slack_ts == card["ts"] and row.last_error is None
    ticket = await get(sessions, Ticket, ticket_id)
    assert (ticket.channel, ticket.slack_ts) == ("C0SUPPORT", card["ts"])


async def test_follow_up_whose_answer_times_out_is_found_in_the_thread(slack: FakeSlack, sessions: Sessions) -> None:
    ticket_id, card_row = await new_ticket(sessions)
    sender = sender_for(slack, sessions)
    await drive(sender, is_sent(sessions, card_row))
    [card] = slack.messages("C0SUPPORT")
    row_id = await new_followup(sessions, ticket_id)
    slack.slow_next("chat.postMessage", delay_s=SLOWER_THAN_CLIENT_S)

    await drive(sender, is_sent(sessions, row_id))
    [reply] = slack.thread("C0SUPPORT", card["ts"])
    assert slack.call_count("chat.postMessage") == 2 and slack.call_count("conversations.replies") == 1
    assert (await get(sessions, SlackOutbox, row_id)).slack_ts == reply["ts"]
    assert (await get(sessions, Ticket, ticket_id)).slack_ts == card["ts"]  # a follow-up never moves the card


async def test_dropped_connection_after_posting_is_not_resent(slack: FakeSlack, sessions: Sessions) -> None:
    # slack-sdk would re-send a dropped request on its own; the sender must turn that off and look instead.
    _, row_id = await new_ticket(sessions)
    slack.drop_next("chat.postMessage")
    await drive(sender_for(slack, sessions), is_sent(sessions, row_id))
    [card] = slack.messages("C0SUPPORT")
    assert slack.call_count("chat.postMessage") == 1
    assert (await get(sessions, SlackOutbox, row_id)).slack_ts == card["ts"]


async def test_plain_503_is_retried_without_a_lookup(slack: FakeSlack, sessions: Sessions) -> None:
    _, row_id = await new_ticket(sessions)
    slack.fail_next("chat.postMessage", status=503)
    sender = sender_for(slack, sessions)

    await drive(sender, attempted(sessions, row_id, 1))
    assert (await get(sessions, SlackOutbox, row_id)).last_error == "Slack answered HTTP 503"
    await drive(sender, is_sent(sessions, row_id))
    assert len(slack.messages("C0SUPPORT")) == 1 and slack.call_count("chat.postMessage") == 2
    assert slack.call_count("conversations.history") == 0


async def test_lookup_failing_with_503_waits_and_looks_again(slack: FakeSlack, sessions: Sessions) -> None:
    _, row_id = await new_ticket(sessions)
    slack.slow_next("chat.postMessage", delay_s=SLOWER_THAN_CLIENT_S)
    slack.fail_next("conversations.history", status=503)
    sender = sender_for(slack, sessions)

    await drive(sender, attempted(sessions, row_id, 2))
    row = await get(sessions, SlackOutbox, row_id)
    assert row.state == OutboxState.PENDING and (row.last_error or "").startswith(AMBIGUOUS)
    await drive(sender, is_sent(sessions, row_id))
    assert len(slack.messages("C0SUPPORT")) == 1 and slack.call_count("chat.postMessage") == 1
    assert slack.call_count("conversations.history") == 2


async def test_lookup_refused_posts_again_rather_than_lose_the_card(
    slack: FakeSlack, sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    _, row_id = await new_ticket(sessions)
    slack.slow_next("chat.postMessage", delay_s=SLOWER_THAN_CLIENT_S)
    slack.fail_next("conversations.history", status=200, body='{"ok": false, "error": "missing_scope"}')
    with caplog.at_level(logging.WARNING, logger="mentiondesk.bot.slack.sender"):
        await drive(sender_for(slack, sessions), is_sent(sessions, row_id))
    # The documented trade-off: without channels:history the sender cannot tell, and a duplicate beats a loss.
    assert len(slack.messages("C0SUPPORT")) == 2
    assert "cannot be searched (Slack error missing_scope); posting it again" in caplog.text


async def test_card_for_a_channel_name_is_not_searched(
    slack: FakeSlack, sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    ticket_id, row_id = await new_ticket(sessions, channel="#support")
    slack.slow_next("chat.postMessage", delay_s=SLOWER_THAN_CLIENT_S)
    with caplog.at_level(logging.WARNING, logger="mentiondesk.bot.slack.sender"):
        await drive(sender_for(slack, sessions), is_sent(sessions, row_id))
    # conversations.history needs the channel ID, which only a successful post would have told us.
    assert slack.call_count("conversations.history") == 0 and len(slack.messages("C0SUPPORT")) == 2
    assert "not a channel ID" in caplog.text
    assert (await get(sessions, Ticket, ticket_id)).channel == "C0SUPPORT"


async def test_unknown_channel_is_parked_without_blocking_others(slack: FakeSlack, sessions: Sessions) -> None:
    _, lost_row = await new_ticket(sessions, channel="C0GONE")
    _, good_row = await new_ticket(sessions, text="Another customer")
    sender = sender_for(slack, sessions, channel_keys={"C0GONE": "slack.default_channel"})
    await drive(sender, is_sent(sessions, good_row))
    assert "Another customer" in str(slack.messages("C0SUPPORT")[0]["blocks"])
    lost = await get(sessions, SlackOutbox, lost_row)
    assert lost.state == OutboxState.PARKED and lost.attempts == 1
    assert 'slack.default_channel = "C0GONE": no such channel' in (lost.last_error or "")


async def test_a_channel_without_the_bot_parks_its_messages_until_it_is_invited(
    slack: FakeSlack, sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    slack.remove_bot("C0BILLING")
    _, first = await new_ticket(sessions, channel="C0BILLING", text="First billing customer")
    _, second = await new_ticket(sessions, channel="C0BILLING", text="Second billing customer")
    _, support = await new_ticket(sessions, text="Support customer")
    sender = sender_for(slack, sessions, parked_retry_s=0.5, channel_keys={"C0BILLING": "routing.rules[0].channel"})

    with caplog.at_level(logging.ERROR, logger="mentiondesk.bot.slack"):
        await drive(sender, in_state(sessions, OutboxState.PARKED, first, second))
        await drive(sender, is_sent(sessions, support))
    # Slack refused the first; the second waited behind it without a call of its own; other channels flowed.
    assert slack.call_count("chat.postMessage") == 2
    reason = (await get(sessions, SlackOutbox, first)).last_error or ""
    assert 'routing.rules[0].channel = "C0BILLING": the bot is not a member' in reason
    assert "/invite @mentiondesk" in reason
    assert (await get(sessions, SlackOutbox, second)).last_error == reason
    assert reason in caplog.text

    slack.invite_bot("C0BILLING")
    await drive(sender, in_state(sessions, OutboxState.SENT, first, second))
    texts = [str(m["blocks"]) for m in slack.messages("C0BILLING")]
    assert ["First billing" in texts[0], "Second billing" in texts[1]] == [True, True]


async def test_a_revoked_token_holds_every_message_until_a_restart_with_a_new_one(
    slack: FakeSlack, sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    _, first = await new_ticket(sessions, text="First customer")
    _, second = await new_ticket(sessions, channel="C0BILLING", text="Second customer")
    slack.revoke_token(slack.bot_token)
    sender = sender_for(slack, sessions)
    with caplog.at_level(logging.ERROR, logger="mentiondesk.bot.slack"):
        await drive(sender, in_state(sessions, OutboxState.PARKED, first))
        for _ in range(5):
            await sender.send_due()
    # One refusal says it all: nothing else is tried with a token Slack has revoked.
    assert slack.call_count("chat.postMessage") == 1
    assert (await get(sessions, SlackOutbox, second)).attempts == 0
    assert "MENTIONDESK_SLACK_BOT_TOKEN" in caplog.text and "token_revoked" in caplog.text
    assert slack.bot_token not in caplog.text

    # The app is reinstalled and the daemon restarted with the new token: the parked card goes out at once.
    slack.bot_token = "xoxb-reinstalled"
    restarted = sender_for(slack, sessions, token="xoxb-reinstalled")
    running = asyncio.create_task(restarted.run())
    try:
        await eventually(in_state(sessions, OutboxState.SENT, first, second), what="both cards sent after restart")
    finally:
        restarted.stop()
        await running


async def test_a_message_slack_will_never_take_is_parked_alone(slack: FakeSlack, sessions: Sessions) -> None:
    ticket_id, card = await new_ticket(sessions)
    sender = sender_for(slack, sessions)
    await drive(sender, is_sent(sessions, card))
    too_long = await new_followup(sessions, ticket_id, text="x" * 40_001)
    fine = await new_followup(sessions, ticket_id, text="Order number is 1234")

    await drive(sender, is_sent(sessions, fine))
    row = await get(sessions, SlackOutbox, too_long)
    assert row.state == OutboxState.PARKED and "msg_too_long" in (row.last_error or "")
    assert len(slack.thread("C0SUPPORT", slack.messages("C0SUPPORT")[0]["ts"])) == 1


async def test_a_card_backing_off_goes_out_at_its_retry_time_while_its_follow_up_waits_for_it(
    slack: FakeSlack, sessions: Sessions
) -> None:
    # The follow-up is due but has no thread until its card is in Slack; the card's retry is a moment away. The
    # sender must wake for the card then, not sleep its idle poll (30 s) because the follow-up was due.
    ticket_id, card_row = await new_ticket(sessions)
    await new_followup(sessions, ticket_id)
    async with transaction(sessions) as session:
        retry_at = datetime.now(UTC) + timedelta(seconds=CARD_RETRY_IN_S)
        await mark_retry(session, row_id=card_row, at=retry_at, error="Slack answered HTTP 503")
    sender = sender_for(slack, sessions)

    wait_s = await sender.send_due()
    assert 0 < wait_s <= CARD_RETRY_IN_S, f"the sender would next look in {wait_s:.1f}s, after the card's retry is due"
    assert slack.call_count("chat.postMessage") == 0

    running = asyncio.create_task(sender.run())
    try:
        await eventually(in_state(sessions, OutboxState.SENT, card_row), timeout_s=10, what="the card sent")
        [card] = slack.messages("C0SUPPORT")
        await eventually(lambda: _thread_has(slack, card["ts"]), timeout_s=10, what="the follow-up in its thread")
    finally:
        sender.stop()
        await running


async def _thread_has(slack: FakeSlack, ts: str) -> bool:
    return len(slack.thread("C0SUPPORT", ts)) == 1
