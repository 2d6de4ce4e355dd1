"""End to end: customers post on a real Mastodon server, tickets land in the database and cards in Slack."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col, select

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.models import Mention, SlackOutbox, Ticket
from tests.conftest import eventually, post_as, postgres_only, settled
from tests.fakeslack import FakeSlack

COMPLAINT = "@brand my order never arrived and your support keeps ignoring me. This is awful, I want a refund"
COMPLAINT_2 = "@brand the app crashes every time I open it, totally broken since the update, so frustrating"
PRAISE = "@brand thank you so much, the new update is lovely! great work team"
# Allowance, in a bound on how soon something happens, for what the settings do not cover: requests to the fake
# Slack, database writes and the event loop on a busy test machine.
SCHEDULING_S = 1.5

Start = Callable[[Config], Awaitable[Daemon]]


async def post(server: MockServer, user: str, text: str, **kwargs: Any) -> dict[str, Any]:
    return await asyncio.to_thread(post_as, server, user, text, **kwargs)


async def rows(daemon: Daemon, model: type[Any]) -> list[Any]:
    assert daemon.context is not None
    async with daemon.context.sessions() as session:
        return list(await session.exec(select(model).order_by(col(model.id))))


async def test_complaint_becomes_ticket_and_card(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    await eventually(lambda: _connected(daemon), what="stream connected")
    status = await post(mastodon, "alice", COMPLAINT)
    await post(mastodon, "bob", PRAISE)

    await eventually(lambda: _count(daemon, Mention, 2), what="both mentions stored")
    tickets = await rows(daemon, Ticket)
    assert len(tickets) == 1
    ticket = tickets[0]
    assert ticket.customer_acct == "alice" and ticket.state == "open"
    assert ticket.root_status_id == str(status["id"])
    assert ticket.first_response_due_at > ticket.posted_at

    mentions = {m.account_acct: m for m in await rows(daemon, Mention)}
    assert mentions["alice"].label == "complaint" and mentions["alice"].ticket_id == ticket.id
    assert mentions["bob"].label == "other" and mentions["bob"].ticket_id is None
    assert 0 <= mentions["bob"].score < mentions["alice"].score <= 1

    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    card = slack.messages("C0SUPPORT")[0]
    blob = str(card["blocks"])
    assert f"#{ticket.id}" in blob and "never arrived" in blob and str(status["url"]) in blob
    await eventually(lambda: _ticket_has_ts(daemon, ticket.id), what="card ts stored on the ticket")
    stored = (await rows(daemon, Ticket))[0]
    assert stored.slack_ts == card["ts"] and stored.channel == "C0SUPPORT"


async def test_follow_up_joins_ticket_and_threads_under_card(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    first = await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    # A reply in the same conversation, even a calm one, belongs to the open ticket.
    await post(mastodon, "alice", "@brand order number is 1234, thanks", in_reply_to_id=first["id"])
    card = slack.messages("C0SUPPORT")[0]
    await slack.wait_for(lambda: len(slack.thread("C0SUPPORT", card["ts"])) >= 1, timeout_s=10)
    replies = slack.thread("C0SUPPORT", card["ts"])
    assert "order number is 1234" in str(replies[-1]["blocks"])
    tickets = await rows(daemon, Ticket)
    assert len(tickets) == 1
    assert [m.ticket_id for m in await rows(daemon, Mention)] == [tickets[0].id, tickets[0].id]
    # Another customer's complaint is a ticket of its own.
    await post(mastodon, "bob", COMPLAINT_2, in_reply_to_id=first["id"])
    await eventually(lambda: _count(daemon, Ticket, 2), what="second ticket")


async def test_restart_mid_stream_processes_every_post_once(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    config = make_config()
    daemon = await start_daemon(config)
    await eventually(lambda: _connected(daemon), what="stream connected")
    for i in range(3):
        await post(mastodon, "alice", f"{COMPLAINT} (take {i})")
    await daemon.stop()  # possibly mid-way through those three
    for i in range(3, 6):
        await post(mastodon, "bob", f"{COMPLAINT_2} (take {i})")
    await post(mastodon, "alice", PRAISE)

    daemon = await start_daemon(config)
    await eventually(lambda: _count(daemon, Mention, 7), what="all seven mentions")
    # A customer's later posts join their open ticket: one card each, the rest in the card's thread.
    await slack.wait_for(lambda: len(_with_threads(slack, "C0SUPPORT")) == 7, timeout_s=20)
    await settled(daemon)
    mentions = await rows(daemon, Mention)
    assert len(mentions) == 7 and len({m.status_uri for m in mentions}) == 7
    assert len(await rows(daemon, Ticket)) == 2 and len(slack.messages("C0SUPPORT")) == 2
    texts = [str(m["blocks"]) for m in _with_threads(slack, "C0SUPPORT")]
    assert len(texts) == 7 and all(sum(f"take {i}" in t for t in texts) == 1 for i in range(6))


async def test_slack_outage_delays_cards_but_loses_none(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    # Short retries, so that "soon after Slack is back" is a bound of a few seconds.
    config = make_config(slack={"max_retry_delay_s": 1.0, "post_interval_s": 1.0})
    slack.set_down(True)
    daemon = await start_daemon(config)
    await post(mastodon, "alice", COMPLAINT)
    await post(mastodon, "bob", COMPLAINT_2)
    await eventually(lambda: _count(daemon, Ticket, 2), what="tickets opened while Slack is down")
    await slack.wait_for(lambda: slack.call_count("chat.postMessage") >= 4, timeout_s=10)
    assert slack.messages() == []
    await eventually(lambda: _outage_recorded(daemon), what="the 503 recorded on the waiting card")

    slack.set_down(False)
    back = time.monotonic()
    # A card that failed is tried again within max_retry_delay_s, and the channel takes one message per
    # post_interval_s, failed attempts included: so both cards are in Slack within this, wherever in their backoff
    # Slack came back. A card set aside for longer (parked, or a retry that ignores the setting) misses it.
    slack_settings = config.settings.slack
    bound_s = slack_settings.max_retry_delay_s + 2 * slack_settings.post_interval_s + SCHEDULING_S
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 2, timeout_s=2 * bound_s)
    took_s = time.monotonic() - back
    assert took_s <= bound_s, f"the cards took {took_s:.1f}s after Slack came back; expected within {bound_s:.1f}s"
    await settled(daemon)
    assert len(slack.messages("C0SUPPORT")) == 2
    assert all(r.state == "sent" for r in await rows(daemon, SlackOutbox))


async def test_rate_limits_are_honoured(
    mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start, slack: FakeSlack
) -> None:
    slack.enforce_rate_limit = True
    slack.rate_limit_next("chat.postMessage", retry_after_s=1, count=1)
    # Three customers (a customer's second complaint would join their open ticket).
    daemon = await start_daemon(make_config())
    for i, user in enumerate(["bob", "alice", "carol"]):
        await post(mastodon, user, f"{COMPLAINT} #{i}")
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 3, timeout_s=15)
    # The one 429 we injected, and none earned by posting faster than Slack's 1/s per channel.
    assert slack.rate_limited_count == 0
    assert len(await rows(daemon, Ticket)) == 3


async def test_stream_failure_falls_back_to_polling(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    with mastodon.fault(path_regex=r"^/api/v1/streaming/.*", status=502, count=None):
        daemon = await start_daemon(make_config())
        await post(mastodon, "alice", COMPLAINT)
        await eventually(lambda: _count(daemon, Ticket, 1), what="ticket via polling")
        assert not daemon.watchers[0].stream_connected.is_set()
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)


async def test_hashtags_routing_and_ignored_authors(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    config = make_config(
        mastodon={"hashtags": ["acmehelp"]},
        routing={"rules": [{"channel": "C0BILLING", "keywords": ["refund", "invoice"]}]},
    )
    daemon = await start_daemon(config)
    await post(mastodon, "alice", "my invoice is wrong and nobody answers, terrible service #acmehelp")
    await post(mastodon, "brand", "We are looking into the outage #acmehelp")
    await post(mastodon, "robot", f"{COMPLAINT}")
    await post(mastodon, "bob", COMPLAINT_2)
    await slack.wait_for(lambda: len(slack.messages()) == 2, timeout_s=10)
    assert [m["channel"] for m in slack.messages("C0BILLING")] == ["C0BILLING"]
    assert "invoice is wrong" in str(slack.messages("C0BILLING")[0]["blocks"])
    assert len(slack.messages("C0SUPPORT")) == 1
    mentions = await rows(daemon, Mention)
    assert sorted(m.account_acct for m in mentions) == ["alice", "bob"]
    assert {m.source for m in mentions} == {"hashtag:acmehelp", "notification"}


async def _count(daemon: Daemon, model: type[Any], n: int) -> bool:
    return len(await rows(daemon, model)) == n


async def _connected(daemon: Daemon) -> bool:
    return all(w.stream_connected.is_set() for w in daemon.watchers)


async def _ticket_has_ts(daemon: Daemon, ticket_id: int | None) -> bool:
    return any(t.id == ticket_id and t.slack_ts for t in await rows(daemon, Ticket))


async def test_post_in_mention_and_hashtag_feeds_is_stored_once(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(mastodon={"hashtags": ["acmehelp"]}))
    await eventually(lambda: _connected(daemon), what="both streams connected")
    await post(mastodon, "alice", f"{COMPLAINT} #acmehelp")
    await eventually(lambda: _count(daemon, Ticket, 1), what="ticket")
    await settled(daemon)  # both feeds polled again, the card sent
    assert len(await rows(daemon, Mention)) == 1
    assert len(slack.messages()) == 1


# Postgres only: a SQLite file cannot refuse connections.
@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_database_going_away_loses_nothing(
    db_url: str, mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    await post(mastodon, "alice", COMPLAINT)
    await eventually(lambda: _count(daemon, Ticket, 1), what="first ticket")

    admin = create_async_engine(str(make_url(db_url).set(database="postgres")), isolation_level="AUTOCOMMIT")
    dbname = make_url(db_url).database
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false'))
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": dbname},
            )
        read_before = _stream_items_read(daemon)
        await post(mastodon, "bob", COMPLAINT_2)
        # The stream delivers it while nothing can be stored.
        await eventually(lambda: _stream_read_more(daemon, read_before), what="the stream to deliver the post")
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true'))
        await admin.dispose()
    await eventually(lambda: _count(daemon, Ticket, 2), timeout_s=15, what="ticket stored once the database is back")
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 2, timeout_s=10)
    assert len(await rows(daemon, Mention)) == 2


def _stream_items_read(daemon: Daemon) -> int:
    return sum(w.stream_items_read for w in daemon.watchers)


async def _stream_read_more(daemon: Daemon, before: int) -> bool:
    return _stream_items_read(daemon) > before


# Postgres only: SQLite refuses a second daemon on its file (tests/test_data_lifecycle.py).
@pytest.mark.parametrize("db_url", postgres_only(), indirect=True)
async def test_two_daemons_sharing_a_database_post_each_card_once(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    config = make_config()
    first, second = await start_daemon(config), await start_daemon(config)
    # On Postgres only the leader reads the feeds (the other serves Slack and sends); SQLite's daemons both lead.
    leaders = [d for d in (first, second) if d.is_leader]
    assert len(leaders) == (2 if config.settings.database.url.startswith("sqlite") else 1)
    for daemon in leaders:
        await eventually(functools.partial(_connected, daemon), what="the leader's stream")
    for i, user in enumerate(["alice", "bob", "carol", "dan"]):
        await post(mastodon, user, f"{COMPLAINT} (case {i})")
    await post(mastodon, "alice", "@brand any news on this?")
    # Four customers, four cards; alice's second post joins her ticket, in its card's thread.
    await slack.wait_for(lambda: len(_with_threads(slack, "C0SUPPORT")) == 5, timeout_s=15)
    await settled(first, second)  # a duplicate from the other daemon would be in Slack by now
    assert len(slack.messages("C0SUPPORT")) == 4 and len(_with_threads(slack, "C0SUPPORT")) == 5
    assert len(await rows(first, Ticket)) == 4 and len(await rows(second, Mention)) == 5


async def _outage_recorded(daemon: Daemon) -> bool:
    outbox = await rows(daemon, SlackOutbox)
    return (
        [r.state for r in outbox] == ["pending", "pending"]
        and outbox[0].attempts >= 1
        and "HTTP 503" in (outbox[0].last_error or "")
    )


def _with_threads(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    """Every top-level message in channel followed by the replies in its thread."""
    return [m for card in slack.messages(channel) for m in [card, *slack.thread(channel, card["ts"])]]
