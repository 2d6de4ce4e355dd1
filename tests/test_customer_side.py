"""The customer's side: follow-ups join, reopen or link tickets; edits and deletes reach the ticket and its card."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from mastodon_mock.testing.server import MockServer
from sqlalchemy import update
from sqlmodel import col

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.events import PostDeleted, PostEdited
from mentiondesk.bot.mastodon.client import post_change_from_stream
from mentiondesk.handlers.post_changes import change_message
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import Mention, Ticket, TicketEvent
from mentiondesk.storage.ticket_actions import close, resolve
from mentiondesk.storage.types import utcnow
from tests.conftest import eventually, settled
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, PRAISE, post, rows

Start = Callable[[Config], Awaitable[Daemon]]
FAST_REFRESH = {"refresh_interval_s": 0.5}


async def _ticket(daemon: Daemon, ticket_id: int | None = None) -> Ticket:
    tickets = await rows(daemon, Ticket)
    return next(t for t in tickets if ticket_id is None or t.id == ticket_id)


async def _opened_with_card(
    daemon: Daemon, mastodon: MockServer, slack: FakeSlack, text: str = COMPLAINT
) -> tuple[dict[str, Any], Ticket]:
    """Alice complains; returns her status and the ticket once its card is in Slack."""
    status = await post(mastodon, "alice", text)

    async def card_posted() -> bool:
        return any(t.slack_ts for t in await rows(daemon, Ticket))

    await eventually(card_posted, what="ticket with its card")
    return status, (await rows(daemon, Ticket))[-1]


def _thread(slack: FakeSlack, ticket: Ticket) -> list[dict[str, Any]]:
    assert ticket.slack_ts is not None
    return slack.thread(ticket.channel, ticket.slack_ts)


def _thread_text(slack: FakeSlack, ticket: Ticket) -> str:
    return str(_thread(slack, ticket))


def _last_card(slack: FakeSlack, ticket: Ticket) -> str:
    updates = [u for u in slack.updates if u["ts"] == ticket.slack_ts]
    return str(updates[-1]["blocks"]) if updates else ""


async def _set(daemon: Daemon, ticket_id: int | None, **values: Any) -> None:
    assert daemon.context is not None and ticket_id is not None
    async with transaction(daemon.context.sessions) as session:
        await session.exec(update(Ticket).where(col(Ticket.id) == ticket_id).values(**values))  # type: ignore[call-overload]


async def _resolve(daemon: Daemon, ticket_id: int | None, *, days_ago: float = 0) -> None:
    assert daemon.context is not None and ticket_id is not None
    async with transaction(daemon.context.sessions) as session:
        assert await resolve(session, ticket_id=ticket_id, user="U0AGENT")
    if days_ago:
        await _set(daemon, ticket_id, resolved_at=utcnow() - timedelta(days=days_ago))
    daemon.context.wake_outbox()  # as the Slack action handlers do after a change


async def test_new_mention_joins_the_open_ticket_outside_the_thread(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    _, ticket = await _opened_with_card(daemon, mastodon, slack)
    await post(mastodon, "alice", "@brand also the tracking page shows nothing at all")  # not a reply
    await slack.wait_for(lambda: "tracking page" in _thread_text(slack, ticket), timeout_s=5)
    assert len(await rows(daemon, Ticket)) == 1
    assert [m.ticket_id for m in await rows(daemon, Mention)] == [ticket.id, ticket.id]


async def test_post_on_recently_resolved_ticket_reopens_it(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(tickets={"reopen_window_days": 7}))
    _, ticket = await _opened_with_card(daemon, mastodon, slack)
    await _resolve(daemon, ticket.id, days_ago=6)
    await slack.wait_for(lambda: "resolved" in _last_card(slack, ticket), timeout_s=5)

    await post(mastodon, "alice", "@brand it is happening again, same problem")
    await eventually(lambda: _state_is(daemon, ticket.id, "open"), what="ticket reopened")
    await slack.wait_for(lambda: "happening again" in _thread_text(slack, ticket), timeout_s=5)
    await slack.wait_for(lambda: "resolved" not in _last_card(slack, ticket), timeout_s=5)
    assert len(await rows(daemon, Ticket)) == 1
    assert (await _ticket(daemon)).resolved_at is None
    events = [(e.actor, e.action) for e in await rows(daemon, TicketEvent)]
    assert ("customer", "reopened") in events


async def test_post_after_the_reopen_window_opens_a_linked_ticket(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    # No triage band (both thresholds equal): calm words below the ticket threshold would otherwise go to
    # triage, and this test is about the link between the tickets.
    no_band = {"threshold": 0.5, "triage_threshold": 0.5}
    config = make_config(tickets={"reopen_window_days": 7}, classifier=no_band)
    daemon = await start_daemon(config)
    first, old = await _opened_with_card(daemon, mastodon, slack)
    await _resolve(daemon, old.id, days_ago=8)
    # Calm words, but a reply in the old ticket's thread: a follow-up, so a new ticket that links back.
    await post(mastodon, "alice", "@brand hello again about this order", in_reply_to_id=first["id"])
    await eventually(lambda: _ticket_count(daemon, 2), what="second ticket")
    new = (await rows(daemon, Ticket))[-1]
    assert new.previous_ticket_id == old.id and new.state == "open"
    assert (await _ticket(daemon, old.id)).state == "resolved"
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 2, timeout_s=5)
    assert f"Follows ticket #{old.id}" in str(slack.messages("C0SUPPORT")[-1]["blocks"])


async def test_ticket_closed_as_not_a_complaint_is_linked_not_reopened(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config())
    _, old = await _opened_with_card(daemon, mastodon, slack)
    assert daemon.context is not None and old.id is not None
    async with transaction(daemon.context.sessions) as session:
        await close(session, ticket_id=old.id, actor="U0AGENT", reason="not a complaint", label="other")
    # A calm post outside any thread, with no open or recently resolved ticket, is just stored.
    await post(mastodon, "alice", PRAISE)
    await eventually(lambda: _mention_count(daemon, 2), what="praise stored")
    assert (await rows(daemon, Mention))[-1].ticket_id is None
    await post(mastodon, "alice", "@brand the app crashes every time I open it, totally broken, so frustrating")
    await eventually(lambda: _ticket_count(daemon, 2), what="new ticket")
    assert (await rows(daemon, Ticket))[-1].previous_ticket_id == old.id
    assert (await _ticket(daemon, old.id)).state == "closed"


async def test_edit_updates_the_ticket_and_card_once(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(mastodon=FAST_REFRESH))
    status, ticket = await _opened_with_card(daemon, mastodon, slack)
    await asyncio.to_thread(mastodon.client("alice").status_update, status["id"], "@brand still no parcel, day 12")

    async def edited() -> bool:
        mention = (await rows(daemon, Mention))[0]
        return "day 12" in mention.text and mention.edited_at is not None

    await eventually(edited, what="mention text updated")
    await slack.wait_for(lambda: "Post edited" in _last_card(slack, ticket), timeout_s=5)
    assert "day 12" in _last_card(slack, ticket)
    await slack.wait_for(lambda: "edited their post" in _thread_text(slack, ticket), timeout_s=5)
    assert "day 12" in _thread_text(slack, ticket)
    await settled(daemon, sweeps=True)  # another sweep sees the same edit and changes nothing
    assert len([m for m in _thread(slack, ticket) if "edited their post" in m["text"]]) == 1


async def test_deleting_the_only_post_closes_the_ticket(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(mastodon=FAST_REFRESH))
    status, ticket = await _opened_with_card(daemon, mastodon, slack)
    await asyncio.to_thread(mastodon.client("alice").status_delete, status["id"])
    await eventually(lambda: _state_is(daemon, ticket.id, "closed"), what="ticket closed")
    assert (await _ticket(daemon)).closed_reason == "all customer posts deleted"
    assert (await rows(daemon, Mention))[0].deleted_at is not None
    await slack.wait_for(lambda: "Post deleted by the customer" in _last_card(slack, ticket), timeout_s=5)
    assert "all customer posts deleted" in _last_card(slack, ticket)
    await slack.wait_for(lambda: "deleted a post" in _thread_text(slack, ticket), timeout_s=5)


async def test_deleting_one_of_two_posts_keeps_the_ticket_open(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(make_config(mastodon=FAST_REFRESH))
    first, ticket = await _opened_with_card(daemon, mastodon, slack)
    second = await post(mastodon, "alice", "@brand order number is 1234", in_reply_to_id=first["id"])
    await eventually(lambda: _mention_count(daemon, 2), what="follow-up stored")
    await asyncio.to_thread(mastodon.client("alice").status_delete, second["id"])
    await slack.wait_for(lambda: "deleted a post" in _thread_text(slack, ticket), timeout_s=5)
    mentions = await rows(daemon, Mention)
    assert mentions[0].deleted_at is None and mentions[1].deleted_at is not None
    assert (await _ticket(daemon)).state == "open"


async def test_stream_brings_edits_and_deletes_when_the_server_pushes_them(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    # mastodon-mock pushes edits and deletes to followers only, so the brand follows alice; the sweep is
    # slowed right down so only the stream can explain the changes arriving.
    brand = mastodon.client("brand")
    alice_id = (await asyncio.to_thread(mastodon.client("alice").account_verify_credentials))["id"]
    await asyncio.to_thread(brand.account_follow, alice_id)
    daemon = await start_daemon(make_config(mastodon={"refresh_interval_s": 600}))
    await eventually(lambda: _connected(daemon), what="stream connected")
    first, ticket = await _opened_with_card(daemon, mastodon, slack)
    second = await post(mastodon, "alice", "@brand order number is 1234", in_reply_to_id=first["id"])
    await eventually(lambda: _mention_count(daemon, 2), what="follow-up stored")
    assert daemon.sweeper is not None and daemon.sweeper.sweeps_completed == 1

    await asyncio.to_thread(mastodon.client("alice").status_update, first["id"], "@brand parcel still missing")
    await asyncio.to_thread(mastodon.client("alice").status_delete, second["id"])
    await slack.wait_for(lambda: "deleted a post" in _thread_text(slack, ticket), timeout_s=5)
    mentions = await rows(daemon, Mention)
    assert "still missing" in mentions[0].text and mentions[1].deleted_at is not None
    assert daemon.sweeper.sweeps_completed == 1
    # The same edit and delete found again (as the sweep would find them) change nothing.
    assert daemon.context is not None
    current = await daemon.context.mastodon.status(first["id"])
    assert current is not None
    await daemon.post_changed(PostEdited(post=current))
    await daemon.post_changed(PostDeleted(status_id=str(second["id"])))
    await settled(daemon)
    assert len([m for m in _thread(slack, ticket) if "edited their post" in m["text"]]) == 1
    assert len([m for m in _thread(slack, ticket) if "deleted a post" in m["text"]]) == 1


def test_stream_change_events_are_normalised() -> None:
    assert post_change_from_stream("delete", "109") == PostDeleted(status_id="109")
    assert post_change_from_stream("delete", '"109"') == PostDeleted(status_id="109")
    assert post_change_from_stream("notification", "{}") is None
    status = (
        '{"id": "7", "uri": "u", "content": "<p>hi</p>", "created_at": "2026-01-01T00:00:00Z",'
        ' "edited_at": "2026-01-02T00:00:00Z", "account": {"id": "3", "acct": "alice"}}'
    )
    for name in ("status.update", "status_update"):
        change = post_change_from_stream(name, status)
        assert isinstance(change, PostEdited) and change.post.text == "hi" and change.post.edited_at is not None


def test_change_message_escapes_and_bounds_customer_text() -> None:
    fallback, blocks = change_message(
        number=4, acct="here", what="edited their post", text="<!channel> & " + "x" * 5000
    )
    body = blocks[0]["text"]["text"]
    assert "<!channel>" not in body and "&lt;!channel&gt; &amp;" in body
    assert len(body) <= 3000 and "<!channel>" not in fallback
    _, deleted = change_message(number=4, acct="alice", what="deleted a post", text=None)
    assert deleted[0]["text"]["text"] == "*@alice* deleted a post"


async def _state_is(daemon: Daemon, ticket_id: int | None, state: str) -> bool:
    return (await _ticket(daemon, ticket_id)).state == state


async def _ticket_count(daemon: Daemon, n: int) -> bool:
    return len(await rows(daemon, Ticket)) == n


async def _mention_count(daemon: Daemon, n: int) -> bool:
    return len(await rows(daemon, Mention)) == n


async def _connected(daemon: Daemon) -> bool:
    return all(w.stream_connected.is_set() for w in daemon.watchers)
