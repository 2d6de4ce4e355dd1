"""Storage on SQLite and Postgres: migrations, idempotent ingest keys, cursors, the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from mentiondesk.storage.cursors import get_cursor, set_cursor
from mentiondesk.storage.db import DatabaseError, create_engine, current_revision, head_revision, transaction, upgrade
from mentiondesk.storage.models import Mention, OutboxKind, Ticket
from mentiondesk.storage.outbox import claim, due_messages, enqueue, in_doubt, mark_retry, mark_sent, next_due_at
from mentiondesk.storage.ticket_actions import resolve
from mentiondesk.storage.tickets import has_open_ticket, open_ticket_for_thread

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def ticket(**kw: Any) -> Ticket:
    values: dict[str, Any] = dict(
        customer_account_id="7",
        customer_acct="alice",
        root_status_id="100",
        posted_at=NOW,
        received_at=NOW,
        score=0.9,
        channel="#support",
        first_response_due_at=NOW + timedelta(hours=1),
    )
    values.update(kw)
    return Ticket(**values)


def mention(status_id: str, **kw: Any) -> Mention:
    values: dict[str, Any] = dict(
        status_uri=f"https://social.example/statuses/{status_id}",
        status_id=status_id,
        status_url=f"https://social.example/@alice/{status_id}",
        account_id="7",
        account_acct="alice",
        text="it broke",
        source="notification",
        posted_at=NOW,
        label="complaint",
        score=0.9,
    )
    values.update(kw)
    return Mention(**values)


async def test_migrations_reach_head(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert await current_revision(engine) is None
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
        await upgrade(engine)  # a second run is a no-op
    finally:
        await engine.dispose()


async def test_unreachable_database_is_named_without_password() -> None:
    engine = create_engine("postgresql+asyncpg://mentiondesk:s3cret@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(DatabaseError) as info:
            await current_revision(engine)
    finally:
        await engine.dispose()
    assert "127.0.0.1:1/nowhere" in str(info.value) and "unreachable" in str(info.value)
    assert "s3cret" not in str(info.value)


async def test_status_uri_is_unique(sessions: Any) -> None:
    async with transaction(sessions) as session:
        session.add(mention("100"))
    with pytest.raises(IntegrityError):
        async with transaction(sessions) as session:
            session.add(mention("100", text="the same status again"))


async def test_datetimes_come_back_aware_utc(sessions: Any) -> None:
    async with transaction(sessions) as session:
        session.add(mention("100", posted_at=NOW.astimezone(datetime.now().astimezone().tzinfo)))
    async with sessions() as session:
        stored = await session.get(Mention, 1)
    assert stored.posted_at == NOW and stored.posted_at.tzinfo is not None


async def test_thread_lookup_finds_only_the_customers_open_ticket(sessions: Any) -> None:
    async with transaction(sessions) as session:
        t = ticket()
        session.add(t)
        await session.flush()
        session.add(mention("100", ticket_id=t.id))
    async with sessions() as session:
        assert await has_open_ticket(session, account_id="7")
        found = await open_ticket_for_thread(session, account_id="7", status_ids=["99", "100"])
        assert found is not None and found.id == t.id
        assert await open_ticket_for_thread(session, account_id="8", status_ids=["100"]) is None
        assert await open_ticket_for_thread(session, account_id="7", status_ids=["101"]) is None


async def test_cursor_only_moves_forward(sessions: Any) -> None:
    async with transaction(sessions) as session:
        assert await get_cursor(session, name="feed") is None
        await set_cursor(session, name="feed", value="109999999999999999")
    async with transaction(sessions) as session:
        # Numeric order, not text order: "99..." < "1099..." as numbers.
        await set_cursor(session, name="feed", value="99999999999999999")
    async with sessions() as session:
        assert await get_cursor(session, name="feed") == "109999999999999999"


async def test_outbox_due_retry_and_sent(sessions: Any) -> None:
    async with transaction(sessions) as session:
        t = ticket()
        session.add(t)
        await session.flush()
        assert t.id is not None
        row = enqueue(
            session, kind=OutboxKind.CARD, ticket_id=t.id, channel="#support", text="card", blocks=[{"type": "divider"}]
        )
    now = datetime.now(UTC)
    assert row.id is not None
    async with transaction(sessions) as session:
        due = await due_messages(session, now=now)
        assert [(r.id, tk.id) for r, tk in due] == [(row.id, t.id)]
        await mark_retry(session, row_id=row.id, at=now + timedelta(minutes=5), error="Slack answered HTTP 503")
    async with transaction(sessions) as session:
        assert await due_messages(session, now=now) == []
        assert await next_due_at(session, after=now) == now + timedelta(minutes=5)
        await mark_sent(session, row_id=row.id, channel="C0SUPPORT", ts="1.000100")
    async with sessions() as session:
        stored = await session.get(Ticket, t.id)
        assert (stored.channel, stored.slack_ts) == ("C0SUPPORT", "1.000100")
        assert await next_due_at(session, after=now) is None


async def test_only_one_sender_can_claim_a_message(sessions: Any) -> None:
    async with transaction(sessions) as session:
        t = ticket()
        session.add(t)
        await session.flush()
        assert t.id is not None
        enqueue(session, kind=OutboxKind.CARD, ticket_id=t.id, channel="#support", text="card", blocks=[])
    now = datetime.now(UTC)
    async with sessions() as session:
        [(seen_by_a, _)] = await due_messages(session, now=now)
    async with sessions() as session:
        [(seen_by_b, _)] = await due_messages(session, now=now)
    async with transaction(sessions) as session:
        assert await claim(session, row=seen_by_a, lease_until=now + timedelta(minutes=2))
    async with transaction(sessions) as session:
        assert not await claim(session, row=seen_by_b, lease_until=now + timedelta(minutes=2))
        # Leased: nobody sees it as due, and it is in doubt should the claimer die mid-send.
        assert await due_messages(session, now=now + timedelta(minutes=1)) == []
        [(after_lease, _)] = await due_messages(session, now=now + timedelta(minutes=3))
    assert in_doubt(after_lease)


async def test_a_change_made_while_a_sender_renders_the_card_is_not_lost(sessions: Any) -> None:
    async with transaction(sessions) as session:
        t = ticket()
        session.add(t)
        await session.flush()
        assert t.id is not None
        enqueue(session, kind=OutboxKind.UPDATE, ticket_id=t.id, channel="", text="", blocks=[])
    # A sender reads the waiting refresh and renders the card (open); meanwhile an agent resolves the ticket, whose
    # change relies on that refresh instead of queueing its own.
    async with sessions() as session:
        [(rendered, _)] = await due_messages(session, now=datetime.now(UTC))
    async with transaction(sessions) as session:
        assert await resolve(session, ticket_id=t.id, user="U0AGENT")
    async with transaction(sessions) as session:
        assert not await claim(session, row=rendered, lease_until=datetime.now(UTC) + timedelta(minutes=2))
    # So the stale render is not sent: the refresh waits for the next round, which renders the resolved ticket.
    async with sessions() as session:
        assert [(r.id, tk.state) for r, tk in await due_messages(session, now=datetime.now(UTC))] == [
            (rendered.id, "resolved")
        ]


async def test_migrations_match_the_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), SQLModel.metadata))
    finally:
        await engine.dispose()
    assert diff == [], "a model changed without a migration: run scripts/new_migration.py"
