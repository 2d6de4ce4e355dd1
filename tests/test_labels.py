"""Agents' labels kept for training: the latest decision per post, erased posts left out (SQLite and Postgres)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from mentiondesk.storage.db import execute, transaction
from mentiondesk.storage.labels import label_count, record_label, record_ticket_label, team_labels
from mentiondesk.storage.models import LabelSource, Mention, TicketKind
from mentiondesk.storage.retention import ERASED
from tests.test_storage import mention, ticket

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


async def _stored(sessions: Any) -> tuple[int, list[int]]:
    async with transaction(sessions) as session:
        t = ticket(root_status_id="200")
        session.add(t)
        await session.flush()
        rows = [
            mention("200", text="my order never came", ticket_id=t.id),
            mention("201", text="thanks, all sorted now", ticket_id=t.id),
            mention("202", text="when do you open on sunday?"),
        ]
        session.add_all(rows)
        await session.flush()
        assert t.id is not None
        return t.id, [m.id for m in rows if m.id is not None]


async def test_latest_decision_per_post_wins_and_erased_posts_drop_out(sessions: Any) -> None:
    ticket_id, (opener, followup, question) = await _stored(sessions)
    async with transaction(sessions) as session:
        assert await record_ticket_label(
            session, ticket_id=ticket_id, label=TicketKind.OTHER, source=LabelSource.NOT_COMPLAINT, agent="U1", at=NOW
        )
        # The same post, decided again later by someone else: that decision is the label.
        await record_label(
            session,
            mention_id=opener,
            ticket_id=ticket_id,
            label=TicketKind.COMPLAINT,
            source=LabelSource.REACTION,
            agent="U2",
            at=NOW + timedelta(minutes=5),
        )
        await record_label(
            session,
            mention_id=question,
            ticket_id=None,
            label=TicketKind.QUESTION,
            source=LabelSource.TRIAGE_OPEN,
            agent="U3",
            at=NOW,
        )
        await record_label(
            session,
            mention_id=followup,
            ticket_id=ticket_id,
            label=TicketKind.OTHER,
            source=LabelSource.REACTION,
            agent="U1",
            at=NOW,
        )
    async with sessions() as session:
        labels = await team_labels(session)
    assert [(x.text, x.label, x.agent, x.complaint) for x in labels] == [
        ("my order never came", "complaint", "U2", True),
        ("thanks, all sorted now", "other", "U1", False),
        ("when do you open on sunday?", "question", "U3", False),
    ]
    assert labels[0].decided_at == NOW + timedelta(minutes=5)

    async with transaction(sessions) as session:
        await execute(session, update(Mention).where(col(Mention.id) == followup).values(text=ERASED))
        await execute(session, update(Mention).where(col(Mention.id) == question).values(deleted_at=NOW))
    async with sessions() as session:
        assert [x.text for x in await team_labels(session)] == ["my order never came"]
        assert await label_count(session) == 3


async def test_a_label_must_be_a_kind_and_a_ticket_without_its_post_is_not_labelled(sessions: Any) -> None:
    ticket_id, (opener, _, _) = await _stored(sessions)
    async with transaction(sessions) as session:
        with pytest.raises(ValueError, match="'spam' is not one of complaint, question, other"):
            await record_label(
                session, mention_id=opener, ticket_id=None, label="spam", source=LabelSource.REACTION, agent="U1"
            )
        assert not await record_ticket_label(
            session, ticket_id=ticket_id + 100, label="other", source=LabelSource.NOT_COMPLAINT, agent="U1"
        )
    async with sessions() as session:
        assert await team_labels(session) == []
