"""A customer's markup never reaches Slack live: not on the card, nor in the thread, a modal or an agent's answer.

The customer's post and display name carry every kind of Slack markup. The real daemon takes them from the
Mastodon server to Slack; the fake Slack records any mention or link the product did not add on purpose
(markup_violations, which the slack fixture also fails on), and each place the text shows must have it escaped:
as the customer typed it, and inert.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from mastodon_mock.config import MastodonMockConfig, SeedAccount, SeedConfig
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.slack.reply_modal import POST_BLOCK, TEXT_ACTION, TEXT_BLOCK, VISIBILITY_ACTION, VISIBILITY_BLOCK
from mentiondesk.storage.models import Mention, Ticket
from tests.conftest import SEED, eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows

Start = Callable[[Config], Awaitable[Daemon]]
AGENT, BOSS = "U0AGENT", "U0BOSS"

# Every kind of markup a customer could try, and a typed entity, which must show as typed.
HOSTILE = "<!channel> <!here> <@U0AGENT> <#C0SUPPORT> <https://evil.example|click> &lt;"
# The same, as Slack must receive it to show it as typed: &, < and > escaped (so &lt; becomes &amp;lt;).
ESCAPED = (
    "&lt;!channel&gt; &lt;!here&gt; &lt;@U0AGENT&gt; &lt;#C0SUPPORT&gt; &lt;https://evil.example|click&gt; &amp;lt;"
)
EVE_NAME = f"Eve {HOSTILE}"
EVE_NAME_ESCAPED = f"Eve {ESCAPED}"


@pytest.fixture
def mastodon_mock_config(mastodon_mock_config: MastodonMockConfig) -> MastodonMockConfig:
    """The shared server, with one more customer whose display name is all markup."""
    eve = SeedAccount(username="eve", display_name=EVE_NAME, access_token="eve_token")
    return mastodon_mock_config.model_copy(update={"seed": SeedConfig(accounts=[*SEED.accounts, eve])})


def block_text(message: dict[str, Any], block_id: str) -> str:
    block = next(b for b in message["blocks"] if b.get("block_id") == block_id)
    return str(block["text"]["text"])


def section_texts(blocks: list[dict[str, Any]] | None) -> str:
    """Every mrkdwn and plain text in the blocks, one per line."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("text"), str):
                found.append(value["text"])
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    walk(blocks)
    return "\n".join(found)


async def _mentions(daemon: Daemon, count: int) -> bool:
    return len(await rows(daemon, Mention)) == count


async def test_hostile_post_and_name_are_escaped_everywhere_slack_shows_them(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    # The refresh sweep finds the customer's edit quickly.
    daemon = await start_daemon(make_config(slack={"repliers": [AGENT]}, mastodon={"refresh_interval_s": 0.5}))

    # The card: the customer's display name and post.
    first = await post(mastodon, "eve", f"{COMPLAINT} {HOSTILE}")
    [card] = await slack.wait_for(lambda: slack.messages("C0SUPPORT"), timeout_s=10)
    [ticket] = await rows(daemon, Ticket)
    assert ESCAPED in block_text(card, f"ticket-{ticket.id}-text")
    # The name is the label of the one link there, to the customer's profile: nothing in it may end the link.
    author = block_text(card, f"ticket-{ticket.id}-author")
    assert author.startswith(f"*<{mastodon.config.base_url}/@eve|Eve &lt;!channel")
    assert author.endswith("&amp;lt; (@eve)>* wrote:")
    assert author.count("<") == author.count(">") == 1
    assert "&lt;!channel&gt;" in card["text"]  # the notification text, too

    # A follow-up in the card's thread.
    await post(mastodon, "eve", f"@brand and another thing {HOSTILE}", in_reply_to_id=first["id"])
    await eventually(lambda: _mentions(daemon, 2), what="the follow-up joins the ticket")
    [followup] = await slack.wait_for(lambda: slack.thread("C0SUPPORT", card["ts"]), timeout_s=10)
    assert f"and another thing {ESCAPED}" in section_texts(followup["blocks"])

    # The card redrawn (chat.update) once the customer edits the post, with the edit told in the thread.
    await asyncio.to_thread(mastodon.client("eve").status_update, first["id"], f"{COMPLAINT} edited {HOSTILE}")
    await slack.wait_for(lambda: any(f"edited {ESCAPED}" in section_texts(u.get("blocks")) for u in slack.updates))
    await slack.wait_for(lambda: len(slack.thread("C0SUPPORT", card["ts"])) == 2, timeout_s=10)
    assert f"edited {ESCAPED}" in section_texts(slack.thread("C0SUPPORT", card["ts"])[1]["blocks"])

    # The Reply modal quotes the customer's latest post, and keeps quoting it as the agent types.
    await slack.wait_connected(timeout_s=5)
    click = slack.block_actions_payload(AGENT, "ticket_reply", str(ticket.id), "C0SUPPORT", card["ts"])
    await slack.send_envelope("interactive", click)
    opened = (await slack.wait_for(lambda: slack.views))[0]
    quoted = next(b for b in opened["view"]["blocks"] if b.get("block_id") == POST_BLOCK)
    assert f"and another thing {ESCAPED}" in quoted["text"]["text"]
    typing = slack.view_block_actions_payload(AGENT, opened["id"], TEXT_ACTION, "We are on it")
    await slack.send_envelope("interactive", typing)
    await slack.wait_for(lambda: slack.views[-1]["method"] == "views.update")
    assert ESCAPED in section_texts(slack.views[-1]["view"]["blocks"])

    # The agent's private answer to /mentiondesk show names the customer.
    command = slack.slash_command_payload(AGENT, "/mentiondesk", f"show {ticket.id}", "C0SUPPORT")
    answer = (await slack.send_envelope("slash_commands", command))["payload"]
    assert answer["response_type"] == "ephemeral"
    assert f"Customer: {EVE_NAME_ESCAPED} (@eve)" in section_texts(answer["blocks"])

    assert slack.markup_violations == []


async def test_customer_text_an_agent_quotes_stays_escaped_through_approval(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    approval = {"repliers": [AGENT, BOSS], "needs_approval": [AGENT], "approval_channel": "C0APPROVE"}
    daemon = await start_daemon(make_config(slack=approval))
    await post(mastodon, "eve", COMPLAINT)
    [card] = await slack.wait_for(lambda: slack.messages("C0SUPPORT"), timeout_s=10)
    [ticket] = await rows(daemon, Ticket)
    await slack.wait_connected(timeout_s=5)
    click = slack.block_actions_payload(AGENT, "ticket_reply", str(ticket.id), "C0SUPPORT", card["ts"])
    await slack.send_envelope("interactive", click)
    view = (await slack.wait_for(lambda: slack.views))[0]["view"]

    # The agent quotes the customer in a reply that needs approval: the approvers see it as written.
    values = {
        TEXT_BLOCK: {TEXT_ACTION: {"type": "plain_text_input", "value": f"You wrote {HOSTILE}; sorry!"}},
        VISIBILITY_BLOCK: {VISIBILITY_ACTION: {"type": "static_select", "selected_option": {"value": "public"}}},
    }
    submission = slack.view_submission_payload(AGENT, view["callback_id"], view["private_metadata"], values)
    await slack.send_envelope("interactive", submission)
    [request] = await slack.wait_for(lambda: slack.messages("C0APPROVE"))
    assert f"You wrote {ESCAPED}; sorry!" in section_texts(request["blocks"])

    # Rejected: the request is redrawn (chat.update) and the author gets the text back (chat.postEphemeral).
    reply_id = request["blocks"][-1]["elements"][0]["value"]  # the buttons carry the reply's id
    reject = slack.block_actions_payload(BOSS, "reply_reject", reply_id, "C0APPROVE", request["ts"])
    await slack.send_envelope("interactive", reject)
    [decided] = await slack.wait_for(lambda: [u for u in slack.updates if u["ts"] == request["ts"]])
    assert f"You wrote {ESCAPED}; sorry!" in section_texts(decided["blocks"])
    [told] = await slack.wait_for(lambda: [e for e in slack.ephemerals if "rejected your reply" in e["text"]])
    assert told["user"] == AGENT and f"You wrote {ESCAPED}; sorry!" in told["text"]

    assert slack.markup_violations == []
