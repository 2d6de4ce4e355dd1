"""The triage message's buttons: "Open ticket" puts a borderline post on the desk, "Not a complaint" closes it.

Either way the agent's decision is kept as a training label for the classifier, in the same transaction as the
change, and the triage message is redrawn to say who decided what.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from slack_bolt.async_app import AsyncApp
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot import metrics
from mentiondesk.bot.context import AppContext
from mentiondesk.bot.sla import clocks
from mentiondesk.bot.slack.ephemeral import tell
from mentiondesk.bot.slack.inbound import PayloadRules, action_number
from mentiondesk.bot.slack.triage_view import DISMISS, OPEN_TICKET
from mentiondesk.storage import batches, sla, triage
from mentiondesk.storage.db import transaction
from mentiondesk.storage.labels import record_ticket_label
from mentiondesk.storage.models import LabelSource, Mention, OutboxKind, Ticket, TicketKind, TicketState
from mentiondesk.storage.retention import ERASED
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)

AUTOMATIC = triage.AUTOMATIC  # not an agent: no label is kept for what the classifier decided itself


async def put_on_desk(session: AsyncSession, ctx: AppContext, ticket_id: int, *, actor: str) -> Ticket | None:
    """Open a triage item as a ticket: clocks from the post's own time, its card queued for the routed channel.

    None when it is no longer in triage (another agent, or a later post, decided first).
    """
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None or ticket.state != TicketState.TRIAGE:
        return None
    # A post judged a question stays one; anything else an agent opens is a complaint.
    label = TicketKind.QUESTION if ticket.label == TicketKind.QUESTION else TicketKind.COMPLAINT
    # The customer has waited since they posted, not since an agent got to the triage channel.
    policy = ctx.sla.policy_for(priority=ticket.priority, channel=ticket.channel)
    started = clocks.opening_clocks(ctx.sla, policy, ticket.posted_at)
    if not await triage.open_ticket(
        session, ticket_id=ticket_id, user=actor, label=label, due=clocks.first_response_due(started)
    ):
        return None
    await sla.insert_clocks(session, [{**clock, "ticket_id": ticket_id} for clock in started])
    now = utcnow()
    opener = await _opener(session, ticket)
    await batches.insert_rows(
        session,
        batches.OUTBOX,
        [
            batches.outbox_row(
                kind=OutboxKind.CARD, ticket_id=ticket_id, channel=ticket.channel, now=now, mention_id=opener
            ),
            batches.outbox_row(kind=OutboxKind.TRIAGE_UPDATE, ticket_id=ticket_id, channel="", now=now),
        ],
    )
    await session.refresh(ticket)
    return ticket


async def _opener(session: AsyncSession, ticket: Ticket) -> int | None:
    found = await session.exec(
        select(Mention.id).where(col(Mention.ticket_id) == ticket.id, col(Mention.status_id) == ticket.root_status_id)
    )
    return found.first()


async def _dismiss(session: AsyncSession, ticket_id: int, *, actor: str) -> bool:
    if not await triage.dismiss(session, ticket_id=ticket_id, user=actor):
        return False
    row = batches.outbox_row(kind=OutboxKind.TRIAGE_UPDATE, ticket_id=ticket_id, channel="", now=utcnow())
    await batches.insert_rows(session, batches.OUTBOX, [row])
    return True


async def _lost(ctx: AppContext, body: dict[str, Any], ticket_id: int, verb: str) -> None:
    """Tell the agent who clicked second what became of the item."""
    async with ctx.sessions() as session:
        ticket = await session.get(Ticket, ticket_id)
        decided = await triage.decision(session, ticket_id=ticket_id) if ticket is not None else None
    if ticket is None:
        now = "it does not exist"
    elif decided is not None:
        done = "opened as a ticket" if decided.action == triage.OPENED else "closed as not a complaint"
        now = f"it was already {done} by <@{decided.actor}>" if decided.actor != AUTOMATIC else f"it was {done}"
    elif ticket.customer_acct == ERASED:
        now = "its post was erased under the data retention policy"
    else:
        now = f"it is not in triage (it is {ticket.state})"
    await tell(ctx, body, f"Could not {verb} #{ticket_id}: {now}.")


async def on_open(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Open ticket: the post goes on the desk, its card to the routed channel, its clocks from the post's time."""
    await ack()
    ctx: AppContext = context["desk"]
    user, ticket_id = body["user"]["id"], action_number(body["actions"][0])
    with ctx.pinned() as desk:
        async with transaction(desk.sessions) as session:
            ticket = await put_on_desk(session, desk, ticket_id, actor=user)
            if ticket is not None:
                await record_ticket_label(
                    session, ticket_id=ticket_id, label=ticket.label, source=LabelSource.TRIAGE_OPEN, agent=user
                )
    desk.wake_outbox()
    if ticket is None:
        await _lost(desk, body, ticket_id, "open")
        return
    metrics.TICKETS_OPENED.inc()
    logger.info(
        "TicketOpened #%d from triage by %s, in %s",
        ticket_id,
        user,
        ticket.channel,
        extra={"ticket_id": ticket_id, "channel": ticket.channel},
    )


async def on_dismiss(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Not a complaint: the item is closed and the post kept as a training example of what is not one."""
    await ack()
    ctx: AppContext = context["desk"]
    user, ticket_id = body["user"]["id"], action_number(body["actions"][0])
    async with transaction(ctx.sessions) as session:
        done = await _dismiss(session, ticket_id, actor=user)
        if done:
            await record_ticket_label(
                session, ticket_id=ticket_id, label=TicketKind.OTHER, source=LabelSource.TRIAGE_DISMISS, agent=user
            )
    ctx.wake_outbox()
    if not done:
        await _lost(ctx, body, ticket_id, "close")
        return
    logger.info("triage item #%d: not a complaint, said %s", ticket_id, user, extra={"ticket_id": ticket_id})


async def open_automatically(session: AsyncSession, ctx: AppContext, ticket_id: int, *, at: datetime) -> bool:
    """A later post of the customer is a clear complaint: their item in triage goes on the desk without an agent."""
    ticket = await put_on_desk(session, ctx, ticket_id, actor=AUTOMATIC)
    if ticket is None:
        return False
    logger.info(
        "TicketOpened #%d from triage: a later post (%s) is a complaint",
        ticket_id,
        at.isoformat(),
        extra={"ticket_id": ticket_id, "channel": ticket.channel},
    )
    return True


# What these listeners read from a click; the intakes refuse a click without it before it reaches them.
PAYLOADS = PayloadRules(actions={OPEN_TICKET: action_number, DISMISS: action_number})


def register(app: AsyncApp) -> None:
    app.action(OPEN_TICKET)(on_open)
    app.action(DISMISS)(on_dismiss)
