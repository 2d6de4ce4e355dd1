"""Feed entries set aside because they could not be read or stored, and which database errors mean that."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.models import DeadLetter
from mentiondesk.storage.types import utcnow

# Postgres error classes about the values themselves: data exceptions (a value too long, a NUL byte, a bad
# encoding), integrity constraint violations, and program limits (a row too large). Others (connections, locks,
# shutdowns, resources) are about the server and pass.
_REFUSED_SQLSTATE_CLASSES = ("22", "23", "54")


def refused_values(exc: BaseException) -> bool:
    """Whether the database refused the values themselves, so that storing the same ones again fails again.

    False for a database that is away, busy or locked: the same write can succeed later.
    """
    if isinstance(exc, DBAPIError):
        # asyncpg's errors reach SQLAlchemy mostly as plain DBAPIError: its SQLSTATE tells what went wrong.
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate[:2] in _REFUSED_SQLSTATE_CLASSES
        return isinstance(exc, DataError | IntegrityError)
    # A value the driver could not even send (a lone surrogate, say): nothing reached the database.
    return isinstance(exc, StatementError)


async def set_aside(
    session: AsyncSession,
    *,
    feed: str,
    item_key: str,
    status_id: str | None,
    status_uri: str | None,
    reason: str,
    payload: str,
    attempts: int,
) -> None:
    """Record the entry, or when it was set aside before, count the new attempts and keep the latest reason."""
    now = utcnow()
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DeadLetter).values(
        feed=feed,
        item_key=item_key,
        status_id=status_id,
        status_uri=status_uri,
        reason=reason,
        payload=payload,
        attempts=attempts,
        first_seen_at=now,
        last_seen_at=now,
    )
    # One statement either way, so two daemons setting the same entry aside cannot both insert it.
    statement = statement.on_conflict_do_update(
        index_elements=["feed", "item_key"],
        set_={
            "attempts": col(DeadLetter.attempts) + statement.excluded.attempts,
            "reason": statement.excluded.reason,
            "payload": statement.excluded.payload,
            "last_seen_at": statement.excluded.last_seen_at,
        },
    )
    await session.exec(statement)


async def dead_letter_count(session: AsyncSession) -> int:
    return int((await session.exec(select(func.count()).select_from(DeadLetter))).one())


async def newest_dead_letters(session: AsyncSession, *, limit: int) -> list[DeadLetter]:
    statement = select(DeadLetter).order_by(col(DeadLetter.last_seen_at).desc(), col(DeadLetter.id).desc())
    return list(await session.exec(statement.limit(limit)))
