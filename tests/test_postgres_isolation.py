"""A test run leaves the database named in MENTIONDESK_TEST_DATABASE_URL, and every other one, as it found them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from tests.conftest import PG_ENV, RUN_DATABASE, RUN_DATABASE_PREFIX, autocommit

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} not set"),
]

ROOT = Path(__file__).resolve().parent.parent
# Two Postgres tests that migrate and write: enough to wipe a schema, were the run to use the given database.
SUBRUN_TESTS = [
    "tests/test_storage.py::test_migrations_reach_head[postgres]",
    "tests/test_storage.py::test_status_uri_is_unique[postgres]",
]
SUBRUN_TIMEOUT_S = 90.0
SUBRUN_INTERRUPT_GRACE_S = 20.0
CUSTOMERS = [(1, "Ada"), (2, "Grace")]


async def _schema(url: URL) -> list[tuple[object, ...]]:
    """Every schema (with its oid, which a drop and re-create changes) and every relation in it."""
    query = """
        SELECT n.oid::bigint, n.nspname, c.relname, c.relkind
        FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
        ORDER BY n.nspname, c.relname
    """
    async with autocommit(url) as conn:
        return [tuple(row) for row in await conn.execute(text(query))]


async def _customers(url: URL) -> list[tuple[object, ...]]:
    async with autocommit(url) as conn:
        return [tuple(row) for row in await conn.execute(text("SELECT id, name FROM customers ORDER BY id"))]


async def _databases(server: URL) -> set[str]:
    async with autocommit(server) as conn:
        return set((await conn.execute(text("SELECT datname FROM pg_database"))).scalars())


async def _run_pytest(env_url: URL) -> tuple[int, str]:
    """A separate test run whose PG_ENV names env_url; its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        *SUBRUN_TESTS,
        cwd=ROOT,
        env={**os.environ, PG_ENV: env_url.render_as_string(hide_password=False)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(SUBRUN_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        # Ctrl-C lets pytest tear its session down, and with it the database it made.
        proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(SUBRUN_INTERRUPT_GRACE_S):
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def test_a_run_leaves_the_given_database_and_the_rest_of_the_server_alone() -> None:
    server = make_url(os.environ[PG_ENV])
    # A stand-in for a user's real database: PG_ENV will point at it.
    user_db = server.set(database=RUN_DATABASE + "_user")
    async with autocommit(server) as conn:
        await conn.execute(text(f'CREATE DATABASE "{user_db.database}" TEMPLATE template0'))
    subrun_db = None
    try:
        async with autocommit(user_db) as conn:
            await conn.execute(text("CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL)"))
            await conn.execute(
                text("INSERT INTO customers VALUES (:id, :name)"), [{"id": i, "name": n} for i, n in CUSTOMERS]
            )
        schema_before = await _schema(user_db)

        code, out = await _run_pytest(user_db)
        assert code == 0 and "2 passed" in out, out[-3000:]

        assert await _schema(user_db) == schema_before
        assert await _customers(user_db) == CUSTOMERS
        named = re.search(rf"own database ({re.escape(RUN_DATABASE_PREFIX)}\w+)", out)
        assert named is not None, f"the run did not name its own database:\n{out[-3000:]}"
        subrun_db = named.group(1)
        assert subrun_db not in {RUN_DATABASE, user_db.database}
        assert subrun_db not in await _databases(server), f"{subrun_db} was left on the server"
    finally:
        async with autocommit(server) as conn:
            for name in (user_db.database, subrun_db):
                if name:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
