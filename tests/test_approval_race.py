"""An approver who clicks before the approval request's place in Slack is recorded still replaces its buttons.

The request is posted, then its channel and ts are stored; a click in between (a quick approver, a slow
database) used to find no place recorded and leave the buttons up for someone to decide again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mastodon_mock.testing.server import MockServer
from sqlalchemy import update

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import Reply
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import rows
from tests.test_slack_rate_limited_calls import AGENT, APPROVAL, BOSS, click_reply, new_ticket, submit_reply

Start = Callable[[Config], Awaitable[Daemon]]


async def test_a_decision_before_the_request_is_recorded_still_replaces_its_buttons(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(slack=APPROVAL))
    card, ticket = await new_ticket(daemon, mastodon, slack)
    await click_reply(slack, card, AGENT, ticket)
    view = (await slack.wait_for(lambda: slack.views))[0]["view"]
    await submit_reply(slack, AGENT, view, "We are so sorry, a refund is on its way")
    [request] = await slack.wait_for(lambda: slack.messages("C0APPROVE"), timeout_s=10)

    async def recorded() -> bool:
        return all(r.approval_ts is not None for r in await rows(daemon, Reply))

    await eventually(recorded, what="the request's place recorded")
    # As the click finds it when it comes before that record is written.
    assert daemon.context is not None
    async with transaction(daemon.context.sessions) as session:
        await session.exec(update(Reply).values(approval_channel=None, approval_ts=None))  # type: ignore[call-overload]

    reply_id = request["blocks"][-1]["elements"][0]["value"]
    reject = slack.block_actions_payload(BOSS, "reply_reject", reply_id, "C0APPROVE", request["ts"])
    await slack.send_envelope("interactive", reject)
    [decided] = await slack.wait_for(lambda: [u for u in slack.updates if u["ts"] == request["ts"]], timeout_s=10)
    assert "Rejected by <@U0BOSS>" in str(decided["blocks"]) and "reply_approve" not in str(decided["blocks"])
