"""SLA clocks: first response, next response and resolution, paused while waiting on the customer or resolved.

Most tests drive the real ingest path (record_mentions, in batches) and the card's actions in process, at instants
they choose: posts carry their own time, actions take theirs, so nothing waits. The last ones run the daemon
against mastodon-mock and the fake Slack, for the wiring a click or a reply goes through.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from mastodon_mock.config import DatabaseConfig, MastodonMockConfig
from mastodon_mock.testing.server import MockServer
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.classify.model import ComplaintClassifier
from mentiondesk.bot.config import Config, Settings, parse_settings
from mentiondesk.bot.context import AppContext
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.events import AccountRef, MentionReceived, MentionsReceived, Post
from mentiondesk.bot.mastodon.client import MastodonClient
from mentiondesk.bot.sla import clocks
from mentiondesk.bot.sla.calendar import ALWAYS_OPEN
from mentiondesk.bot.sla.policy import sla_book
from mentiondesk.handlers import slack_actions
from mentiondesk.handlers.mention import record_mentions
from mentiondesk.storage import sla
from mentiondesk.storage.db import execute, transaction
from mentiondesk.storage.models import (
    OutboxKind,
    OutboxState,
    SlackOutbox,
    SlaClock,
    SlaClockKind,
    SlaPause,
    Ticket,
    TicketEvent,
    TicketState,
)
from mentiondesk.storage.sla import ClockState
from mentiondesk.storage.ticket_actions import record_first_response
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows
from tests.test_sla_due import backdate
from tests.test_slack_actions import ALICE, button_ids, card_for_new_ticket, click, current_card
from tests.test_slack_reply import AGENTS, open_modal, submit
from tests.test_slash_command import ask

FIRST, NEXT, RESOLUTION = SlaClockKind.FIRST_RESPONSE, SlaClockKind.NEXT_RESPONSE, SlaClockKind.RESOLUTION
BRAND = AccountRef(id="1", acct="brand", display_name="Acme Support", url="https://social.example/@brand")
# Nothing listens here: the posts the tests build never make the ingest path ask Mastodon anything.
NO_SERVER = "http://127.0.0.1:9"
AGENT = "U0AGENT"
# A Monday morning, long enough ago that every instant of these tests is in the past.
T0 = datetime(2026, 11, 16, 10, 0, tzinfo=UTC)
STANDARD = {"name": "standard", "first_response": "1h", "next_response": "4h", "resolution": "2d"}
SLA: dict[str, Any] = {"policies": [STANDARD]}
BERLIN = ZoneInfo("Europe/Berlin")
OFFICE: dict[str, Any] = {
    "calendars": [
        {
            "name": "berlin office",
            "timezone": "Europe/Berlin",
            "hours": {day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
        }
    ],
    "policies": [{**STANDARD, "resolution": "16h", "calendar": "berlin office"}],
}


# --- the desk in process ---------------------------------------------------------------------------------------


def settings(**sla: Any) -> Settings:
    """Settings with this [sla] section; the desk in process reads nothing else of them."""
    data = {"mastodon": {"base_url": NO_SERVER}, "slack": {"default_channel": "C0SUPPORT"}, "sla": sla}
    return parse_settings(data, source="test")


@pytest.fixture(scope="module")
def classifier() -> ComplaintClassifier:
    return ComplaintClassifier.load()


class Desk:
    """The real ingest path and the card's actions, over a migrated database, at the instants a test gives."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], classifier: ComplaintClassifier, **sla: Any):
        self.sessions = sessions
        self._ids = itertools.count(1000)
        self.mastodon = MastodonClient(NO_SERVER, "not-a-token")
        self.ctx = AppContext(
            settings=settings(**sla),
            sessions=sessions,
            classifier=classifier,
            mastodon=self.mastodon,
            brand=BRAND,
            wake_outbox=lambda: None,
        )

    def _post(self, who: str, at: datetime, text: str) -> Post:
        status_id = str(next(self._ids))
        account = AccountRef(id=f"9{len(who)}{who}", acct=f"{who}@other.example", display_name=who, url="")
        return Post(
            id=status_id,
            uri=f"https://other.example/users/{who}/statuses/{status_id}",
            url=f"https://other.example/@{who}/{status_id}",
            account=account,
            text=text,
            created_at=at,
            visibility="public",
            language="en",
            in_reply_to_id=None,
            in_reply_to_account_id=None,
            tags=(),
            mentioned_account_ids=(BRAND.id,),
        )

    async def posts(self, *posts: tuple[str, datetime]) -> None:
        """Customers post (who, when), read and stored together as one batch."""
        batch = MentionsReceived(
            mentions=tuple(MentionReceived(self._post(who, at, COMPLAINT), "notification") for who, at in posts)
        )
        await record_mentions(batch, self.ctx)
        assert batch.outcomes == [None] * len(posts)

    async def post(self, who: str, at: datetime) -> int:
        """A customer posts at `at`; returns the ticket it is in (their latest)."""
        await self.posts((who, at))
        async with self.sessions() as session:
            stmt = select(Ticket).where(col(Ticket.customer_acct) == f"{who}@other.example")
            return max(t.id for t in await session.exec(stmt) if t.id is not None)

    async def reply(self, ticket_id: int, at: datetime) -> None:
        """Mastodon accepted a public reply at `at`: what bot/replies.py records then."""
        async with transaction(self.sessions) as session:
            await record_first_response(session, ticket_id=ticket_id, at=at, actor=AGENT)
            await clocks.replied(session, self.ctx.sla, ticket_id, at=at)

    async def click(self, action: Callable[..., Awaitable[bool]], ticket_id: int, at: datetime) -> None:
        """An agent's click on the card (slack_actions.resolve, ...) at `at`."""
        async with transaction(self.sessions) as session:
            assert await action(session, ticket_id, AGENT, self.ctx.sla, at=at)

    async def clocks(self, ticket_id: int) -> list[ClockState]:
        async with self.sessions() as session:
            return await sla.ticket_clocks(session, ticket_id)

    async def clock(self, ticket_id: int, kind: str, seq: int = 0) -> ClockState:
        return next(c for c in await self.clocks(ticket_id) if (c.kind, c.seq) == (kind, seq))

    async def current(self, ticket_id: int) -> ClockState | None:
        async with self.sessions() as session:
            return await sla.current_clock(session, ticket_id)

    async def ticket(self, ticket_id: int) -> Ticket:
        async with self.sessions() as session:
            ticket = await session.get(Ticket, ticket_id)
            assert ticket is not None
            return ticket

    async def pauses(self, ticket_id: int) -> list[tuple[datetime, datetime | None, str]]:
        async with self.sessions() as session:
            stmt = select(SlaPause).where(SlaPause.ticket_id == ticket_id).order_by(col(SlaPause.id))
            return [(p.started_at, p.ended_at, p.reason) for p in await session.exec(stmt)]


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


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


# --- each clock ------------------------------------------------------------------------------------------------


async def test_a_new_ticket_starts_its_clocks_at_the_customers_post(desk_factory: Callable[..., Desk]) -> None:
    desk = desk_factory(**SLA)
    # Read long after it was written (today, about T0): the clocks count from the post, as the customer does.
    ticket_id = await desk.post("alice", T0)
    first, resolution = await desk.clocks(ticket_id)
    assert (first.kind, first.seq, resolution.kind) == (FIRST, 0, RESOLUTION)
    assert first.started_at == resolution.started_at == T0
    assert (first.policy, first.calendar, first.target) == ("standard", ALWAYS_OPEN.name, hours(1))
    assert (first.due_at, first.warn_at, first.escalate_at) == (T0 + hours(1), T0 + hours(0.75), None)
    assert (resolution.due_at, resolution.warn_at) == (T0 + hours(48), T0 + hours(36))
    assert first.running and resolution.running and not first.breached
    # Cards and today's reports read the first-response deadline off the ticket.
    assert (await desk.ticket(ticket_id)).first_response_due_at == T0 + hours(1)
    assert await desk.current(ticket_id) == first


async def test_the_first_public_reply_stops_the_first_response_clock(desk_factory: Callable[..., Desk]) -> None:
    desk = desk_factory(**SLA)
    on_time, late = await desk.post("alice", T0), await desk.post("bob", T0)
    await desk.reply(on_time, T0 + timedelta(minutes=30))
    await desk.reply(late, T0 + hours(1.5))
    # A second reply is no first response: the clock keeps what the first one measured.
    await desk.reply(on_time, T0 + hours(3))

    met = await desk.clock(on_time, FIRST)
    assert (met.achieved_at, met.wall_s, met.business_s) == (T0 + timedelta(minutes=30), 1800, 1800)
    assert not met.breached and met.breached_at is None
    missed = await desk.clock(late, FIRST)
    assert (missed.achieved_at, missed.business_s) == (T0 + hours(1.5), 5400)
    assert missed.breached and missed.breached_at == T0 + hours(1)
    # The ticket now shows its resolution clock, still running.
    current = await desk.current(on_time)
    assert current is not None and (current.kind, current.running) == (RESOLUTION, True)


async def test_each_customer_post_after_an_answer_starts_one_next_response_clock(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(**SLA)
    ticket_id = await desk.post("alice", T0)
    # Not answered yet: a follow-up leaves the first-response clock as the one running.
    await desk.post("alice", T0 + timedelta(minutes=5))
    assert [c.kind for c in await desk.clocks(ticket_id)] == [FIRST, RESOLUTION]
    await desk.reply(ticket_id, T0 + timedelta(minutes=10))

    # Two posts in one batch: the customer waits from the first, so one clock, from it.
    await desk.posts(("alice", T0 + hours(1)), ("alice", T0 + hours(2)))
    waiting = await desk.clock(ticket_id, NEXT, 1)
    assert (waiting.started_at, waiting.due_at, waiting.target) == (T0 + hours(1), T0 + hours(5), hours(4))
    assert await desk.current(ticket_id) == waiting
    await desk.post("alice", T0 + hours(2.5))
    assert [(c.kind, c.seq) for c in await desk.clocks(ticket_id)] == [(FIRST, 0), (RESOLUTION, 0), (NEXT, 1)]

    await desk.reply(ticket_id, T0 + hours(3))
    answered = await desk.clock(ticket_id, NEXT, 1)
    assert (answered.achieved_at, answered.business_s, answered.breached) == (T0 + hours(3), 2 * 3600, False)

    await desk.post("alice", T0 + hours(10))
    second = await desk.clock(ticket_id, NEXT, 2)
    assert (second.started_at, second.due_at, second.running) == (T0 + hours(10), T0 + hours(14), True)
    assert await desk.current(ticket_id) == second


async def test_waiting_on_the_customer_pauses_the_clocks_until_they_post(desk_factory: Callable[..., Desk]) -> None:
    desk = desk_factory(**SLA)
    ticket_id = await desk.post("alice", T0)
    await desk.click(slack_actions.wait_on_customer, ticket_id, T0 + timedelta(minutes=20))

    assert (await desk.ticket(ticket_id)).state == TicketState.WAITING
    first = await desk.clock(ticket_id, FIRST)
    resolution = await desk.clock(ticket_id, RESOLUTION)
    assert first.paused == resolution.paused == "waiting"
    # No deadline while paused; nothing to warn about either (the share was not reached before the pause).
    assert (first.due_at, first.warn_at, resolution.due_at) == (None, None, None)
    assert (await desk.ticket(ticket_id)).first_response_due_at is None

    # They answer five hours later: open again, and five hours later due.
    await desk.post("alice", T0 + timedelta(hours=5, minutes=20))
    assert (await desk.ticket(ticket_id)).state == TicketState.OPEN
    answered_at = T0 + timedelta(hours=5, minutes=20)
    assert await desk.pauses(ticket_id) == [(T0 + timedelta(minutes=20), answered_at, "waiting")]
    first = await desk.clock(ticket_id, FIRST)
    assert (first.paused, first.due_at, first.warn_at) == (None, T0 + hours(6), T0 + hours(5.75))
    assert (await desk.ticket(ticket_id)).first_response_due_at == T0 + hours(6)
    assert (await desk.clock(ticket_id, RESOLUTION)).due_at == T0 + hours(53)

    await desk.reply(ticket_id, T0 + hours(5.5))
    answered = await desk.clock(ticket_id, FIRST)
    # Twenty minutes before the pause, ten after it: half an hour counted, the five hours waited not.
    assert answered.wall_s == answered.business_s == 30 * 60 and not answered.breached
    async with desk.sessions() as session:
        events = [(e.actor, e.action) for e in await session.exec(select(TicketEvent))]
    assert (AGENT, "waiting") in events and ("customer", "resumed") in events


async def test_a_reply_while_waiting_is_measured_without_the_wait(desk_factory: Callable[..., Desk]) -> None:
    desk = desk_factory(**SLA)
    ticket_id = await desk.post("alice", T0)
    await desk.click(slack_actions.wait_on_customer, ticket_id, T0 + timedelta(minutes=20))
    await desk.reply(ticket_id, T0 + hours(3))
    answered = await desk.clock(ticket_id, FIRST)
    assert answered.business_s == 20 * 60 and not answered.breached
    # Had it not stopped, it would have been due when the remaining forty minutes ran after the reply.
    assert answered.due_at == T0 + hours(3) + timedelta(minutes=40)

    # An agent stops waiting: open again, the resolution clock runs on from there.
    await desk.click(slack_actions.stop_waiting, ticket_id, T0 + hours(4))
    assert (await desk.ticket(ticket_id)).state == TicketState.OPEN
    assert (await desk.clock(ticket_id, RESOLUTION)).due_at == T0 + hours(48) + hours(4) - timedelta(minutes=20)


async def test_a_reopen_continues_the_resolution_clock_without_the_time_resolved(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(**SLA)
    ticket_id = await desk.post("alice", T0)
    await desk.reply(ticket_id, T0 + timedelta(minutes=10))
    await desk.click(slack_actions.resolve, ticket_id, T0 + hours(1))
    resolved = await desk.clock(ticket_id, RESOLUTION)
    assert (resolved.achieved_at, resolved.business_s, resolved.breached) == (T0 + hours(1), 3600, False)
    assert (await desk.ticket(ticket_id)).resolved_at == T0 + hours(1)

    # The customer comes back a day later: reopened, and the clock runs on from its hour, not from a day.
    await desk.post("alice", T0 + hours(24))
    assert (await desk.ticket(ticket_id)).state == TicketState.OPEN
    again = await desk.clock(ticket_id, RESOLUTION)
    assert again.running and (again.business_s, again.breached) == (None, False)
    assert again.due_at == T0 + hours(48 + 23)
    assert await desk.pauses(ticket_id) == [(T0 + hours(1), T0 + hours(24), "resolved")]
    assert (await desk.clock(ticket_id, NEXT, 1)).started_at == T0 + hours(24)

    await desk.click(slack_actions.resolve, ticket_id, T0 + hours(26))
    done = await desk.clock(ticket_id, RESOLUTION)
    assert (done.achieved_at, done.business_s, done.wall_s) == (T0 + hours(26), 3 * 3600, 3 * 3600)


async def test_a_response_clock_pauses_while_the_ticket_is_resolved(desk_factory: Callable[..., Desk]) -> None:
    desk = desk_factory(**SLA)
    ticket_id = await desk.post("alice", T0)
    await desk.click(slack_actions.resolve, ticket_id, T0 + timedelta(minutes=30))
    # Resolved without a public reply: no first response, but no clock running on a resolved ticket either.
    unanswered = await desk.clock(ticket_id, FIRST)
    assert unanswered.running and unanswered.paused == "resolved" and unanswered.due_at is None
    async with desk.sessions() as session:
        assert [c.paused for c in await sla.running_clocks(session)] == ["resolved"]
        assert await sla.running_clocks(session, include_paused=False) == []  # nothing for timers to watch

    # Reopened by an agent two days later: the half hour it had left runs from then.
    await desk.click(slack_actions.reopen, ticket_id, T0 + hours(48))
    assert (await desk.clock(ticket_id, FIRST)).due_at == T0 + hours(48.5)
    assert (await desk.ticket(ticket_id)).first_response_due_at == T0 + hours(48.5)


# --- a policy or calendar change -------------------------------------------------------------------------------


async def test_a_policy_change_moves_open_tickets_due_times_and_not_closed_ones(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(**SLA)
    open_id, closed_id = await desk.post("alice", T0), await desk.post("bob", T0)
    # Closed after its warning instant: a recompute under the new target would move that instant.
    await desk.click(slack_actions.not_a_complaint, closed_id, T0 + timedelta(minutes=50))
    closed_before = await desk.clocks(closed_id)
    assert closed_before[0].warn_at == T0 + timedelta(minutes=45)
    async with transaction(desk.sessions) as session:
        await execute(session, update(SlackOutbox).values(state=OutboxState.SENT))  # the cards are in Slack

    # The next start reads a config where the standard policy gives three hours and a day.
    changed = sla_book(settings(policies=[{**STANDARD, "first_response": "3h", "resolution": "1d"}]).sla)
    assert await clocks.recompute_open_clocks(desk.sessions, changed) == 2
    first = await desk.clock(open_id, FIRST)
    assert (first.target, first.due_at, first.warn_at) == (hours(3), T0 + hours(3), T0 + hours(2.25))
    assert (await desk.clock(open_id, RESOLUTION)).due_at == T0 + hours(24)
    assert (await desk.ticket(open_id)).first_response_due_at == T0 + hours(3)
    # What the closed ticket was measured with stays.
    assert await desk.clocks(closed_id) == closed_before
    assert (await desk.ticket(closed_id)).first_response_due_at == closed_before[0].due_at
    # The open ticket's card is refreshed to show its new deadline; nothing else changes on a second start.
    async with desk.sessions() as session:
        pending = select(SlackOutbox).where(SlackOutbox.state == OutboxState.PENDING)
        assert [(r.kind, r.ticket_id) for r in await session.exec(pending)] == [(OutboxKind.UPDATE, open_id)]
    assert await clocks.recompute_open_clocks(desk.sessions, changed) == 0


async def test_tickets_from_before_the_sla_engine_get_their_clocks_at_the_next_start(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(**SLA)
    answered, waiting = await desk.post("alice", T0), await desk.post("bob", T0)
    await desk.reply(answered, T0 + hours(2))
    async with transaction(desk.sessions) as session:  # as the database was before the upgrade
        await execute(session, delete(SlaClock))

    assert await clocks.recompute_open_clocks(desk.sessions, desk.ctx.sla) == 4
    late = await desk.clock(answered, FIRST)
    assert (late.started_at, late.achieved_at, late.business_s, late.breached) == (T0, T0 + hours(2), 7200, True)
    running = await desk.clock(waiting, FIRST)
    assert (running.due_at, running.running) == (T0 + hours(1), True)
    assert (await desk.clock(waiting, RESOLUTION)).due_at == T0 + hours(48)
    assert await clocks.recompute_open_clocks(desk.sessions, desk.ctx.sla) == 0


# --- business hours, end to end --------------------------------------------------------------------------------


@pytest.fixture
def mastodon_mock_config(mastodon_mock_config: MastodonMockConfig, tmp_path: Path) -> MastodonMockConfig:
    """mastodon-mock on a database file, so a post's time can be moved back (see tests/test_sla_due.py)."""
    database = DatabaseConfig(path=str(tmp_path / "mastodon-mock.sqlite"))
    return mastodon_mock_config.model_copy(update={"database": database})


async def test_a_friday_evening_complaint_is_due_on_monday_morning(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Callable[..., Any]
) -> None:
    config = make_config(sla=OFFICE)
    daemon = await start_daemon(config)
    await eventually(lambda: _polled(daemon), what="the first read of the notifications")
    await daemon.stop()
    status = await post(mastodon, "alice", COMPLAINT)
    friday_evening = datetime(2026, 11, 20, 18, 30, tzinfo=BERLIN)
    await asyncio.to_thread(backdate, mastodon, str(status["id"]), friday_evening)

    daemon = await start_daemon(config)
    await eventually(lambda: _tickets(daemon, 1), what="the ticket")
    [ticket] = await rows(daemon, Ticket)
    monday_ten = datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN)
    assert ticket.first_response_due_at == monday_ten
    assert daemon.context is not None
    async with daemon.context.sessions() as session:
        first, resolution = await sla.ticket_clocks(session, ticket.id or 0)
    assert (first.calendar, first.due_at, first.warn_at) == ("berlin office", monday_ten, monday_ten - hours(0.25))
    # Sixteen open hours: Monday and Tuesday, nine to five.
    assert resolution.due_at == datetime(2026, 11, 24, 17, 0, tzinfo=BERLIN)
    card = (await slack.wait_for(lambda: slack.messages("C0SUPPORT"), timeout_s=10))[0]
    assert f"First response due <!date^{int(monday_ten.timestamp())}^" in str(card["blocks"])


async def _polled(daemon: Daemon) -> bool:
    return bool(daemon.watchers) and daemon.watchers[0].polls_completed > 0


async def _tickets(daemon: Daemon, n: int) -> bool:
    return len(await rows(daemon, Ticket)) == n


# --- the card's button and the reply, end to end ---------------------------------------------------------------


async def _clocks_of(daemon: Daemon, ticket_id: int) -> list[ClockState]:
    assert daemon.context is not None
    async with daemon.context.sessions() as session:
        return await sla.ticket_clocks(session, ticket_id)


async def _state_is(daemon: Daemon, ticket_id: int, state: str) -> bool:
    return [t.state for t in await rows(daemon, Ticket) if t.id == ticket_id] == [state]


async def test_waiting_on_customer_from_the_card_until_the_customer_answers(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Callable[..., Any]
) -> None:
    daemon = await start_daemon(make_config(sla=SLA, slack=AGENTS))
    card = await card_for_new_ticket(mastodon, slack)
    [ticket] = await rows(daemon, Ticket)
    assert ticket.id is not None
    assert button_ids(card)[3] == "ticket_waiting"

    # A public reply Mastodon accepted stops the first-response clock.
    view = await open_modal(slack, card, AGENT, ticket)
    await submit(slack, AGENT, view, "Sorry! Could you send us your order number?")
    await eventually(lambda: _first_answered(daemon, ticket.id or 0), what="the first response recorded")

    await click(slack, card, ALICE, "ticket_claim", str(ticket.id))
    await click(slack, card, ALICE, "ticket_waiting", str(ticket.id))
    await slack.wait_for(lambda: "waiting on customer" in current_card(slack, card)["blocks"][0]["text"]["text"])
    assert "ticket_resume" in button_ids(current_card(slack, card))
    assert "waiting on the customer" in await ask(slack, ALICE, f"show {ticket.id}")
    # Still Alice's work while it waits.
    mine = await ask(slack, ALICE, "mine")
    assert f"#{ticket.id}*" in mine and "waiting on the customer" in mine
    resolution = next(c for c in await _clocks_of(daemon, ticket.id) if c.kind == RESOLUTION)
    assert resolution.paused == "waiting" and resolution.due_at is None

    # The customer answers: the ticket is open again, its clocks run, and their post starts a next-response clock.
    await post(mastodon, "alice", "@brand it is 12345, thanks")
    await eventually(lambda: _state_is(daemon, ticket.id or 0, TicketState.OPEN), what="the ticket open again")
    await slack.wait_for(lambda: "ticket_waiting" in button_ids(current_card(slack, card)))
    running = {c.kind: c for c in await _clocks_of(daemon, ticket.id) if c.running}
    assert set(running) == {RESOLUTION, NEXT}
    assert running[RESOLUTION].paused is None and running[RESOLUTION].due_at is not None
    assert "waiting on the customer" not in await ask(slack, ALICE, f"show {ticket.id}")


async def _first_answered(daemon: Daemon, ticket_id: int) -> bool:
    first = [c for c in await _clocks_of(daemon, ticket_id) if c.kind == FIRST]
    return bool(first) and first[0].achieved_at is not None
