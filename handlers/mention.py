"""Mentions arrived: classify them, store them, and open tickets or add them to their customers' open ones.

Posts come in batches (bot/ingest.py) and are placed one after another in the order read, exactly as if each
were handled alone: a follow-up in the same batch as the post that opened its ticket joins that ticket. What the
batch needs from the database is read with one query per question, the placing happens in memory, and the whole
batch is written in one transaction with one statement per table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mastodon.errors import MastodonError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot import metrics
from mentiondesk.bot.classify.assess import STORED, TICKET, TRIAGE, Assessment, Cues
from mentiondesk.bot.classify.cues import REPEAT_WINDOW_DAYS
from mentiondesk.bot.classify.model import Classification
from mentiondesk.bot.context import AppContext
from mentiondesk.bot.dispatch import Router
from mentiondesk.bot.events import MentionReceived, MentionsReceived, Post
from mentiondesk.bot.mastodon.fields import UnreadablePost
from mentiondesk.bot.mastodon.set_aside import is_transient
from mentiondesk.bot.mastodon.watcher import IngestError
from mentiondesk.bot.retry import Verdict, sort_mastodon_error
from mentiondesk.bot.routing import route
from mentiondesk.bot.sla import clocks
from mentiondesk.bot.slack.cards import followup_message
from mentiondesk.handlers.triage import open_automatically
from mentiondesk.storage import batches, sla
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import OutboxKind, Ticket, TicketState, max_length
from mentiondesk.storage.ticket_actions import reopen, resume, touch_waiting_renders
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)
router = Router()

# Tickets a customer's next post joins: open, waiting on them (which the post ends), or in triage (where it is
# shown in the triage message's thread and judged with the post there, rather than opening a second item).
ACTIVE = (TicketState.OPEN, TicketState.WAITING, TicketState.TRIAGE)
# How far back a customer's tickets count as recent: the judge's repeat cue names this window.
RECENT_TICKETS_WINDOW = timedelta(days=REPEAT_WINDOW_DAYS)
TRIAGE_REASON_MAX = max_length(Ticket.triage_reason)
# How far up a reply chain unread parents are fetched (one status request each) and filed first.
UNREAD_PARENTS_MAX = 20


def ignore_reason(post: Post, *, brand_id: str, accept_bots: bool) -> str | None:
    """Why this post is not the desk's business, or None when it is."""
    if post.account.id == brand_id:
        return "the brand's own post"
    if post.is_reblog:
        return "a reblog"
    if post.account.bot and not accept_bots:
        return "a bot account"
    return None


@router.on(MentionsReceived)
async def record_mentions(event: MentionsReceived, ctx: AppContext) -> None:
    """Store a batch of mentions; sets one outcome per post (None: stored or ignored).

    Raises only when the whole batch failed for a cause that may pass (the database went away): every post is
    then read again. A failure that is some post's own is narrowed down to that post by storing them one by one.
    """
    mentions = list(event.mentions)
    try:
        outcomes = await _attempt(mentions, ctx)
    except Exception as exc:
        if _batch_wide(exc):
            raise
        outcomes = await _one_by_one(mentions, exc, ctx)
    event.outcomes[:] = outcomes


async def _attempt(mentions: list[MentionReceived], ctx: AppContext) -> list[BaseException | None]:
    for attempt in (1, 2):
        outcomes: list[BaseException | None] = [None] * len(mentions)
        try:
            await _record_batch(mentions, outcomes, ctx)
            return outcomes
        except IntegrityError:
            # Another daemon (on Postgres) stored one of these posts between our look and our insert: the second
            # look leaves it out. Refused again, it is some post's own fault.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _one_by_one(mentions: list[MentionReceived], exc: Exception, ctx: AppContext) -> list[BaseException | None]:
    if len(mentions) == 1:
        return [exc]
    logger.info("a batch of %d posts was refused (%s); storing them one by one", len(mentions), exc)
    outcomes: list[BaseException | None] = []
    failed: dict[str, str] = {}  # customer -> their post that failed
    for mention in mentions:
        post = mention.post
        if post.account.id in failed:
            outcomes.append(_held_back(post, failed[post.account.id]))
            continue
        try:
            [outcome] = await _attempt([mention], ctx)
        except Exception as error:
            if _batch_wide(error):
                raise
            outcome = error
        if outcome is not None:
            failed[post.account.id] = post.id
        outcomes.append(outcome)
    return outcomes


def _held_back(post: Post, earlier: str) -> IngestError:
    # A customer's posts are filed in the order written: this one waits until the earlier one is stored or set aside.
    return IngestError(f"post {post.id} waits for {earlier}, an earlier post of the same customer", transient=True)


def _batch_wide(exc: BaseException) -> bool:
    """A failure that is not any one post's fault: the database is away, and every post waits for it."""
    return isinstance(exc, SQLAlchemyError | OSError | TimeoutError) and is_transient(exc)


# --- the batch -------------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One post to store: where it came from in the batch (None for a parent fetched on its behalf)."""

    mention: MentionReceived
    index: int | None
    result: Classification | None = None
    assessment: Assessment | None = None  # set as the post is placed: the customer's history is a cue
    ancestors: list[str] = field(default_factory=list)

    @property
    def post(self) -> Post:
        return self.mention.post


async def _record_batch(mentions: list[MentionReceived], outcomes: list[BaseException | None], ctx: AppContext) -> None:
    """Place and store mentions; a post whose Mastodon lookups failed gets its outcome set and is left out."""
    entries = [_Entry(m, i) for i, m in enumerate(mentions) if _for_the_desk(m.post, ctx)]
    async with ctx.sessions() as session:
        entries = await _with_unread_parents(session, entries, outcomes, ctx)
        entries = await _not_stored(session, entries)
    if not entries:
        return
    with metrics.CLASSIFY_SECONDS.time():
        results = await asyncio.to_thread(ctx.classifier.classify_many, [e.post.text for e in entries], ctx.threshold)
    for entry, result in zip(entries, results, strict=True):
        entry.result = result
    async with ctx.sessions() as session:
        book = await _CustomerBook.load(session, entries, ctx)
    entries = _in_order(await _with_ancestors(entries, book, outcomes, ctx), mentions, outcomes)
    if not entries:
        return
    if any(e.ancestors for e in entries):
        async with ctx.sessions() as session:
            await book.learn_threads(session, [s for e in entries for s in e.ancestors])
    now = utcnow()
    async with transaction(ctx.sessions) as session:
        filed = await _file_all(session, entries, book, ctx, now=now)
    _count(filed)
    if filed.tickets_touched:
        ctx.wake_outbox()
    for entry, ticket_id in filed.placed:
        assert entry.assessment is not None
        logger.info(
            "mention %s from @%s: %s %.2f, %s%s",
            entry.post.id,
            entry.post.account.acct,
            entry.assessment.kind,
            entry.assessment.score,
            entry.assessment.band,
            f" -> ticket #{ticket_id}" if ticket_id is not None else "",
            extra={"status_id": entry.post.id, "ticket_id": ticket_id},
        )


def _count(filed: _Filed) -> None:
    """The batch is committed: count it for /metrics."""
    stored_at = utcnow()
    for entry, _ in filed.placed:
        assert entry.assessment is not None
        metrics.MENTIONS_INGESTED.labels(source=entry.mention.source, label=entry.assessment.kind).inc()
        if entry.post.created_at_known:
            metrics.INGEST_LAG_SECONDS.observe(max(0.0, (stored_at - entry.post.created_at).total_seconds()))
    metrics.TICKETS_OPENED.inc(filed.opened)
    metrics.TICKETS_REOPENED.inc(filed.reopened)


def _in_order(
    entries: list[_Entry], mentions: list[MentionReceived], outcomes: list[BaseException | None]
) -> list[_Entry]:
    """Leave out the posts of a customer whose earlier post in this batch could not be placed: they wait for it."""
    failed: dict[str, tuple[int, str]] = {}  # customer -> (position, id) of their first post that failed
    for position, outcome in enumerate(outcomes):
        if outcome is not None:
            failed.setdefault(mentions[position].post.account.id, (position, mentions[position].post.id))
    kept: list[_Entry] = []
    for entry in entries:
        earlier = failed.get(entry.post.account.id)
        if entry.index is not None and earlier is not None and earlier[0] < entry.index:
            outcomes[entry.index] = _held_back(entry.post, earlier[1])
            continue
        kept.append(entry)
    return kept


def _for_the_desk(post: Post, ctx: AppContext) -> bool:
    reason = ignore_reason(post, brand_id=ctx.brand.id, accept_bots=ctx.settings.mastodon.accept_bots)
    if reason is not None:
        logger.debug("ignoring %s: %s", post.url, reason, extra={"status_id": post.id})
    return reason is None


async def _not_stored(session: AsyncSession, entries: list[_Entry]) -> list[_Entry]:
    """The entries not stored yet, each status once (the stream and a poll may both have brought it)."""
    stored = await batches.stored_uris(session, {e.post.uri for e in entries})
    kept: list[_Entry] = []
    for entry in entries:
        if entry.post.uri in stored:
            continue  # seen already, through the stream or an earlier poll
        stored.add(entry.post.uri)
        kept.append(entry)
    return kept


async def _with_unread_parents(
    session: AsyncSession, entries: list[_Entry], outcomes: list[BaseException | None], ctx: AppContext
) -> list[_Entry]:
    """Replies read before the customer's own posts they answer (another feed or route was faster): those first.

    So the ticket comes out as if the posts were read in the order written: rooted at the customer's earliest
    post, with the reply in its thread. A parent is filed only if a feed brings it to the desk anyway; a deleted
    one, another account's, or one the desk was never sent is left out, as in order.
    """
    in_batch = {e.post.id for e in entries}
    wanted = {e.post.in_reply_to_id for e in entries if _own_reply(e.post) and e.post.in_reply_to_id not in in_batch}
    wanted.discard(None)
    if not wanted:
        return entries
    known = in_batch | await batches.stored_status_ids(session, {w for w in wanted if w is not None})
    result: list[_Entry] = []
    for entry in entries:
        try:
            parents = await _unread_parents(entry.post, known, ctx)
        except (MastodonError, UnreadablePost) as exc:
            assert entry.index is not None
            outcomes[entry.index] = exc  # worth another try: the reply is read again and the parent fetched then
            continue
        for parent in parents:
            known.add(parent.post.id)
        result.extend(parents)
        result.append(entry)
    return result


def _own_reply(post: Post) -> bool:
    return post.in_reply_to_id is not None and post.in_reply_to_account_id == post.account.id


async def _unread_parents(post: Post, known: set[str], ctx: AppContext) -> list[_Entry]:
    """The chain of unread parents above post that a feed would bring, oldest first."""
    chain: list[_Entry] = []
    current = post
    while len(chain) < UNREAD_PARENTS_MAX and _own_reply(current) and current.in_reply_to_id not in known:
        parent_id = current.in_reply_to_id
        assert parent_id is not None
        try:
            parent = await ctx.mastodon.status(parent_id)
        except (MastodonError, UnreadablePost) as exc:
            if isinstance(exc, MastodonError) and sort_mastodon_error(exc).verdict is not Verdict.FATAL:
                raise
            logger.warning(
                "cannot read %s, the post %s replies to (%s); placing the reply alone",
                parent_id,
                post.id,
                exc,
                extra={"status_id": post.id},
            )
            break
        source = _feed_source(parent, ctx) if parent is not None else None
        if parent is None or source is None:
            break
        if ignore_reason(parent, brand_id=ctx.brand.id, accept_bots=ctx.settings.mastodon.accept_bots) is not None:
            break
        logger.info(
            "post %s was read before %s, the post it replies to: filing that one first",
            post.id,
            parent_id,
            extra={"status_id": post.id},
        )
        chain.insert(0, _Entry(MentionReceived(post=parent, source=source), None))
        current = parent
    return chain


def _feed_source(post: Post, ctx: AppContext) -> str | None:
    """The feed that brings this post to the desk (as MentionReceived.source), or None when none does."""
    if ctx.brand.id in post.mentioned_account_ids:
        return "notification"
    # Hashtag timelines carry public posts only.
    watched = [tag for tag in ctx.settings.mastodon.hashtags if tag in post.tags]
    return f"hashtag:{watched[0]}" if watched and post.visibility == "public" else None


# --- placing ---------------------------------------------------------------------------------------------------


@dataclass
class _Ticket:
    """A ticket as the batch sees it; `key` orders tickets by age, new ones of this batch after all stored ones."""

    key: int
    account_id: str
    state: str
    resolved_at: datetime | None
    created_at: datetime
    channel: str = ""
    stored_id: int | None = None  # None until a ticket opened by this batch is inserted


@dataclass(frozen=True)
class Placement:
    """Where a post goes: into a ticket (reopened first if asked), or a new ticket, maybe linked to an old one."""

    join: _Ticket | None = None
    reopen: bool = False
    resume: bool = False  # the ticket was waiting on the customer, who has now posted
    previous: _Ticket | None = None
    new: bool = False


class _CustomerBook:
    """The batch's customers' tickets and which ticket holds which status, kept current as posts are placed."""

    def __init__(self, tickets: list[_Ticket], threads: dict[str, list[_Ticket]], ctx: AppContext) -> None:
        self._by_account: dict[str, list[_Ticket]] = {}
        for ticket in tickets:
            self._by_account.setdefault(ticket.account_id, []).append(ticket)
        self._by_stored_id = {t.key: t for t in tickets}
        self._threads = threads
        self._ctx = ctx
        # Tickets this batch opens come after every stored one of the same customer.
        self._next_key = max((t.key for t in tickets), default=0) + 1

    @classmethod
    async def load(cls, session: AsyncSession, entries: list[_Entry], ctx: AppContext) -> _CustomerBook:
        summaries = await batches.customer_tickets(session, {e.post.account.id for e in entries})
        tickets = [_Ticket(s.id, s.account_id, s.state, s.resolved_at, s.created_at, stored_id=s.id) for s in summaries]
        book = cls(tickets, {}, ctx)
        await book.learn_threads(session, [p for e in entries if (p := e.post.in_reply_to_id) is not None])
        return book

    async def learn_threads(self, session: AsyncSession, status_ids: Sequence[str]) -> None:
        wanted = {s for s in status_ids if s not in self._threads}
        if not wanted:
            return
        for status_id, holders in (await batches.tickets_holding(session, wanted)).items():
            known = [self._by_stored_id.get(ticket_id) for ticket_id, _ in holders]
            self._threads.setdefault(status_id, []).extend(t for t in known if t is not None)

    def tickets_of(self, account_id: str) -> list[_Ticket]:
        return self._by_account.get(account_id, [])

    def recent_tickets(self, post: Post) -> int:
        """The customer's tickets opened within RECENT_TICKETS_WINDOW before post (items still in triage are not)."""
        since = post.created_at - RECENT_TICKETS_WINDOW
        return sum(
            1 for t in self.tickets_of(post.account.id) if t.state != TicketState.TRIAGE and t.created_at >= since
        )

    def needs_ancestors(self, post: Post) -> bool:
        """Whether placing post may need its wider reply chain: it replies under a post no ticket of theirs holds,
        and they have tickets but none that it would join anyway."""
        if post.in_reply_to_id is None:
            return False
        tickets = self.tickets_of(post.account.id)
        if not tickets or any(t.state in ACTIVE for t in tickets):
            return False
        if self._reopenable(post) is not None:
            return False
        return self._holder(post.account.id, [post.in_reply_to_id], open_only=False) is None

    def place(self, post: Post, *, new_item: bool, ancestors: Sequence[str]) -> Placement:
        """Which ticket the post belongs to, from the customer's tickets and its reply chain (as handled alone)."""
        account_id = post.account.id
        parent = [post.in_reply_to_id] if post.in_reply_to_id else []
        # A reply into one of their open tickets goes there; any other post joins their latest open ticket.
        joined = self._holder(account_id, parent, open_only=True) or self._latest(account_id, ACTIVE)
        if joined is not None:
            return Placement(join=joined, resume=joined.state == TicketState.WAITING)
        resolved = self._reopenable(post)
        if resolved is not None:
            return Placement(join=resolved, reopen=True)
        latest = self._latest(account_id, None)
        if latest is None:
            return Placement(new=new_item)  # a first-time customer: no request spent on the thread
        old = self._holder(account_id, parent, open_only=False) or self._holder(account_id, ancestors, open_only=False)
        if old is not None:
            return Placement(previous=old, new=True)
        return Placement(previous=latest if new_item else None, new=new_item)

    def _holder(self, account_id: str, status_ids: Sequence[str], *, open_only: bool) -> _Ticket | None:
        holders = [
            t
            for s in status_ids
            for t in self._threads.get(s, [])
            if t.account_id == account_id and (t.state in ACTIVE or not open_only)
        ]
        return max(holders, key=lambda t: t.key, default=None)

    def _latest(self, account_id: str, states: Sequence[str] | None) -> _Ticket | None:
        tickets = [t for t in self.tickets_of(account_id) if states is None or t.state in states]
        return max(tickets, key=lambda t: t.key, default=None)

    def _reopenable(self, post: Post) -> _Ticket | None:
        """Their most recently resolved ticket (closed ones are never reopened automatically), if still in reach.

        Measured from the post's own time, so a post read late (after an outage) is judged as when it was written.
        """
        resolved = [t for t in self.tickets_of(post.account.id) if t.state == TicketState.RESOLVED]
        latest = max(resolved, key=lambda t: (t.resolved_at is not None, t.resolved_at, t.key), default=None)
        window = timedelta(days=self._ctx.settings.tickets.reopen_window_days)
        if latest is None or latest.resolved_at is None or post.created_at - latest.resolved_at > window:
            return None
        return latest

    def opened(self, post: Post, channel: str, *, state: str, now: datetime) -> _Ticket:
        ticket = _Ticket(self._next_key, post.account.id, state, None, now, channel=channel)
        self._next_key += 1
        self._by_account.setdefault(post.account.id, []).append(ticket)
        return ticket

    def reopened(self, ticket: _Ticket) -> None:
        ticket.state = TicketState.OPEN
        ticket.resolved_at = None

    def resumed(self, ticket: _Ticket) -> None:
        ticket.state = TicketState.OPEN

    def holds(self, ticket: _Ticket, status_id: str) -> None:
        self._threads.setdefault(status_id, []).append(ticket)


async def _with_ancestors(
    entries: list[_Entry], book: _CustomerBook, outcomes: list[BaseException | None], ctx: AppContext
) -> list[_Entry]:
    """Fetch the reply chain of the posts whose placing may need it (customers back after a while, rare)."""
    kept: list[_Entry] = []
    for entry in entries:
        if book.needs_ancestors(entry.post):
            try:
                entry.ancestors = await ctx.mastodon.ancestors(entry.post.id)
            except MastodonError as exc:
                if entry.index is None:
                    raise  # a parent fetched for a reply: the reply is read again
                outcomes[entry.index] = exc
                continue
        kept.append(entry)
    return kept


# --- writing ---------------------------------------------------------------------------------------------------


@dataclass
class _Filed:
    placed: list[tuple[_Entry, int | None]] = field(default_factory=list)
    tickets_touched: bool = False
    opened: int = 0
    reopened: int = 0


async def _file_all(
    session: AsyncSession, entries: list[_Entry], book: _CustomerBook, ctx: AppContext, *, now: datetime
) -> _Filed:
    """Place every entry in order and write the batch: tickets, then mentions, then what follows from them."""
    new_tickets: list[tuple[_Ticket, dict[str, object]]] = []
    clock_rows: list[tuple[_Ticket, dict[str, Any]]] = []
    mentions: list[tuple[_Entry, _Ticket | None, dict[str, object]]] = []
    followups: list[int] = []  # positions in mentions
    reopened: list[tuple[_Ticket, Post]] = []
    resumed: list[tuple[_Ticket, Post]] = []
    # Items in triage a later post of the customer settles: that post alone would have opened a ticket.
    settled: dict[int, tuple[_Ticket, Post]] = {}
    for entry in entries:
        post, result = entry.post, entry.result
        assert result is not None
        entry.assessment = assessment = ctx.judge.assess(post.text, result.score, _cues(post, book))
        placement = book.place(post, new_item=assessment.band != STORED, ancestors=entry.ancestors)
        ticket = placement.join
        if ticket is not None:
            if placement.reopen:
                book.reopened(ticket)
                reopened.append((ticket, post))
            elif placement.resume:
                book.resumed(ticket)
                resumed.append((ticket, post))
            elif ticket.state == TicketState.TRIAGE and assessment.band == TICKET:
                settled.setdefault(ticket.key, (ticket, post))
            followups.append(len(mentions))
        elif placement.new:
            channel = route(post, ctx.settings.routing.rules, ctx.settings.slack.default_channel)
            state = TicketState.TRIAGE if assessment.band == TRIAGE else TicketState.OPEN
            ticket = book.opened(post, channel, state=state, now=now)
            row, clocks_started = _ticket_row(post, assessment, ctx, placement.previous, channel=channel, now=now)
            new_tickets.append((ticket, row))
            clock_rows.extend((ticket, clock) for clock in clocks_started)
        if ticket is not None:
            book.holds(ticket, post.id)
        mentions.append((entry, ticket, _mention_row(post, entry.mention.source, assessment, now=now)))

    # Reopens first: a customer post joining a resolved ticket is only a follow-up once it is open again. Its
    # clocks run again from the post's own time, as the customer's wait does.
    reopens = 0
    for ticket, post in reopened:
        assert ticket.stored_id is not None
        if await reopen(
            session, ticket_id=ticket.stored_id, actor="customer", detail=f"customer posted again: {post.url}"
        ):
            await clocks.back_on_desk(session, ctx.sla, ticket.stored_id, at=post.created_at)
            logger.info(
                "TicketReopened #%d by a new post from @%s",
                ticket.stored_id,
                post.account.acct,
                extra={"ticket_id": ticket.stored_id, "status_id": post.id},
            )
            reopens += 1
    for ticket, post in resumed:
        assert ticket.stored_id is not None
        if await resume(session, ticket_id=ticket.stored_id, actor="customer", detail=f"customer answered: {post.url}"):
            await clocks.back_on_desk(session, ctx.sla, ticket.stored_id, at=post.created_at)
            logger.info(
                "TicketResumed #%d: @%s answered",
                ticket.stored_id,
                post.account.acct,
                extra={"ticket_id": ticket.stored_id, "status_id": post.id},
            )

    ids = await batches.insert_tickets(session, [row for _, row in new_tickets])
    for (ticket, _), ticket_id in zip(new_tickets, ids, strict=True):
        ticket.stored_id = ticket_id
    for ticket, clock in clock_rows:
        clock["ticket_id"] = ticket.stored_id
    for _, ticket, row in mentions:
        row["ticket_id"] = ticket.stored_id if ticket is not None else None
    mention_ids = await batches.insert_mentions(session, [row for _, _, row in mentions])
    opened_from_triage = 0
    for ticket, post in settled.values():
        assert ticket.stored_id is not None
        if await open_automatically(session, ctx, ticket.stored_id, at=post.created_at):
            opened_from_triage += 1

    new_ids = {t.stored_id for t, _ in new_tickets}
    outbox: list[dict[str, object]] = []
    first_post: dict[int, int] = {}  # ticket id -> position of the post that opened it
    for position, (_, ticket, _) in enumerate(mentions):
        if ticket is not None and ticket.stored_id is not None and ticket.stored_id in new_ids:
            first_post.setdefault(ticket.stored_id, position)
    for (ticket, row), ticket_id in zip(new_tickets, ids, strict=True):
        first = first_post[ticket_id]
        opener = mentions[first][0].post
        if ticket.state == TicketState.TRIAGE:
            # An agent decides; the ticket's card goes to its routed channel only once they open it.
            where = str(row["triage_channel"])
            outbox.append(
                batches.outbox_row(
                    kind=OutboxKind.TRIAGE, ticket_id=ticket_id, channel=where, now=now, mention_id=mention_ids[first]
                )
            )
            logger.info(
                "TriageQueued #%d for @%s in %s: %s",
                ticket_id,
                opener.account.acct,
                where,
                row["triage_reason"],
                extra={"ticket_id": ticket_id, "status_id": opener.id, "channel": where},
            )
            continue
        # The card itself is rendered when it is sent, so one posted after an outage shows the ticket as it is then.
        outbox.append(
            batches.outbox_row(
                kind=OutboxKind.CARD,
                ticket_id=ticket_id,
                channel=ticket.channel,
                now=now,
                mention_id=mention_ids[first],
            )
        )
        logger.info(
            "TicketOpened #%d for @%s in %s",
            ticket_id,
            opener.account.acct,
            ticket.channel,
            extra={"ticket_id": ticket_id, "status_id": opener.id, "channel": ticket.channel},
        )
    activity: dict[int, datetime] = {}
    events: list[dict[str, object]] = []
    answers: list[tuple[int, datetime]] = []  # customer posts on tickets stored before this batch, in order
    for position in followups:
        entry, ticket, _ = mentions[position]
        assert ticket is not None and ticket.stored_id is not None
        post = entry.post
        activity[ticket.stored_id] = post.created_at
        # An item in triage has no clocks until an agent opens it.
        if ticket.stored_id not in new_ids and ticket.state != TicketState.TRIAGE:
            answers.append((ticket.stored_id, post.created_at))
        events.append(
            batches.event_row(ticket_id=ticket.stored_id, actor="customer", action="customer_post", detail="", now=now)
        )
        text, blocks = followup_message(
            number=ticket.stored_id,
            author_acct=post.account.acct,
            author_url=post.account.url,
            text=post.text,
            post_url=post.url,
            posted_at=post.created_at,
            posted_at_known=post.created_at_known,
        )
        outbox.append(
            batches.outbox_row(
                kind=OutboxKind.FOLLOWUP,
                ticket_id=ticket.stored_id,
                channel=ticket.channel,
                now=now,
                mention_id=mention_ids[position],
                text=text,
                blocks=blocks,
            )
        )
    # A ticket opened by this batch has not been answered yet: only older ones can start a next-response clock.
    started = [clock for _, clock in clock_rows] + await clocks.next_response_clocks(session, ctx.sla, answers)
    await sla.insert_clocks(session, started)
    await batches.record_customer_posts(session, activity, now=now)
    await batches.insert_rows(session, batches.EVENTS, events)
    # One card refresh covers any number of changes; a ticket opened in this batch has its card still to send.
    # Waiting renders are touched, so one a sender rendered before this batch goes out again with it.
    followed = set(activity) - new_ids
    stale = followed - await touch_waiting_renders(session, sorted(followed), now=now)
    outbox.extend(batches.outbox_row(kind=OutboxKind.UPDATE, ticket_id=t, channel="", now=now) for t in sorted(stale))
    await batches.insert_rows(session, batches.OUTBOX, outbox)
    return _Filed(
        placed=[(entry, ticket.stored_id if ticket is not None else None) for (entry, ticket, _) in mentions],
        tickets_touched=bool(new_tickets or followups),
        # Items put in triage are not on the desk: they count as opened when an agent opens them.
        opened=sum(1 for ticket, _ in new_tickets if ticket.state != TicketState.TRIAGE) + opened_from_triage,
        reopened=reopens,
    )


def _cues(post: Post, book: _CustomerBook) -> Cues:
    """What the judge weighs besides the score: Mastodon's data about the post, the customer's recent tickets."""
    return Cues(
        language=post.language,
        followers=post.account.followers_count,
        reblogs=post.reblogs_count,
        favourites=post.favourites_count,
        recent_tickets=book.recent_tickets(post),
    )


def _ticket_row(
    post: Post, assessment: Assessment, ctx: AppContext, previous: _Ticket | None, *, channel: str, now: datetime
) -> tuple[dict[str, object], list[dict[str, Any]]]:
    """The new ticket's row and the rows of the SLA clocks it starts with (their ticket_id still to fill in).

    An item for triage starts none: it is not on the desk until an agent opens it, and then its clocks run from
    the post's own time (handlers/triage.py).
    """
    priority = assessment.priority
    triage = assessment.band == TRIAGE
    started: list[dict[str, Any]] = []
    if assessment.band == TICKET:
        # From the post's own time: a post read late (after downtime) counts against us as it does for the customer.
        policy = ctx.sla.policy_for(priority=priority, channel=channel)
        started = clocks.opening_clocks(ctx.sla, policy, post.created_at)
    row: dict[str, object] = {
        "state": TicketState.TRIAGE if triage else TicketState.OPEN,
        "priority": priority,
        "customer_account_id": post.account.id,
        "customer_acct": post.account.acct,
        "customer_display_name": post.account.display_name,
        "customer_url": post.account.url,
        "root_status_id": post.id,
        "posted_at": post.created_at,
        "received_at": now,
        "score": assessment.score,
        "channel": channel,
        "slack_ts": None,
        # None when the policy sets no first-response target: no deadline to show rather than an invented one.
        "first_response_due_at": clocks.first_response_due(started),
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "label": assessment.kind,
        "assignee_slack_id": None,
        "first_response_at": None,
        "resolved_at": None,
        "closed_reason": None,
        "last_customer_activity_at": post.created_at,
        "previous_ticket_id": previous.stored_id if previous is not None else None,
        "categories": list(assessment.categories),
        "priority_reasons": list(assessment.priority_reasons),
        "triage_reason": _cut(assessment.triage_reason, TRIAGE_REASON_MAX) if triage else None,
        # The routed channel gets the card once an agent opens it; until then the message is in the triage channel.
        "triage_channel": (ctx.settings.classifier.triage_channel or channel) if triage else None,
        "triage_ts": None,
    }
    return row, started


def _cut(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 1] + "…"


def _mention_row(post: Post, source: str, assessment: Assessment, *, now: datetime) -> dict[str, object]:
    return {
        "status_uri": post.uri,
        "status_id": post.id,
        "status_url": post.url,
        "in_reply_to_id": post.in_reply_to_id,
        "account_id": post.account.id,
        "account_acct": post.account.acct,
        "account_display_name": post.account.display_name,
        "account_url": post.account.url,
        "text": post.text,
        "language": post.language,
        "visibility": post.visibility,
        "tags": list(post.tags),
        "source": source,
        "posted_at": post.created_at,
        "received_at": now,
        "label": assessment.kind,
        "score": assessment.score,
        "ticket_id": None,
        # Read after an edit (a late poll), the post is stored as edited, so the refresh sweep sees nothing new.
        "edited_at": post.edited_at,
        "deleted_at": None,
        "posted_at_known": post.created_at_known,
    }
