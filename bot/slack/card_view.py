"""A ticket's Slack card as it stands now: rendered from the database each time it is sent or refreshed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.sla.badge import badge
from mentiondesk.bot.slack.cards import TicketCard, ticket_card
from mentiondesk.storage.models import Ticket, TicketState
from mentiondesk.storage.priorities import PRIORITIES
from mentiondesk.storage.sla import current_clock
from mentiondesk.storage.tickets import ticket_mentions
from mentiondesk.storage.types import utcnow

# action_ids of the card's controls; handlers/slack_actions.py registers one listener per id.
CLAIM, UNCLAIM, REPLY, RESOLVE, REOPEN, NOT_COMPLAINT, PRIORITY, WAITING, RESUME = (
    "ticket_claim",
    "ticket_unclaim",
    "ticket_reply",
    "ticket_resolve",
    "ticket_reopen",
    "ticket_not_complaint",
    "ticket_priority",
    "ticket_waiting",
    "ticket_resume",
)


def _button(action_id: str, label: str, ticket_id: int, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "value": str(ticket_id),
        "text": {"type": "plain_text", "text": label},
    }
    if style:
        button["style"] = style
    return button


def _priority_select(ticket: Ticket) -> dict[str, Any]:
    def option(value: str) -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": f"{value.title()} priority"}, "value": f"{ticket.id}:{value}"}

    options = [option(p) for p in PRIORITIES]
    current = next((o for o in options if o["value"].endswith(f":{ticket.priority}")), None)
    select: dict[str, Any] = {
        "type": "static_select",
        "action_id": PRIORITY,
        "options": options,
        "placeholder": {"type": "plain_text", "text": "Priority"},
    }
    if current is not None:
        select["initial_option"] = current
    return select


def card_actions(ticket: Ticket) -> list[dict[str, Any]]:
    """The controls that make sense for the ticket's state."""
    assert ticket.id is not None
    reply = _button(REPLY, "Reply", ticket.id, "primary")
    if ticket.state not in (TicketState.OPEN, TicketState.WAITING):
        return [reply, _button(REOPEN, "Reopen", ticket.id)]
    not_complaint = _button(NOT_COMPLAINT, "Not a complaint", ticket.id, "danger")
    not_complaint["confirm"] = {
        "title": {"type": "plain_text", "text": "Not a complaint?"},
        "text": {"type": "plain_text", "text": f"Close ticket #{ticket.id} and record it as not a complaint."},
        "confirm": {"type": "plain_text", "text": "Close it"},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }
    claim = _button(UNCLAIM, "Unclaim", ticket.id) if ticket.assignee_slack_id else _button(CLAIM, "Claim", ticket.id)
    # Waiting on the customer pauses the SLA clocks until they post again, or an agent stops waiting.
    if ticket.state == TicketState.WAITING:
        waiting = _button(RESUME, "Stop waiting", ticket.id)
    else:
        waiting = _button(WAITING, "Waiting on customer", ticket.id)
    return [claim, reply, _button(RESOLVE, "Resolve", ticket.id), waiting, not_complaint, _priority_select(ticket)]


async def render_card(
    session: AsyncSession, ticket: Ticket, *, now: datetime | None = None
) -> tuple[str, list[dict[str, Any]]]:
    assert ticket.id is not None
    now = now or utcnow()
    mentions = await ticket_mentions(session, ticket_id=ticket.id)
    clock = await current_clock(session, ticket.id)
    root = next((m for m in mentions if m.status_id == ticket.root_status_id), mentions[0])
    card = TicketCard(
        number=ticket.id,
        state=ticket.state,
        priority=ticket.priority,
        score=ticket.score,
        label=ticket.label,
        author_acct=ticket.customer_acct,
        author_display_name=ticket.customer_display_name,
        author_url=ticket.customer_url,
        text=root.text,
        post_url=root.status_url,
        posted_at=ticket.posted_at,
        posted_at_known=root.posted_at_known,
        sla_due_at=ticket.first_response_due_at,
        language=root.language,
        visibility=root.visibility,
        assignee_slack_id=ticket.assignee_slack_id,
        first_response_at=ticket.first_response_at,
        last_customer_activity_at=ticket.last_customer_activity_at,
        edited_at=root.edited_at,
        deleted=root.deleted_at is not None,
        closed_reason=ticket.closed_reason,
        previous_ticket=ticket.previous_ticket_id,
        sla_badge=badge(clock, now).text if clock is not None else None,
        categories=tuple(ticket.categories),
        priority_reasons=tuple(ticket.priority_reasons),
    )
    return ticket_card(card, actions=card_actions(ticket), now=now)
