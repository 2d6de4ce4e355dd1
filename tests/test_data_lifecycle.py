"""Customers' data over time: retention erases old conversations, `forget` one person's, `db backup` copies the
SQLite file while the daemon runs, and SQLite refuses a second daemon."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.cli import main
from mentiondesk.bot.config import Config, ConfigError, parse_settings
from mentiondesk.bot.erasure import erase_before
from mentiondesk.bot.replies import ReplyError, latest_customer_post
from mentiondesk.storage.db import execute, head_revision, transaction
from mentiondesk.storage.models import (
    DeadLetter,
    Mention,
    Note,
    OutboxKind,
    Reply,
    ReplyState,
    SlackOutbox,
    Ticket,
    TicketEvent,
    TicketState,
)
from mentiondesk.storage.retention import ERASED
from mentiondesk.storage.single_daemon import AnotherDaemonRunning, DaemonLock
from mentiondesk.storage.types import utcnow
from tests.conftest import eventually, spawn_run
from tests.fakeslack import FakeSlack
from tests.test_cli import write_config
from tests.test_customer_side import _last_card, _opened_with_card, _resolve, _set, _ticket_count
from tests.test_e2e import COMPLAINT, COMPLAINT_2, Start, post, rows
from tests.test_report_figures import TICKETS, seed
from tests.test_slack_setup import tokens

UNTIL = "2025-03-10"  # the end of test_report_figures' period
INSTANCE = "https://brand.example"
DAY = timedelta(days=1)


# --- seeding: customers' conversations, written as the daemon writes them -------------------------------------


class Rows:
    """Inserts rows with ids of their own, so a test can name each one."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.next_id = 1000

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    async def add(self, model: type[Any], **values: Any) -> int:
        row_id = values.pop("id", None) or self._id()
        async with transaction(self.sessions) as session:
            await (await session.connection()).execute(insert(model), [{"id": row_id, **values}])
        return row_id

    async def ticket(self, acct: str, *, state: str, at: datetime, slack_ts: str | None = "1700000000.000200") -> int:
        ticket_id = self._id()
        return await self.add(
            Ticket,
            id=ticket_id,
            state=state,
            customer_account_id=_account_id(acct),
            customer_acct=acct,
            customer_display_name=acct.split("@")[0].title(),
            customer_url=f"https://social.example/@{acct.split('@')[0]}",
            root_status_id=str(ticket_id * 10),
            posted_at=at,
            received_at=at,
            created_at=at,
            updated_at=at,
            resolved_at=at if state == TicketState.RESOLVED else None,
            score=0.9,
            channel="C1",
            slack_ts=slack_ts,
        )

    async def mention(self, acct: str, text: str, *, at: datetime, ticket_id: int | None = None) -> int:
        mention_id = self._id()
        user = acct.split("@")[0]
        return await self.add(
            Mention,
            id=mention_id,
            status_uri=f"https://social.example/users/{user}/statuses/{mention_id}",
            status_id=str(mention_id * 10),
            status_url=f"https://social.example/@{user}/{mention_id}",
            account_id=_account_id(acct),
            account_acct=acct,
            account_display_name=user.title(),
            account_url=f"https://social.example/@{user}",
            text=text,
            tags=["support"],
            source="notification",
            posted_at=at,
            received_at=at,
            label="complaint",
            score=0.9,
            ticket_id=ticket_id,
        )

    async def conversation(self, acct: str, *, state: str, at: datetime) -> int:
        """A ticket with the customer's post, a reply to them, an agent's note, an event and a thread message."""
        ticket_id = await self.ticket(acct, state=state, at=at)
        await self.mention(acct, f"@brand my parcel for {acct} never came", at=at, ticket_id=ticket_id)
        await self.add(
            Reply,
            ticket_id=ticket_id,
            author_slack_id="U1",
            text=f"@{acct} sorry, we are on it",
            visibility="public",
            in_reply_to_status_id="123",
            state=ReplyState.PUBLISHED,
            created_at=at,
        )
        await self.add(
            Note,
            ticket_id=ticket_id,
            author_slack_id="U1",
            text=f"{acct} is a regular",
            slack_channel="C1",
            slack_ts=f"{ticket_id}.1",
        )
        await self.add(
            TicketEvent, ticket_id=ticket_id, actor="customer", action="customer_post", detail=f"https://x/@{acct}/1"
        )
        await self.add(
            SlackOutbox,
            kind=OutboxKind.FOLLOWUP,
            ticket_id=ticket_id,
            channel="C1",
            text=f"{acct}: still nothing",
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": f"{acct}: still nothing"}}],
            state="sent",
            created_at=at,
        )
        return ticket_id

    async def dead_letter(self, acct: str, *, at: datetime) -> int:
        payload = {"id": str(self._id()), "type": "mention", "account": {"id": _account_id(acct), "acct": acct}}
        return await self.add(
            DeadLetter,
            feed="notifications",
            item_key=f"n{self.next_id}",
            status_id="99",
            status_uri=f"https://social.example/users/{acct.split('@')[0]}/statuses/99",
            reason="status.content: not text",
            payload=json.dumps(payload),
            first_seen_at=at,
            last_seen_at=at,
        )


def _account_id(acct: str) -> str:
    return f"id-{acct}"


async def everything(sessions: async_sessionmaker[AsyncSession], model: type[Any]) -> list[Any]:
    async with sessions() as session:
        return list(await session.exec(select(model).order_by(col(model.id))))


def erased_ticket(ticket: Ticket) -> bool:
    return ticket.customer_acct == ERASED and ticket.customer_display_name == "" and ticket.customer_url == ""


def mention_erased(mention: Mention) -> bool:
    return (
        mention.text == ERASED
        and mention.account_acct == ERASED
        and mention.account_url == ""
        and mention.status_url == ""
        and mention.tags == []
        and mention.status_uri.startswith("erased:")
    )


async def report_json(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    argv = ["report", "--config", str(config), "--since", "7d", "--until", UNTIL, "--format", "json"]
    code = await asyncio.to_thread(main, argv)
    out = capsys.readouterr().out
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    return data


# --- retention ---------------------------------------------------------------------------------------------------


async def test_retention_erases_finished_conversations_and_keeps_the_figures(
    sessions: async_sessionmaker[AsyncSession], db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(sessions, TICKETS)  # test_report_figures' week of tickets, replies and SLA clocks, in March 2025
    rows = Rows(sessions)
    now = utcnow()
    for ticket in TICKETS:
        acct = f"customer{ticket.id}@example.social"
        await rows.mention(
            acct, f"@brand ticket {ticket.id}: where is my refund", at=ticket.created, ticket_id=ticket.id
        )
    old_closed = await rows.conversation("olga@social.example", state=TicketState.CLOSED, at=now - 90 * DAY)
    old_open = await rows.conversation("otto@social.example", state=TicketState.OPEN, at=now - 90 * DAY)
    recent = await rows.conversation("rita@social.example", state=TicketState.RESOLVED, at=now - 2 * DAY)
    old_loose = await rows.mention("lou@social.example", "@brand lovely shop", at=now - 90 * DAY)
    recent_loose = await rows.mention("rob@social.example", "@brand nice", at=now - 2 * DAY)
    old_dead = await rows.dead_letter("dan@social.example", at=now - 90 * DAY)
    recent_dead = await rows.dead_letter("dot@social.example", at=now - 2 * DAY)
    config = write_config(tmp_path, mastodon_url=INSTANCE, slack_url="https://slack.example", db_url=db_url)
    before = await report_json(config, capsys)

    erased = await erase_before(sessions, now - 30 * DAY)

    assert await report_json(config, capsys) == before
    finished = {t.id for t in TICKETS if t.state in (TicketState.RESOLVED, TicketState.CLOSED)} | {old_closed}
    kept = {t.id for t in TICKETS} - finished | {old_open, recent}
    tickets = {t.id: t for t in await everything(sessions, Ticket)}
    assert {i for i, t in tickets.items() if erased_ticket(t)} == finished
    # What the figures are made of stays.
    assert all(tickets[i].state and tickets[i].channel == "C1" and tickets[i].score == 0.9 for i in finished)
    # No two erased customers share an account id: a new post of theirs threads into none of these tickets.
    assert len({tickets[i].customer_account_id for i in finished}) == len(finished)
    assert all(not tickets[i].customer_account_id.startswith("id-") for i in finished)
    assert tickets[old_open].customer_acct == "otto@social.example"
    assert tickets[recent].customer_acct == "rita@social.example"

    mentions = {m.id: m for m in await everything(sessions, Mention)}
    erased_mentions = {i for i, m in mentions.items() if mention_erased(m)}
    assert erased_mentions == {m.id for m in mentions.values() if m.ticket_id in finished} | {old_loose}
    assert mentions[recent_loose].text == "@brand nice"
    assert all(m.label == "complaint" and m.score == 0.9 for m in mentions.values())
    assert {r.ticket_id for r in await everything(sessions, Reply) if r.text == ERASED} == finished & {
        r.ticket_id for r in await everything(sessions, Reply)
    }
    assert {n.ticket_id for n in await everything(sessions, Note) if n.text == ERASED} == {old_closed}
    assert {e.ticket_id for e in await everything(sessions, TicketEvent) if e.detail == ERASED} == {old_closed}
    outbox = await everything(sessions, SlackOutbox)
    assert {o.ticket_id for o in outbox if o.kind == OutboxKind.FOLLOWUP and o.text == ERASED} == {old_closed}
    # Every erased ticket's card is queued for a refresh, so Slack stops showing what was erased.
    assert {o.ticket_id for o in outbox if o.kind == OutboxKind.UPDATE} == finished
    dead = {d.id: d for d in await everything(sessions, DeadLetter)}
    assert dead[old_dead].payload == ERASED and dead[old_dead].status_uri is None
    assert "dot@social.example" in dead[recent_dead].payload
    assert (erased.tickets, erased.mentions, erased.dead_letters, erased.cards) == (
        len(finished),
        len(erased_mentions),
        1,
        len(finished),
    )
    assert not any(erased_ticket(tickets[i]) for i in kept)
    # Run again (the next hour): nothing left to erase.
    assert not await erase_before(sessions, now - 30 * DAY)


async def test_the_daemon_erases_expired_conversations(
    sessions: async_sessionmaker[AsyncSession], make_config: Callable[..., Config], start_daemon: Start
) -> None:
    rows = Rows(sessions)
    old = await rows.conversation("olga@social.example", state=TicketState.RESOLVED, at=utcnow() - 40 * DAY)
    young = await rows.conversation("yan@social.example", state=TicketState.RESOLVED, at=utcnow() - 10 * DAY)
    await start_daemon(make_config(retention={"customer_data_days": 30}))

    async def old_one_erased() -> bool:
        return erased_ticket(next(t for t in await everything(sessions, Ticket) if t.id == old))

    await eventually(old_one_erased, what="the expired conversation erased")
    young_ticket = next(t for t in await everything(sessions, Ticket) if t.id == young)
    assert young_ticket.customer_acct == "yan@social.example"


async def test_a_customer_coming_back_after_erasure_gets_a_new_ticket(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(tickets={"reopen_window_days": 7}))
    first, old = await _opened_with_card(daemon, mastodon, slack)
    await _resolve(daemon, old.id, days_ago=2)
    await _set(daemon, old.id, updated_at=utcnow() - 2 * DAY)
    assert daemon.context is not None
    async with transaction(daemon.context.sessions) as session:
        await execute(session, update(Mention).values(received_at=utcnow() - 2 * DAY))
    assert (await erase_before(daemon.context.sessions, utcnow() - DAY)).tickets == 1
    daemon.context.wake_outbox()
    await slack.wait_for(lambda: ERASED in _last_card(slack, old), timeout_s=10)
    assert "never arrived" not in _last_card(slack, old)

    # Within the reopen window and in the old thread: without erasure this would reopen the old ticket.
    await post(mastodon, "alice", "@brand it is happening again, same problem", in_reply_to_id=first["id"])
    await eventually(lambda: _ticket_count(daemon, 2), what="a second ticket")
    tickets = await rows(daemon, Ticket)
    assert tickets[0].state == TicketState.RESOLVED and erased_ticket(tickets[0])
    assert tickets[1].customer_acct == "alice" and tickets[1].state == TicketState.OPEN
    assert tickets[1].previous_ticket_id is None  # nothing left to link to


@pytest.mark.parametrize("days", [-1, "a week"])
def test_retention_days_must_be_a_whole_number_from_zero(days: Any) -> None:
    data = {
        "mastodon": {"base_url": INSTANCE},
        "slack": {"default_channel": "C1"},
        "retention": {"customer_data_days": days},
    }
    with pytest.raises(ConfigError, match=r"retention\.customer_data_days"):
        parse_settings(data, source="test")


# --- forget ------------------------------------------------------------------------------------------------------


async def forget(config: Path, handle: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, ["forget", "--config", str(config), handle])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


async def test_forget_erases_one_persons_data_and_says_what(
    sessions: async_sessionmaker[AsyncSession], db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = Rows(sessions)
    now = utcnow()
    alice = "alice@social.example"
    alice_open = await rows.conversation(alice, state=TicketState.OPEN, at=now - DAY)
    alice_old = await rows.conversation(alice, state=TicketState.RESOLVED, at=now - 300 * DAY)
    await rows.mention(alice, "@brand and another thing", at=now - DAY, ticket_id=alice_open)
    draft = await rows.add(
        Reply,
        ticket_id=alice_open,
        author_slack_id="U2",
        text=f"@{alice} here is your refund",
        visibility="public",
        in_reply_to_status_id="456",
        state=ReplyState.PENDING_APPROVAL,
    )
    alice_loose = await rows.mention(alice, "@brand love the new colours", at=now)
    alice_dead = await rows.dead_letter(alice, at=now)
    bob_ticket = await rows.conversation("bob@social.example", state=TicketState.OPEN, at=now - DAY)
    bob_dead = await rows.dead_letter("bob@social.example", at=now)
    carol = await rows.conversation("carol", state=TicketState.RESOLVED, at=now)  # local to the brand's instance
    config = write_config(tmp_path, mastodon_url=INSTANCE, slack_url="https://slack.example", db_url=db_url)

    code, out, _ = await forget(config, "@Alice@social.example", capsys)

    assert code == 0
    assert out == (
        "erased 4 mentions, 2 tickets, 3 replies, 2 notes, 1 set-aside feed entry of @Alice@social.example; "
        "closed 1 open ticket (customer data erased on request); 2 Slack cards will be updated "
        "(by the running daemon within a minute, or at its next start)"
    )
    tickets = {t.id: t for t in await everything(sessions, Ticket)}
    assert erased_ticket(tickets[alice_open]) and erased_ticket(tickets[alice_old])
    assert tickets[alice_open].state == TicketState.CLOSED
    assert tickets[alice_open].closed_reason == "customer data erased on request"
    assert tickets[bob_ticket].customer_acct == "bob@social.example" and tickets[bob_ticket].state == TicketState.OPEN
    mentions = await everything(sessions, Mention)
    assert {m.id for m in mentions if mention_erased(m)} == {
        m.id for m in mentions if m.ticket_id in (alice_open, alice_old)
    } | {alice_loose}
    assert not any(alice in m.text or m.account_acct == alice for m in mentions)
    assert {r.ticket_id for r in await everything(sessions, Reply) if r.text == ERASED} == {alice_open, alice_old}
    # A draft waiting for approval can no longer go out, and no new reply can be written to nobody.
    assert next(r for r in await everything(sessions, Reply) if r.id == draft).state == ReplyState.REJECTED
    async with sessions() as session:
        with pytest.raises(ReplyError, match="data was erased"):
            await latest_customer_post(session, tickets[alice_open])
    dead = {d.id: d for d in await everything(sessions, DeadLetter)}
    assert dead[alice_dead].payload == ERASED and "bob@social.example" in dead[bob_dead].payload
    outbox = await everything(sessions, SlackOutbox)
    assert {o.ticket_id for o in outbox if o.kind == OutboxKind.UPDATE} == {alice_open, alice_old}

    # Asked again: nothing of hers is left to find.
    assert await forget(config, "alice@social.example", capsys) == (
        0,
        "nothing stored of @alice@social.example: nothing erased",
        "",
    )
    # A handle on the brand's own instance: Mastodon stores it without the domain.
    code, out, _ = await forget(config, "@carol", capsys)
    assert code == 0 and out.startswith(
        "erased 1 mention, 1 ticket, 1 reply, 1 note, 0 set-aside feed entries of @carol@brand.example"
    )
    assert erased_ticket(next(t for t in await everything(sessions, Ticket) if t.id == carol))


@pytest.mark.parametrize("handle", ["@", "alice@", "@alice@@social.example", "alice smith", "@alice@social..example"])
async def test_forget_refuses_a_malformed_handle(
    tmp_path: Path, handle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "never.db"
    config = write_config(
        tmp_path, mastodon_url=INSTANCE, slack_url="https://slack.example", db_url=f"sqlite+aiosqlite:///{db}"
    )
    code, out, err = await forget(config, handle, capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"mentiondesk: {handle!r} is not a Mastodon handle: write @user@instance")
    assert not db.exists()


async def test_forget_takes_the_customer_off_the_slack_card(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon = await start_daemon(make_config())
    await post(mastodon, "alice", COMPLAINT)
    await post(mastodon, "bob", COMPLAINT_2)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 2, 20)
    cards = slack.messages("C0SUPPORT")
    alices = next(c for c in cards if "never arrived" in str(c["blocks"]))
    config = write_config(tmp_path, mastodon_url=mastodon.base_url, slack_url=slack.base_url, db_url=db_url)

    code, out, _ = await forget(config, "@alice", capsys)
    assert code == 0 and out.startswith("erased 1 mention, 1 ticket,") and "1 Slack card will be updated" in out
    # The CLI is another process in real life: the daemon's sender finds the refresh at its next look.
    assert daemon.sender is not None
    daemon.sender.wake()

    def card(ts: str) -> dict[str, Any]:
        return next(m for m in slack.messages("C0SUPPORT") if m["ts"] == ts)

    await slack.wait_for(lambda: ERASED in str(card(alices["ts"])["blocks"]), 20)
    assert "never arrived" not in str(card(alices["ts"])["blocks"]) and "alice" not in str(card(alices["ts"])["blocks"])
    bobs = next(c for c in cards if c["ts"] != alices["ts"])
    assert "crashes every time" in str(card(bobs["ts"])["blocks"])


# --- backups -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_backup_while_the_daemon_writes(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon = await start_daemon(make_config())
    for user in ("alice", "bob"):
        await post(mastodon, user, COMPLAINT)

    async def stored(n: int) -> bool:
        assert daemon.context is not None
        return len(await everything(daemon.context.sessions, Mention)) >= n

    await eventually(lambda: stored(2), what="two mentions stored")
    config = write_config(tmp_path, mastodon_url=mastodon.base_url, slack_url=slack.base_url, db_url=db_url)
    target = tmp_path / "backups" / "md.db"
    target.parent.mkdir()
    # The daemon keeps storing posts while the copy is taken.
    posting = asyncio.gather(*(post(mastodon, user, COMPLAINT_2) for user in ("carol", "dan", "mallory")))
    code = await asyncio.to_thread(main, ["db", "backup", "--config", str(config), str(target)])
    await posting
    out = capsys.readouterr().out
    assert code == 0
    assert out.strip() == f"backed up to {target}: {target.stat().st_size} bytes, schema at {head_revision()}"
    with closing(sqlite3.connect(target)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        accts = {row[0] for row in copy.execute("SELECT account_acct FROM mentions")}
    assert {"alice", "bob"} <= accts
    assert not [p for p in target.parent.iterdir() if p != target]  # no temporary file left behind
    assert target.stat().st_mode & 0o777 == 0o600  # customers' posts: for the owner's eyes only

    code = await asyncio.to_thread(main, ["db", "backup", "--config", str(config), str(target)])
    assert code == 1 and f"{target} exists already" in capsys.readouterr().err
    await eventually(lambda: stored(5), what="the later posts stored")
    code = await asyncio.to_thread(main, ["db", "backup", "--config", str(config), "--force", str(target)])
    assert code == 0
    with closing(sqlite3.connect(target)) as copy:
        assert copy.execute("SELECT count(*) FROM mentions").fetchone() == (5,)


async def test_backup_of_postgres_points_to_pg_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+asyncpg://desk:secret@127.0.0.1:1/mentiondesk"
    config = write_config(tmp_path, mastodon_url=INSTANCE, slack_url="https://slack.example", db_url=url)
    target = tmp_path / "copy.db"
    code = await asyncio.to_thread(main, ["db", "backup", "--config", str(config), str(target)])
    err = capsys.readouterr().err
    assert code == 1 and "is not SQLite: back Postgres up with pg_dump" in err and "secret" not in err
    assert not target.exists()


# --- one daemon per SQLite file ----------------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_second_daemon_on_the_same_sqlite_file_refuses_to_start(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    db_url: str,
    tmp_path: Path,
) -> None:
    first = await start_daemon(make_config())
    config = write_config(tmp_path, mastodon_url=mastodon.base_url, slack_url=slack.base_url, db_url=db_url)
    second = await spawn_run(config, tokens(slack.bot_token, slack.app_token))
    _, err = await asyncio.wait_for(second.communicate(), timeout=60)
    path = db_url.removeprefix("sqlite+aiosqlite:///")
    assert second.returncode == 1
    assert (
        f"mentiondesk: another mentiondesk daemon (pid {os.getpid()}) is running on {path}; "
        "SQLite supports one daemon — use Postgres to run several"
    ) in err.decode()
    # The first one never noticed.
    await post(mastodon, "alice", COMPLAINT)
    assert first.context is not None
    sessions = first.context.sessions

    async def stored() -> bool:
        return len(await everything(sessions, Mention)) == 1

    await eventually(stored, what="the first daemon storing a post")


async def test_the_lock_goes_when_its_daemon_is_killed(tmp_path: Path) -> None:
    db = tmp_path / "md.db"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys, time; from pathlib import Path; from mentiondesk.storage.single_daemon import DaemonLock; "
        "lock = DaemonLock(Path(sys.argv[1])); lock.acquire(); print('locked', flush=True); time.sleep(120)",
        str(db),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), timeout=30) == b"locked\n"
        with pytest.raises(AnotherDaemonRunning, match=f"pid {holder.pid}"):
            DaemonLock(db).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
    lock = DaemonLock(db)
    lock.acquire()  # no stale lock to clean up by hand
    lock.release()
    assert (tmp_path / "md.db.lock").read_text().strip() == str(os.getpid())
