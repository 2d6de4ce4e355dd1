"""A change to a ticket while its card is being rendered is never lost from the card.

The sender renders a card (or a refresh) before it claims the row; a change committed between the render and
the claim used to ride on that row, which then went out rendered without it.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, select

from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import OutboxKind, OutboxState, SlackOutbox
from mentiondesk.storage.outbox import claim
from mentiondesk.storage.ticket_actions import claim as claim_ticket
from mentiondesk.storage.ticket_actions import queue_card_refresh
from mentiondesk.storage.types import utcnow
from tests.test_slack_sender import Sessions, new_ticket


async def _row(sessions: Sessions, row_id: int) -> SlackOutbox:
    async with sessions() as session:
        row = await session.get(SlackOutbox, row_id)
        assert row is not None
        return row


async def _pending_renders(sessions: Sessions, ticket_id: int) -> list[SlackOutbox]:
    async with sessions() as session:
        stmt = select(SlackOutbox).where(
            SlackOutbox.ticket_id == ticket_id,
            SlackOutbox.state == OutboxState.PENDING,
            col(SlackOutbox.kind).in_([OutboxKind.CARD, OutboxKind.UPDATE]),
        )
        return list(await session.exec(stmt))


async def test_a_change_between_render_and_claim_is_not_lost(sessions: Sessions) -> None:
    ticket_id, card_id = await new_ticket(sessions)
    # The sender read the card row and rendered the ticket as it was then...
    rendered = await _row(sessions, card_id)
    # ...an agent claims the ticket before the sender takes the row...
    async with transaction(sessions) as session:
        assert await claim_ticket(session, ticket_id=ticket_id, user="U0AGENT")
    # ...so taking the row with what it rendered must fail (the next pass renders again), or the change must
    # have a render of its own still to come.
    async with transaction(sessions) as session:
        taken = await claim(session, row=rendered, lease_until=utcnow() + timedelta(minutes=5))
    later = [r for r in await _pending_renders(sessions, ticket_id) if r.id != card_id]
    assert not taken or later, "the claim went out on a card rendered before it"


async def test_a_change_while_nothing_is_rendering_adds_no_second_refresh(sessions: Sessions) -> None:
    ticket_id, card_id = await new_ticket(sessions)
    for _ in range(3):
        async with transaction(sessions) as session:
            await queue_card_refresh(session, ticket_id=ticket_id)
    # One waiting render covers any number of changes.
    assert [r.id for r in await _pending_renders(sessions, ticket_id)] == [card_id]
