"""The card's SLA badge at each stage, end to end: the daemon against mastodon-mock and the strict fake Slack.

A ticket's clock is moved back in the database once it is stored, to the stage a test wants; the timers' job is
then run directly (daemon.timers.reconcile()) instead of waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from mastodon_mock.config import DatabaseConfig, MastodonMockConfig
from mastodon_mock.testing.server import MockServer
from sqlmodel import col, select

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import SlaClock, Ticket
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows
from tests.test_slack_actions import ALICE, click, current_card
from tests.test_slack_reply import AGENT, AGENTS, open_modal, submit

ONCALL, ESCALATION = "S0ONCALL", "C0ESCALATE"
SLA: dict[str, Any] = {
    "policies": [{"name": "standard", "first_response": "1h"}],
    "oncall_group": ONCALL,
    "escalation_channel": ESCALATION,
}


@pytest.fixture
def mastodon_mock_config(mastodon_mock_config: MastodonMockConfig, tmp_path: Path) -> MastodonMockConfig:
    """mastodon-mock on a database file, so a post's time can be moved back."""
    database = DatabaseConfig(path=str(tmp_path / "mastodon-mock.sqlite"))
    return mastodon_mock_config.model_copy(update={"database": database})


@pytest.fixture
def desk_slack(slack: FakeSlack) -> FakeSlack:
    """The fake workspace with the escalation channel, the on-call group, and card links to slack.com."""
    slack.add_channel("escalations", channel_id=ESCALATION)
    slack.usergroups[ONCALL] = ["U0ONCALL"]
    slack.link_hosts.add("slack.com")
    return slack


def status_of(message: dict[str, Any]) -> str:
    """The card's status line (assignee, SLA badge, ...)."""
    return next(str(b["elements"]) for b in message["blocks"] if str(b.get("block_id", "")).endswith("-status"))


async def aged_ticket(
    daemon: Daemon, mastodon: MockServer, slack: FakeSlack, who: str, age: timedelta
) -> tuple[dict[str, Any], Ticket]:
    """A complaint whose clock started `age` ago: its card once in Slack, and its ticket.

    The clock is moved back in the database once the ticket is stored (a backdated post could be read off the
    stream before it was backdated): its start, instants and the ticket's times, all by the same amount.
    """
    before = len(slack.messages("C0SUPPORT"))
    await post(mastodon, who, COMPLAINT)
    cards = await slack.wait_for(lambda: slack.messages("C0SUPPORT")[before:], timeout_s=15)

    async def recorded() -> bool:  # the card's ts is written after Slack answered the post
        return any(t.slack_ts == cards[0]["ts"] for t in await rows(daemon, Ticket))

    await eventually(recorded, what="the card recorded on its ticket")
    [ticket] = [t for t in await rows(daemon, Ticket) if t.slack_ts == cards[0]["ts"]]
    assert daemon.context is not None and ticket.id is not None
    async with transaction(daemon.context.sessions) as session:
        for clock in await session.exec(select(SlaClock).where(col(SlaClock.ticket_id) == ticket.id)):
            clock.started_at -= age
            clock.due_at = clock.due_at - age if clock.due_at else None
            clock.warn_at = clock.warn_at - age if clock.warn_at else None
            session.add(clock)
        stored = await session.get(Ticket, ticket.id)
        assert stored is not None and stored.first_response_due_at is not None
        stored.posted_at -= age
        stored.first_response_due_at -= age
        session.add(stored)
    return cards[0], ticket


async def test_the_badge_follows_the_clock_on_track_at_risk_breached_and_met(
    mastodon: MockServer,
    desk_slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Callable[[Config], Any],
) -> None:
    slack = desk_slack
    daemon: Daemon = await start_daemon(make_config(sla=SLA, slack=AGENTS))
    await slack.wait_connected(timeout_s=5)
    assert daemon.timers is not None

    fresh, _ = await aged_ticket(daemon, mastodon, slack, "alice", timedelta(minutes=1))
    assert "🟢 SLA on track: First response due" in status_of(fresh) and "left of 1h" in status_of(fresh)

    # Fifty minutes old: the warning is due. It goes into the thread, to the on-call group, and the card turns.
    risky, risky_ticket = await aged_ticket(daemon, mastodon, slack, "bob", timedelta(minutes=50))
    await daemon.timers.reconcile()
    warning = await slack.wait_for(lambda: slack.thread("C0SUPPORT", risky["ts"]), timeout_s=10)
    assert warning[-1]["text"].startswith(f"<!subteam^{ONCALL}>") and "left of 1h" in warning[-1]["text"]
    await slack.wait_for(lambda: "🟠 SLA at risk" in status_of(current_card(slack, risky)), timeout_s=10)

    # Seventy minutes old: breached. The escalation channel hears of it, with a link to the card.
    late, late_ticket = await aged_ticket(daemon, mastodon, slack, "carol", timedelta(minutes=70))
    await daemon.timers.reconcile()
    [alert] = await slack.wait_for(lambda: slack.messages(ESCALATION), timeout_s=10)
    link = f"https://slack.com/archives/C0SUPPORT/p{late['ts'].replace('.', '')}"
    assert f"Ticket #{late_ticket.id} in <#C0SUPPORT>" in alert["text"] and link in alert["text"]
    await slack.wait_for(lambda: "🔴 SLA breached" in status_of(current_card(slack, late)), timeout_s=10)
    assert "(overdue)" in status_of(current_card(slack, late))

    # Answered: the late one was breached by ten minutes, the one at risk met its target.
    for card, ticket in ((late, late_ticket), (risky, risky_ticket)):
        view = await open_modal(slack, card, AGENT, ticket)
        await submit(slack, AGENT, view, "Sorry about that, we are on it.")
    await slack.wait_for(lambda: "SLA breached by 10m" in status_of(current_card(slack, late)), timeout_s=15)
    await slack.wait_for(lambda: "✅ SLA met" in status_of(current_card(slack, risky)), timeout_s=15)
    # Nothing more for them, however often the timers look.
    await daemon.timers.reconcile()
    assert len(slack.messages(ESCALATION)) == 1


async def test_the_badge_is_paused_while_waiting_on_the_customer(
    mastodon: MockServer,
    desk_slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Callable[[Config], Any],
) -> None:
    slack = desk_slack
    daemon: Daemon = await start_daemon(make_config(sla=SLA))
    await slack.wait_connected(timeout_s=5)
    card, ticket = await aged_ticket(daemon, mastodon, slack, "alice", timedelta(minutes=1))
    await click(slack, card, ALICE, "ticket_waiting", str(ticket.id))
    await slack.wait_for(lambda: "SLA paused" in status_of(current_card(slack, card)), timeout_s=10)
    assert "⏸ SLA paused: first response clock stopped while waiting on the customer" in status_of(
        current_card(slack, card)
    )
