"""The whole desk, as agents and a customer use it: claim, reply publicly, resolve, the customer comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from mastodon_mock.testing.server import MockServer
from sqlmodel import select

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.models import Reply, Ticket
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import post, rows
from tests.test_slack_actions import button_ids, click, current_card
from tests.test_slack_reply import AGENTS, brand_posts, new_ticket, open_modal, submit

Start = Callable[[Config], Awaitable[Daemon]]
AGENT = "U0AGENT"
PRIVATE_COMPLAINT = "@brand my card was charged twice for one order and nobody answers my emails, awful"


def header(slack: FakeSlack, card: dict[str, Any]) -> str:
    return str(current_card(slack, card)["blocks"][0]["text"]["text"])


async def ticket_row(daemon: Daemon) -> Ticket:
    return (await rows(daemon, Ticket))[0]


async def test_claim_reply_resolve_and_the_customer_comes_back(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=AGENTS))
    card, ticket = await new_ticket(daemon, mastodon, slack, text=PRIVATE_COMPLAINT, visibility="private")
    number = str(ticket.id)

    await click(slack, card, AGENT, "ticket_claim", number)
    await slack.wait_for(lambda: "Assigned to <@U0AGENT>" in str(current_card(slack, card)["blocks"]))

    view = await open_modal(slack, card, AGENT, ticket)
    ack = await submit(slack, AGENT, view, "Sorry about that! We have refunded the second charge.")
    assert "errors" not in str(ack.get("payload") or {})
    await slack.wait_for(
        lambda: any(
            "Replied publicly by <@U0AGENT>" in str(m.get("text")) for m in slack.thread("C0SUPPORT", card["ts"])
        ),
        timeout_s=10,
    )

    # The reply is on Mastodon, as the brand, under the customer's post, no more public than it was.
    [reply_status] = await brand_posts(mastodon)
    assert reply_status["plain"].startswith("@alice Sorry about that!")
    assert str(reply_status["in_reply_to_id"]) == ticket.root_status_id
    assert reply_status["visibility"] == "private"
    [reply] = await rows(daemon, Reply)
    assert (reply.author_slack_id, reply.state, reply.mastodon_status_id) == (
        AGENT,
        "published",
        str(reply_status["id"]),
    )
    await slack.wait_for(lambda: "Responded" in str(current_card(slack, card)["blocks"]))
    assert (await ticket_row(daemon)).first_response_at is not None

    await click(slack, card, AGENT, "ticket_resolve", number)
    await slack.wait_for(lambda: "resolved" in header(slack, card))

    # The customer answers the brand's reply: the ticket reopens, and the card and thread show it.
    await post(
        mastodon,
        "alice",
        "@brand thanks, but I was charged a third time today",
        visibility="private",
        in_reply_to_id=reply_status["id"],
    )
    await slack.wait_for(
        lambda: "resolved" not in header(slack, card) and "ticket_resolve" in button_ids(current_card(slack, card)),
        timeout_s=10,
    )
    await slack.wait_for(
        lambda: any("charged a third time" in str(m.get("blocks")) for m in slack.thread("C0SUPPORT", card["ts"])),
        timeout_s=10,
    )
    reopened = await ticket_row(daemon)
    assert reopened.state == "open" and len(await rows(daemon, Ticket)) == 1


async def test_resolve_and_reply_at_the_same_moment(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=AGENTS))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    view = await open_modal(slack, card, AGENT, ticket)
    await asyncio.gather(
        submit(slack, AGENT, view, "We are on it, a courier is on the way."),
        click(slack, card, "U0OTHER", "ticket_resolve", str(ticket.id)),
    )
    # Both happened, and the ticket shows both: resolved, and responded to.
    await eventually(lambda: _published(daemon), what="reply published")
    await slack.wait_for(
        lambda: "resolved" in header(slack, card) and "Responded" in str(current_card(slack, card)["blocks"]),
        timeout_s=10,
    )
    final = await ticket_row(daemon)
    assert final.state == "resolved" and final.first_response_at is not None and final.version >= 3
    assert len(await brand_posts(mastodon)) == 1


async def _published(daemon: Daemon) -> bool:
    return [r.state for r in await rows(daemon, Reply)] == ["published"]


async def test_stopping_lets_a_reply_in_progress_finish(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=AGENTS))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    view = await open_modal(slack, card, AGENT, ticket)
    # Mastodon is slow to accept the reply; the daemon is told to stop meanwhile.
    mastodon.fault(path="/api/v1/statuses", methods=["POST"], type="latency", delay_ms=1500, count=1)
    await submit(slack, AGENT, view, "A replacement is on its way.")
    await eventually(lambda: _publishing(daemon), what="reply on its way to Mastodon")
    sessions = daemon.context.sessions if daemon.context else None
    await daemon.stop()
    assert sessions is not None
    async with sessions() as session:
        [reply] = list(await session.exec(select(Reply)))
    assert reply.state == "published" and reply.mastodon_status_id is not None
    assert len(await brand_posts(mastodon)) == 1


async def _publishing(daemon: Daemon) -> bool:
    return [r.state for r in await rows(daemon, Reply)] == ["publishing"]
