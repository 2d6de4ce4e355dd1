"""The card's buttons: Claim / Unclaim, Resolve / Reopen, Not a complaint, Priority."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.context import AppContext
from mentiondesk.bot.slack.card_view import CLAIM, NOT_COMPLAINT, PRIORITY, REOPEN, RESOLVE, UNCLAIM
from mentiondesk.bot.slack.ephemeral import tell
from mentiondesk.bot.slack.inbound import PayloadRules, action_number, row_number, shown
from mentiondesk.storage import ticket_actions
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import Ticket, TicketState

logger = logging.getLogger(__name__)

Change = Callable[[AsyncSession, int, str], Awaitable[bool]]


def _state(ticket: Ticket) -> str:
    if ticket.state == TicketState.OPEN:
        who = f"claimed by <@{ticket.assignee_slack_id}>" if ticket.assignee_slack_id else "unclaimed"
        return f"open and {who}"
    return ticket.state + (f" ({ticket.closed_reason})" if ticket.closed_reason else "")


async def _apply(body: dict[str, Any], ctx: AppContext, change: Change, verb: str, ticket_id: int) -> None:
    """Make one change; whoever loses a race is told what the ticket is now, and the card is refreshed."""
    user = body["user"]["id"]
    async with transaction(ctx.sessions) as session:
        done = await change(session, ticket_id, user)
        if not done:
            ticket = await session.get(Ticket, ticket_id)
            if ticket is not None:
                # The card this agent clicked was out of date; make sure it shows the truth.
                await ticket_actions.queue_card_refresh(session, ticket_id=ticket_id)
    ctx.wake_outbox()
    if done:
        logger.info("ticket #%d %s by %s", ticket_id, verb, user)
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


BUTTONS: dict[str, Callable[..., Awaitable[None]]] = {
    CLAIM: _button(
        lambda s, t, u: ticket_actions.claim(s, ticket_id=t, user=u),
        "claim",
        "Claim: assign the ticket to the agent who clicked, unless someone has it.",
    ),
    UNCLAIM: _button(
        lambda s, t, u: ticket_actions.unclaim(s, ticket_id=t, user=u),
        "unclaim",
        "Unclaim: only the assignee can give a ticket back.",
    ),
    RESOLVE: _button(
        lambda s, t, u: ticket_actions.resolve(s, ticket_id=t, user=u), "resolve", "Resolve an open ticket."
    ),
    REOPEN: _button(
        lambda s, t, u: ticket_actions.reopen(s, ticket_id=t, actor=u), "reopen", "Reopen a resolved or closed ticket."
    ),
    NOT_COMPLAINT: _button(
        lambda s, t, u: ticket_actions.close(s, ticket_id=t, actor=u, reason="not a complaint", label="other"),
        "close",
        "Not a complaint: close the ticket and record the corrected label.",
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
    await _apply(
        body,
        context["desk"],
        lambda s, t, u: ticket_actions.set_priority(s, ticket_id=t, user=u, priority=priority),
        f"set the priority of ({priority})",
        ticket_id,
    )


# What these listeners read from a click; the intakes refuse a click without it before it reaches them.
PAYLOADS = PayloadRules(actions={**dict.fromkeys(BUTTONS, action_number), PRIORITY: priority_choice})


def register(app: AsyncApp) -> None:
    for action_id, listener in BUTTONS.items():
        app.action(action_id)(listener)
    app.action(PRIORITY)(on_priority)
