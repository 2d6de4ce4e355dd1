"""Leader election: of the daemons sharing one database, the one holding this lock consumes the feeds.

On Postgres the lock is a session advisory lock, held on a connection of its own: never one from the app's pool,
which may close or recycle a connection at any time (and with it the lock), and never through a PgBouncer in
transaction mode, which hands each transaction whichever server connection is free (the lock would stay behind
on a connection the next transaction does not get). The lock lives as long as that session: when the leader
process dies, its socket closes and Postgres releases the lock at once; when its machine or network goes away,
the TCP keepalives set on the session let Postgres notice within KEEPALIVE_DEAD_S, and another daemon wins.

The holder checks the lock every `database.leader_check_s`: a query on that connection, given at most the check
interval, that also asks pg_locks whether this session still holds the lock. Any failure (timeout, error, a lock
no longer held) means leadership is lost: the connection is dropped, and the daemon must stop its leader work
before trying again.

SQLite has one process per file, which is always the leader (SingleProcessLock).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any, Protocol

import asyncpg
from sqlalchemy.engine import make_url

from mentiondesk.storage.urls import describe_database

logger = logging.getLogger(__name__)

# Advisory locks are per database, so daemons of different mentiondesk databases on one server never compete.
# 63 bits, positive: pg_locks shows the key as two unsigned 32-bit halves, compared below without sign games.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"mentiondesk:leader").digest()[:8], "big") & ((1 << 63) - 1)
# Server side TCP keepalives on the lock's session: a leader whose host vanished (no FIN, no RST) is noticed by
# Postgres after KEEPALIVE_IDLE_S + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL_S of silence, and its lock released.
# Without them Postgres would hold the lock for hours (the kernel default idle time is 2 h).
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 3
KEEPALIVE_DEAD_S = KEEPALIVE_IDLE_S + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL_S
# How long closing a connection that may be dead is waited for before it is torn down.
CLOSE_TIMEOUT_S = 2.0

# What a call on the lock's connection raises when the connection or its session is gone. asyncpg's
# InternalClientError is among them: a backend terminated mid-call can leave the protocol in a state where the
# next call raises it ("another operation is in progress") rather than a connection error.
_CONNECTION_FAILURES = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

_HELD = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
  AND ((classid::bigint << 32) | objid::bigint) = $1
"""


class LeaderLock(Protocol):
    """The leadership of the daemons sharing one database."""

    @property
    def single_process(self) -> bool:
        """True when there is only ever one daemon (SQLite): it leads from start to stop, with no election."""
        ...

    async def try_acquire(self) -> bool:
        """Take the lock if no one holds it: True when this daemon now leads."""
        ...

    async def still_held(self) -> bool:
        """Whether this daemon still leads; False (never an exception) when the lock or its connection is gone.

        After False the lock is released and its connection dropped: try_acquire may be called again.
        """
        ...

    async def release(self) -> None:
        """Let another daemon lead (closes the lock's connection); harmless when not held."""
        ...


class SingleProcessLock:
    """SQLite: one daemon per database file, always the leader."""

    single_process = True

    async def try_acquire(self) -> bool:
        return True

    async def still_held(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class PostgresLeaderLock:
    """pg_try_advisory_lock on a dedicated connection (not pooled), each call bounded by timeout_s."""

    single_process = False

    def __init__(self, url: str, *, timeout_s: float, key: int = LOCK_KEY) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        # asyncpg takes a plain postgresql:// DSN; the URL's password (if any) stays out of every log line.
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._name = describe_database(url)
        self._timeout_s = timeout_s
        self._key = key
        self._conn: Any = None  # asyncpg.Connection while the lock is held

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def try_acquire(self) -> bool:
        if self._conn is not None:
            return await self.still_held()
        conn: Any = None
        try:
            async with asyncio.timeout(self._timeout_s):
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._timeout_s,
                    server_settings={
                        "application_name": "mentiondesk leader lock",
                        "tcp_keepalives_idle": str(KEEPALIVE_IDLE_S),
                        "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_S),
                        "tcp_keepalives_count": str(KEEPALIVE_COUNT),
                    },
                )
                await _no_idle_timeout(conn)
                won = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key))
        except _CONNECTION_FAILURES as exc:
            logger.warning("leader election on %s failed: %s", self._name, _reason(exc))
            await _close(conn)
            return False
        if not won:
            await _close(conn)
            return False
        self._conn = conn
        return True

    async def still_held(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            async with asyncio.timeout(self._timeout_s):
                held = await conn.fetchval(_HELD, self._key)
        except _CONNECTION_FAILURES as exc:
            logger.warning("leader lock on %s cannot be checked: %s", self._name, _reason(exc))
            held = 0
        if held == 1:
            return True
        await self.release()
        return False

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        await _close(conn)


async def _no_idle_timeout(conn: Any) -> None:
    """Turn off idle_session_timeout for this session: a server default would end it, and the lock with it.

    The lock's session is idle between checks by design. The setting exists from Postgres 14; older servers
    have no such timeout to turn off.
    """
    with contextlib.suppress(asyncpg.UndefinedObjectError):
        await conn.execute("SET idle_session_timeout = 0")


async def _close(conn: Any) -> None:
    if conn is None:
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await conn.close()
    except Exception:
        conn.terminate()  # the network is gone: drop the socket, Postgres ends the session on its side


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def leader_lock(url: str, *, check_s: float) -> LeaderLock:
    """The lock for the database at url: an advisory lock on Postgres, the single-process one on SQLite."""
    if make_url(url).get_backend_name() == "sqlite":
        return SingleProcessLock()
    return PostgresLeaderLock(url, timeout_s=check_s)
