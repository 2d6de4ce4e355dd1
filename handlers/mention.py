"""A mention arrived: classify it, store it, and open a ticket or add it to the customer's open one."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from mastodon.errors import MastodonError
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.classify.model import Classification
from mentiondesk.bot.context import AppContext
from mentiondesk.bot.dispatch import Router
from mentiondesk.bot.events import MentionReceived, Post
from mentiondesk.bot.mastodon.fields import UnreadablePost
from mentiondesk.bot.retry import Verdict, sort_mastodon_error
from mentiondesk.bot.routing import route
from mentiondesk.bot.slack.cards import followup_message
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import Mention, OutboxKind, Ticket
from mentiondesk.storage.outbox import enqueue
from mentiondesk.storage.ticket_actions import record_customer_activity, reopen
from mentiondesk.storage.tickets import (
    latest_open_ticket,
    latest_resolved_ticket,
    latest_ticket,
    mention_exists,
    open_ticket_for_thread,
    status_stored,
    ticket_for_thread,
)
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)
router = Router()

COMPLAINT = "complaint"
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


@dataclass(frozen=True)
class Placement:
    """Where a post goes: into an existing ticket (reopened first if asked), or a new ticket linked to an old one."""

    join: int | None = None
    reopen: bool = False
    previous: int | None = None


async def _place(post: Post, *, complaint: bool, ctx: AppContext) -> Placement:
    """Decide which ticket a customer's post belongs to, from their tickets and its reply chain."""
    account_id = post.account.id
    async with ctx.sessions() as session:
        parent = [post.in_reply_to_id] if post.in_reply_to_id else []
        # A reply into one of their open tickets goes there; any other post joins their latest open ticket.
        joined = await open_ticket_for_thread(
            session, account_id=account_id, status_ids=parent
        ) or await latest_open_ticket(session, account_id=account_id)
        if joined is not None:
            return Placement(join=joined.id)
        resolved = await latest_resolved_ticket(session, account_id=account_id)
        if resolved is not None and _within_reopen_window(resolved, post, ctx):
            return Placement(join=resolved.id, reopen=True)
        latest = await latest_ticket(session, account_id=account_id)
    if latest is None:
        return Placement()  # a first-time customer: no request spent on the thread
    old = await _thread_ticket(post, ctx)
    if old is not None:
        return Placement(previous=old)
    return Placement(previous=latest.id if complaint else None)


async def _file_unread_parent(post: Post, ctx: AppContext, *, parents_left: int) -> None:
    """A reply read before the customer's own post it answers (another feed or route was faster): file that first.

    So the ticket comes out as if the posts were read in the order written: rooted at the customer's
    earliest post, with the reply in its thread. The parent is filed only if a feed brings it to the desk
    anyway; a deleted one, another account's, or one the desk was never sent is left out, as in order.
    """
    parent_id = post.in_reply_to_id
    if parent_id is None or post.in_reply_to_account_id != post.account.id:
        return
    async with ctx.sessions() as session:
        if await status_stored(session, status_id=parent_id):
            return
    try:
        parent = await ctx.mastodon.status(parent_id)
    except (MastodonError, UnreadablePost) as exc:
        if isinstance(exc, MastodonError) and sort_mastodon_error(exc).verdict is not Verdict.FATAL:
            raise  # worth another try: the reply is read again and the parent fetched then
        logger.warning("cannot read %s, the post %s replies to (%s); placing the reply alone", parent_id, post.id, exc)
        return
    source = _feed_source(parent, ctx) if parent is not None else None
    if parent is not None and source is not None:
        logger.info("post %s was read before %s, the post it replies to: filing that one first", post.id, parent_id)
        await _record(MentionReceived(post=parent, source=source), ctx, parents_left=parents_left)


def _feed_source(post: Post, ctx: AppContext) -> str | None:
    """The feed that brings this post to the desk (as MentionReceived.source), or None when none does."""
    if ctx.brand.id in post.mentioned_account_ids:
        return "notification"
    # Hashtag timelines carry public posts only.
    watched = [tag for tag in ctx.settings.mastodon.hashtags if tag in post.tags]
    return f"hashtag:{watched[0]}" if watched and post.visibility == "public" else None


def _within_reopen_window(ticket: Ticket, post: Post, ctx: AppContext) -> bool:
    # Measured from the post's own time, so a post read late (after an outage) is judged as when it was written.
    window = timedelta(days=ctx.settings.tickets.reopen_window_days)
    return ticket.resolved_at is not None and post.created_at - ticket.resolved_at <= window


async def _thread_ticket(post: Post, ctx: AppContext) -> int | None:
    """The customer's earlier ticket (in any state) that this post replies under, if any."""
    if post.in_reply_to_id is None:
        return None
    async with ctx.sessions() as session:
        found = await ticket_for_thread(session, account_id=post.account.id, status_ids=[post.in_reply_to_id])
    if found is not None:
        return found.id
    # The direct parent is not one we stored (say, the customer replied to their own earlier reply
    # that did not mention the brand); the wider chain may still lead to the ticket.
    ancestors = await ctx.mastodon.ancestors(post.id)
    async with ctx.sessions() as session:
        found = await ticket_for_thread(session, account_id=post.account.id, status_ids=ancestors)
    return found.id if found is not None else None


def _priority(score: float, ctx: AppContext) -> str:
    return "high" if score >= ctx.settings.classifier.high_priority_score else "normal"


def _first_response_window(priority: str, ctx: AppContext) -> timedelta:
    sla = ctx.settings.sla
    minutes = sla.high_priority_first_response_minutes if priority == "high" else sla.first_response_minutes
    return timedelta(minutes=minutes)


def _new_ticket(post: Post, result: Classification, ctx: AppContext, previous: int | None) -> Ticket:
    priority = _priority(result.score, ctx)
    return Ticket(
        priority=priority,
        customer_account_id=post.account.id,
        customer_acct=post.account.acct,
        customer_display_name=post.account.display_name,
        customer_url=post.account.url,
        root_status_id=post.id,
        posted_at=post.created_at,
        received_at=utcnow(),
        score=result.score,
        channel=route(post, ctx.settings.routing.rules, ctx.settings.slack.default_channel),
        first_response_due_at=post.created_at + _first_response_window(priority, ctx),
        last_customer_activity_at=post.created_at,
        previous_ticket_id=previous,
    )


def _mention_row(post: Post, source: str, result: Classification) -> Mention:
    return Mention(
        status_uri=post.uri,
        status_id=post.id,
        status_url=post.url,
        in_reply_to_id=post.in_reply_to_id,
        account_id=post.account.id,
        account_acct=post.account.acct,
        account_display_name=post.account.display_name,
        account_url=post.account.url,
        text=post.text,
        language=post.language,
        visibility=post.visibility,
        tags=list(post.tags),
        source=source,
        posted_at=post.created_at,
        posted_at_known=post.created_at_known,
        label=result.label,
        score=result.score,
        # Read after an edit (a late poll), the post is stored as edited, so the refresh sweep sees nothing new.
        edited_at=post.edited_at,
    )


@router.on(MentionReceived)
async def record_mention(event: MentionReceived, ctx: AppContext) -> None:
    """Store the mention with its classification; add it to the customer's ticket, reopen one, or open one."""
    await _record(event, ctx, parents_left=UNREAD_PARENTS_MAX)


async def _record(event: MentionReceived, ctx: AppContext, *, parents_left: int) -> None:
    post = event.post
    reason = ignore_reason(post, brand_id=ctx.brand.id, accept_bots=ctx.settings.mastodon.accept_bots)
    if reason is not None:
        logger.debug("ignoring %s: %s", post.url, reason)
        return
    async with ctx.sessions() as session:
        if await mention_exists(session, status_uri=post.uri):
            return  # seen already, through the stream or an earlier poll
    if parents_left > 0:
        await _file_unread_parent(post, ctx, parents_left=parents_left - 1)
    result = await asyncio.to_thread(ctx.classifier.classify, post.text, ctx.threshold)
    placement = await _place(post, complaint=result.label == COMPLAINT, ctx=ctx)
    try:
        async with transaction(ctx.sessions) as session:
            ticket = await _file(session, _mention_row(post, event.source, result), post, result, placement, ctx)
    except IntegrityError:
        # Another worker (or daemon, on Postgres) stored the same status between our check and insert. Any other
        # refusal is the post's own, and the feed sets it aside after a few tries.
        async with ctx.sessions() as session:
            if not await mention_exists(session, status_uri=post.uri):
                raise
        logger.debug("duplicate %s ignored", post.uri)
        return
    if ticket is not None:
        ctx.wake_outbox()
    logger.info(
        "mention %s from @%s: %s %.2f%s",
        post.id,
        post.account.acct,
        result.label,
        result.score,
        f" -> ticket #{ticket.id}" if ticket is not None else "",
    )


async def _file(
    session: AsyncSession, mention: Mention, post: Post, result: Classification, placement: Placement, ctx: AppContext
) -> Ticket | None:
    """Store the mention where placement says; returns its ticket, if it has one."""
    if placement.join is not None:
        ticket = await session.get(Ticket, placement.join)
        assert ticket is not None and ticket.id is not None
        if placement.reopen and await reopen(
            session, ticket_id=ticket.id, actor="customer", detail=f"customer posted again: {post.url}"
        ):
            logger.info("TicketReopened #%d by a new post from @%s", ticket.id, post.account.acct)
        await _add_followup(session, ticket, mention, post)
        return ticket
    if result.label == COMPLAINT or placement.previous is not None:
        return await _open_ticket(session, mention, post, result, ctx, previous=placement.previous)
    session.add(mention)
    return None


async def _open_ticket(
    session: AsyncSession,
    mention: Mention,
    post: Post,
    result: Classification,
    ctx: AppContext,
    *,
    previous: int | None,
) -> Ticket:
    ticket = _new_ticket(post, result, ctx, previous)
    session.add(ticket)
    await session.flush()  # assigns the ticket number the card shows
    assert ticket.id is not None
    mention.ticket_id = ticket.id
    session.add(mention)
    await session.flush()
    # The card itself is rendered when it is sent, so one posted after an outage shows the ticket as it is then.
    enqueue(
        session,
        kind=OutboxKind.CARD,
        ticket_id=ticket.id,
        channel=ticket.channel,
        text="",
        blocks=[],
        mention_id=mention.id,
    )
    logger.info(
        "TicketOpened #%d for @%s in %s%s",
        ticket.id,
        post.account.acct,
        ticket.channel,
        f" (follows #{previous})" if previous is not None else "",
    )
    return ticket


async def _add_followup(session: AsyncSession, ticket: Ticket, mention: Mention, post: Post) -> None:
    assert ticket.id is not None
    mention.ticket_id = ticket.id
    session.add(mention)
    await session.flush()
    await record_customer_activity(session, ticket_id=ticket.id, at=post.created_at)
    text, blocks = followup_message(
        number=ticket.id,
        author_acct=post.account.acct,
        author_url=post.account.url,
        text=post.text,
        post_url=post.url,
        posted_at=post.created_at,
        posted_at_known=post.created_at_known,
    )
    enqueue(
        session,
        kind=OutboxKind.FOLLOWUP,
        ticket_id=ticket.id,
        channel=ticket.channel,
        text=text,
        blocks=blocks,
        mention_id=mention.id,
    )
