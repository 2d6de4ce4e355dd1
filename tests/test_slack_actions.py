"""Agents work the card's buttons over Socket Mode; cards update in place and races have one winner."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.models import SlackOutbox, Ticket, TicketEvent
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows

Start = Callable[[Config], Awaitable[Daemon]]
ALICE, BOB = "U0ALICE", "U0BOB"


async def card_for_new_ticket(mastodon: MockServer, slack: FakeSlack) -> dict[str, Any]:
    await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    await slack.wait_connected(timeout_s=5)
    return slack.messages("C0SUPPORT")[0]


async def click(slack: FakeSlack, card: dict[str, Any], user: str, action_id: str, value: str) -> None:
    payload = slack.block_actions_payload(user, action_id, value, "C0SUPPORT", card["ts"])
    await slack.send_envelope("interactive", payload)


def current_card(slack: FakeSlack, card: dict[str, Any]) -> dict[str, Any]:
    edits = [u for u in slack.updates if u["ts"] == card["ts"]]
    return edits[-1] if edits else card


def button_ids(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


async def ticket(daemon: Daemon) -> Ticket:
    return (await rows(daemon, Ticket))[0]


async def test_claim_unclaim_resolve_reopen_update_the_card(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    card = await card_for_new_ticket(mastodon, slack)
    assert button_ids(card) == [
        "ticket_claim",
        "ticket_reply",
        "ticket_resolve",
        "ticket_waiting",
        "ticket_not_complaint",
        "ticket_priority",
    ]
    number = str((await ticket(daemon)).id)

    await click(slack, card, ALICE, "ticket_claim", number)
    await slack.wait_for(lambda: "Assigned to <@U0ALICE>" in str(current_card(slack, card)["blocks"]))
    assert (await ticket(daemon)).assignee_slack_id == ALICE
    assert button_ids(current_card(slack, card))[0] == "ticket_unclaim"

    # Bob cannot take it from Alice, nor give it back for her.
    await click(slack, card, BOB, "ticket_claim", number)
    await click(slack, card, BOB, "ticket_unclaim", number)
    await slack.wait_for(lambda: len(slack.ephemerals) == 2)
    assert [e["user"] for e in slack.ephemerals] == [BOB, BOB]
    assert "open and claimed by <@U0ALICE>" in slack.ephemerals[0]["text"]
    assert (await ticket(daemon)).assignee_slack_id == ALICE

    await click(slack, card, ALICE, "ticket_resolve", number)
    await slack.wait_for(lambda: "resolved" in current_card(slack, card)["blocks"][0]["text"]["text"])
    assert button_ids(current_card(slack, card)) == ["ticket_reply", "ticket_reopen"]
    assert (await ticket(daemon)).resolved_at is not None

    await click(slack, card, BOB, "ticket_reopen", number)
    await slack.wait_for(lambda: "ticket_resolve" in button_ids(current_card(slack, card)))
    t = await ticket(daemon)
    assert t.state == "open" and t.resolved_at is None
    events = [(e.actor, e.action) for e in await rows(daemon, TicketEvent)]
    assert (ALICE, "claimed") in events and (ALICE, "resolved") in events and (BOB, "reopened") in events


async def test_not_a_complaint_and_priority(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    card = await card_for_new_ticket(mastodon, slack)
    number = (await ticket(daemon)).id
    payload = slack.block_actions_payload(ALICE, "ticket_priority", f"{number}:low", "C0SUPPORT", card["ts"])
    payload["actions"][0]["selected_option"] = {"value": f"{number}:low"}
    await slack.send_envelope("interactive", payload)
    await slack.wait_for(lambda: "low priority" in current_card(slack, card)["blocks"][0]["text"]["text"])

    await click(slack, card, ALICE, "ticket_not_complaint", str(number))
    await slack.wait_for(lambda: "Closed: not a complaint" in str(current_card(slack, card)["blocks"]))
    t = await ticket(daemon)
    assert (t.state, t.label, t.closed_reason) == ("closed", "other", "not a complaint")


async def test_two_agents_claiming_at_once_one_wins(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    card = await card_for_new_ticket(mastodon, slack)
    number = str((await ticket(daemon)).id)
    await asyncio.gather(
        click(slack, card, ALICE, "ticket_claim", number), click(slack, card, BOB, "ticket_claim", number)
    )
    await slack.wait_for(lambda: len(slack.ephemerals) == 1)
    winner = (await ticket(daemon)).assignee_slack_id
    assert winner in (ALICE, BOB)
    assert slack.ephemerals[0]["user"] != winner
    await eventually(lambda: _claimed_once(daemon), what="one claim event")


async def _claimed_once(daemon: Daemon) -> bool:
    return [e.action for e in await rows(daemon, TicketEvent)].count("claimed") == 1


CARD_ACTIONS = [
    "ticket_claim",
    "ticket_unclaim",
    "ticket_resolve",
    "ticket_reopen",
    "ticket_waiting",
    "ticket_resume",
    "ticket_not_complaint",
]


async def test_card_actions_on_a_ticket_that_does_not_exist_tell_the_agent(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    # A card left over from a wiped database, or a forged click: the agent must learn why nothing happened.
    daemon = await start_daemon(make_config(slack={"repliers": [ALICE]}))
    card = await card_for_new_ticket(mastodon, slack)
    real = (await ticket(daemon)).id
    assert real is not None
    missing = str(real + 4242)
    for action_id in [*CARD_ACTIONS, "ticket_reply"]:
        # Unclaim and Reopen are not on an open ticket's card: those clicks are forged.
        payload = slack.block_actions_payload(ALICE, action_id, missing, "C0SUPPORT", card["ts"], forged=True)
        await slack.send_envelope("interactive", payload)
    priority = slack.block_actions_payload(ALICE, "ticket_priority", "", "C0SUPPORT", card["ts"])
    priority["actions"][0]["selected_option"] = {"value": f"{missing}:high"}
    await slack.send_envelope("interactive", priority)

    await slack.wait_for(lambda: len(slack.ephemerals) == len(CARD_ACTIONS) + 2)
    told = [e["text"] for e in slack.ephemerals]
    assert all(f"#{missing}" in text and "does not exist" in text for text in told), told
    assert all(e["user"] == ALICE for e in slack.ephemerals)
    # Nothing was queued for a ticket that is not there, and the real one is untouched.
    assert [o.ticket_id for o in await rows(daemon, SlackOutbox)] == [real]
    assert (await ticket(daemon)).assignee_slack_id is None


QUICK_S = 2.0  # Slack gives up after three seconds; a malformed envelope must be acked well before


def malformed_envelopes(slack: FakeSlack, card: dict[str, Any]) -> dict[str, tuple[str, object, str]]:
    """Envelopes our listeners could not act on: (envelope type, payload, what the log must say)."""

    def clicked(value: str, **changes: Any) -> dict[str, Any]:
        payload = slack.block_actions_payload(ALICE, "ticket_claim", value, "C0SUPPORT", card["ts"])
        payload.update(changes)
        return payload

    no_user = clicked("1")
    del no_user["user"]
    submission = slack.view_submission_payload(ALICE, "reply_modal", "{broken", {})
    command = slack.slash_command_payload(ALICE, "/mentiondesk", "mine", "C0SUPPORT")
    del command["user_id"]
    return {
        "payload null": ("interactive", None, "not a JSON object"),
        "payload an array": ("interactive", [clicked("1")], "not a JSON object"),
        "payload a string": ("interactive", "claim it", "not a JSON object"),
        "payload without user": ("interactive", no_user, "user.id"),
        "unknown payload type": ("interactive", clicked("1", type="mystery"), "unknown payload type"),
        "claim value not a number": ("interactive", clicked("abc"), "ticket_claim"),
        "claim value out of range": ("interactive", clicked("99999999999"), "ticket_claim"),
        "private_metadata broken": ("interactive", submission, "private_metadata"),
        "event without event": ("events_api", {"type": "event_callback"}, "event"),
        "command without user": ("slash_commands", command, "user_id"),
        "unknown envelope type": ("mystery", clicked("1"), "envelope type"),
    }


async def test_malformed_envelopes_are_acked_logged_and_dropped(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = await start_daemon(make_config())
    card = await card_for_new_ticket(mastodon, slack)
    acked: dict[str, bool] = {}
    logged: dict[str, bool] = {}
    for name, (kind, payload, reason) in malformed_envelopes(slack, card).items():
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            try:
                ack = await slack.send_envelope(kind, payload, timeout_s=QUICK_S, accepts_response_payload=False)
                acked[name] = ack["envelope_id"] == slack.envelopes[-1]["envelope_id"] and "payload" not in ack
            except TimeoutError:
                acked[name] = False
        refusals = [r.getMessage() for r in caplog.records if r.name == "mentiondesk.bot.slack.app"]
        logged[name] = len(refusals) == 1 and reason in refusals[0]
    assert acked == {name: True for name in acked}
    assert logged == {name: True for name in logged}
    assert slack.ephemerals == [] and slack.views == []

    # The connection and its listeners are still working: the next genuine click is handled.
    await click(slack, card, ALICE, "ticket_claim", str((await ticket(daemon)).id))
    await slack.wait_for(lambda: "Assigned to <@U0ALICE>" in str(current_card(slack, card)["blocks"]))
