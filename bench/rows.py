"""The rows ingest writes, and the plainest fast ways of writing them: the ceilings the pipeline is measured against.

For each post the pipeline stores its mention; a complaint from a customer without an open ticket opens one and
queues its card in the outbox; a customer's further post joins their open ticket, with a ticket event and a
follow-up message queued. ``pipeline_rows`` makes exactly those rows (values as the handlers set them) from
normalised posts and their classification, so the raw writers below store what the daemon would. (The daemon also
updates the joined ticket and may queue a card refresh; the ceilings leave those updates out, so they flatter.)

Writers, each into an empty database with the app's schema, timed from first statement to commit:
SQLite one transaction per post, SQLite one ``executemany`` per table in one transaction (Python's sqlite3, the
app's pragmas), Postgres asyncpg ``executemany`` in one transaction, and Postgres ``COPY`` (asyncpg's binary copy).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.posts import FIRST_POSTS, INSTANCES, SYNTHETIC_ID_BASE
from mentiondesk.bot.classify.model import Classification
from mentiondesk.bot.config import ClassifierSettings, SlaSettings
from mentiondesk.bot.events import AccountRef, Post
from mentiondesk.bot.slack.cards import followup_message
from mentiondesk.storage.models import Mention, SlackOutbox, Ticket, TicketEvent
from mentiondesk.storage.types import utcnow

# In the order a transaction must write them (each table's foreign keys point at tables before it).
TABLES: dict[str, Any] = {
    "tickets": Ticket,
    "mentions": Mention,
    "slack_outbox": SlackOutbox,
    "ticket_events": TicketEvent,
}
COLUMNS = {name: [c.name for c in model.__table__.columns] for name, model in TABLES.items()}
CHANNEL = "C0SUPPORT"
# The defaults the daemon runs with in the benchmark.
SLA = timedelta(minutes=SlaSettings().first_response_minutes)
SLA_HIGH = timedelta(minutes=SlaSettings().high_priority_first_response_minutes)
HIGH_PRIORITY_SCORE = ClassifierSettings().high_priority_score

Row = tuple[str, dict[str, Any]]  # (table, column -> value)


def pipeline_rows(posts: Sequence[Post], results: Sequence[Classification]) -> list[list[Row]]:
    """Each post's rows, as the pipeline writes them in the post's one transaction, with ids assigned in order."""
    ids = dict.fromkeys(TABLES, 0)
    open_ticket: dict[str, int] = {}  # customer account id -> their open ticket
    out: list[list[Row]] = []
    for post, result in zip(posts, results, strict=True):
        now = utcnow()
        rows: list[Row] = []
        ticket_id = open_ticket.get(post.account.id)
        joined = ticket_id is not None
        if ticket_id is None and result.label == "complaint":
            ids["tickets"] += 1
            ticket_id = open_ticket[post.account.id] = ids["tickets"]
            rows.append(("tickets", ticket_row(ticket_id, post, result.score, now)))
        ids["mentions"] += 1
        mention_id = ids["mentions"]
        rows.append(("mentions", mention_row(mention_id, post, result, ticket_id, now)))
        if ticket_id is not None:
            ids["slack_outbox"] += 1
            rows.append(("slack_outbox", outbox_row(ids["slack_outbox"], post, ticket_id, mention_id, now, joined)))
        if joined:
            assert ticket_id is not None
            ids["ticket_events"] += 1
            rows.append(("ticket_events", event_row(ids["ticket_events"], ticket_id, now)))
        out.append(rows)
    return out


def ticket_row(ticket_id: int, post: Post, score: float, now: datetime) -> dict[str, Any]:
    high = score >= HIGH_PRIORITY_SCORE
    return {
        "id": ticket_id,
        "state": "open",
        "priority": "high" if high else "normal",
        "customer_account_id": post.account.id,
        "customer_acct": post.account.acct,
        "customer_display_name": post.account.display_name,
        "customer_url": post.account.url,
        "root_status_id": post.id,
        "posted_at": post.created_at,
        "received_at": now,
        "score": score,
        "channel": CHANNEL,
        "slack_ts": None,
        "first_response_due_at": post.created_at + (SLA_HIGH if high else SLA),
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "label": "complaint",
        "assignee_slack_id": None,
        "first_response_at": None,
        "resolved_at": None,
        "closed_reason": None,
        "last_customer_activity_at": post.created_at,
        "previous_ticket_id": None,
        # Written by the app from the classifier's rules; a plain complaint has neither, and was never in triage.
        "categories": [],
        "priority_reasons": [],
        "triage_reason": None,
        "triage_channel": None,
        "triage_ts": None,
    }


def mention_row(
    mention_id: int, post: Post, result: Classification, ticket_id: int | None, now: datetime
) -> dict[str, Any]:
    return {
        "id": mention_id,
        "status_uri": post.uri,
        "status_id": post.id,
        "status_url": post.url,
        "in_reply_to_id": post.in_reply_to_id,
        "account_id": post.account.id,
        "account_acct": post.account.acct,
        "account_display_name": post.account.display_name,
        "account_url": post.account.url,
        "text": post.text,
        "language": post.language,
        "visibility": post.visibility,
        "tags": list(post.tags),
        "source": "notification",
        "posted_at": post.created_at,
        "received_at": now,
        "label": result.label,
        "score": result.score,
        "ticket_id": ticket_id,
        "edited_at": post.edited_at,
        "deleted_at": None,
        "posted_at_known": post.created_at_known,
    }


def outbox_row(
    outbox_id: int, post: Post, ticket_id: int, mention_id: int, now: datetime, followup: bool
) -> dict[str, Any]:
    text, blocks = "", list[dict[str, Any]]()
    if followup:
        text, blocks = followup_message(
            number=ticket_id,
            author_acct=post.account.acct,
            author_url=post.account.url,
            text=post.text,
            post_url=post.url,
            posted_at=post.created_at,
        )
    return {
        "id": outbox_id,
        "kind": "followup" if followup else "card",
        "ticket_id": ticket_id,
        "mention_id": mention_id,
        "channel": CHANNEL,
        "text": text,
        "blocks": blocks,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": None,
        "slack_ts": None,
        "created_at": now,
        "sent_at": None,
    }


def event_row(event_id: int, ticket_id: int, now: datetime) -> dict[str, Any]:
    return {
        "id": event_id,
        "ticket_id": ticket_id,
        "actor": "customer",
        "action": "customer_post",
        "detail": "",
        "created_at": now,
    }


# --- values as each driver takes them ---------------------------------------------------------------------


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # As SQLAlchemy stores the app's UTC columns in SQLite: naive UTC text.
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, list):
        return json.dumps(value)
    return value


def _postgres_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list) else value


def as_tuple(table: str, row: dict[str, Any], *, postgres: bool) -> tuple[Any, ...]:
    adapt = _postgres_value if postgres else _sqlite_value
    return tuple(adapt(row[name]) for name in COLUMNS[table])


def by_table(posts_rows: Iterable[list[Row]], *, postgres: bool) -> dict[str, list[tuple[Any, ...]]]:
    grouped: dict[str, list[tuple[Any, ...]]] = {name: [] for name in TABLES}
    for rows in posts_rows:
        for table, row in rows:
            grouped[table].append(as_tuple(table, row, postgres=postgres))
    return grouped


def _insert_sql(table: str, *, postgres: bool) -> str:
    names = COLUMNS[table]
    marks = ", ".join(f"${i}" for i in range(1, len(names) + 1)) if postgres else ", ".join("?" * len(names))
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"


# --- SQLite -------------------------------------------------------------------------------------------------


def sqlite_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: transactions are written out below
    # The app's pragmas (storage/db.py).
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def sqlite_per_post(path: Path, posts_rows: list[list[Row]]) -> float:
    """Seconds to store every post in a transaction of its own."""
    prepared = [
        [(_insert_sql(t, postgres=False), as_tuple(t, r, postgres=False)) for t, r in rows] for rows in posts_rows
    ]
    conn = sqlite_connect(path)
    try:
        started = time.perf_counter()
        for statements in prepared:
            conn.execute("BEGIN")
            for sql, values in statements:
                conn.execute(sql, values)
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def sqlite_executemany(path: Path, posts_rows: list[list[Row]]) -> float:
    """Seconds to store every post in one transaction, one executemany per table."""
    grouped = by_table(posts_rows, postgres=False)
    conn = sqlite_connect(path)
    try:
        started = time.perf_counter()
        conn.execute("BEGIN")
        for table, values in grouped.items():
            conn.executemany(_insert_sql(table, postgres=False), values)
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def sqlite_seed(path: Path, chunks: Iterator[dict[str, list[dict[str, Any]]]]) -> None:
    """Write chunks of rows (table -> rows) in one transaction."""
    conn = sqlite_connect(path)
    try:
        conn.execute("BEGIN")
        for chunk in chunks:
            for table, rows in chunk.items():
                conn.executemany(_insert_sql(table, postgres=False), [as_tuple(table, r, postgres=False) for r in rows])
        conn.execute("COMMIT")
    finally:
        conn.close()


# --- Postgres -----------------------------------------------------------------------------------------------


async def postgres_executemany(dsn: str, posts_rows: list[list[Row]]) -> float:
    """Seconds to store every post in one transaction, one asyncpg executemany per table."""
    grouped = by_table(posts_rows, postgres=True)
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        async with conn.transaction():
            for table, values in grouped.items():
                if values:
                    await conn.executemany(_insert_sql(table, postgres=True), values)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def postgres_copy(dsn: str, posts_rows: list[list[Row]]) -> float:
    """Seconds to store every post with one COPY per table, in one transaction."""
    grouped = by_table(posts_rows, postgres=True)
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        async with conn.transaction():
            for table, values in grouped.items():
                if values:
                    await conn.copy_records_to_table(table, records=values, columns=COLUMNS[table])
        return time.perf_counter() - started
    finally:
        await conn.close()


async def postgres_seed(dsn: str, chunks: Iterator[dict[str, list[dict[str, Any]]]]) -> None:
    """COPY chunks of rows (table -> rows) in one transaction, then move the id sequences past them."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for chunk in chunks:
                for table, rows in chunk.items():
                    records = [as_tuple(table, r, postgres=True) for r in rows]
                    await conn.copy_records_to_table(table, records=records, columns=COLUMNS[table])
            # Explicit ids leave the sequences at 1: the daemon's own inserts would collide with the seed.
            for table in TABLES:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"GREATEST((SELECT max(id) FROM {table}), 1))"
                )
    finally:
        await conn.close()


# --- a desk that has been running for a while ------------------------------------------------------------------

SEED_ID_BASE = 2 * SYNTHETIC_ID_BASE  # above every id bench/posts.py plans, and still a synthetic one


def seed_chunks(
    total: int, *, customers: int, open_share: float = 0.03, chunk: int = 20_000
) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """A year of history: `total` complaints, each with its ticket and its sent card; most tickets resolved.

    Customers overlap those bench/posts.py plans, so new posts meet old tickets as they would in production.
    """
    rng = random.Random(11)
    year_ago = utcnow() - timedelta(days=365)
    step = timedelta(days=365) / max(total, 1)
    for first in range(1, total + 1, chunk):
        rows: dict[str, list[dict[str, Any]]] = {"tickets": [], "mentions": [], "slack_outbox": []}
        for n in range(first, min(total, first + chunk - 1) + 1):
            customer = rng.randrange(customers)
            posted = year_ago + step * n
            status_id = str(SEED_ID_BASE + n)
            url = f"https://{INSTANCES[customer % len(INSTANCES)]}/@customer{customer}"
            account = AccountRef(
                id=str(SYNTHETIC_ID_BASE // 2 + customer), acct=f"customer{customer}", display_name="", url=url
            )
            text = " and ".join(rng.choice(FIRST_POSTS) for _ in range(rng.choice([1, 1, 2, 3])))
            post = Post(
                id=status_id,
                uri=f"{url}/{status_id}",
                url=f"{url}/{status_id}",
                account=account,
                text=f"@brand {text}",
                created_at=posted,
                visibility="public",
                language="en",
                in_reply_to_id=None,
                in_reply_to_account_id=None,
                tags=(),
            )
            result = Classification("complaint", round(rng.uniform(0.4, 1.0), 3))
            ticket = ticket_row(n, post, result.score, posted)
            if rng.random() >= open_share:
                resolved = posted + timedelta(hours=2)
                ticket.update(state="resolved", resolved_at=resolved, first_response_at=posted + timedelta(hours=1))
                ticket.update(updated_at=resolved, version=4, assignee_slack_id="U0AGENT")
            card = outbox_row(n, post, n, n, posted, followup=False)
            card.update(state="sent", attempts=1, slack_ts=f"{posted.timestamp():.6f}", sent_at=posted)
            ticket["slack_ts"] = card["slack_ts"]
            rows["tickets"].append(ticket)
            rows["mentions"].append(mention_row(n, post, result, n, posted))
            rows["slack_outbox"].append(card)
        yield rows
