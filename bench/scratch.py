"""Scratch databases for one benchmark run: SQLite files in its folder, and one Postgres database of its own.

The Postgres database is named ``md_bench_<random>``, created on the server the given URL points at (through that
URL's database, which is otherwise never touched) and dropped when the run ends, however it ends short of a kill.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from types import TracebackType

import asyncpg
from sqlalchemy.engine import make_url

from mentiondesk.storage.db import create_engine, upgrade
from mentiondesk.storage.urls import safe_url

SQLITE, POSTGRES = "sqlite", "postgres"


def asyncpg_dsn(url: str) -> str:
    """A postgresql+asyncpg:// URL as asyncpg itself takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Scratch:
    """``async with Scratch(folder, postgres_server_url)``; ``fresh(kind, name)`` gives an empty, migrated database."""

    def __init__(self, folder: Path, postgres_server: str | None) -> None:
        self._folder = folder
        self._server = postgres_server
        self.postgres_database = f"md_bench_{uuid.uuid4().hex[:10]}"
        self._created = False

    @property
    def kinds(self) -> list[str]:
        return [SQLITE, POSTGRES] if self._server else [SQLITE]

    def describe(self, kind: str) -> str:
        if kind == SQLITE:
            return "SQLite files in the run's temporary folder"
        assert self._server is not None
        where = safe_url(self._server)
        return f"Postgres database {self.postgres_database} on {where} (created and dropped by the run)"

    async def __aenter__(self) -> Scratch:
        if self._server is not None:
            conn = await asyncpg.connect(asyncpg_dsn(self._server), timeout=10)
            try:
                await conn.execute(f'CREATE DATABASE "{self.postgres_database}" TEMPLATE template0')
                self._created = True
            finally:
                await conn.close()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._created and self._server is not None:
            conn = await asyncpg.connect(asyncpg_dsn(self._server), timeout=10)
            try:
                # FORCE: a daemon killed mid-run may still hold a connection.
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.postgres_database}" WITH (FORCE)')
            finally:
                await conn.close()

    async def fresh(self, kind: str, name: str) -> str:
        """The URL of an empty database with the app's schema (any earlier one of this kind is emptied)."""
        if kind == SQLITE:
            path = self._folder / f"{name}.db"
            for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                leftover.unlink(missing_ok=True)
            url = f"sqlite+aiosqlite:///{path}"
        else:
            assert self._server is not None
            url = make_url(self._server).set(database=self.postgres_database).render_as_string(hide_password=False)
            conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
            try:
                await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
            finally:
                await conn.close()
        engine = create_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        return url
