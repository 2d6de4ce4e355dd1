"""In the default notes mode a thread message never reaches Mastodon, even from someone allowed to reply publicly.

test_slack_thread's notes-mode test writes as an agent who may not reply at all, so a publish would be refused
for that reason alone; here the author passes the permission check, listed by name or through a user group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer
from slack_sdk.web.async_client import AsyncWebClient

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.slack.permissions import Permissions
from mentiondesk.storage.models import TicketEvent
from tests.fakeslack import FakeSlack
from tests.test_e2e import rows
from tests.test_slack_actions import ALICE
from tests.test_slack_thread import new_ticket, note_count_is, notes, write

Start = Callable[[Config], Awaitable[Daemon]]
AGENTS = "S0AGENTS"


def _brand_statuses(mastodon: MockServer) -> list[dict[str, Any]]:
    """Everything the brand account has posted (blocking; call through asyncio.to_thread)."""
    brand = mastodon.client("brand")
    return list(brand.account_statuses(brand.me()["id"]))


@pytest.mark.parametrize("granted", ["listed", "group"])
async def test_a_repliers_thread_message_stays_an_internal_note(
    granted: str, mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    if granted == "group":
        slack.usergroups = {AGENTS: [ALICE]}
        repliers = [AGENTS]
    else:
        repliers = [ALICE]
    config = make_config(slack={"repliers": repliers})
    assert config.settings.slack.thread_replies == "notes"  # the default, left unset as most installs leave it
    # The premise: Alice passes the very check that would let her publish, so nothing but the mode stops her.
    web = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
    assert await Permissions(config.settings.slack, web).can_reply(ALICE)

    daemon = await start_daemon(config)
    _, card = await new_ticket(daemon, mastodon, slack)
    await write(slack, ALICE, "Refund approved, I will tell them once finance confirms", card["ts"])
    await note_count_is(daemon, 1)
    note = (await notes(daemon))[0]
    assert (note.author_slack_id, note.text) == (ALICE, "Refund approved, I will tell them once finance confirms")
    assert ("note", f"note {note.id}") in [(e.action, e.detail) for e in await rows(daemon, TicketEvent)]

    # Stopping waits for every Slack listener already running, so a publish started by this message has
    # finished (or never began) by the time Mastodon is asked.
    await daemon.stop()
    assert await asyncio.to_thread(_brand_statuses, mastodon) == []
    assert not any("Replied publicly" in m["text"] for m in slack.thread("C0SUPPORT", card["ts"]))
    assert slack.ephemerals == []  # no "Send this publicly?" either: that is confirm mode
