"""One post that cannot be read or stored never stops intake: it is normalised, or set aside, and the rest flows.

Broken statuses come from tests/poison_proxy.py in front of mastodon-mock, which will not create them itself.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from mentiondesk.bot.cli import main
from mentiondesk.bot.config import Config, Secrets, parse_settings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.mastodon.set_aside import MAX_TRIES
from mentiondesk.storage.models import DeadLetter, Mention, Ticket, max_length
from tests.conftest import BRAND_TOKEN, eventually, settings_dict
from tests.fakeslack import FakeSlack
from tests.poison_proxy import Poison, PoisoningProxy, on_status, removing, setting
from tests.test_cli import write_config
from tests.test_e2e import COMPLAINT, COMPLAINT_2, PRAISE, post, rows

Start = Callable[[Config], Awaitable[Daemon]]

NAME_MAX = max_length(Mention.account_display_name, Ticket.customer_display_name)
ACCT_MAX = max_length(Mention.account_acct, Ticket.customer_acct)
LANGUAGE_MAX = max_length(Mention.language)
URL_MAX = max_length(Mention.status_url)
PROFILE_URL_MAX = max_length(Mention.account_url, Ticket.customer_url)
STATUS_ID_MAX = max_length(Mention.status_id)
URI_MAX = max_length(Mention.status_uri)


def _appending_to_content(extra: str) -> Poison:
    def change(status: dict[str, Any]) -> dict[str, Any]:
        status["content"] = status["content"].replace("</p>", f"{extra}</p>")
        return status

    return on_status(change)


@dataclass(frozen=True)
class Fixable:
    """A poison the edge repairs, and what the stored mention looks like afterwards."""

    poison: Poison
    stored: Callable[[Mention], bool]


def _dated_on_receipt(m: Mention) -> bool:
    return not m.posted_at_known and abs(m.posted_at - m.received_at) < timedelta(seconds=30)


FIXABLE: dict[str, Fixable] = {
    "created_at_null": Fixable(setting("created_at", None), _dated_on_receipt),
    "created_at_not_a_date": Fixable(setting("created_at", "last Tuesday"), _dated_on_receipt),
    "created_at_missing": Fixable(removing("created_at"), _dated_on_receipt),
    "created_at_far_future": Fixable(setting("created_at", "9999-12-31T23:59:59Z"), _dated_on_receipt),
    "edited_at_not_a_date": Fixable(setting("edited_at", "soon"), lambda m: m.edited_at is None and m.posted_at_known),
    "long_display_name": Fixable(
        setting("account.display_name", "D" * 600),
        lambda m: m.account_display_name == "D" * (NAME_MAX - 1) + "…",
    ),
    "display_name_an_object": Fixable(
        setting("account.display_name", {"x": 1}), lambda m: m.account_display_name == ""
    ),
    "long_acct": Fixable(setting("account.acct", "a" * 700), lambda m: m.account_acct == "a" * (ACCT_MAX - 1) + "…"),
    "long_language": Fixable(setting("language", "x" * 40), lambda m: m.language == "x" * (LANGUAGE_MAX - 1) + "…"),
    "long_post_url": Fixable(
        setting("url", "https://mock.local/@x/" + "u" * 3000),
        lambda m: len(m.status_url) == URL_MAX and m.status_url.endswith("u…"),
    ),
    "long_profile_url": Fixable(
        setting("account.url", "https://mock.local/@" + "p" * 3000),
        lambda m: len(m.account_url) == PROFILE_URL_MAX and m.account_url.endswith("p…"),
    ),
    "nul_bytes": Fixable(
        _appending_to_content(" nul\x00byte"),
        lambda m: "\x00" not in m.text and "nulbyte" in m.text,
    ),
    "nul_in_name": Fixable(
        setting("account.display_name", "Nul\x00Name"), lambda m: m.account_display_name == "NulName"
    ),
    "lone_surrogate": Fixable(
        setting("account.display_name", "Half\ud800Pair"), lambda m: m.account_display_name == "Half\ufffdPair"
    ),
    "mentions_not_objects": Fixable(setting("mentions", ["brand", 7, None]), lambda m: "@brand" in m.text),
    "tags_a_string": Fixable(setting("tags", "acmehelp"), lambda m: m.tags == []),
    "tags_odd_entries": Fixable(
        setting("tags", [None, "x", {"name": "Help"}, {"url": "y"}]), lambda m: m.tags == ["help"]
    ),
    "in_reply_to_nonsense": Fixable(setting("in_reply_to_id", "9" * 200), lambda m: m.in_reply_to_id is None),
    "unknown_fields": Fixable(setting("surprise", {"nested": [1, {"x": None}]}), lambda m: m.posted_at_known),
}

# A poison the edge cannot repair, and what the dead letter's reason says.
UNREADABLE: dict[str, tuple[Poison, str]] = {
    "no_account": (removing("account"), "the author (account) is missing"),
    "account_a_string": (setting("account", "alice"), "the author (account) is missing"),
    "no_account_id": (setting("account.id", None), "the author's account id is missing"),
    "no_status_id": (setting("id", None), "the status id is missing"),
    "long_status_id": (
        setting("id", "9" * 100),
        f"the status id is 100 characters long, more than the {STATUS_ID_MAX}",
    ),
    "long_uri": (setting("uri", "https://mock.local/" + "u" * 3000), f"more than the {URI_MAX} stored"),
    "status_a_list": (on_status(lambda status: ["not a status", status["content"]]), "the status is not a JSON object"),
}
# Entries that lose what identifies them in the feed: set aside under a digest of their JSON.
ID_LESS: dict[str, tuple[Poison, str]] = {
    "notification_id_null": (lambda entry: {**entry, "id": None}, "the notification has no usable id"),
    "notification_a_string": (lambda entry: "garbage", "the notification has no usable id"),
}

POISONS: dict[str, Poison] = {
    **{name: case.poison for name, case in FIXABLE.items()},
    **{name: poison for name, (poison, _) in {**UNREADABLE, **ID_LESS}.items()},
}


@pytest.fixture
async def polls_only(mastodon: MockServer) -> AsyncIterator[PoisoningProxy]:
    """mastodon-mock behind the poisoning proxy, with the stream down: only polls read the feed."""
    async with PoisoningProxy(mastodon.base_url, POISONS, streams_up=False).running() as proxy:
        yield proxy


@pytest.fixture
async def streams_too(mastodon: MockServer) -> AsyncIterator[PoisoningProxy]:
    async with PoisoningProxy(mastodon.base_url, POISONS, streams_up=True).running() as proxy:
        yield proxy


def proxied_config(proxy: PoisoningProxy, slack: FakeSlack, db_url: str, **sections: dict[str, Any]) -> Config:
    data = settings_dict(mastodon_url=proxy.base_url, slack_url=slack.base_url, db_url=db_url, **sections)
    return Config(
        settings=parse_settings(data, source="test"),
        secrets=Secrets(mastodon_token=BRAND_TOKEN, slack_bot_token=slack.bot_token, slack_app_token=slack.app_token),
    )


async def test_unreadable_notification_is_set_aside_and_the_posts_after_it_are_stored(
    polls_only: PoisoningProxy, mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    daemon = await start_daemon(proxied_config(polls_only, slack, db_url))
    await eventually(lambda: _polled(daemon), what="first poll")
    bad = await post(mastodon, "alice", f"{COMPLAINT} poison:no_account")
    await post(mastodon, "bob", COMPLAINT_2)
    await post(mastodon, "carol", PRAISE)

    await eventually(lambda: _stored(daemon, 2), timeout_s=15, what="the two posts after the unreadable one")
    assert sorted(m.account_acct for m in await rows(daemon, Mention)) == ["bob", "carol"]
    await eventually(lambda: _stored(daemon, 1, DeadLetter), what="the unreadable post set aside")
    [dead] = await rows(daemon, DeadLetter)
    assert dead.feed == "notifications:mention" and dead.status_id == str(bad["id"])
    assert "account" in dead.reason and "poison:no_account" in dead.payload
    assert polls_only.poisoned[("no_account", "poll")] >= 1


async def test_every_fixable_poison_is_stored_normalised(
    polls_only: PoisoningProxy, mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    daemon = await start_daemon(proxied_config(polls_only, slack, db_url))
    await eventually(lambda: _polled(daemon), what="first poll")
    for name in FIXABLE:
        await post(mastodon, "alice", f"{COMPLAINT} poison:{name}")
    await post(mastodon, "bob", COMPLAINT_2)

    await eventually(lambda: _stored(daemon, len(FIXABLE) + 1), timeout_s=30, what="every post stored")
    stored = {_poison_in(m.text): m for m in await rows(daemon, Mention)}
    wrong = [name for name, case in FIXABLE.items() if not case.stored(stored[name])]
    assert wrong == [], f"stored other than expected: {[(n, vars(stored[n])) for n in wrong]}"
    assert await rows(daemon, DeadLetter) == []
    assert {name for name, route in polls_only.poisoned} == set(FIXABLE)


async def test_every_unreadable_poison_is_set_aside_with_its_reason(
    polls_only: PoisoningProxy, mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    daemon = await start_daemon(proxied_config(polls_only, slack, db_url))
    await eventually(lambda: _polled(daemon), what="first poll")
    for name in {**UNREADABLE, **ID_LESS}:
        await post(mastodon, "alice", f"{COMPLAINT} poison:{name}")
    await post(mastodon, "bob", COMPLAINT_2)

    await eventually(lambda: _stored(daemon, 1), timeout_s=20, what="the good post after them")
    unreadable = len(UNREADABLE) + len(ID_LESS)
    await eventually(lambda: _stored(daemon, unreadable, DeadLetter), timeout_s=20, what="each one set aside")
    dead = await rows(daemon, DeadLetter)
    assert len(dead) == unreadable, [(d.item_key, d.reason) for d in dead]
    by_poison = {_poison_in(d.payload): d for d in dead}
    for name, (_, reason) in UNREADABLE.items():
        assert reason in by_poison[name].reason, (name, by_poison[name].reason)
        assert by_poison[name].item_key.isdigit(), "keyed by its notification id"
    # Without a notification id, keyed by the status's id if it has one, else by a digest of the JSON.
    assert by_poison["notification_id_null"].item_key == f"status:{by_poison['notification_id_null'].status_id}"
    [garbage] = [d for d in dead if d.item_key.startswith("sha256:")]
    assert garbage.payload == '"garbage"' and garbage.status_id is None
    assert all("no usable id" in d.reason for d in [garbage, by_poison["notification_id_null"]])
    assert daemon.watchers[0].set_aside.count >= len(dead)


async def test_post_without_a_time_says_so_on_the_card(
    polls_only: PoisoningProxy, mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    await start_daemon(proxied_config(polls_only, slack, db_url))
    await post(mastodon, "alice", f"{COMPLAINT} poison:created_at_null")
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=15)
    [card] = slack.messages("C0SUPPORT")
    assert "Posted: unknown (received <!date^" in str(card["blocks"])


async def test_post_set_aside_by_the_stream_and_the_poll_is_one_dead_letter(
    streams_too: PoisoningProxy, mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    daemon = await start_daemon(proxied_config(streams_too, slack, db_url))
    await eventually(lambda: _connected(daemon), what="stream connected")
    await post(mastodon, "alice", f"{COMPLAINT} poison:no_account")
    await post(mastodon, "bob", f"{COMPLAINT_2} poison:created_at_null")

    await eventually(lambda: _stored(daemon, 1), what="the fixable post stored")
    seen = {("no_account", "stream"), ("no_account", "poll"), ("created_at_null", "stream")}
    await eventually(lambda: _seen(streams_too, seen), what="both posts read by the stream, the bad one polled too")
    await eventually(lambda: _attempts_at_least(daemon, 2), what="the second read recorded")
    [dead] = await rows(daemon, DeadLetter)
    assert "author" in dead.reason
    [fixed] = await rows(daemon, Mention)
    assert fixed.account_acct == "bob" and not fixed.posted_at_known


async def test_post_the_database_refuses_is_set_aside_after_a_few_tries(
    polls_only: PoisoningProxy, mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    # Something the edge did not foresee: the database refuses this one post, as Postgres refused over-long names.
    config = proxied_config(polls_only, slack, db_url)
    daemon = await start_daemon(config)
    await eventually(lambda: _polled(daemon), what="first poll")
    await _refuse_marked_posts(db_url, sqlstate="22001")
    await post(mastodon, "alice", f"{COMPLAINT} refuse me")
    await post(mastodon, "bob", COMPLAINT_2)

    # The post after the refused one is not held up by it: stored while the refused one is still being retried.
    await eventually(lambda: _stored(daemon, 1), timeout_s=20, what="the post after the refused one")
    await eventually(lambda: _stored(daemon, 1, DeadLetter), timeout_s=20, what="the refused post set aside")
    [dead] = await rows(daemon, DeadLetter)
    assert dead.attempts == MAX_TRIES and "refused by the test trigger" in dead.reason
    assert "refuse me" in dead.payload

    # The feed's cursor moved past it: a restarted daemon does not try it again.
    await daemon.stop()
    daemon = await start_daemon(config)
    await post(mastodon, "carol", PRAISE)
    await eventually(lambda: _stored(daemon, 2), timeout_s=15, what="a post after the restart")
    [dead] = await rows(daemon, DeadLetter)
    assert dead.attempts == MAX_TRIES


async def test_database_failure_that_passes_is_waited_out_not_set_aside(
    polls_only: PoisoningProxy, mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    daemon = await start_daemon(proxied_config(polls_only, slack, db_url))
    await eventually(lambda: _polled(daemon), what="first poll")
    async with _writes_fail_for_a_while(db_url):
        since = time.monotonic()
        await post(mastodon, "alice", COMPLAINT)
        # Every poll reads the post and fails to store it, well past the tries that set a refused post aside.
        await eventually(
            lambda: _polls_since(polls_only, since, MAX_TRIES + 1), timeout_s=60, what="polls failing to store"
        )
    await eventually(lambda: _stored(daemon, 1, Ticket), timeout_s=15, what="the ticket once writes work again")
    assert await rows(daemon, DeadLetter) == []


async def test_post_that_became_unreadable_does_not_stop_the_refresh_sweep(
    mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    # Read fine when it came in; unreadable whenever the sweep re-reads it for edits and deletes.
    proxy = PoisoningProxy(mastodon.base_url, POISONS, streams_up=False, routes=frozenset({"status"}))
    async with proxy.running():
        daemon = await start_daemon(proxied_config(proxy, slack, db_url, mastodon={"refresh_interval_s": 0.3}))
        await post(mastodon, "alice", f"{COMPLAINT} poison:no_account")
        later = await post(mastodon, "bob", COMPLAINT_2)
        await eventually(lambda: _stored(daemon, 2), what="both posts stored")
        await asyncio.to_thread(mastodon.client("bob").status_delete, later["id"])
        await eventually(lambda: _deleted(daemon, "bob"), timeout_s=15, what="the later post's delete noticed")
        assert proxy.poisoned[("no_account", "status")] >= 1


async def test_reply_whose_parent_is_unreadable_is_stored_alone(
    mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start
) -> None:
    # The parent never reaches the desk by a feed (it does not mention the brand), so the reply fetches it.
    proxy = PoisoningProxy(mastodon.base_url, POISONS, streams_up=False, routes=frozenset({"status"}))
    async with proxy.running():
        daemon = await start_daemon(proxied_config(proxy, slack, db_url))
        await eventually(lambda: _polled(daemon), what="first poll")
        parent = await post(mastodon, "alice", "my order never arrived poison:no_account")
        await post(mastodon, "alice", COMPLAINT, in_reply_to_id=parent["id"])
        await eventually(lambda: _stored(daemon, 1, Ticket), timeout_s=15, what="the reply's ticket")
        assert proxy.poisoned[("no_account", "status")] >= 1
        [reply] = await rows(daemon, Mention)
        assert reply.in_reply_to_id == str(parent["id"]) and await rows(daemon, DeadLetter) == []


async def test_check_shows_the_posts_set_aside(
    polls_only: PoisoningProxy,
    mastodon: MockServer,
    slack: FakeSlack,
    db_url: str,
    start_daemon: Start,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_config(tmp_path, mastodon_url=polls_only.base_url, slack_url=slack.base_url, db_url=db_url)
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", BRAND_TOKEN)
    monkeypatch.setenv("MENTIONDESK_SLACK_BOT_TOKEN", slack.bot_token)
    monkeypatch.setenv("MENTIONDESK_SLACK_APP_TOKEN", slack.app_token)
    daemon = await start_daemon(proxied_config(polls_only, slack, db_url))
    await eventually(lambda: _polled(daemon), what="first poll")
    assert await asyncio.to_thread(main, ["check", "--config", str(path)]) == 0
    assert "ok   dead letters: none\n" in capsys.readouterr().out

    bad = await post(mastodon, "alice", f"{COMPLAINT} poison:no_account")
    await post(mastodon, "bob", f"{COMPLAINT_2} poison:long_status_id")
    await eventually(lambda: _stored(daemon, 2, DeadLetter), what="both set aside")
    assert await asyncio.to_thread(main, ["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok   dead letters: 2 posts set aside (table dead_letters), newest first:\n" in out
    assert f"notifications:mention status {bad['id']}: unreadable: the author (account) is missing" in out
    assert "unreadable: the status id is 100 characters long" in out


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Another process holding SQLite's write lock (a backup, say): reads go on, writes wait, then fail as locked.
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@asynccontextmanager
async def _writes_fail_for_a_while(db_url: str) -> AsyncIterator[None]:
    """Writes fail as when the database is briefly unavailable; reads keep working, so polls go on."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        with _locked(Path(url.database)):
            yield
        return
    # Postgres: the error a transaction gets when its backend is terminated (57P01, admin_shutdown).
    await _refuse_marked_posts(db_url, sqlstate="57P01", marked="%")
    try:
        yield
    finally:
        await _drop_refusal(db_url)


async def _refuse_marked_posts(db_url: str, *, sqlstate: str, marked: str = "%refuse me%") -> None:
    """A trigger on mentions that refuses the posts whose text matches `marked`."""
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                await conn.execute(
                    text(
                        "CREATE TRIGGER refuse_marked BEFORE INSERT ON mentions "
                        f"WHEN NEW.text LIKE '{marked}' "
                        "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
                    )
                )
                return
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_marked() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.text LIKE '{marked}' THEN "
                    f"RAISE EXCEPTION 'refused by the test trigger' USING ERRCODE = '{sqlstate}'; "
                    "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_marked BEFORE INSERT ON mentions "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_marked()"
                )
            )
    finally:
        await engine.dispose()


async def _drop_refusal(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER refuse_marked ON mentions"))
            await conn.execute(text("DROP FUNCTION refuse_marked()"))
    finally:
        await engine.dispose()


def _poison_in(text_: str) -> str:
    found = re.search(r"poison:(\w+)", text_)
    return found.group(1) if found else ""


async def _stored(daemon: Daemon, n: int, model: type[Any] = Mention) -> bool:
    return len(await rows(daemon, model)) == n


async def _deleted(daemon: Daemon, acct: str) -> bool:
    return any(m.account_acct == acct and m.deleted_at is not None for m in await rows(daemon, Mention))


async def _polled(daemon: Daemon) -> bool:
    return all(w.polls_completed > 0 for w in daemon.watchers)


async def _connected(daemon: Daemon) -> bool:
    return all(w.stream_connected.is_set() for w in daemon.watchers)


async def _seen(proxy: PoisoningProxy, wanted: set[tuple[str, str]]) -> bool:
    await asyncio.sleep(0)
    return wanted <= set(proxy.poisoned)


async def _attempts_at_least(daemon: Daemon, n: int) -> bool:
    return any(d.attempts >= n for d in await rows(daemon, DeadLetter))


async def _polls_since(proxy: PoisoningProxy, since: float, n: int) -> bool:
    await asyncio.sleep(0)
    return proxy.polls(since=since) >= n
