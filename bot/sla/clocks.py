"""The SLA clocks: when each starts, stops and pauses, and what it is due and has measured.

Every clock starts at the customer's post, by its own (Mastodon) time, so a post read late counts against us as
it does for the customer:

- first response: opened with the ticket; stopped by the first public reply Mastodon accepted.
- next response: a customer post on a ticket the brand has answered, with no response clock running, starts the
  next one (seq 1, 2, ...); the next public reply stops it. A second post before that reply starts none: the
  customer has been waiting since the first.
- resolution: opened with the ticket; stopped by Resolve, or by a close (Not a complaint, every post deleted),
  which are the same to the clocks. A reopen continues it: the time spent resolved is a pause.

Pauses belong to the ticket and hold every clock still running: "waiting" (on the customer, from the card's
button until their next post or an agent's Stop waiting) and "resolved" (from Resolve or a close until a
reopen; a response clock still running then is paused, not stopped: no reply was given, and a reopen resumes
it). They are stored as intervals, so every instant and figure here is recomputed from the stored rows, in
business time on the policy's calendar with the pauses left out.

While a ticket is paused its running clocks have no due time: due_at (and a warning or escalation instant not yet
reached) is None until the pause ends, when it is computed again; an instant reached before the pause began is
kept. A stopped clock keeps its due time (where it would have been had it run on), warning and escalation
instants, wall and business durations (pauses left out) and breach flag as measured, whatever the policy later
becomes. tickets.first_response_due_at mirrors the first-response clock's due_at: None while paused, and for a
policy without a first-response target (no deadline rather than an invented one).

The top of this module is pure; the async functions below apply it to a ticket's stored rows (storage/sla.py).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.sla.calendar import BusinessCalendar
from mentiondesk.bot.sla.policy import SlaBook, SlaPolicy
from mentiondesk.storage import sla
from mentiondesk.storage.batches import OUTBOX, insert_rows, outbox_row
from mentiondesk.storage.models import OutboxKind, SlaClockKind, SlaPauseReason
from mentiondesk.storage.ticket_actions import touch_waiting_renders
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)

Span = tuple[datetime, datetime | None]  # a pause; None as its end: still paused


# --- the rules, pure -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockTimes:
    due_at: datetime | None
    warn_at: datetime | None
    escalate_at: datetime | None


def target_of(policy: SlaPolicy, kind: str) -> timedelta | None:
    """The policy's target for a kind of clock (SlaClockKind), None when it sets none."""
    if kind == SlaClockKind.FIRST_RESPONSE:
        return policy.first_response
    if kind == SlaClockKind.NEXT_RESPONSE:
        return policy.next_response
    if kind == SlaClockKind.RESOLUTION:
        return policy.resolution
    raise ValueError(f"no such clock: {kind!r}")


def merged(pauses: Iterable[Span], *, after: datetime, until: datetime | None = None) -> list[Span]:
    """The pauses after `after` (and before `until`, an open one ending there), in order, overlaps joined."""
    clipped: list[Span] = []
    for start, end in pauses:
        if until is not None:
            end = until if end is None else min(end, until)
        start = max(start, after)
        if end is not None and end <= start:
            continue
        clipped.append((start, end))
    clipped.sort(key=lambda span: span[0])
    joined: list[Span] = []
    for start, end in clipped:
        if joined:
            last_start, last_end = joined[-1]
            if last_end is None:
                break  # an open pause holds everything after it
            if start <= last_end:
                joined[-1] = (last_start, None if end is None else max(end, last_end))
                continue
        joined.append((start, end))
    return joined


def reached_at(
    calendar: BusinessCalendar, started_at: datetime, amount: timedelta, pauses: Iterable[Span] = ()
) -> datetime | None:
    """When a clock started at started_at has counted `amount` of business time, its pauses left out.

    None when that lies beyond a pause still open: nobody knows yet when the ticket resumes.
    """
    cursor, remaining = started_at, amount
    for start, end in merged(pauses, after=started_at):
        if start > cursor:
            candidate = calendar.add(cursor, remaining)
            if candidate <= start:
                return candidate
            remaining -= calendar.measure(cursor, start)
            if remaining < timedelta(0):  # add and measure disagree by a rounding: the pause's start it is
                return start
        if end is None:
            return None
        cursor = max(cursor, end)
    return calendar.add(cursor, remaining)


def clock_times(
    book: SlaBook, calendar: BusinessCalendar, started_at: datetime, target: timedelta, pauses: Iterable[Span] = ()
) -> ClockTimes:
    """The due, warning and escalation instants of a clock with this target."""
    spans = list(pauses)
    escalate = escalate_share(book)
    return ClockTimes(
        due_at=reached_at(calendar, started_at, target, spans),
        warn_at=reached_at(calendar, started_at, target * book.warn_at, spans),
        escalate_at=reached_at(calendar, started_at, target * escalate, spans) if escalate is not None else None,
    )


def escalate_share(book: SlaBook) -> float | None:
    """The share of the target at which the manager level goes, when one is configured."""
    if book.manager_group is None or book.manager_at is None:
        return None
    return book.manager_at


def ran_for(
    calendar: BusinessCalendar, started_at: datetime, stopped_at: datetime, pauses: Iterable[Span] = ()
) -> tuple[timedelta, timedelta]:
    """How long a clock ran from started_at to stopped_at, pauses left out: (wall-clock time, business time)."""
    stopped_at = max(stopped_at, started_at)
    spans = [(start, end or stopped_at) for start, end in merged(pauses, after=started_at, until=stopped_at)]
    paused = sum((end - start for start, end in spans), timedelta(0))
    return stopped_at - started_at - paused, calendar.measure(started_at, stopped_at, pauses=spans)


def _times_row(times: ClockTimes) -> dict[str, Any]:
    return {"due_at": times.due_at, "warn_at": times.warn_at, "escalate_at": times.escalate_at}


def new_clock(
    book: SlaBook,
    policy: SlaPolicy,
    *,
    kind: str,
    started_at: datetime,
    ticket_id: int | None = None,
    seq: int = 0,
    pauses: Iterable[Span] = (),
) -> dict[str, Any] | None:
    """A clock row starting at started_at, or None when the policy sets no target for this kind of clock."""
    target = target_of(policy, kind)
    if target is None:
        return None
    return {
        "ticket_id": ticket_id,
        "kind": kind,
        "seq": seq,
        "policy": policy.name,
        "calendar": policy.calendar.name,
        "target_s": round(target.total_seconds()),
        "started_at": started_at,
        **_times_row(clock_times(book, policy.calendar, started_at, target, pauses)),
        "achieved_at": None,
        "wall_s": None,
        "business_s": None,
        "breached": False,
        "breached_at": None,
    }


def opening_clocks(book: SlaBook, policy: SlaPolicy, started_at: datetime) -> list[dict[str, Any]]:
    """The clocks a new ticket starts with (ticket_id still to fill in): first response and resolution."""
    rows = [
        new_clock(book, policy, kind=kind, started_at=started_at)
        for kind in (SlaClockKind.FIRST_RESPONSE, SlaClockKind.RESOLUTION)
    ]
    return [row for row in rows if row is not None]


def first_response_due(rows: Sequence[Mapping[str, Any]]) -> datetime | None:
    """What tickets.first_response_due_at mirrors: the first-response clock's due time among these rows."""
    due: datetime | None = next((r["due_at"] for r in rows if r["kind"] == SlaClockKind.FIRST_RESPONSE), None)
    return due


def recomputed(
    book: SlaBook,
    policy: SlaPolicy,
    clock: sla.ClockState,
    pauses: Iterable[Span],
    *,
    now: datetime | None = None,
    stop_at: datetime | None = None,
) -> dict[str, Any]:
    """A clock's columns computed again from the current policy and the pauses; and its figures if stopped at stop_at.

    A policy without a target for this kind of clock (it was removed since the clock started) leaves the clock its
    own target: only tickets opened from now on go without it. The calendar is always the policy's.
    """
    target = target_of(policy, clock.kind) or clock.target
    calendar = policy.calendar
    spans = list(pauses)
    values: dict[str, Any] = {
        "clock_id": clock.id,
        "policy": policy.name,
        "calendar": calendar.name,
        "target_s": round(target.total_seconds()),
        "achieved_at": None,
        "wall_s": None,
        "business_s": None,
        "breached": False,
        "breached_at": None,
    }
    if stop_at is None:
        values.update(_times_row(clock_times(book, calendar, clock.started_at, target, spans)))
        # A breach the timers recorded stands as long as the (recomputed) due time is behind us.
        if clock.breached and values["due_at"] is not None and values["due_at"] <= (now or utcnow()):
            values["breached"], values["breached_at"] = True, clock.breached_at
        return values
    values.update(stopped(book, calendar, clock.started_at, target, spans, stop_at=stop_at))
    return values


def stopped(
    book: SlaBook,
    calendar: BusinessCalendar,
    started_at: datetime,
    target: timedelta,
    pauses: Iterable[Span],
    *,
    stop_at: datetime,
) -> dict[str, Any]:
    """The columns of a clock stopped at stop_at: its instants, what it measured and whether it was breached."""
    stop_at = max(stop_at, started_at)
    # A stopped clock's due time is what it was due at had it not been stopped: a pause open at the stop ends there.
    closed = [(start, end if end is not None else max(start, stop_at)) for start, end in pauses]
    times = clock_times(book, calendar, started_at, target, closed)
    wall, business = ran_for(calendar, started_at, stop_at, closed)
    breached = business > target
    return {
        **_times_row(times),
        "achieved_at": stop_at,
        "wall_s": wall.total_seconds(),
        "business_s": business.total_seconds(),
        "breached": breached,
        "breached_at": times.due_at if breached else None,
    }


# --- applied to stored tickets ---------------------------------------------------------------------------------


def policy_of(book: SlaBook, facts: sla.TicketFacts) -> SlaPolicy:
    return book.policy_for(priority=facts.priority, channel=facts.channel)


async def _rework(
    session: AsyncSession,
    book: SlaBook,
    ticket_id: int,
    *,
    stop: Collection[str] = (),
    at: datetime | None = None,
    restart_resolution: bool = False,
) -> None:
    """Compute the ticket's running clocks again from its stored pauses, stopping those of the kinds in `stop` at
    `at`; with restart_resolution, a stopped resolution clock runs again first (a reopen)."""
    now = utcnow()
    await session.flush()
    facts = (await sla.ticket_facts(session, [ticket_id])).get(ticket_id)
    if facts is None:
        return
    policy = policy_of(book, facts)
    spans = [(p.started_at, p.ended_at) for p in (await sla.ticket_pauses(session, [ticket_id])).get(ticket_id, [])]
    changes: list[dict[str, Any]] = []
    first_due: dict[int, datetime | None] = {}
    for clock in await sla.ticket_clocks(session, ticket_id):
        if not clock.running and not (restart_resolution and clock.kind == SlaClockKind.RESOLUTION):
            continue
        values = recomputed(book, policy, clock, spans, now=now, stop_at=at if clock.kind in stop else None)
        changes.append(values)
        if clock.kind == SlaClockKind.FIRST_RESPONSE:
            first_due[ticket_id] = values["due_at"]
    await sla.update_clocks(session, changes)
    await sla.set_first_response_due(session, first_due)


_RESPONSE_KINDS = (SlaClockKind.FIRST_RESPONSE, SlaClockKind.NEXT_RESPONSE)


async def replied(session: AsyncSession, book: SlaBook, ticket_id: int, *, at: datetime) -> None:
    """A public reply Mastodon accepted at `at`: the running response clock stops."""
    await _rework(session, book, ticket_id, stop=_RESPONSE_KINDS, at=at)


async def put_on_hold(session: AsyncSession, book: SlaBook, ticket_id: int, *, at: datetime) -> None:
    """The ticket went to waiting on the customer at `at`: its clocks pause."""
    await sla.start_pause(session, ticket_id, at=at, reason=SlaPauseReason.WAITING)
    await _rework(session, book, ticket_id)


async def taken_off_desk(session: AsyncSession, book: SlaBook, ticket_id: int, *, at: datetime) -> None:
    """Resolved or closed at `at`: the resolution clock stops and the others pause until a reopen.

    Closing a resolved ticket changes nothing: its clocks stopped and paused when it was resolved.
    """
    paused = await sla.open_pause(session, ticket_id)
    if paused is not None and paused.reason == SlaPauseReason.RESOLVED:
        return
    if paused is not None:
        await sla.end_pause(session, ticket_id, at=at)
    await sla.start_pause(session, ticket_id, at=at, reason=SlaPauseReason.RESOLVED)
    await _rework(session, book, ticket_id, stop=(SlaClockKind.RESOLUTION,), at=at)


async def back_on_desk(session: AsyncSession, book: SlaBook, ticket_id: int, *, at: datetime) -> None:
    """Open again at `at`: reopened (the resolution clock runs on, the time resolved left out) or the customer
    answered while we waited on them. Either way the open pause ends and the clocks run again."""
    ended = await sla.end_pause(session, ticket_id, at=at)
    reopened = ended is not None and ended.reason == SlaPauseReason.RESOLVED
    await _rework(session, book, ticket_id, restart_resolution=reopened)


async def recompute(session: AsyncSession, book: SlaBook, ticket_id: int) -> None:
    """The ticket's priority (and so maybe its policy) changed: its running clocks follow."""
    await _rework(session, book, ticket_id)


# --- a batch of customer posts ---------------------------------------------------------------------------------


@dataclass
class _ResponseState:
    responding: bool  # a response clock is running
    next_seq: int
    paused_since: datetime | None
    facts: sla.TicketFacts


async def _answered_states(session: AsyncSession, ticket_ids: Collection[int]) -> dict[int, _ResponseState]:
    """The response clocks of those of these tickets the brand has answered (the others start none)."""
    facts = {t: f for t, f in (await sla.ticket_facts(session, ticket_ids)).items() if f.answered}
    if not facts:
        return {}
    clocks = await sla.response_clocks(session, facts)
    paused = await sla.open_pauses(session, facts)
    states: dict[int, _ResponseState] = {}
    for ticket_id, ticket in facts.items():
        own = clocks.get(ticket_id, [])
        states[ticket_id] = _ResponseState(
            responding=any(running for _, _, running in own),
            next_seq=max((seq for kind, seq, _ in own if kind == SlaClockKind.NEXT_RESPONSE), default=0) + 1,
            paused_since=p.started_at if (p := paused.get(ticket_id)) else None,
            facts=ticket,
        )
    return states


async def next_response_clocks(
    session: AsyncSession, book: SlaBook, posts: Sequence[tuple[int, datetime]]
) -> list[dict[str, Any]]:
    """The next-response clocks that customer posts on stored tickets start: (ticket id, post time) in the order
    the posts are placed. Read in a few statements for the whole batch; the rows are for the caller to insert."""
    states = await _answered_states(session, {ticket_id for ticket_id, _ in posts}) if posts else {}
    rows: list[dict[str, Any]] = []
    for ticket_id, posted_at in posts:
        state = states.get(ticket_id)
        if state is None or state.responding:
            continue
        pauses: list[Span] = [(state.paused_since, None)] if state.paused_since is not None else []
        row = new_clock(
            book,
            policy_of(book, state.facts),
            kind=SlaClockKind.NEXT_RESPONSE,
            started_at=posted_at,
            ticket_id=ticket_id,
            seq=state.next_seq,
            pauses=pauses,
        )
        if row is None:
            continue
        rows.append(row)
        state.responding, state.next_seq = True, state.next_seq + 1
    return rows


# --- at start --------------------------------------------------------------------------------------------------


async def recompute_open_clocks(sessions: async_sessionmaker[AsyncSession], book: SlaBook) -> int:
    """Compute the running clocks of the tickets on the desk (open, or waiting on the customer) again from the
    current policies and calendars, so a changed target or calendar moves their due times. Resolved tickets follow
    when reopened; closed ones keep what they were measured with.

    A ticket on the desk that lacks a first-response or resolution clock its policy now targets (it is older than
    the SLA engine, or than the target) gets it, counted from its post; a first response it already had stops the
    new clock there. Returns how many clocks changed or started; a ticket whose first-response due time moved gets
    its card refreshed.
    """
    now = utcnow()
    async with sessions() as session, session.begin():
        clocks = await sla.running_clocks(session, states=sla.ON_DESK)
        gaps = await sla.clock_kinds(session)
        ticket_ids = {c.ticket_id for c in clocks} | {g.ticket_id for g in gaps}
        facts = await sla.ticket_facts(session, ticket_ids)
        pauses = {
            ticket_id: [(p.started_at, p.ended_at) for p in spans]
            for ticket_id, spans in (await sla.ticket_pauses(session, ticket_ids)).items()
        }
        changes: list[dict[str, Any]] = []
        first_due: dict[int, datetime | None] = {}
        for clock in clocks:
            policy = policy_of(book, facts[clock.ticket_id])
            values = recomputed(book, policy, clock, pauses.get(clock.ticket_id, []), now=now)
            if _unchanged(clock, values):
                continue
            changes.append(values)
            if clock.kind == SlaClockKind.FIRST_RESPONSE and values["due_at"] != clock.due_at:
                first_due[clock.ticket_id] = values["due_at"]
        started = _missing_clocks(book, gaps, pauses)
        first_due.update(
            {row["ticket_id"]: row["due_at"] for row in started if row["kind"] == SlaClockKind.FIRST_RESPONSE}
        )
        await sla.update_clocks(session, changes)
        await sla.insert_clocks(session, started)
        await sla.set_first_response_due(session, first_due)
        stale = set(first_due) - await touch_waiting_renders(session, sorted(first_due), now=now)
        refreshes = [outbox_row(kind=OutboxKind.UPDATE, ticket_id=t, channel="", now=now) for t in sorted(stale)]
        await insert_rows(session, OUTBOX, refreshes)
    if changes or started:
        logger.info(
            "SLA: %d running clocks follow the current policies, %d started for tickets that had none",
            len(changes),
            len(started),
        )
    return len(changes) + len(started)


def _missing_clocks(
    book: SlaBook, gaps: Sequence[sla.ClockGap], pauses: Mapping[int, Sequence[Span]]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for gap in gaps:
        policy = policy_of(book, gap.facts)
        spans = pauses.get(gap.ticket_id, [])
        for kind in (SlaClockKind.FIRST_RESPONSE, SlaClockKind.RESOLUTION):
            row = (
                None
                if kind in gap.kinds
                else new_clock(book, policy, kind=kind, started_at=gap.posted_at, ticket_id=gap.ticket_id, pauses=spans)
            )
            if row is None:
                continue
            if kind == SlaClockKind.FIRST_RESPONSE and gap.first_response_at is not None:
                target = timedelta(seconds=row["target_s"])
                row.update(stopped(book, policy.calendar, gap.posted_at, target, spans, stop_at=gap.first_response_at))
            rows.append(row)
    return rows


def _unchanged(clock: sla.ClockState, values: Mapping[str, Any]) -> bool:
    return (
        clock.policy == values["policy"]
        and clock.calendar == values["calendar"]
        and round(clock.target.total_seconds()) == values["target_s"]
        and clock.due_at == values["due_at"]
        and clock.warn_at == values["warn_at"]
        and clock.escalate_at == values["escalate_at"]
        and clock.breached == values["breached"]
    )
