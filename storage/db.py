"""The database engine, sessions and schema migrations; built at start, never at import."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Table, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.sql.base import Executable
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.urls import describe_database, sqlite_path

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Held while migrating a Postgres database; any fixed number other than the leader's (storage/leader.py).
MIGRATION_LOCK_KEY = 0x6D656E74696F6E  # "mention"


class DatabaseError(Exception):
    """The database cannot be used; the message says which and why (never the password)."""


class NoDatabaseError(DatabaseError):
    """A SQLite file that a reading command expected does not exist (and was not created)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; synchronous=NORMAL is durable across crashes of
    # the process in WAL mode and about 3x faster for commit-per-batch work.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    """Build the async engine for a sqlite+aiosqlite or postgresql+asyncpg URL (no I/O: see open_engine)."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping notices connections the server dropped (restart, failover) before we use them.
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


async def open_engine(url: str, *, create: bool) -> AsyncEngine:
    """The engine for url, once a SQLite file is known to be usable.

    With create, a missing file's folder is made (SQLite makes the file on first use); without, the file must
    exist, so that a command that only reads never leaves an empty database behind. The usual reasons a path
    cannot be used (a folder or a file in the way, no permission) become a DatabaseError naming it before
    SQLite is asked: when opening fails, aiosqlite's worker thread can outlive the event loop and print a
    traceback of its own.
    """
    path = sqlite_path(url)
    if path is not None:
        try:
            await asyncio.to_thread(_check_sqlite_file, path, create=create)
        except OSError as exc:  # looking at the path itself failed, e.g. a folder on the way we may not enter
            raise DatabaseError(f"cannot use the database {path}: {exc.strerror} ({exc.filename})") from exc
    return create_engine(url)


def _check_sqlite_file(path: Path, *, create: bool) -> None:
    if path.is_dir():
        raise DatabaseError(f"{path} is a folder, not a database file: fix database.url")
    if path.exists():
        # Reading commands leave permissions to SQLite, which can read a file it cannot write.
        if create and not os.access(path, os.R_OK | os.W_OK):
            raise DatabaseError(f"cannot use the database {path}: no permission to read and write it")
        return
    if not create:
        raise NoDatabaseError(f"no database at {path}: `mentiondesk db upgrade` creates it, or fix database.url")
    _make_folder(path)
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise DatabaseError(f"cannot create the database {path}: no permission to write in {path.parent}")


def _make_folder(path: Path) -> None:
    existing = next(parent for parent in path.parents if parent.exists())
    if not existing.is_dir():
        raise DatabaseError(f"cannot create the database {path}: {existing} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"cannot create the database {path}: cannot make {exc.filename}: {exc.strerror}") from exc


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: touching attributes after commit would otherwise need a new
    # round trip, which async SQLAlchemy refuses (MissingGreenlet).
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work commits on success and rolls back on error."""
    async with sessions() as session, session.begin():
        yield session


# Well under SQLite's and asyncpg's limits on bound parameters per statement.
IN_CHUNK = 1000
_Key = TypeVar("_Key", str, int)


def table_of(model: Any) -> Table:
    """A model's table, for SQLAlchemy Core statements where the ORM costs a round trip and an object per row."""
    table: Table = model.__table__
    return table


async def core_connection(session: AsyncSession) -> AsyncConnection:
    """The session's connection, after its pending ORM changes are flushed so Core statements see them."""
    await session.flush()
    return await session.connection()


def in_chunks(values: Collection[_Key]) -> list[list[_Key]]:
    """The distinct values, sorted, in chunks of IN_CHUNK: one IN (...) list each."""
    ordered = sorted(set(values))
    return [ordered[i : i + IN_CHUNK] for i in range(0, len(ordered), IN_CHUNK)]


async def execute(session: AsyncSession, statement: Executable) -> int:
    """Run an UPDATE or DELETE in the session; returns how many rows it touched.

    sqlmodel types ``exec`` for SELECTs only, so every conditional update would otherwise carry a type
    suppression of its own.
    """
    result = await session.exec(statement)  # type: ignore[call-overload]
    return int(result.rowcount)


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current_revision)
    except (OperationalError, DBAPIError, OSError) as exc:
        raise DatabaseError(f"database {describe_database(str(engine.url))} unreachable: {_root_cause(exc)}") from exc


def _upgrade(connection: Connection, target: str) -> None:
    if connection.dialect.name == "postgresql":
        # Several daemons starting together on one database would all migrate it at once: the first does, the
        # others wait here (the lock ends with this transaction) and then find nothing left to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    cfg = alembic_config()
    current = _current_revision(connection)
    wanted = ScriptDirectory.from_config(cfg).as_revision_number(target)
    # Alembic's own INFO lines are silenced at start (too chatty); this one says when the schema changes.
    if current != wanted:
        logger.info("upgrading the database schema from %s to %s", current or "nothing", wanted)
    # env.py picks this connection up instead of opening its own (Alembic's connection-sharing recipe).
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, target)


async def upgrade(engine: AsyncEngine, target: str = "head") -> None:
    """Apply pending migrations up to target."""
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, target)
    except (OperationalError, DBAPIError, OSError) as exc:
        name = describe_database(str(engine.url))
        raise DatabaseError(f"database {name}: migration failed: {_root_cause(exc)}") from exc


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
