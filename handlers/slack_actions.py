"""The card's buttons: Claim / Unclaim, Resolve / Reopen, Waiting on customer / Stop waiting, Not a complaint,
Priority."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from slack_bolt.async_app import AsyncApp
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot import metrics
from mentiondesk.bot.context import AppContext
from mentiondesk.bot.sla import clocks
from mentiondesk.bot.sla.policy import SlaBook
from mentiondesk.bot.slack.card_view import (
    CLAIM,
    NOT_COMPLAINT,
    PRIORITY,
    REOPEN,
    RESOLVE,
    RESUME,
    UNCLAIM,
    WAITING,
)
from mentiondesk.bot.slack.ephemeral import tell
from mentiondesk.bot.slack.inbound import PayloadRules, action_number, row_number, shown
from mentiondesk.storage import ticket_actions
from mentiondesk.storage.db import transaction
from mentiondesk.storage.labels import record_ticket_label
from mentiondesk.storage.models import LabelSource, Ticket, TicketKind, TicketState
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)

Change = Callable[[AsyncSession, int, str, SlaBook], Awaitable[bool]]
# The changes /metrics counts, by verb (a customer's reopen is counted where mentions are filed).
_COUNTED = {"resolve": metrics.TICKETS_RESOLVED, "reopen": metrics.TICKETS_REOPENED}


def _state(ticket: Ticket) -> str:
    if ticket.state in ticket_actions.ACTIVE:
        who = f"claimed by <@{ticket.assignee_slack_id}>" if ticket.assignee_slack_id else "unclaimed"
        how = "open" if ticket.state == TicketState.OPEN else "waiting on the customer"
        return f"{how} and {who}"
    return ticket.state + (f" ({ticket.closed_reason})" if ticket.closed_reason else "")


async def _apply(body: dict[str, Any], ctx: AppContext, change: Change, verb: str, ticket_id: int) -> None:
    """Make one change; whoever loses a race is told what the ticket is now, and the card is refreshed."""
    user = body["user"]["id"]
    async with transaction(ctx.sessions) as session:
        done = await change(session, ticket_id, user, ctx.sla)
        if not done:
            ticket = await session.get(Ticket, ticket_id)
            if ticket is not None:
                # The card this agent clicked was out of date; make sure it shows the truth.
                await ticket_actions.queue_card_refresh(session, ticket_id=ticket_id)
    ctx.wake_outbox()
    if done:
        logger.info("ticket #%d %s by %s", ticket_id, verb, user, extra={"ticket_id": ticket_id})
        if verb in _COUNTED:
            _COUNTED[verb].inc()
        return
    now = f"it is {_state(ticket)}" if ticket is not None else "it does not exist"
    await tell(ctx, body, f"Could not {verb} ticket #{ticket_id}: {now}.")


def _button(change: Change, verb: str, doc: str) -> Callable[..., Awaitable[None]]:
    """A listener for one card button whose value is the ticket number."""

    async def listener(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
        await ack()
        await _apply(body, context["desk"], change, verb, action_number(body["actions"][0]))

    listener.__doc__ = doc
    return listener


# The changes that move the ticket's SLA clocks change them in the same transaction, at `at` (now, but for tests).


async def resolve(
    session: AsyncSession, ticket_id: int, user: str, book: SlaBook, *, at: datetime | None = None
) -> bool:
    at = at or utcnow()
    if not await ticket_actions.resolve(session, ticket_id=ticket_id, user=user, at=at):
        return False
    await clocks.taken_off_desk(session, book, ticket_id, at=at)
    return True


async def reopen(
    session: AsyncSession, ticket_id: int, user: str, book: SlaBook, *, at: datetime | None = None
) -> bool:
    at = at or utcnow()
    if not await ticket_actions.reopen(session, ticket_id=ticket_id, actor=user):
        return False
    await clocks.back_on_desk(session, book, ticket_id, at=at)
    return True


async def not_a_complaint(
    session: AsyncSession, ticket_id: int, user: str, book: SlaBook, *, at: datetime | None = None
) -> bool:
    at = at or utcnow()
    if not await ticket_actions.close(
        session, ticket_id=ticket_id, actor=user, reason="not a complaint", label=TicketKind.OTHER
    ):
        return False
    await clocks.taken_off_desk(session, book, ticket_id, at=at)
    # The agent's correction is a training label for the classifier, kept only if the close is.
    await record_ticket_label(
        session, ticket_id=ticket_id, label=TicketKind.OTHER, source=LabelSource.NOT_COMPLAINT, agent=user, at=at
    )
    return True


async def wait_on_customer(
    session: AsyncSession, ticket_id: int, user: str, book: SlaBook, *, at: datetime | None = None
) -> bool:
    at = at or utcnow()
    if not await ticket_actions.wait_on_customer(session, ticket_id=ticket_id, user=user):
        return False
    await clocks.put_on_hold(session, book, ticket_id, at=at)
    return True


async def stop_waiting(
    session: AsyncSession, ticket_id: int, user: str, book: SlaBook, *, at: datetime | None = None
) -> bool:
    at = at or utcnow()
    if not await ticket_actions.resume(session, ticket_id=ticket_id, actor=user):
        return False
    await clocks.back_on_desk(session, book, ticket_id, at=at)
    return True


BUTTONS: dict[str, Callable[..., Awaitable[None]]] = {
    CLAIM: _button(
        lambda s, t, u, _: ticket_actions.claim(s, ticket_id=t, user=u),
        "claim",
        "Claim: assign the ticket to the agent who clicked, unless someone has it.",
    ),
    UNCLAIM: _button(
        lambda s, t, u, _: ticket_actions.unclaim(s, ticket_id=t, user=u),
        "unclaim",
        "Unclaim: only the assignee can give a ticket back.",
    ),
    RESOLVE: _button(resolve, "resolve", "Resolve an open ticket: its resolution clock stops, the others pause."),
    REOPEN: _button(reopen, "reopen", "Reopen a resolved or closed ticket: its clocks run on."),
    NOT_COMPLAINT: _button(
        not_a_complaint, "close", "Not a complaint: close the ticket and record the corrected label."
    ),
    WAITING: _button(
        wait_on_customer,
        "wait on the customer for",
        "Waiting on customer: the SLA clocks pause until the customer posts again.",
    ),
    RESUME: _button(
        stop_waiting, "stop waiting on the customer for", "Stop waiting: the ticket is open again, its clocks run on."
    ),
}


def priority_choice(action: Mapping[str, Any]) -> tuple[int, str]:
    """The ticket and priority an option of the priority select stands for: "<ticket>:<priority>"."""
    option = action.get("selected_option")
    value = option.get("value") if isinstance(option, dict) else None
    ticket, _, priority = str(value).partition(":")
    if not isinstance(value, str) or priority not in ticket_actions.PRIORITIES:
        raise ValueError(f"value {shown(value)} is not one of the priorities we offer")
    return row_number(ticket), priority


async def on_priority(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Priority: the select's value is "<ticket>:<priority>"."""
    await ack()
    ticket_id, priority = priority_choice(body["actions"][0])

    async def change(session: AsyncSession, ticket_id: int, user: str, book: SlaBook) -> bool:
        if not await ticket_actions.set_priority(session, ticket_id=ticket_id, user=user, priority=priority):
            return False
        await clocks.recompute(session, book, ticket_id)  # another priority may mean another policy
        return True

    await _apply(body, context["desk"], change, f"set the priority of ({priority})", ticket_id)


# What these listeners read from a click; the intakes refuse a click without it before it reaches them.
PAYLOADS = PayloadRules(actions={**dict.fromkeys(BUTTONS, action_number), PRIORITY: priority_choice})


def register(app: AsyncApp) -> None:
    for action_id, listener in BUTTONS.items():
        app.action(action_id)(listener)
    app.action(PRIORITY)(on_priority)
