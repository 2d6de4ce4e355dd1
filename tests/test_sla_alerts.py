"""SLA warnings and escalations: sent once each, across restarts and daemons, never for a stopped or paused clock.

The desk runs in process (tests/test_sla_clocks.py's Desk: the real ingest path and card actions at chosen
instants), and the timers run on a clock the test sets: each test calls the job functions (start, reconcile,
fire) at the instant it wants, so nothing waits. What was "sent" is what the outbox holds for the sender.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.classify.model import ComplaintClassifier
from mentiondesk.bot.sla.alerts import send_alert
from mentiondesk.bot.sla.timers import SlaTimers
from mentiondesk.bot.slack.card_view import render_card
from mentiondesk.handlers import slack_actions
from mentiondesk.storage import sla
from mentiondesk.storage.db import create_engine, session_factory, transaction
from mentiondesk.storage.models import OutboxKind, OutboxState, SlaAlert, SlackOutbox, Ticket
from mentiondesk.storage.ticket_actions import claim
from tests.conftest import postgres_only
from tests.test_sla_clocks import FIRST, STANDARD, T0, Desk, hours

ONCALL, MANAGERS, ESCALATION = "S0ONCALL", "S0MANAGERS", "C0ESCALATE"
ALERTING: dict[str, Any] = {
    # A first response only, so the clock each ticket shows is the one alerted about.
    "policies": [{k: v for k, v in STANDARD.items() if k not in ("resolution", "next_response")}],
    "oncall_group": ONCALL,
    "escalation_channel": ESCALATION,
}
WITH_MANAGERS: dict[str, Any] = {**ALERTING, "manager_group": MANAGERS, "manager_at": 2.0}


class Clock:
    """The timers' "now", set by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def classifier() -> ComplaintClassifier:
    return ComplaintClassifier.load()


@pytest.fixture
async def desk_factory(
    sessions: async_sessionmaker[AsyncSession], classifier: ComplaintClassifier
) -> AsyncIterator[Callable[..., Desk]]:
    made: list[Desk] = []

    def make(**sla: Any) -> Desk:
        made.append(Desk(sessions, classifier, **sla))
        return made[-1]

    yield make
    for desk in made:
        desk.mastodon.close()


@pytest.fixture
async def timers_factory() -> AsyncIterator[Callable[..., SlaTimers]]:
    """Timers, as a daemon's; every one started is stopped at teardown."""
    made: list[SlaTimers] = []

    def make(desk: Desk, clock: Clock, sessions: async_sessionmaker[AsyncSession] | None = None) -> SlaTimers:
        made.append(SlaTimers(sessions or desk.sessions, desk.ctx.sla, now=clock))
        return made[-1]

    yield make
    for timers in made:
        await timers.stop()


async def sent(desk: Desk, kind: str | None = None) -> list[tuple[str, str, str]]:
    """(kind, channel, text) of the alerts queued for Slack, oldest first."""
    async with desk.sessions() as session:
        # A customer's follow-up is a thread message too, with the mention it shows.
        stmt = select(SlackOutbox).where(
            col(SlackOutbox.kind).in_([OutboxKind.FOLLOWUP, OutboxKind.ALERT]), col(SlackOutbox.mention_id).is_(None)
        )
        rows = list(await session.exec(stmt.order_by(col(SlackOutbox.id))))
    return [(r.kind, r.channel, r.text) for r in rows if kind is None or r.kind == kind]


async def refreshes(desk: Desk, ticket_id: int) -> int:
    """Card renders waiting for the ticket: the card's own post, or a refresh of it."""
    async with desk.sessions() as session:
        kinds = [OutboxKind.CARD, OutboxKind.UPDATE]
        stmt = select(func.count()).where(SlackOutbox.ticket_id == ticket_id, col(SlackOutbox.kind).in_(kinds))
        return int((await session.exec(stmt.where(SlackOutbox.state == OutboxState.PENDING))).one())


async def card_text(desk: Desk, ticket_id: int, now: datetime) -> str:
    async with desk.sessions() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        _, blocks = await render_card(session, ticket, now=now)
    return str(blocks)


async def alert_rows(desk: Desk) -> list[tuple[int, str]]:
    async with desk.sessions() as session:
        return [(a.ticket_id, a.level) for a in await session.exec(select(SlaAlert).order_by(col(SlaAlert.id)))]


async def test_the_warning_and_the_breach_go_once_each_across_a_restart(
    desk_factory: Callable[..., Desk], timers_factory: Callable[..., SlaTimers]
) -> None:
    desk = desk_factory(**ALERTING)
    ticket_id = await desk.post("alice", T0)
    clock = Clock(T0 + timedelta(minutes=44))
    timers = timers_factory(desk, clock)
    await timers.start()
    assert await sent(desk) == []
    # The warning (at 45 of 60 minutes) is the one job: the breach is further out than the next reconcile looks.
    assert [job for job, _ in timers.scheduled] == [f"sla-alert-{(T0 + timedelta(minutes=45)).isoformat()}"]

    clock.at = T0 + timedelta(minutes=45)
    assert await timers.fire() == 1
    [(kind, channel, text)] = await sent(desk)
    # In the ticket's thread, to the on-call group: nobody has claimed it.
    assert (kind, channel) == (OutboxKind.FOLLOWUP, "C0SUPPORT")
    assert text.startswith(f"<!subteam^{ONCALL}>") and "first response due" in text and "15m left of 1h" in text
    assert await refreshes(desk, ticket_id) == 1 and "SLA at risk" in await card_text(desk, ticket_id, clock.at)
    assert await timers.fire() == 0

    # A restart: the new timers find the warning sent.
    await timers.stop()
    timers = timers_factory(desk, clock)
    await timers.start()
    assert len(await sent(desk)) == 1

    clock.at = T0 + hours(1)
    assert await timers.reconcile() == 1
    breach = (await sent(desk))[1]
    assert (breach[0], breach[1]) == (OutboxKind.ALERT, ESCALATION)
    assert f"Ticket #{ticket_id} in <#C0SUPPORT>" in breach[2] and "unclaimed" in breach[2]
    assert (await desk.clock(ticket_id, FIRST)).breached
    await timers.stop()
    clock.at = T0 + hours(5)
    await timers_factory(desk, clock).start()
    assert len(await sent(desk)) == 2
    assert await alert_rows(desk) == [(ticket_id, "warning"), (ticket_id, "breach")]


async def test_a_daemon_down_past_the_warning_sends_it_at_start_and_past_the_breach_only_the_breach(
    desk_factory: Callable[..., Desk], timers_factory: Callable[..., SlaTimers]
) -> None:
    desk = desk_factory(**ALERTING)
    warned = await desk.post("alice", T0)
    late = await desk.post("bob", T0 - hours(2))
    async with transaction(desk.sessions) as session:
        assert await claim(session, ticket_id=warned, user="U0ALICE")
    await timers_factory(desk, Clock(T0 + timedelta(minutes=50))).start()

    messages = await sent(desk)
    # Alice's ticket: the warning, to her. Bob's, due long ago: the breach alone (a warning then would be noise).
    assert [(k, c) for k, c, _ in messages] == [(OutboxKind.ALERT, ESCALATION), (OutboxKind.FOLLOWUP, "C0SUPPORT")]
    assert f"Ticket #{late}" in messages[0][2]
    assert messages[1][2].startswith("<@U0ALICE>") and "10m left" in messages[1][2]
    # Bob's warning is recorded all the same, so no later start sends it.
    assert sorted(await alert_rows(desk)) == sorted([(late, "warning"), (late, "breach"), (warned, "warning")])


async def test_the_manager_level_goes_at_twice_the_target(
    desk_factory: Callable[..., Desk], timers_factory: Callable[..., SlaTimers]
) -> None:
    desk = desk_factory(**WITH_MANAGERS)
    ticket_id = await desk.post("alice", T0)
    clock = Clock(T0 + hours(1))
    timers = timers_factory(desk, clock)
    await timers.start()
    assert [k for k, _, _ in await sent(desk)] == [OutboxKind.ALERT]  # the breach (the warning came too late)

    clock.at = T0 + hours(1.99)
    assert await timers.fire() == 0
    clock.at = T0 + hours(2)
    assert await timers.fire() == 1
    kind, channel, text = (await sent(desk))[-1]
    assert (kind, channel) == (OutboxKind.ALERT, ESCALATION)
    assert text.startswith(f"<!subteam^{MANAGERS}>") and f"Ticket #{ticket_id}" in text and "2×" in text
    assert await timers.fire() == 0


async def test_nothing_is_sent_for_a_stopped_or_a_paused_clock(
    desk_factory: Callable[..., Desk], timers_factory: Callable[..., SlaTimers]
) -> None:
    desk = desk_factory(**WITH_MANAGERS)
    answered, waiting, resolved = await desk.post("alice", T0), await desk.post("bob", T0), await desk.post("carol", T0)
    await desk.reply(answered, T0 + timedelta(minutes=30))
    await desk.click(slack_actions.wait_on_customer, waiting, T0 + timedelta(minutes=30))
    await desk.click(slack_actions.resolve, resolved, T0 + timedelta(minutes=30))
    clock = Clock(T0 + hours(3))
    timers = timers_factory(desk, clock)
    await timers.start()
    assert await sent(desk) == [] and await alert_rows(desk) == []

    # Bob answers: his ticket's clock runs again, with the half hour it had left, and its warning comes then.
    await desk.post("bob", T0 + hours(3))
    assert await timers.reconcile() == 0
    clock.at = T0 + hours(3) + timedelta(minutes=15)
    assert await timers.fire() == 1
    assert [(k, t.split()[0]) for k, _, t in await sent(desk)] == [(OutboxKind.FOLLOWUP, f"<!subteam^{ONCALL}>")]
    assert await alert_rows(desk) == [(waiting, "warning")]


async def test_a_clock_that_stops_after_its_job_was_scheduled_gets_nothing(
    desk_factory: Callable[..., Desk], timers_factory: Callable[..., SlaTimers]
) -> None:
    desk = desk_factory(**ALERTING)
    ticket_id = await desk.post("alice", T0)
    clock = Clock(T0 + timedelta(minutes=44))
    timers = timers_factory(desk, clock)
    await timers.start()
    assert len(timers.scheduled) == 1
    await desk.reply(ticket_id, T0 + timedelta(minutes=42))
    clock.at = T0 + hours(1)
    assert await timers.fire() == 0
    assert await sent(desk) == []


@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_two_daemons_on_one_postgres_send_each_alert_once(
    desk_factory: Callable[..., Desk], timers_factory: Callable[..., SlaTimers], db_url: str
) -> None:
    desk = desk_factory(**ALERTING)
    tickets = [await desk.post(name, T0) for name in ("alice", "bob", "carol", "dave")]
    # The other daemon has its own engine: its own connections, as a second process would.
    engine = create_engine(db_url)
    try:
        clock = Clock(T0 + hours(1))
        first, second = timers_factory(desk, clock), timers_factory(desk, clock, session_factory(engine))
        # Both run the timer job for the same clocks at the same moment.
        counts = await asyncio.gather(first.fire(), second.fire(), first.fire(), second.fire())
        assert sum(counts) == len(tickets)  # one breach each (their warnings came too late to be sent)
        breaches = [(k, c) for k, c, _ in await sent(desk)]
        assert breaches == [(OutboxKind.ALERT, ESCALATION)] * len(tickets)
        assert sorted(await alert_rows(desk)) == sorted((t, level) for t in tickets for level in ("breach", "warning"))
    finally:
        await engine.dispose()


async def test_a_ticket_closed_meanwhile_gets_no_alert(
    desk_factory: Callable[..., Desk], timers_factory: Callable[..., SlaTimers]
) -> None:
    desk = desk_factory(**ALERTING)
    ticket_id = await desk.post("alice", T0)
    await desk.click(slack_actions.not_a_complaint, ticket_id, T0 + timedelta(minutes=10))
    await timers_factory(desk, Clock(T0 + hours(4))).start()
    assert await sent(desk) == []
    assert await alert_rows(desk) == []


async def test_an_alert_read_before_its_clock_paused_or_stopped_is_not_sent(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(**ALERTING)
    waiting, answered = await desk.post("alice", T0), await desk.post("bob", T0)
    now = T0 + timedelta(minutes=45)
    # A timer job read the two warnings as due; then, before it sent them, one ticket went on hold and one was answered.
    async with desk.sessions() as session:
        due = await sla.due_alerts(session, until=now)
    assert sorted((a.ticket_id, a.level) for a in due) == [(waiting, "warning"), (answered, "warning")]
    await desk.click(slack_actions.wait_on_customer, waiting, T0 + timedelta(minutes=44))
    await desk.reply(answered, T0 + timedelta(minutes=44))
    for alert in due:
        assert not await send_alert(desk.sessions, desk.ctx.sla, alert, now=now)
    # Rolled back, the alert rows too: Alice's clock, when it runs again, still gets its warning.
    assert await sent(desk) == [] and await alert_rows(desk) == []
