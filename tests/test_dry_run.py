"""Dry run (slack.dry_run): messages are printed, and the outbox is left for the next run with Slack."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.slack.dry_run import PAGE_SIZE, DryRunSender
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import OutboxState, SlackOutbox, Ticket
from mentiondesk.storage.ticket_actions import queue_card_refresh
from mentiondesk.storage.types import utcnow
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows
from tests.test_slack_sender import Sessions, get, new_followup, new_ticket

FOLLOW_UP = "@brand order number is 1234, thanks"
CARD_HEADER = "--- [dry run] would post to C0SUPPORT ---"

Start = Callable[[Config], Awaitable[Daemon]]


def outbox_state(outbox: list[SlackOutbox]) -> list[tuple[Any, ...]]:
    # Not next_attempt_at: a change to the ticket (the follow-up) re-times its waiting card, due either way.
    return [(r.id, r.kind, r.state, r.attempts, r.last_error, r.slack_ts) for r in outbox]


def printed(out: io.StringIO, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in out.getvalue()

    return check


async def test_dry_run_prints_queued_messages_and_leaves_them_for_slack(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A real run while Slack fails: the card waits in the outbox.
    slack.set_down(True)
    real = make_config()
    daemon = await start_daemon(real)
    first = await post(mastodon, "alice", COMPLAINT)

    async def card_failed() -> bool:
        return any(r.attempts >= 1 for r in await rows(daemon, SlackOutbox))

    await eventually(card_failed, what="the card's first attempt failing")
    await daemon.stop()
    left = await rows(daemon, SlackOutbox)
    before = outbox_state(left)

    # A dry-run start on the same database prints it, and prints new messages once each.
    out = io.StringIO()
    dry = Daemon(make_config(slack={"dry_run": True}), dry_run_out=out)
    with caplog.at_level(logging.INFO, logger="mentiondesk"):
        await dry.start()
    try:
        assert "1 Slack message already waiting in the outbox is printed but left queued" in caplog.text
        await eventually(printed(out, CARD_HEADER), what="the waiting card printed")
        await post(mastodon, "alice", FOLLOW_UP, in_reply_to_id=first["id"])
        await eventually(printed(out, "order number is 1234"), what="the follow-up printed")
        [ticket] = await rows(dry, Ticket)
        assert f"would post to C0SUPPORT (thread of ticket #{ticket.id}'s card)" in out.getvalue()
    finally:
        await dry.stop()
    assert out.getvalue().count(CARD_HEADER) == 1  # the follow-up's wake-up did not print the card again

    # Nothing was consumed: the card is as the real run left it, and what the dry run queued (the follow-up,
    # perhaps a card refresh) waits too.
    after = await rows(dry, SlackOutbox)
    assert outbox_state(after[: len(before)]) == before
    # Each row's time is as the real run left it (its retry, or a lease cut short by its stop), or, once due,
    # re-timed by the follow-up to a moment already past: never leased by the dry run.
    for was, now in zip(left, after, strict=False):
        assert now.next_attempt_at == was.next_attempt_at or now.next_attempt_at <= utcnow(), "leased by the dry run"
    assert len(after) > len(before) and all(r.state == OutboxState.PENDING for r in after[len(before) :])
    assert (await rows(dry, Ticket))[0].slack_ts is None

    # The next run with Slack sends each of them once: the card, then the follow-up in its thread.
    slack.set_down(False)
    daemon = await start_daemon(real)

    async def all_sent() -> bool:
        return all(r.state == OutboxState.SENT for r in await rows(daemon, SlackOutbox))

    await eventually(all_sent, what="the queued messages sent", timeout_s=15)
    [card] = slack.messages("C0SUPPORT")
    assert "never arrived" in str(card["blocks"])
    [reply] = slack.thread("C0SUPPORT", card["ts"])
    assert "order number is 1234" in str(reply["blocks"])


async def test_each_message_is_printed_once_and_left_pending(sessions: Sessions) -> None:
    ticket_id, card_row = await new_ticket(sessions, text="Order 1234 never arrived")
    followup_row = await new_followup(sessions, ticket_id, text="Still waiting")
    out = io.StringIO()
    printer = DryRunSender(sessions, out=out)

    assert await printer.print_new() == 2
    assert await printer.print_new() == 0  # nothing new: nothing printed again
    text = out.getvalue()
    assert text.count("--- [dry run] would post to C0SUPPORT ---") == 1 and "Order 1234 never arrived" in text
    assert f"would post to C0SUPPORT (thread of ticket #{ticket_id}'s card) ---\nStill waiting" in text
    for row_id in (card_row, followup_row):
        row = await get(sessions, SlackOutbox, row_id)
        assert row.state == OutboxState.PENDING and row.attempts == 0
    assert (await get(sessions, Ticket, ticket_id)).slack_ts is None


async def test_a_backlog_longer_than_a_page_is_printed_in_full(sessions: Sessions) -> None:
    ticket_id, _ = await new_ticket(sessions)
    for i in range(PAGE_SIZE + 5):
        await new_followup(sessions, ticket_id, text=f"Post number {i}")
    out = io.StringIO()
    assert await DryRunSender(sessions, out=out).print_new() == PAGE_SIZE + 6
    assert f"Post number {PAGE_SIZE + 4}\n" in out.getvalue()


async def test_a_refresh_of_a_card_in_slack_is_printed_as_an_update(sessions: Sessions) -> None:
    ticket_id, card_row = await new_ticket(sessions, text="Order 1234 never arrived")
    async with transaction(sessions) as session:  # as if a real run had posted the card
        card = await session.get(SlackOutbox, card_row)
        ticket = await session.get(Ticket, ticket_id)
        assert card is not None and ticket is not None
        card.state, ticket.slack_ts = OutboxState.SENT, "1700000000.000100"
        await queue_card_refresh(session, ticket_id=ticket_id)
    out = io.StringIO()
    assert await DryRunSender(sessions, out=out).print_new() == 1
    assert f"--- [dry run] would update the card of ticket #{ticket_id} in C0SUPPORT ---" in out.getvalue()


async def test_what_was_queued_before_the_stop_is_printed_before_it_ends(sessions: Sessions) -> None:
    # The daemon stops its intake first, then the sender: a message queued in between must still be shown,
    # or the demo's summary counts a ticket whose card never appeared.
    out = io.StringIO()
    printer = DryRunSender(sessions, out=out)
    await new_ticket(sessions, text="Posted just before the stop")
    printer.stop()  # before the printer had a look
    await asyncio.wait_for(printer.run(), timeout=5)
    assert "Posted just before the stop" in out.getvalue()
