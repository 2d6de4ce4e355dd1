"""Ordering: a customer's posts land as if read in the order written, whichever route brings each one first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.events import PostDeleted
from mentiondesk.bot.mastodon.stream_hold import MAX_HELD_EVENTS, StreamEvent, StreamHold
from mentiondesk.storage.models import Mention, Ticket
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows

Start = Callable[[Config], Awaitable[Daemon]]

FOLLOW_UP = "@brand still nothing two weeks later, this is ridiculous, worst service ever"
CALM = "@brand hi, quick question: do you ship to Canada?"
UNADDRESSED = "my order never arrived and your support keeps ignoring me. This is awful, I want a refund"
HASHTAG_COMPLAINT = f"{UNADDRESSED} #acmehelp"
NOTIFICATION_POLLS = "/api/v1/notifications"


@pytest.mark.parametrize("as_reply", [True, False], ids=["reply", "new post"])
async def test_post_streamed_after_a_restart_does_not_overtake_the_catch_up(
    as_reply: bool, mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    config = make_config()
    daemon = await start_daemon(config)
    await eventually(lambda: _polled(daemon), what="first poll")
    await daemon.stop()
    complaint = await post(mastodon, "alice", COMPLAINT)
    # The catch-up poll fails until the test lets it through, while the stream is live: the customer's
    # next post reaches the restarted daemon by the stream before the poll has read her complaint.
    polls_down = mastodon.fault(path=NOTIFICATION_POLLS, status=503)
    daemon = await start_daemon(config)
    await eventually(lambda: _connected(daemon), what="stream connected")
    reply_to = {"in_reply_to_id": complaint["id"]} if as_reply else {}
    follow_up = await post(mastodon, "alice", FOLLOW_UP, **reply_to)
    await eventually(lambda: _streamed(daemon), what="the follow-up read from the stream")
    await asyncio.to_thread(polls_down.delete)

    await eventually(lambda: _mention_count(daemon, 2), what="both posts stored")
    [ticket] = await rows(daemon, Ticket)
    assert ticket.root_status_id == str(complaint["id"]), "the card is rooted at the customer's first post"
    assert [m.ticket_id for m in await rows(daemon, Mention)] == [ticket.id, ticket.id]
    await slack.wait_for(lambda: _thread_mentions(slack, "still nothing"), timeout_s=10)
    [card] = slack.messages("C0SUPPORT")
    assert "never arrived" in str(card["blocks"]) and "still nothing" not in str(card["blocks"])
    assert str(follow_up["url"]) in str(slack.thread("C0SUPPORT", card["ts"]))


@dataclass(frozen=True)
class Parent:
    author: str
    text: str
    deleted: bool = False


# What reading in the order written gives: the ticket's root, and where the parent is filed.
PARENT_CASES = {
    "complaint": (Parent("alice", COMPLAINT), "parent", "in the ticket"),
    "complaint under a watched hashtag": (Parent("alice", HASHTAG_COMPLAINT), "parent", "in the ticket"),
    "calm question": (Parent("alice", CALM), "reply", "without a ticket"),
    "not addressed to the brand": (Parent("alice", UNADDRESSED), "reply", "not stored"),
    "deleted": (Parent("alice", COMPLAINT, deleted=True), "reply", "not stored"),
    "another customer's": (Parent("bob", COMPLAINT), "reply", "in its own ticket"),
}


@pytest.mark.parametrize(("parent", "root", "parent_filed"), PARENT_CASES.values(), ids=PARENT_CASES.keys())
async def test_reply_read_before_its_parent_is_placed_as_if_read_in_order(
    parent: Parent,
    root: str,
    parent_filed: str,
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
) -> None:
    daemon = await start_daemon(make_config(mastodon={"hashtags": ["acmehelp"], "streaming": False}))
    await eventually(lambda: _polled(daemon), what="first polls")
    polls_down = mastodon.fault(path_regex=r"^/api/v1/(notifications|timelines/tag/)", status=503)
    first = await post(mastodon, parent.author, parent.text)
    if parent.deleted:
        await asyncio.to_thread(mastodon.client(parent.author).status_delete, first["id"])
    reply = await post(mastodon, "alice", FOLLOW_UP, in_reply_to_id=first["id"])
    # However the reply got here first (a stream, another feed's poll), it is the first post the desk reads.
    assert daemon.context is not None
    read_first = await daemon.context.mastodon.status(str(reply["id"]))
    assert read_first is not None
    await daemon.ingest(read_first, "notification")
    polled = [w.polls_completed for w in daemon.watchers]
    await asyncio.to_thread(polls_down.delete)
    await eventually(lambda: _polled(daemon, after=polled), what="every feed polled again")

    mentions = {m.status_id: m for m in await rows(daemon, Mention)}
    tickets = {t.root_status_id: t for t in await rows(daemon, Ticket)}
    [alices] = [t for t in tickets.values() if t.customer_acct == "alice"]
    assert alices.root_status_id == str(first["id"] if root == "parent" else reply["id"])
    assert mentions[str(reply["id"])].ticket_id == alices.id
    stored = mentions.get(str(first["id"]))
    filed = {
        "in the ticket": lambda: stored is not None and stored.ticket_id == alices.id,
        "without a ticket": lambda: stored is not None and stored.ticket_id is None,
        "not stored": lambda: stored is None,
        "in its own ticket": lambda: stored is not None and tickets[stored.status_id].customer_acct == parent.author,
    }
    assert filed[parent_filed](), f"the parent should be {parent_filed}"
    assert len(mentions) == len(await rows(daemon, Mention)), "nothing stored twice"


async def test_reply_whose_parent_cannot_be_read_is_placed_alone(
    mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(mastodon={"streaming": False}))
    await eventually(lambda: _polled(daemon), what="first poll")
    polls_down = mastodon.fault(path=NOTIFICATION_POLLS, status=503)
    first = await post(mastodon, "alice", COMPLAINT)
    reply = await post(mastodon, "alice", FOLLOW_UP, in_reply_to_id=first["id"])
    assert daemon.context is not None
    read_first = await daemon.context.mastodon.status(str(reply["id"]))
    assert read_first is not None
    # A parent the server will never show the brand must not hold the reply back for good.
    with mastodon.fault(path=f"/api/v1/statuses/{first['id']}", status=403):
        await daemon.ingest(read_first, "notification")
    [ticket] = await rows(daemon, Ticket)
    assert ticket.root_status_id == str(reply["id"])
    await asyncio.to_thread(polls_down.delete)


async def test_stream_events_wait_for_a_catch_up_begun_after_the_latest_connect() -> None:
    applied: list[StreamEvent] = []

    async def apply(event: StreamEvent) -> None:
        applied.append(event)

    hold = StreamHold(apply, name="feed")
    first, second, third = (PostDeleted(status_id=str(i)) for i in range(3))
    await hold.deliver(first)
    assert applied == [first], "with no stream connect pending, nothing waits"
    hold.connected()
    catch_up_begun_at = hold.connects
    await hold.deliver(second)
    hold.connected()  # the stream reconnected while that catch-up ran
    await hold.release(catch_up_begun_at)
    assert applied == [first], "a catch-up begun before the latest connect may have missed what came between"
    await hold.release(hold.connects)
    await hold.deliver(third)
    assert applied == [first, second, third]


async def test_stream_events_past_the_hold_limit_are_left_to_the_poll(caplog: pytest.LogCaptureFixture) -> None:
    applied: list[StreamEvent] = []

    async def apply(event: StreamEvent) -> None:
        applied.append(event)

    hold = StreamHold(apply, name="feed")
    hold.connected()
    for i in range(MAX_HELD_EVENTS + 5):
        await hold.deliver(PostDeleted(status_id=str(i)))
    await hold.release(hold.connects)
    assert [e.status_id for e in applied if isinstance(e, PostDeleted)] == [str(i) for i in range(MAX_HELD_EVENTS)]
    assert "5 stream events came while 1000 waited" in caplog.text


async def _polled(daemon: Daemon, *, after: list[int] | None = None) -> bool:
    await asyncio.sleep(0)
    before = after or [0] * len(daemon.watchers)
    return all(w.polls_completed > n for w, n in zip(daemon.watchers, before, strict=True))


async def _connected(daemon: Daemon) -> bool:
    return all(w.stream_connected.is_set() for w in daemon.watchers)


async def _streamed(daemon: Daemon) -> bool:
    await asyncio.sleep(0)
    return daemon.watchers[0].stream_items_read > 0


async def _mention_count(daemon: Daemon, n: int) -> bool:
    return len(await rows(daemon, Mention)) == n


def _thread_mentions(slack: FakeSlack, text: str) -> bool:
    return any(text in str(slack.thread("C0SUPPORT", card["ts"])) for card in slack.messages("C0SUPPORT"))
