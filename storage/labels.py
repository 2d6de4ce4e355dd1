"""Agents' judgements of posts, kept as training labels for the complaint classifier.

Every decision an agent makes about what a post is ("Not a complaint" on a card, "Open ticket" or "Not a
complaint" in triage, a labelling reaction) is one row; a later decision about the same post overrides an earlier
one. `mentiondesk classifier train` reads them back with the post's current text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.db import execute
from mentiondesk.storage.models import ClassifierLabel, Mention, Ticket, TicketKind
from mentiondesk.storage.retention import ERASED
from mentiondesk.storage.types import utcnow

__all__ = ["TeamLabel", "label_count", "record_label", "record_ticket_label", "team_labels"]

KINDS = (TicketKind.COMPLAINT, TicketKind.QUESTION, TicketKind.OTHER)


@dataclass(frozen=True)
class TeamLabel:
    """The latest agent decision about one post, with the post's text as stored now."""

    mention_id: int
    text: str
    label: str  # TicketKind
    source: str  # LabelSource
    agent: str  # Slack user ID
    decided_at: datetime

    @property
    def complaint(self) -> bool:
        return self.label == TicketKind.COMPLAINT


async def record_label(
    session: AsyncSession,
    *,
    mention_id: int,
    ticket_id: int | None,
    label: str,
    source: str,
    agent: str,
    at: datetime | None = None,
) -> None:
    """Keep one agent decision about a post; the caller's transaction commits it with the change it came with."""
    if label not in KINDS:
        raise ValueError(f"label {label!r} is not one of {', '.join(KINDS)}")
    await execute(
        session,
        insert(ClassifierLabel).values(
            mention_id=mention_id,
            ticket_id=ticket_id,
            label=label,
            source=source,
            agent_slack_id=agent,
            decided_at=at or utcnow(),
        ),
    )


async def record_ticket_label(
    session: AsyncSession, *, ticket_id: int, label: str, source: str, agent: str, at: datetime | None = None
) -> bool:
    """Label the post that opened the ticket (what the classifier judged); False if that post is not stored."""
    opener = await session.exec(
        select(Mention.id)  # type: ignore[call-overload]
        .join(Ticket, col(Ticket.id) == col(Mention.ticket_id))
        .where(col(Ticket.id) == ticket_id, col(Mention.status_id) == col(Ticket.root_status_id))
        .limit(1)
    )
    mention_id = opener.first()
    if mention_id is None:
        return False
    await record_label(
        session, mention_id=int(mention_id[0]), ticket_id=ticket_id, label=label, source=source, agent=agent, at=at
    )
    return True


async def team_labels(session: AsyncSession) -> list[TeamLabel]:
    """The latest decision per post, oldest post first; posts whose text was erased (or is empty) are left out."""
    latest = (
        select(col(ClassifierLabel.mention_id), func.max(col(ClassifierLabel.id)).label("label_id"))
        .group_by(col(ClassifierLabel.mention_id))
        .subquery()
    )
    rows = await session.exec(
        select(  # type: ignore[call-overload]
            ClassifierLabel.mention_id,
            Mention.text,
            ClassifierLabel.label,
            ClassifierLabel.source,
            ClassifierLabel.agent_slack_id,
            ClassifierLabel.decided_at,
        )
        .join(latest, latest.c.label_id == col(ClassifierLabel.id))
        .join(Mention, col(Mention.id) == col(ClassifierLabel.mention_id))
        .where(col(Mention.text) != ERASED, col(Mention.text) != "", col(Mention.deleted_at).is_(None))
        .order_by(col(ClassifierLabel.mention_id))
    )
    return [TeamLabel(int(m), str(t), str(lb), str(s), str(a), d) for m, t, lb, s, a, d in rows.all()]


async def label_count(session: AsyncSession) -> int:
    """How many posts the team has labelled (latest decision each), erased ones included."""
    result = await session.exec(
        select(func.count(func.distinct(col(ClassifierLabel.mention_id))))  # type: ignore[call-overload]
    )
    return int(result.one()[0])
