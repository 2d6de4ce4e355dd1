"""Agents write in a ticket's thread: notes stay internal; in confirm mode only the author's Send publishes them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.models import Note, Ticket, TicketEvent
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows
from tests.test_slack_actions import ALICE, BOB, button_ids

Start = Callable[[Config], Awaitable[Daemon]]
CONFIRM = {"thread_replies": "confirm", "repliers": [ALICE]}


async def new_ticket(
    daemon: Daemon, mastodon: MockServer, slack: FakeSlack, user: str = "alice", text: str = COMPLAINT
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A customer complains; returns (their status, the ticket's card) once the card's ts is on the ticket."""
    status = await post(mastodon, user, text)
    card = await slack.wait_for(
        lambda: [m for m in slack.messages("C0SUPPORT") if f"@{user}" in m["text"]], timeout_s=10
    )
    await slack.wait_connected(timeout_s=5)

    async def card_recorded() -> bool:
        return any(t.slack_ts == card[0]["ts"] for t in await rows(daemon, Ticket))

    await eventually(card_recorded, what="card ts stored on the ticket")
    return status, card[0]


async def write(slack: FakeSlack, user: str, text: str, thread_ts: str | None) -> dict[str, Any]:
    payload = slack.message_event_payload(user, "C0SUPPORT", text, thread_ts=thread_ts)
    await slack.send_envelope("events_api", payload)
    return payload


async def notes(daemon: Daemon) -> list[Note]:
    return await rows(daemon, Note)


async def note_count_is(daemon: Daemon, count: int) -> None:
    async def check() -> bool:
        return len(await notes(daemon)) == count

    await eventually(check, what=f"{count} notes stored")


async def brand_posts(mastodon: MockServer, daemon: Daemon) -> list[dict[str, Any]]:
    assert daemon.context is not None
    brand_id = daemon.context.brand.id
    return list(await asyncio.to_thread(lambda: mastodon.client("brand").account_statuses(brand_id)))


def prompts(slack: FakeSlack, user: str) -> list[dict[str, Any]]:
    return [e for e in slack.ephemerals if e["user"] == user and e.get("blocks") and button_ids(e)]


async def click(slack: FakeSlack, user: str, action_id: str, prompt: dict[str, Any]) -> None:
    value = next(
        e["value"]
        for b in prompt["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == action_id
    )
    await slack.send_envelope(
        "interactive", slack.block_actions_payload(user, action_id, value, "C0SUPPORT", prompt["ts"])
    )


def told(slack: FakeSlack, user: str, words: str) -> bool:
    return any(words in e["text"] for e in slack.ephemerals if e["user"] == user)


async def test_thread_message_is_an_internal_note(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    _, card = await new_ticket(daemon, mastodon, slack)
    written = await write(slack, ALICE, "Customer is a VIP, handle gently", card["ts"])
    await note_count_is(daemon, 1)
    note = (await notes(daemon))[0]
    assert (note.author_slack_id, note.text, note.slack_channel, note.slack_ts) == (
        ALICE,
        "Customer is a VIP, handle gently",
        "C0SUPPORT",
        written["event"]["ts"],
    )

    # Slack redelivers; a message outside any ticket thread and a top-level message are not notes.
    await slack.send_envelope("events_api", written)
    await write(slack, BOB, "lunch?", None)
    other = await write(slack, BOB, "unrelated", None)
    await write(slack, BOB, "reply to a non-ticket message", other["event"]["ts"])
    await write(slack, BOB, "second note", card["ts"])
    await note_count_is(daemon, 2)
    assert [n.text for n in await notes(daemon)] == ["Customer is a VIP, handle gently", "second note"]
    assert [e.action for e in await rows(daemon, TicketEvent)].count("note") == 2

    # Notes mode: no prompt, and nothing reached the customer.
    assert slack.ephemerals == []
    assert await brand_posts(mastodon, daemon) == []


async def test_confirm_send_publishes_once(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=CONFIRM))
    status, card = await new_ticket(daemon, mastodon, slack)
    await write(slack, ALICE, "Sorry about that, a refund is on its way", card["ts"])
    prompt = (await slack.wait_for(lambda: prompts(slack, ALICE)))[0]
    assert prompt["text"] == "Send this to @alice publicly?"
    assert prompt["thread_ts"] == card["ts"]
    assert button_ids(prompt) == ["note_send", "note_keep"]
    assert await brand_posts(mastodon, daemon) == []  # asking is not sending

    # A double click: both arrive at once, one publishes.
    await asyncio.gather(click(slack, ALICE, "note_send", prompt), click(slack, ALICE, "note_send", prompt))
    await slack.wait_for(lambda: told(slack, ALICE, "Sent to @alice publicly") and told(slack, ALICE, "already sent"))
    published = await brand_posts(mastodon, daemon)
    assert len(published) == 1
    assert str(published[0]["in_reply_to_id"]) == str(status["id"])
    assert "a refund is on its way" in published[0]["content"]
    await slack.wait_for(lambda: any("Replied publicly" in m["text"] for m in slack.thread("C0SUPPORT", card["ts"])))

    # A later click publishes nothing more either.
    await click(slack, ALICE, "note_send", prompt)
    await slack.wait_for(lambda: [e["text"] for e in slack.ephemerals].count("This note was already sent.") == 2)
    assert len(await brand_posts(mastodon, daemon)) == 1


async def test_confirm_keep_and_refusals(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=CONFIRM))
    _, card = await new_ticket(daemon, mastodon, slack)
    await write(slack, ALICE, "checking with the warehouse", card["ts"])
    alice_prompt = (await slack.wait_for(lambda: prompts(slack, ALICE)))[0]
    await click(slack, ALICE, "note_keep", alice_prompt)
    await slack.wait_for(lambda: told(slack, ALICE, "Kept as an internal note."))

    # Bob is not a replier: his Send is refused with the reason and his text.
    await write(slack, BOB, "We will call you <tomorrow>", card["ts"])
    bob_prompt = (await slack.wait_for(lambda: prompts(slack, BOB)))[0]
    await click(slack, BOB, "note_send", bob_prompt)
    refusal = await slack.wait_for(lambda: [e for e in slack.ephemerals if "not sent" in e["text"]])
    assert refusal[0]["user"] == BOB
    assert "not allowed to reply publicly" in refusal[0]["text"]
    assert "&gt; We will call you &lt;tomorrow&gt;" in refusal[0]["text"]

    # Nobody sends someone else's note, even a replier.
    await click(slack, ALICE, "note_send", bob_prompt)
    await slack.wait_for(lambda: told(slack, ALICE, "Only <@U0BOB> can send"))
    assert await brand_posts(mastodon, daemon) == []
    assert len(await notes(daemon)) == 2


async def test_send_or_keep_on_a_note_that_does_not_exist_tells_the_agent(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=CONFIRM))
    _, card = await new_ticket(daemon, mastodon, slack)
    for action_id in ("note_send", "note_keep"):
        # The card has no Send or Keep: a forged click (a real one comes from the prompt of a note since gone).
        payload = slack.block_actions_payload(ALICE, action_id, "4242", "C0SUPPORT", card["ts"], forged=True)
        await slack.send_envelope("interactive", payload)
    await slack.wait_for(lambda: len(slack.ephemerals) == 2)
    assert all(e["user"] == ALICE and "Note 4242 does not exist" in e["text"] for e in slack.ephemerals)
    assert await notes(daemon) == []
