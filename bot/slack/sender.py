"""Sends the Slack outbox: paced per channel, retried through outages, each message exactly once.

Slack allows about one message per second per channel. Rows wait in the database, so a ticket opened
while Slack is down (or the daemon restarts) is posted when Slack is reachable again.

When a post fails *ambiguously* (a timeout or dropped connection after the request went out, so Slack may
have posted it), the row is marked in doubt. Before posting it again the sender looks in Slack for a message
whose metadata carries the row's outbox_id, and if it finds one records that message instead of posting twice.

When Slack refuses a message for a reason a person must fix (the bot is not in the channel, the token was
revoked), the row is parked instead, with the reason and what to do, and what the same cause would refuse waits
with it while everything else keeps flowing (see parking.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot import metrics
from mentiondesk.bot.config import SlackSettings
from mentiondesk.bot.events import CardPosted
from mentiondesk.bot.retry import Verdict, backoff_delay, sort_slack_error
from mentiondesk.bot.slack.card_view import render_card
from mentiondesk.bot.slack.parking import Parking
from mentiondesk.bot.slack.problems import DEFAULT_BOT_NAME
from mentiondesk.bot.slack.reachability import SlackReachability
from mentiondesk.bot.slack.triage_view import render_triage
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import OutboxKind, SlackOutbox, Ticket, TicketState
from mentiondesk.storage.outbox import claim, due_messages, in_doubt, mark_retry, mark_sent, next_due_at
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)

T = TypeVar("T")

IDLE_POLL_S = 30.0  # also picks up rows written by another daemon sharing the database
EVENT_TYPE = "mentiondesk_message"  # metadata event_type on every message we post
# Channel, private-group and DM IDs; anything else (e.g. "#support") is a name.
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]+")
LOOKUP_PAGE_SIZE = 200
# Ten pages is 2000 messages since the row was queued; past that, give up looking rather than hammer a
# Tier 3 method, and post (a possible duplicate beats a lost ticket).
LOOKUP_MAX_PAGES = 10
# How far before the row's creation to search: covers clock skew between this host and Slack.
LOOKUP_SKEW = timedelta(minutes=1)
# The most Slack calls one send attempt makes: the look-before-repost pages, then the post.
CALLS_PER_SEND = LOOKUP_MAX_PAGES + 1
# What a lease adds to the longest attempt: clock skew between daemons sharing the database, and Slack acting
# on a request a moment after the sender stopped waiting for its answer.
LEASE_MARGIN_S = 10.0


def send_budget_s(settings: SlackSettings) -> float:
    """The longest one send attempt may take: each call gives up at request_timeout_s, the attempt at this."""
    return CALLS_PER_SEND * settings.request_timeout_s


def lease_s(settings: SlackSettings) -> float:
    """How long a claimed row stays out of every sender's queue: send_budget_s + LEASE_MARGIN_S.

    So no other sender can take a row while the attempt that claimed it may still post it. The attempt's
    deadline is fixed before the lease is written (see SlackSender._claim), so the lease ends at least
    LEASE_MARGIN_S after the attempt, however long the claim takes.
    """
    return send_budget_s(settings) + LEASE_MARGIN_S


def is_ambiguous(exc: BaseException) -> bool:
    """True when the request may have reached Slack and been acted on: only its answer was lost."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False  # never connected, so nothing was sent
    # A connect timeout also lands here; that costs one needless lookup, never a duplicate.
    return isinstance(
        exc, TimeoutError | aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | aiohttp.ClientPayloadError
    )


class _LookupIncomplete(Exception):
    """The search could not be finished (too many messages to page through)."""


@dataclass(frozen=True)
class _Lookup:
    ts: str | None = None  # the earlier attempt's message, when found
    checked: bool = True  # False when Slack could not be searched: the doubt remains


class SlackSender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: SlackSettings,
        *,
        client: AsyncWebClient,
        on_card_posted: Callable[[CardPosted], Awaitable[None]] | None = None,
        channel_keys: Mapping[str, str] | None = None,
        bot_name: str = DEFAULT_BOT_NAME,
    ) -> None:
        if any(isinstance(h, AsyncConnectionErrorRetryHandler) for h in client.retry_handlers):
            # slack-sdk's default handler re-sends a request whose connection dropped: for chat.postMessage that
            # blind re-send is exactly what posts a card twice. This sender looks in Slack first instead.
            raise ValueError("build the Slack client with retry_handlers=[]; the sender does its own retries")
        self._sessions = sessions
        self._settings = settings
        self._client = client
        self._on_card_posted = on_card_posted
        self._wake = asyncio.Event()
        # Monotonic time before which each channel must not get another message.
        self._channel_free_at: dict[str, float] = {}
        self._parking = Parking(sessions, settings, channel_keys=channel_keys, bot_name=bot_name)
        self._stopping = False
        # Loop time by which run() returns once the daemon is stopping (finish()); None while it runs.
        self._finish_by: float | None = None
        # Set when a send fails while finishing, other than for a rate limit: Slack is failing, so the flush ends.
        self._flush_failed = False
        self._idle = False
        # What /readyz reports about Slack: every call below records its outcome there.
        self.reachability = SlackReachability(client.auth_test)
        self.sent = 0  # messages Slack accepted since the start (posts and card refreshes)
        # The inequality the outbox's exactly-once rests on: a lease outlasts the longest attempt.
        assert lease_s(settings) > send_budget_s(settings) >= CALLS_PER_SEND * settings.request_timeout_s

    @property
    def idle(self) -> bool:
        """True while run() waits between passes over the outbox, so no message is on its way to Slack.

        What lets a test tell "nothing more will be sent" from "nothing sent yet": an empty outbox alone does not
        say that no send is in flight.
        """
        return self._idle

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Finish the message in flight, then return from run(): a cancelled send could post without a record."""
        self._stopping = True
        self._wake.set()

    def finish(self, until: float) -> None:
        """Flush, then return from run(): keep sending what is due (paced, rate limits obeyed) until nothing more
        can go out before ``until`` (loop time), or a send fails for another reason than a rate limit (Slack is
        failing: retrying it until the deadline would only delay the stop).

        A send still in flight at ``until`` is the caller's to cancel; its row stays in doubt (see ``claim``).
        """
        self._finish_by = until
        self._wake.set()

    async def run(self) -> None:
        await self._parking.retry_all_now()
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()
            self._idle = False
            try:
                wait_s = await self.send_due()
                failures = 0
            except Exception as exc:  # the database went away: keep the rows, try again soon
                failures += 1
                wait_s = backoff_delay(failures, base_s=0.5, cap_s=self._settings.max_retry_delay_s)
                logger.warning("Slack outbox: cannot read the queue: %s; trying again in %.1fs", exc, wait_s)
            self._idle = True
            if self._finish_by is not None and (
                self._flush_failed or loop.time() + max(0.0, wait_s) >= self._finish_by
            ):
                return  # flushed: what is left is not due (parked, paced or backing off) before the deadline
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)

    async def send_due(self) -> float:
        """Send every message that is due and whose channel is free; returns seconds until the next one."""
        if (everything := self._parking.hold_on(None)) is not None:
            return everything.until - time.monotonic()
        now = utcnow()
        async with self._sessions() as session:
            due = await due_messages(session, now=now)
            # Asked even when rows are due: those may all wait for a card whose retry is a moment away.
            next_at = await next_due_at(session, after=now)
        soonest = IDLE_POLL_S if next_at is None else min(IDLE_POLL_S, max(0.0, (next_at - utcnow()).total_seconds()))
        for row, ticket in due:
            if self._stopping or self._flush_failed:
                break
            if (everything := self._parking.hold_on(None)) is not None:
                return everything.until - time.monotonic()
            target = self._target(row, ticket)
            if target is not None and (hold := self._parking.hold_on(target[0])) is not None:
                if await self._claim(row) is not None:
                    await self._parking.park_behind(row, hold)
                continue
            wait_s = self._wait_before(row, ticket)
            if wait_s > 0:
                soonest = min(soonest, wait_s)
                continue
            await self._send(row, ticket)
            soonest = min(soonest, self._settings.post_interval_s)
        return soonest

    def _target(self, row: SlackOutbox, ticket: Ticket) -> tuple[str, str | None] | None:
        """Channel and thread (or, for a refresh, the card's ts) of a message; None while the card is not in Slack."""
        if row.kind in (OutboxKind.CARD, OutboxKind.ALERT, OutboxKind.TRIAGE):
            return row.channel, None
        if row.kind == OutboxKind.TRIAGE_UPDATE or _in_triage_thread(ticket):
            if ticket.triage_ts is None or ticket.triage_channel is None:
                return None  # the triage message's own send wakes us
            return ticket.triage_channel, ticket.triage_ts
        if ticket.slack_ts is None:
            return None
        return ticket.channel, ticket.slack_ts

    def _wait_before(self, row: SlackOutbox, ticket: Ticket) -> float:
        target = self._target(row, ticket)
        if target is None:
            return IDLE_POLL_S  # the card's own send wakes us
        if row.kind in (OutboxKind.UPDATE, OutboxKind.TRIAGE_UPDATE):
            return 0.0  # edits are not under the one-message-per-second posting limit
        return self._channel_free_at.get(target[0], 0.0) - time.monotonic()

    async def _send(self, row: SlackOutbox, ticket: Ticket) -> None:
        target = self._target(row, ticket)
        assert target is not None and row.id is not None
        channel, thread_ts = target
        # Rendered before the claim: should the database go away mid-render, no lease holds the row afterwards,
        # and it goes out as soon as the database is back.
        try:
            text, blocks = await self._render(row)
        except (SQLAlchemyError, OSError):
            raise  # the database is away: run() waits for it
        except Exception as exc:  # this row alone cannot be shown: it waits, the rows behind it do not
            if await self._claim(row) is not None:
                await self._retry_later(row, channel, exc, ambiguous=False)
            return
        deadline = await self._claim(row)
        if deadline is None:
            return  # another daemon sharing the database is sending it
        if row.kind in (OutboxKind.UPDATE, OutboxKind.TRIAGE_UPDATE):
            await self._refresh_card(row, channel, thread_ts, text, blocks, deadline)
            return
        self._channel_free_at[channel] = time.monotonic() + self._settings.post_interval_s
        doubt = in_doubt(row)
        try:
            if doubt:
                async with asyncio.timeout_at(deadline):
                    found = await self._look_for_earlier_post(row, channel, thread_ts)
                if found.ts is not None:
                    logger.info(
                        "Slack message for ticket #%d (%s) was already posted (ts=%s); not posting again",
                        row.ticket_id,
                        row.kind,
                        found.ts,
                        extra=_fields(row, channel),
                    )
                    await self._record_sent(row, channel, channel, found.ts)
                    return
                doubt = not found.checked
            async with asyncio.timeout_at(deadline):
                posted_channel, ts = await self._post(row, channel, thread_ts, text, blocks)
        except Exception as exc:
            # Still in doubt unless Slack was searched and had no such message.
            await self._retry_later(row, channel, exc, ambiguous=doubt or is_ambiguous(exc))
            return
        await self._record_sent(row, channel, posted_channel, ts)

    async def _refresh_card(
        self,
        row: SlackOutbox,
        channel: str,
        ts: str | None,
        text: str,
        blocks: list[dict[str, Any]],
        deadline: float,
    ) -> None:
        # chat.update is idempotent, so an update whose answer was lost is simply sent again: no lookup.
        assert row.id is not None and ts is not None
        try:
            async with asyncio.timeout_at(deadline):
                await self._bounded(self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks))
        except Exception as exc:
            await self._retry_later(row, channel, exc, ambiguous=False)
            return
        async with transaction(self._sessions) as session:
            await mark_sent(session, row_id=row.id, channel=channel, ts=ts)
            await self._parking.went_through(session, channel)
        self.sent += 1

    async def _render(self, row: SlackOutbox) -> tuple[str, list[dict[str, Any]]]:
        """A card is rendered from the ticket as it is now; thread messages and alerts were fixed when queued."""
        if row.kind in (OutboxKind.FOLLOWUP, OutboxKind.ALERT):
            return row.text, row.blocks
        async with self._sessions() as session:
            ticket = await session.get(Ticket, row.ticket_id)
            assert ticket is not None
            if row.kind in (OutboxKind.TRIAGE, OutboxKind.TRIAGE_UPDATE) or (
                row.kind == OutboxKind.UPDATE and _in_triage_thread(ticket)
            ):
                return await render_triage(session, ticket)
            return await render_card(session, ticket)

    async def _claim(self, row: SlackOutbox) -> float | None:
        """Take the row for one attempt: the loop time the attempt must end by, or None when another sender has it."""
        # The deadline is fixed before the lease is written: the lease then ends LEASE_MARGIN_S or more after it.
        deadline = asyncio.get_running_loop().time() + send_budget_s(self._settings)
        lease_until = utcnow() + timedelta(seconds=lease_s(self._settings))
        async with transaction(self._sessions) as session:
            return deadline if await claim(session, row=row, lease_until=lease_until) else None

    async def _bounded(self, call: Awaitable[T]) -> T:
        """One Slack call, given up after request_timeout_s whatever timeout the client was built with."""
        # slack-sdk's coroutine is named after its method: chat_postMessage is chat.postMessage.
        method = getattr(call, "__name__", "a Slack call").replace("_", ".", 1)
        try:
            async with asyncio.timeout(self._settings.request_timeout_s):
                result = await call
        except Exception as exc:
            self.reachability.saw(method, exc)
            raise
        self.reachability.saw(method, None)
        return result

    async def _record_sent(self, row: SlackOutbox, channel: str, posted_channel: str, ts: str) -> None:
        assert row.id is not None
        async with transaction(self._sessions) as session:
            await mark_sent(session, row_id=row.id, channel=posted_channel, ts=ts)
            await self._parking.went_through(session, channel, posted_channel)
        self.sent += 1
        self._channel_free_at.setdefault(posted_channel, self._channel_free_at[channel])
        if row.kind == OutboxKind.TRIAGE:
            logger.info(
                "TriagePosted ticket #%d in %s ts=%s",
                row.ticket_id,
                posted_channel,
                ts,
                extra=_fields(row, posted_channel),
            )
            self._wake.set()  # follow-ups may have been waiting for the triage message's thread
        if row.kind == OutboxKind.CARD:
            logger.info(
                "CardPosted ticket #%d in %s ts=%s",
                row.ticket_id,
                posted_channel,
                ts,
                extra=_fields(row, posted_channel),
            )
            self._wake.set()  # follow-ups may have been waiting for this card
            if self._on_card_posted is not None:
                await self._on_card_posted(CardPosted(ticket_id=row.ticket_id, channel=posted_channel, ts=ts))

    async def _look_for_earlier_post(self, row: SlackOutbox, channel: str, thread_ts: str | None) -> _Lookup:
        """Search Slack for the message an earlier, ambiguous attempt may have posted.

        Raises the Slack error when Slack is rate limiting or failing (retry later, still in doubt); any other
        failure is logged and reported as unchecked, so the message is posted again rather than held forever.
        """
        if not _CHANNEL_ID.fullmatch(channel):
            # conversations.* only take channel IDs, and a #name becomes an ID only in a successful post's
            # answer, which an ambiguous attempt never gave us. Resolving names would need channels:read and a
            # full conversations.list walk; posting again risks a duplicate, which beats losing the ticket.
            logger.warning(
                "Slack message for ticket #%d (%s) may already be in %s, which is not a channel ID "
                "and cannot be searched; posting it again",
                row.ticket_id,
                row.kind,
                channel,
                extra=_fields(row, channel),
            )
            return _Lookup(checked=False)
        try:
            return _Lookup(ts=await self._find_by_outbox_id(row, channel, thread_ts))
        except Exception as exc:
            if isinstance(exc, SlackApiError) and sort_slack_error(exc).verdict is not Verdict.FATAL:
                raise  # 429/5xx: Slack will answer later, and then we can still avoid a duplicate
            logger.warning(
                "Slack message for ticket #%d (%s) may already be in %s but Slack cannot be searched "
                "(%s); posting it again",
                row.ticket_id,
                row.kind,
                channel,
                sort_slack_error(exc).reason,
                extra=_fields(row, channel),
            )
            return _Lookup(checked=False)

    async def _find_by_outbox_id(self, row: SlackOutbox, channel: str, thread_ts: str | None) -> str | None:
        """The ts of the message in ``channel`` (or its thread) whose metadata names this outbox row."""
        # The message cannot predate the row; the margin absorbs clock skew with Slack.
        oldest = f"{(row.created_at - LOOKUP_SKEW).timestamp():.6f}"
        cursor: str | None = None
        for _ in range(LOOKUP_MAX_PAGES):
            common: dict[str, Any] = dict(
                channel=channel, include_all_metadata=True, limit=LOOKUP_PAGE_SIZE, cursor=cursor
            )
            if thread_ts is None:
                page = await self._bounded(self._client.conversations_history(oldest=oldest, **common))
            else:
                page = await self._bounded(self._client.conversations_replies(ts=thread_ts, **common))
            for message in page.get("messages") or []:
                if _names_outbox_row(message, row):
                    return str(message["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return None
        raise _LookupIncomplete(f"no match in the first {LOOKUP_MAX_PAGES * LOOKUP_PAGE_SIZE} messages searched")

    async def _post(
        self, row: SlackOutbox, channel: str, thread_ts: str | None, text: str, blocks: list[dict[str, Any]]
    ) -> tuple[str, str]:
        response = await self._bounded(
            self._client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                unfurl_links=False,
                unfurl_media=False,
                # The outbox_id lets a retry find this message if the answer to this call is lost.
                metadata={"event_type": EVENT_TYPE, "event_payload": {"outbox_id": row.id, "ticket": row.ticket_id}},
            )
        )
        return str(response["channel"]), str(response["ts"])

    async def _retry_later(self, row: SlackOutbox, channel: str, exc: Exception, *, ambiguous: bool) -> None:
        assert row.id is not None
        if await self._parking.park(row, channel, exc, ambiguous=ambiguous):
            return
        verdict = sort_slack_error(exc)
        attempt = row.attempts + 1
        if self._finish_by is not None and verdict.verdict is not Verdict.RATE_LIMITED:
            self._flush_failed = True
        if verdict.verdict is Verdict.RATE_LIMITED and verdict.wait_s is not None:
            wait_s = verdict.wait_s
            # The limit is per channel: hold the whole channel, not just this row.
            self._channel_free_at[channel] = time.monotonic() + wait_s
            metrics.rate_limit_waited("slack", wait_s)
        else:
            wait_s = backoff_delay(attempt, cap_s=self._settings.max_retry_delay_s)
        log = logger.error if verdict.verdict is Verdict.FATAL else logger.warning
        log(
            "Slack message for ticket #%d (%s) not sent%s: %s; retry %d in %.1fs",
            row.ticket_id,
            row.kind,
            " (Slack may have posted it; will check first)" if ambiguous else "",
            verdict.reason,
            attempt,
            wait_s,
            extra={**_fields(row, channel), "attempt": attempt},
        )
        async with transaction(self._sessions) as session:
            await mark_retry(
                session,
                row_id=row.id,
                at=utcnow() + timedelta(seconds=wait_s),
                error=verdict.reason,
                ambiguous=ambiguous,
            )


def _in_triage_thread(ticket: Ticket) -> bool:
    """Whether the ticket's thread and message are its triage message's: it has no card and none is coming.

    A card comes once an agent opens the item; a dismissed item (closed from triage) never gets one.
    """
    return (
        ticket.slack_ts is None
        and ticket.triage_reason is not None
        and ticket.state in (TicketState.TRIAGE, TicketState.CLOSED)
    )


def _names_outbox_row(message: dict[str, Any], row: SlackOutbox) -> bool:
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    # Compare as text: the payload's JSON numbers may come back as strings.
    return (
        metadata.get("event_type") == EVENT_TYPE
        and str(payload.get("outbox_id")) == str(row.id)
        and str(payload.get("ticket")) == str(row.ticket_id)
    )


def _fields(row: SlackOutbox, channel: str) -> dict[str, object]:
    """The ids a log line about an outbox message carries as fields (daemon.log_format = "json")."""
    return {"ticket_id": row.ticket_id, "outbox_id": row.id, "channel": channel}
