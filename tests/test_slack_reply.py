"""Public replies: the Reply modal, posting as the brand on a real Mastodon server, approval, and refusals."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.slack.reply_modal import TEXT_ACTION, TEXT_BLOCK, VISIBILITY_ACTION, VISIBILITY_BLOCK
from mentiondesk.storage.models import Mention, Reply, Ticket, TicketEvent
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows

Start = Callable[[Config], Awaitable[Daemon]]
AGENT, NEWBIE, BOSS, BOSS2, OUTSIDER = "U0AGENT", "U0NEWBIE", "U0BOSS", "U0BOSS2", "U0OUTSIDER"
APPROVAL = {
    "repliers": [AGENT, NEWBIE, BOSS, BOSS2],
    "needs_approval": [NEWBIE],
    "approval_channel": "C0APPROVE",
}
AGENTS = {"repliers": [AGENT]}


async def new_ticket(
    daemon: Daemon, mastodon: MockServer, slack: FakeSlack, user: str = "alice", text: str = COMPLAINT, **kwargs: Any
) -> tuple[dict[str, Any], Ticket]:
    """A customer complains; returns the ticket's card once it is in Slack, and the ticket."""
    before = len(slack.messages("C0SUPPORT"))
    await post(mastodon, user, text, **kwargs)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == before + 1, timeout_s=10)
    await slack.wait_connected(timeout_s=5)
    tickets = await rows(daemon, Ticket)
    return slack.messages("C0SUPPORT")[-1], tickets[-1]


async def click_reply(slack: FakeSlack, card: dict[str, Any], user: str, ticket: Ticket) -> None:
    payload = slack.block_actions_payload(user, "ticket_reply", str(ticket.id), "C0SUPPORT", card["ts"])
    await slack.send_envelope("interactive", payload)


async def open_modal(slack: FakeSlack, card: dict[str, Any], user: str, ticket: Ticket) -> dict[str, Any]:
    before = len(slack.views)
    await click_reply(slack, card, user, ticket)
    await slack.wait_for(lambda: len(slack.views) > before)
    return dict(slack.views[-1]["view"])


async def submit(
    slack: FakeSlack, user: str, view: dict[str, Any], text: str, visibility: str | None = None
) -> dict[str, Any]:
    """Press the modal's submit button; returns mentiondesk's ack (with any inline errors)."""
    chosen = visibility or select_of(view)["initial_option"]["value"]
    values = {
        TEXT_BLOCK: {TEXT_ACTION: {"type": "plain_text_input", "value": text}},
        VISIBILITY_BLOCK: {VISIBILITY_ACTION: {"type": "static_select", "selected_option": {"value": chosen}}},
    }
    payload = slack.view_submission_payload(user, view["callback_id"], view["private_metadata"], values)
    return await slack.send_envelope("interactive", payload)


def select_of(view: dict[str, Any]) -> dict[str, Any]:
    return next(dict(b["element"]) for b in view["blocks"] if b.get("block_id") == VISIBILITY_BLOCK)


def block_text(view: dict[str, Any], block_id: str) -> str:
    block = next(b for b in view["blocks"] if b.get("block_id") == block_id)
    return str(block.get("text") or block.get("elements"))


async def brand_posts(mastodon: MockServer) -> list[dict[str, Any]]:
    """Everything the brand account has posted, newest first, with its text as plain text."""

    def read() -> list[dict[str, Any]]:
        client = mastodon.client("brand")
        statuses = [dict(s) for s in client.account_statuses(client.me()["id"])]
        for status in statuses:
            status["plain"] = html.unescape(re.sub(r"<[^>]+>", "", str(status["content"])))
        return statuses

    return await asyncio.to_thread(read)


def ephemerals_to(slack: FakeSlack, user: str) -> list[str]:
    return [str(e["text"]) for e in slack.ephemerals if e["user"] == user]


async def one_reply(daemon: Daemon) -> Reply:
    replies = await rows(daemon, Reply)
    assert len(replies) == 1
    return replies[0]


async def test_modal_limits_visibility_to_the_customers_post(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=AGENTS))
    card, ticket = await new_ticket(daemon, mastodon, slack, text=COMPLAINT + " <!channel>", visibility="private")
    view = await open_modal(slack, card, AGENT, ticket)
    assert view["callback_id"] == "reply_modal"
    assert [o["value"] for o in select_of(view)["options"]] == ["private", "direct"]
    assert select_of(view)["initial_option"]["value"] == "private"
    quoted = block_text(view, "reply_customer_post")
    assert "never arrived" in quoted and "<!channel>" not in quoted and "&lt;!channel&gt;" in quoted
    assert "493 of 500 characters left" in block_text(view, "reply_length_hint")  # "@alice " is already used

    # Typing refreshes the count as Mastodon counts it: a link is 23 characters, however long.
    typing = slack.view_block_actions_payload(
        AGENT, slack.views[-1]["id"], TEXT_ACTION, "see https://example.com/" + "x" * 200
    )
    await slack.send_envelope("interactive", typing)
    await slack.wait_for(lambda: slack.views[-1]["method"] == "views.update")
    assert "466 of 500 characters left" in block_text(slack.views[-1]["view"], "reply_length_hint")

    # A direct message stays direct.
    card, ticket = await new_ticket(daemon, mastodon, slack, user="bob", text=COMPLAINT, visibility="direct")
    view = await open_modal(slack, card, AGENT, ticket)
    assert [o["value"] for o in select_of(view)["options"]] == ["direct"]


async def test_reply_is_posted_threaded_and_recorded(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=AGENTS))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    latest = await post(mastodon, "alice", "@brand still nothing, order 1234", in_reply_to_id=ticket.root_status_id)
    await eventually(lambda: _mentions(daemon, 2), what="the follow-up joins the ticket")

    view = await open_modal(slack, card, AGENT, ticket)
    assert "order 1234" in block_text(view, "reply_customer_post")  # the latest post is the one answered
    ack = await submit(slack, AGENT, view, "Sorry about that! We are looking into order 1234 now.", "unlisted")
    assert "payload" not in ack  # the modal closes

    posted = await slack.wait_for(lambda: _thread_says(slack, card, "Replied publicly by <@U0AGENT>"), timeout_s=5)
    statuses = await brand_posts(mastodon)
    assert len(statuses) == 1
    status = statuses[0]
    assert status["plain"].startswith("@alice Sorry about that!")
    assert str(status["in_reply_to_id"]) == str(latest["id"]) and status["visibility"] == "unlisted"
    assert str(status["url"]) in posted

    reply = await one_reply(daemon)
    assert (reply.author_slack_id, reply.state, reply.mastodon_status_id) == (AGENT, "published", str(status["id"]))
    assert reply.text == "@alice Sorry about that! We are looking into order 1234 now."
    stored = (await rows(daemon, Ticket))[0]
    assert stored.first_response_at is not None and reply.published_at is not None
    assert stored.first_response_at >= reply.created_at
    assert not ephemerals_to(slack, AGENT)


async def test_too_long_or_empty_reply_stays_in_the_modal(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=AGENTS))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    view = await open_modal(slack, card, AGENT, ticket)
    # 494 characters fit alone, not with "@alice " in front.
    ack = await submit(slack, AGENT, view, "a" * 494)
    assert ack["payload"]["response_action"] == "errors"
    assert "1 characters too long" in ack["payload"]["errors"][TEXT_BLOCK]
    ack = await submit(slack, AGENT, view, "  @alice  ")
    assert ack["payload"]["errors"][TEXT_BLOCK] == "Write the reply first."
    await asyncio.sleep(0.3)
    assert await brand_posts(mastodon) == [] and await rows(daemon, Reply) == []


async def test_mastodon_failure_is_told_with_the_text(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=AGENTS))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    view = await open_modal(slack, card, AGENT, ticket)
    with mastodon.fault(path="/api/v1/statuses", methods=["POST"], status=500):
        await submit(slack, AGENT, view, "We refunded your order, sorry for the wait")
        told = await slack.wait_for(lambda: ephemerals_to(slack, AGENT), timeout_s=5)
    assert "was not posted" in told[0] and "We refunded your order, sorry for the wait" in told[0]
    assert slack.ephemerals[-1]["channel"] == "C0SUPPORT"
    reply = await one_reply(daemon)
    assert reply.state == "failed" and reply.error and "refunded your order" in reply.text
    assert await brand_posts(mastodon) == []
    assert (await rows(daemon, Ticket))[0].first_response_at is None


async def test_agent_who_may_not_reply_is_refused(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=AGENTS))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    await click_reply(slack, card, OUTSIDER, ticket)
    told = await slack.wait_for(lambda: ephemerals_to(slack, OUTSIDER))
    assert "can't reply publicly" in told[0] and "slack.repliers" in told[0]
    assert slack.views == []

    # Nor can a modal submission made up without the button: the submit checks again.
    metadata = json.dumps({"ticket_id": ticket.id, "acct": "alice", "channel": "C0SUPPORT"})
    values = {
        TEXT_BLOCK: {TEXT_ACTION: {"value": "hello from nobody"}},
        VISIBILITY_BLOCK: {VISIBILITY_ACTION: {"selected_option": {"value": "public"}}},
    }
    await slack.send_envelope("interactive", slack.view_submission_payload(OUTSIDER, "reply_modal", metadata, values))
    await slack.wait_for(lambda: len(ephemerals_to(slack, OUTSIDER)) == 2)
    assert "not allowed to reply publicly" in ephemerals_to(slack, OUTSIDER)[1]
    assert await brand_posts(mastodon) == [] and await rows(daemon, Reply) == []


async def test_repliers_can_be_user_groups(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    slack.usergroups = {"S0AGENTS": [AGENT]}
    # S0GONE does not exist (no_such_subteam): it grants nobody anything.
    daemon = await start_daemon(make_config(slack={"repliers": ["S0GONE", "S0AGENTS"]}))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    view = await open_modal(slack, card, AGENT, ticket)
    await click_reply(slack, card, OUTSIDER, ticket)
    await slack.wait_for(lambda: ephemerals_to(slack, OUTSIDER))
    assert len(slack.views) == 1
    await submit(slack, AGENT, view, "Thanks for your patience")
    await slack.wait_for(lambda: _thread_says(slack, card, "Replied publicly by <@U0AGENT>"), timeout_s=5)


async def approval_request(
    daemon: Daemon, mastodon: MockServer, slack: FakeSlack, text: str = "We are so sorry, a refund is on its way"
) -> tuple[dict[str, Any], Reply]:
    """NEWBIE writes a reply that needs approval; returns the approval message and the waiting reply."""
    card, ticket = await new_ticket(daemon, mastodon, slack)
    view = await open_modal(slack, card, NEWBIE, ticket)
    await submit(slack, NEWBIE, view, text)
    await slack.wait_for(lambda: slack.messages("C0APPROVE") and ephemerals_to(slack, NEWBIE))
    assert "sent for approval to <#C0APPROVE>" in ephemerals_to(slack, NEWBIE)[0]
    return slack.messages("C0APPROVE")[0], await one_reply(daemon)


async def decide(slack: FakeSlack, message: dict[str, Any], user: str, action_id: str, reply: Reply) -> None:
    payload = slack.block_actions_payload(user, action_id, str(reply.id), "C0APPROVE", message["ts"])
    await slack.send_envelope("interactive", payload)


def approval_now(slack: FakeSlack, message: dict[str, Any]) -> str:
    edits = [u for u in slack.updates if u["ts"] == message["ts"]]
    return str(edits[-1]["blocks"]) if edits else ""


async def test_reply_needing_approval_is_posted_on_approve(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=APPROVAL))
    message, reply = await approval_request(daemon, mastodon, slack)
    assert "a refund is on its way" in str(message["blocks"]) and reply.state == "pending_approval"
    await asyncio.sleep(0.2)
    assert await brand_posts(mastodon) == []

    # Someone who needs approval themselves cannot approve.
    await decide(slack, message, NEWBIE, "reply_approve", reply)
    await slack.wait_for(lambda: len(ephemerals_to(slack, NEWBIE)) == 2)
    assert "Only approvers" in ephemerals_to(slack, NEWBIE)[1]

    await decide(slack, message, BOSS, "reply_approve", reply)
    decided = await slack.wait_for(lambda: approval_now(slack, message))
    statuses = await brand_posts(mastodon)
    assert len(statuses) == 1 and statuses[0]["plain"] == "@alice We are so sorry, a refund is on its way"
    assert "Approved by <@U0BOSS>" in decided and str(statuses[0]["url"]) in decided
    assert "reply_approve" not in decided  # no buttons left
    reply = await one_reply(daemon)
    assert (reply.author_slack_id, reply.approver_slack_id, reply.state) == (NEWBIE, BOSS, "published")
    assert reply.decided_at is not None and reply.mastodon_status_id == str(statuses[0]["id"])
    card = slack.messages("C0SUPPORT")[0]
    await slack.wait_for(lambda: _thread_says(slack, card, "<@U0NEWBIE> (approved by <@U0BOSS>)"), timeout_s=5)


async def test_rejected_reply_is_not_posted_and_the_author_is_told(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=APPROVAL))
    message, reply = await approval_request(daemon, mastodon, slack)
    await decide(slack, message, BOSS, "reply_reject", reply)
    await slack.wait_for(lambda: len(ephemerals_to(slack, NEWBIE)) == 2)
    told = ephemerals_to(slack, NEWBIE)[1]
    assert "<@U0BOSS> rejected your reply" in told and "a refund is on its way" in told
    assert "Rejected by <@U0BOSS>" in approval_now(slack, message)
    reply = await one_reply(daemon)
    assert (reply.state, reply.approver_slack_id) == ("rejected", BOSS) and reply.decided_at is not None
    assert ("U0BOSS", "reply_rejected") in [(e.actor, e.action) for e in await rows(daemon, TicketEvent)]

    # A late Approve finds it decided.
    await decide(slack, message, BOSS2, "reply_approve", reply)
    await slack.wait_for(lambda: ephemerals_to(slack, BOSS2))
    assert "already rejected by <@U0BOSS>" in ephemerals_to(slack, BOSS2)[0]
    assert await brand_posts(mastodon) == []


async def test_two_approvers_at_once_publish_once(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=APPROVAL))
    message, reply = await approval_request(daemon, mastodon, slack)
    await asyncio.gather(
        decide(slack, message, BOSS, "reply_approve", reply), decide(slack, message, BOSS2, "reply_approve", reply)
    )
    card = slack.messages("C0SUPPORT")[0]
    await slack.wait_for(lambda: _thread_says(slack, card, "Replied publicly"), timeout_s=5)
    await asyncio.sleep(0.5)  # time for a second publish to show, if there were one
    assert sum("Replied publicly" in m["text"] for m in slack.thread("C0SUPPORT", card["ts"])) == 1
    assert [e.action for e in await rows(daemon, TicketEvent)].count("replied") == 1
    assert len(await brand_posts(mastodon)) == 1
    winner = (await one_reply(daemon)).approver_slack_id
    assert winner is not None
    loser = BOSS2 if winner == BOSS else BOSS
    told = await slack.wait_for(lambda: ephemerals_to(slack, loser))
    assert "already approved by" in told[0] and not ephemerals_to(slack, winner)


async def test_approver_edits_then_posts(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=APPROVAL))
    message, reply = await approval_request(daemon, mastodon, slack, text="ur refund is coming lol")
    # The author's Reply modal is already in slack.views: wait for the approver's editor, not any view.
    before = len(slack.views)
    await decide(slack, message, BOSS, "reply_edit", reply)
    await slack.wait_for(lambda: len(slack.views) > before)
    view = slack.views[-1]["view"]
    assert view["callback_id"] == "reply_edit_modal"
    editor = next(b for b in view["blocks"] if b.get("block_id") == TEXT_BLOCK)
    assert editor["element"]["initial_value"] == "@alice ur refund is coming lol"

    values = {TEXT_BLOCK: {TEXT_ACTION: {"value": "@alice Your refund is on its way. Sorry for the trouble."}}}
    ack = await slack.send_envelope(
        "interactive", slack.view_submission_payload(BOSS, "reply_edit_modal", view["private_metadata"], values)
    )
    assert "payload" not in ack
    await slack.wait_for(lambda: "Approved by <@U0BOSS>" in approval_now(slack, message))
    statuses = await brand_posts(mastodon)
    assert [s["plain"] for s in statuses] == ["@alice Your refund is on its way. Sorry for the trouble."]
    reply = await one_reply(daemon)
    assert (reply.author_slack_id, reply.approver_slack_id) == (NEWBIE, BOSS)
    assert reply.text == "@alice Your refund is on its way. Sorry for the trouble."
    assert ("U0BOSS", "reply_edited") in [(e.actor, e.action) for e in await rows(daemon, TicketEvent)]


def _thread_says(slack: FakeSlack, card: dict[str, Any], words: str) -> str:
    for message in slack.thread("C0SUPPORT", card["ts"]):
        if words in str(message.get("blocks")):
            return str(message["blocks"])
    return ""


async def _mentions(daemon: Daemon, count: int) -> bool:
    return len(await rows(daemon, Mention)) == count
