"""Socket Mode: the connection comes back by itself, and tickets keep coming while Slack is away."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.models import Ticket
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, _count, post, rows
from tests.test_slack_actions import ALICE, click, current_card

Start = Callable[[Config], Awaitable[Daemon]]


async def test_socket_reconnects_after_slack_asks_and_after_a_drop(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    await slack.wait_connected(timeout_s=5)
    await slack.disconnect_clients()  # Slack's "refresh_requested"
    await slack.wait_for(lambda: slack.connections_total >= 2 and slack.connected_count == 1, timeout_s=10)
    await slack.drop_clients()  # a network blip: no goodbye
    await slack.wait_for(lambda: slack.connections_total >= 3 and slack.connected_count == 1, timeout_s=15)

    await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    card = slack.messages("C0SUPPORT")[0]
    await click(slack, card, ALICE, "ticket_claim", str((await rows(daemon, Ticket))[0].id))
    await slack.wait_for(lambda: "Assigned to <@U0ALICE>" in str(current_card(slack, card)["blocks"]))


async def test_tickets_open_while_slack_is_down_and_arrive_after(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    slack.set_down(True)
    daemon = await start_daemon(make_config())  # starts although Slack cannot be reached
    await post(mastodon, "alice", COMPLAINT)
    await eventually(lambda: _count(daemon, Ticket, 1), what="ticket opened with Slack down")
    assert slack.connected_count == 0 and slack.messages() == []

    slack.set_down(False)
    await slack.wait_connected(timeout_s=15)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    card = slack.messages("C0SUPPORT")[0]
    await click(slack, card, ALICE, "ticket_claim", str((await rows(daemon, Ticket))[0].id))
    await slack.wait_for(lambda: "Assigned to <@U0ALICE>" in str(current_card(slack, card)["blocks"]))
