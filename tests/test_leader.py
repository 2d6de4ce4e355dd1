"""Leader election: one daemon of those sharing a Postgres database leads; SQLite's one daemon always does.

Also the outbox claim that lets every process run a sender: on Postgres a row another sender is claiming is
skipped at once (FOR UPDATE SKIP LOCKED), and two senders working one outbox post each message once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from mastodon_mock.testing.server import MockServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon, LeadershipError
from mentiondesk.storage.db import create_engine, current_revision, head_revision, transaction, upgrade
from mentiondesk.storage.leader import PostgresLeaderLock, SingleProcessLock, leader_lock
from mentiondesk.storage.models import OutboxState, SlackOutbox
from mentiondesk.storage.outbox import claim, due_messages
from mentiondesk.storage.types import utcnow
from tests.conftest import eventually, postgres_only
from tests.fakeslack import FakeSlack
from tests.test_e2e import Start
from tests.test_slack_sender import Sessions, get, new_ticket, sender_for

CHECK_S = 1.0
# A follower tries every CHECK_S; the leader notices a lost lock at its next check. Margin for a busy machine.
TAKEOVER_S = 2 * CHECK_S + 10.0
LOCK_APP = "mentiondesk leader lock"


async def _terminate_lock_sessions(url: str) -> int:
    """End the lock's Postgres sessions, as a failover, a network cut or an admin would: how many were ended."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = :app"
                ),
                {"app": LOCK_APP},
            )
            return int(result.scalar_one())
    finally:
        await engine.dispose()


class _ConfusedConnection:
    """The lock's real connection, but whose next query fails as asyncpg's does after its backend was terminated
    mid-call (seen in CI): InternalClientError "another operation is in progress", not a connection error."""

    def __init__(self, real: Any) -> None:
        self._real = real

    async def fetchval(self, *args: Any) -> Any:
        raise asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is in progress")

    async def close(self) -> None:
        await self._real.close()

    def terminate(self) -> None:
        self._real.terminate()


@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_a_confused_lock_connection_loses_the_lead_rather_than_crashing_the_daemon(db_url: str) -> None:
    first = PostgresLeaderLock(db_url, timeout_s=CHECK_S * 4)
    second = PostgresLeaderLock(db_url, timeout_s=CHECK_S * 4)
    try:
        assert await first.try_acquire()
        first._conn = _ConfusedConnection(first._conn)
        assert not await first.still_held() and not first.held  # the connection is dropped, and the lock with it
        assert await second.try_acquire()
    finally:
        await first.release()
        await second.release()


async def test_sqlite_has_one_process_which_always_leads(tmp_path: Any) -> None:
    lock = leader_lock(f"sqlite+aiosqlite:///{tmp_path / 'md.db'}", check_s=CHECK_S)
    assert isinstance(lock, SingleProcessLock) and lock.single_process
    assert await lock.try_acquire() and await lock.still_held()


@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_one_lock_holder_at_a_time_and_a_lost_connection_loses_the_lock(db_url: str) -> None:
    first = PostgresLeaderLock(db_url, timeout_s=CHECK_S * 4)
    second = PostgresLeaderLock(db_url, timeout_s=CHECK_S * 4)
    try:
        assert await first.try_acquire()
        assert not await second.try_acquire() and not second.held
        assert await first.still_held()

        assert await _terminate_lock_sessions(db_url) == 1
        assert not await first.still_held() and not first.held  # noticed at the next check, connection dropped
        assert await second.try_acquire()
        assert not await first.try_acquire()

        await second.release()
        assert await first.try_acquire()
    finally:
        await first.release()
        await second.release()


@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_one_daemon_leads_and_another_takes_over_when_it_loses_the_lock_or_stops(
    mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start, db_url: str
) -> None:
    config = make_config(database={"leader_check_s": CHECK_S})
    first = await start_daemon(config)
    second = await start_daemon(config)
    # The first started alone and leads; the second serves Slack and sends the outbox, but reads no feed.
    assert first.is_leader and first.watchers and first.timers is not None
    assert not second.is_leader and second.watchers == [] and second.timers is None and second.sweeper is None
    assert second.sender is not None

    await _terminate_lock_sessions(db_url)

    async def one_leader() -> bool:
        return [first.is_leader, second.is_leader].count(True) == 1

    async def first_stepped_down() -> bool:
        return not first.is_leader or second.is_leader

    await eventually(first_stepped_down, timeout_s=TAKEOVER_S, what="the first daemon to notice its lock is gone")
    await eventually(one_leader, timeout_s=TAKEOVER_S, what="a daemon to lead again")
    leader, follower = (first, second) if first.is_leader else (second, first)
    assert leader.watchers and leader.timers is not None
    assert follower.watchers == [] and follower.timers is None

    await leader.stop()
    await eventually(lambda: _leads(follower), timeout_s=TAKEOVER_S, what="the other daemon to take over")
    assert follower.watchers and follower.timers is not None


@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_a_leader_whose_work_will_not_stop_after_losing_the_lock_ends_rather_than_lead_twice(
    mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start, db_url: str
) -> None:
    daemon = await start_daemon(make_config(database={"leader_check_s": CHECK_S}, daemon={"shutdown_timeout_s": 1.0}))
    assert daemon.is_leader
    released = asyncio.Event()

    async def stubborn() -> None:
        # Leader work stuck where a cancellation does not reach it (a call in a C extension, say).
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue

    daemon._leader_tasks.append(asyncio.create_task(stubborn(), name="stubborn leader work"))
    try:
        await _terminate_lock_sessions(db_url)
        with pytest.raises(RuntimeError, match="leader election stopped") as failed:
            await asyncio.wait_for(daemon.wait(), timeout=TAKEOVER_S + 5)
        assert isinstance(failed.value.__cause__, LeadershipError)
        assert not daemon.is_leader  # it stopped claiming the lead before giving up
    finally:
        released.set()


async def _leads(daemon: Daemon) -> bool:
    return daemon.is_leader


@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_processes_starting_together_on_an_empty_database_migrate_it_once(db_url: str) -> None:
    engines = [create_engine(db_url) for _ in range(3)]
    try:
        async with asyncio.timeout(60):  # unserialised, the migrations wait on each other's table locks
            await asyncio.gather(*(upgrade(engine) for engine in engines))
        assert {await current_revision(engine) for engine in engines} == {head_revision()}
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_a_row_another_sender_is_claiming_is_skipped_without_waiting(sessions: Sessions) -> None:
    _, first_id = await new_ticket(sessions)
    _, second_id = await new_ticket(sessions)
    async with sessions() as session:
        due = {row.id: row for row, _ in await due_messages(session, now=utcnow())}
    lease_until = utcnow() + timedelta(minutes=5)
    async with transaction(sessions) as holding:
        assert await claim(holding, row=due[first_id], lease_until=lease_until)
        # The first claim has not committed: its row is locked. Without SKIP LOCKED this would wait for it.
        async with asyncio.timeout(2.0), transaction(sessions) as other:
            assert not await claim(other, row=due[first_id], lease_until=lease_until)
            assert await claim(other, row=due[second_id], lease_until=lease_until)
    async with transaction(sessions) as late:
        assert not await claim(late, row=due[first_id], lease_until=lease_until)  # committed, leased: still not


@pytest.mark.slack_fast("two senders drain a queue of cards together; pacing is test_e2e's")
@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_two_senders_on_one_outbox_post_each_card_once(slack: FakeSlack, sessions: Sessions) -> None:
    rows = [(await new_ticket(sessions, text=f"Ticket card {i}"))[1] for i in range(12)]
    senders = [sender_for(slack, sessions), sender_for(slack, sessions)]

    async def all_sent() -> bool:
        states = [(await get(sessions, SlackOutbox, r)).state for r in rows]
        return all(state == OutboxState.SENT for state in states)

    async def drain(sender: Any) -> int:
        passes = 0
        while not await all_sent():
            await sender.send_due()
            passes += 1
        return passes

    async with asyncio.timeout(30):
        await asyncio.gather(*(drain(s) for s in senders))
    posted = Counter(
        ((m.get("metadata") or {}).get("event_payload") or {}).get("outbox_id") for m in slack.messages("C0SUPPORT")
    )
    assert posted == Counter(dict.fromkeys(rows, 1))
    assert slack.call_count("chat.postMessage") == len(rows)
