"""/mentiondesk mine | open | show N | stats, answered only to the agent who typed it, from real tickets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.models import Ticket
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, COMPLAINT_2, rows
from tests.test_slack_actions import ALICE, BOB, click
from tests.test_slack_thread import CONFIRM, new_ticket, prompts, told, write
from tests.test_slack_thread import click as click_prompt

Start = Callable[[Config], Awaitable[Daemon]]


async def ask(slack: FakeSlack, user: str, text: str, command: str = "/mentiondesk", *, timeout_s: float = 5.0) -> str:
    """Run the command; returns the answer Slack would show the user (fallback text and blocks, as one string)."""
    frame = await slack.send_envelope(
        "slash_commands", slack.slash_command_payload(user, command, text, "C0SUPPORT"), timeout_s=timeout_s
    )
    payload = frame["payload"]
    assert payload.get("response_type", "ephemeral") == "ephemeral"
    return payload["text"] + "\n" + "\n".join(b["text"]["text"] for b in payload.get("blocks", []))


async def two_tickets(daemon: Daemon, mastodon: MockServer, slack: FakeSlack) -> tuple[Ticket, Ticket]:
    await new_ticket(daemon, mastodon, slack, "alice", COMPLAINT)
    await new_ticket(daemon, mastodon, slack, "bob", COMPLAINT_2)
    first, second = await rows(daemon, Ticket)
    return first, second


async def test_mine_open_and_help(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    first, second = await two_tickets(daemon, mastodon, slack)
    assert "You have no open tickets." in await ask(slack, ALICE, "mine")
    both = await ask(slack, BOB, "open")
    assert both.index(f"#{first.id}*") < both.index(f"#{second.id}*")  # oldest first
    assert "<#C0SUPPORT>" in both and "@alice" in both and "SLA on track: First response due" in both

    card = slack.messages("C0SUPPORT")[0]
    await click(slack, card, ALICE, "ticket_claim", str(first.id))
    await slack.wait_for(lambda: any(u["ts"] == card["ts"] for u in slack.updates))
    mine = await ask(slack, ALICE, "  MINE ")
    assert f"#{first.id}*" in mine and f"#{second.id}*" not in mine and "claimed by <@U0ALICE>" in mine
    still_open = await ask(slack, BOB, "open")
    assert f"#{second.id}*" in still_open and f"#{first.id}*" not in still_open
    assert "You have no open tickets." in await ask(slack, BOB, "mine")

    for nonsense in ("", "help", "frobnicate", "show", "show me", "mine please"):
        assert "/mentiondesk mine" in await ask(slack, BOB, nonsense)
    # Only the replying agent sees any of it: answers go in the ack, nothing is posted.
    assert len(slack.messages("C0SUPPORT")) == 2 and slack.ephemerals == []


async def test_show_and_stats_follow_the_work(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=CONFIRM))
    first, second = await two_tickets(daemon, mastodon, slack)
    before = await ask(slack, ALICE, f"show {first.id}")
    assert "Customer: Alice (@alice)" in before and "Assignee: unclaimed" in before
    assert "Internal notes: 0" in before and "none yet" in before and "SLA on track: First response due" in before
    assert "There is no ticket #999." in await ask(slack, ALICE, "show 999")
    # Numbers no ticket can have (row ids are 32-bit on Postgres) get the same answer, not a database error.
    assert "There is no ticket #99999999999." in await ask(slack, ALICE, "show 99999999999")
    assert "There is no ticket #0." in await ask(slack, ALICE, "show #0")

    # Alice writes in the thread and sends it publicly: a note, a reply and a first response.
    card = slack.messages("C0SUPPORT")[0]
    await write(slack, ALICE, "So sorry, refund issued", card["ts"])
    prompt = (await slack.wait_for(lambda: prompts(slack, ALICE)))[0]
    await click_prompt(slack, ALICE, "note_send", prompt)
    await slack.wait_for(lambda: told(slack, ALICE, "Sent to @alice publicly"))
    after = await ask(slack, ALICE, f"show #{first.id}")
    assert "Internal notes: 1" in after and "<@U0ALICE>" in after and "public reply>" in after
    assert "(within SLA)" in after

    stats = await ask(slack, BOB, "stats")
    assert "Mentions: 2 · complaints: 2" in stats
    assert "Tickets opened: 2 · resolved: 0" in stats
    assert "First responses: 1 within SLA · 0 late" in stats
    assert "Open now: 2 · overdue: 0" in stats
    assert second.id is not None


async def test_command_name_comes_from_config(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    await start_daemon(make_config(slack={"slash_command": "/desk"}))
    await slack.wait_connected(timeout_s=5)
    assert "No open ticket is waiting to be claimed." in await ask(slack, ALICE, "open", "/desk")
    assert "`/desk show 42`" in await ask(slack, ALICE, "?", "/desk")
    # Another app's command is not ours to answer.
    with pytest.raises(TimeoutError):
        await ask(slack, ALICE, "open", "/mentiondesk", timeout_s=0.5)
