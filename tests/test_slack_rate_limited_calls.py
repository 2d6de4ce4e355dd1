"""Slack calls made while someone waits, outside the outbox, wait out a 429 as Slack asks instead of giving up.

Slack answers 429 with Retry-After when a limit is reached: one message a second per channel for
chat.postMessage, Tier 3 (about 50 a minute) for chat.update, Tier 4 for ephemerals and views. The outbox's
sender retries on its own; these are the calls the listeners make directly: the approval request, the
decision shown on it, what an agent is told privately, and the Reply modal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer
from slack_sdk.errors import SlackApiError
from slack_sdk.web.slack_response import SlackResponse

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.retry import wait_out_slack_rate_limit
from mentiondesk.bot.slack.reply_modal import TEXT_ACTION, TEXT_BLOCK, VISIBILITY_ACTION, VISIBILITY_BLOCK
from mentiondesk.storage.models import Reply, Ticket
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows

Start = Callable[[Config], Awaitable[Daemon]]
AGENT, BOSS, OUTSIDER = "U0AGENT", "U0BOSS", "U0OUTSIDER"
APPROVAL = {"repliers": [AGENT, BOSS], "needs_approval": [AGENT], "approval_channel": "C0APPROVE"}


async def new_ticket(daemon: Daemon, mastodon: MockServer, slack: FakeSlack) -> tuple[dict[str, Any], Ticket]:
    await post(mastodon, "alice", COMPLAINT)
    [card] = await slack.wait_for(lambda: slack.messages("C0SUPPORT"), timeout_s=10)
    await slack.wait_connected(timeout_s=5)
    [ticket] = await rows(daemon, Ticket)
    return card, ticket


async def click_reply(slack: FakeSlack, card: dict[str, Any], user: str, ticket: Ticket) -> None:
    payload = slack.block_actions_payload(user, "ticket_reply", str(ticket.id), "C0SUPPORT", card["ts"])
    await slack.send_envelope("interactive", payload)


async def submit_reply(slack: FakeSlack, user: str, view: dict[str, Any], text: str) -> None:
    values = {
        TEXT_BLOCK: {TEXT_ACTION: {"type": "plain_text_input", "value": text}},
        VISIBILITY_BLOCK: {VISIBILITY_ACTION: {"type": "static_select", "selected_option": {"value": "public"}}},
    }
    payload = slack.view_submission_payload(user, view["callback_id"], view["private_metadata"], values)
    await slack.send_envelope("interactive", payload)


def told(slack: FakeSlack, user: str) -> list[str]:
    return [str(e["text"]) for e in slack.ephemerals if e["user"] == user]


async def test_approval_request_is_posted_once_slack_lets_it(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=APPROVAL))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    await click_reply(slack, card, AGENT, ticket)
    view = (await slack.wait_for(lambda: slack.views))[0]["view"]

    slack.rate_limit_next("chat.postMessage", retry_after_s=1)
    await submit_reply(slack, AGENT, view, "We are so sorry, a refund is on its way")
    await slack.wait_for(lambda: told(slack, AGENT), timeout_s=5)
    assert "sent for approval to <#C0APPROVE>" in told(slack, AGENT)[0]
    [request] = slack.messages("C0APPROVE")
    assert "a refund is on its way" in str(request["blocks"])
    [reply] = await rows(daemon, Reply)
    assert reply.state == "pending_approval" and reply.approval_ts == request["ts"]


async def test_decision_is_shown_on_the_request_once_slack_lets_it(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=APPROVAL))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    await click_reply(slack, card, AGENT, ticket)
    view = (await slack.wait_for(lambda: slack.views))[0]["view"]
    await submit_reply(slack, AGENT, view, "We are so sorry, a refund is on its way")
    [request] = await slack.wait_for(lambda: slack.messages("C0APPROVE"), timeout_s=5)

    slack.rate_limit_next("chat.update", retry_after_s=1)
    reply_id = request["blocks"][-1]["elements"][0]["value"]
    reject = slack.block_actions_payload(BOSS, "reply_reject", reply_id, "C0APPROVE", request["ts"])
    await slack.send_envelope("interactive", reject)
    # Its buttons make way for the decision, so nobody else decides it again.
    [decided] = await slack.wait_for(lambda: [u for u in slack.updates if u["ts"] == request["ts"]], timeout_s=5)
    assert "Rejected by <@U0BOSS>" in str(decided["blocks"]) and "reply_approve" not in str(decided["blocks"])


async def test_an_agent_is_told_once_slack_lets_it(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack={"repliers": [AGENT]}))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    slack.rate_limit_next("chat.postEphemeral", retry_after_s=1)
    await click_reply(slack, card, OUTSIDER, ticket)
    refusal = await slack.wait_for(lambda: told(slack, OUTSIDER), timeout_s=5)
    assert "can't reply publicly" in refusal[0]


async def test_reply_modal_opens_once_slack_lets_it(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack={"repliers": [AGENT]}))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    # Within the trigger_id's three seconds, one second's wait still opens the modal.
    slack.rate_limit_next("views.open", retry_after_s=1)
    await click_reply(slack, card, AGENT, ticket)
    [opened] = await slack.wait_for(lambda: slack.views, timeout_s=5)
    assert opened["view"]["callback_id"] == "reply_modal"


def slack_error(error: str, *, status: int = 200, headers: dict[str, str] | None = None) -> SlackApiError:
    response = SlackResponse(
        client=None,
        http_verb="POST",
        api_url="https://slack.com/api/views.open",
        req_args={},
        data={"ok": False, "error": error},
        headers=headers or {},
        status_code=status,
    )
    return SlackApiError(error, response)


def rate_limited(retry_after: str) -> SlackApiError:
    return slack_error("ratelimited", status=429, headers={"Retry-After": retry_after})


class Calls:
    """A Slack call that fails with the given errors, in turn, then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.made = 0

    async def __call__(self) -> str:
        self.made += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_only_rate_limits_are_waited_out_and_not_for_ever() -> None:
    # Slack's Retry-After of 0 s keeps the test quick; the waits themselves are the daemon tests' above.
    call = Calls(rate_limited("0"), rate_limited("0"))
    assert await wait_out_slack_rate_limit(call, what="x") == "ok" and call.made == 3

    call = Calls(rate_limited("0"), rate_limited("0"), rate_limited("0"))
    with pytest.raises(SlackApiError):
        await wait_out_slack_rate_limit(call, what="x", attempts=3)
    assert call.made == 3

    # A wait longer than the caller can use (a modal's trigger_id expiring) is not waited.
    call = Calls(rate_limited("5"))
    with pytest.raises(SlackApiError):
        await wait_out_slack_rate_limit(call, what="x", max_wait_s=2.0)
    assert call.made == 1

    # Any other error is Slack's answer, not a request for patience.
    call = Calls(slack_error("channel_not_found"))
    with pytest.raises(SlackApiError):
        await wait_out_slack_rate_limit(call, what="x")
    assert call.made == 1
