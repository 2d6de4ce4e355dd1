"""A mention arrived: classify it, store it, and open a ticket or add it to the customer's open one."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.classifier import Classification
from bot.context import AppContext
from bot.dispatch import Router
from bot.events import MentionReceived, Post
from bot.routing import route
from bot.slack_cards import followup_message
from storage.db import transaction
from storage.models import Mention, OutboxKind, Ticket
from storage.outbox import enqueue
from storage.ticket_actions import record_customer_activity
from storage.tickets import has_open_ticket, mention_exists, open_ticket_for_thread
from storage.types import utcnow

logger = logging.getLogger(__name__)
router = Router()

COMPLAINT = "complaint"


def ignore_reason(post: Post, *, brand_id: str, accept_bots: bool) -> str | None:
    """Why this post is not the desk's business, or None when it is."""
    if post.account.id == brand_id:
        return "the brand's own post"
    if post.is_reblog:
        return "a reblog"
    if post.account.bot and not accept_bots:
        return "a bot account"
    return None


async def _thread_candidates(post: Post, ctx: AppContext) -> list[str]:
    """Status ids above this post in its reply chain that might belong to the customer's open ticket."""
    if post.in_reply_to_id is None:
        return []
    async with ctx.sessions() as session:
        if not await has_open_ticket(session, account_id=post.account.id):
            return []  # nothing to join, so no need to spend a request on the context
        if await open_ticket_for_thread(session, account_id=post.account.id, status_ids=[post.in_reply_to_id]):
            return [post.in_reply_to_id]
    # The direct parent is not one we stored (say, the customer replied to their own earlier reply
    # that did not mention the brand); the wider chain may still lead to the ticket.
    return [post.in_reply_to_id, *await ctx.mastodon.ancestors(post.id)]


def _priority(score: float, ctx: AppContext) -> str:
    return "high" if score >= ctx.settings.classifier.high_priority_score else "normal"


def _first_response_window(priority: str, ctx: AppContext) -> timedelta:
    sla = ctx.settings.sla
    minutes = sla.high_priority_first_response_minutes if priority == "high" else sla.first_response_minutes
    return timedelta(minutes=minutes)


def _new_ticket(post: Post, result: Classification, ctx: AppContext) -> Ticket:
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
        label=result.label,
        score=result.score,
    )


@router.on(MentionReceived)
async def record_mention(event: MentionReceived, ctx: AppContext) -> None:
    """Store the mention with its classification; open a ticket or thread it into an open one."""
    post = event.post
    reason = ignore_reason(post, brand_id=ctx.brand.id, accept_bots=ctx.settings.mastodon.accept_bots)
    if reason is not None:
        logger.debug("ignoring %s: %s", post.url, reason)
        return
    async with ctx.sessions() as session:
        if await mention_exists(session, status_uri=post.uri):
            return  # seen already, through the stream or an earlier poll
    candidates = await _thread_candidates(post, ctx)
    result = await asyncio.to_thread(ctx.classifier.classify, post.text, ctx.threshold)
    try:
        async with transaction(ctx.sessions) as session:
            mention = _mention_row(post, event.source, result)
            ticket = await open_ticket_for_thread(session, account_id=post.account.id, status_ids=candidates)
            if ticket is not None:
                await _add_followup(session, ticket, mention, post)
            elif result.label == COMPLAINT:
                ticket = await _open_ticket(session, mention, post, result, ctx)
            else:
                session.add(mention)
    except IntegrityError:
        # Another worker (or daemon, on Postgres) stored the same status between our check and insert.
        logger.debug("duplicate %s ignored", post.uri)
        return
    if ticket is not None:
        ctx.wake_outbox()
    logger.info("mention %s from @%s: %s %.2f%s", post.id, post.account.acct, result.label, result.score,
                f" -> ticket #{ticket.id}" if ticket is not None else "")


async def _open_ticket(session: AsyncSession, mention: Mention, post: Post, result: Classification,
                       ctx: AppContext) -> Ticket:
    ticket = _new_ticket(post, result, ctx)
    session.add(ticket)
    await session.flush()  # assigns the ticket number the card shows
    assert ticket.id is not None
    mention.ticket_id = ticket.id
    session.add(mention)
    await session.flush()
    # The card itself is rendered when it is sent, so one posted after an outage shows the ticket as it is then.
    enqueue(session, kind=OutboxKind.CARD, ticket_id=ticket.id, channel=ticket.channel, text="", blocks=[],
            mention_id=mention.id)
    logger.info("TicketOpened #%d for @%s in %s", ticket.id, post.account.acct, ticket.channel)
    return ticket


async def _add_followup(session: AsyncSession, ticket: Ticket, mention: Mention, post: Post) -> None:
    assert ticket.id is not None
    mention.ticket_id = ticket.id
    session.add(mention)
    await session.flush()
    await record_customer_activity(session, ticket_id=ticket.id, at=post.created_at)
    text, blocks = followup_message(number=ticket.id, author_acct=post.account.acct, author_url=post.account.url,
                                    text=post.text, post_url=post.url, posted_at=post.created_at)
    enqueue(session, kind=OutboxKind.FOLLOWUP, ticket_id=ticket.id, channel=ticket.channel, text=text,
            blocks=blocks, mention_id=mention.id)
