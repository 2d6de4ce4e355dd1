"""The customer changed a post: an edit updates the ticket and its card, a delete marks it and may close the ticket.

Edits and deletes reach us twice over: pushed on the stream (when the server pushes them) and found by the
refresh sweep. Every change is stored with a conditional UPDATE, so whichever route comes second changes nothing
and says nothing in Slack.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.context import AppContext
from mentiondesk.bot.dispatch import Router
from mentiondesk.bot.events import PostDeleted, PostEdited
from mentiondesk.bot.sla import clocks
from mentiondesk.bot.slack.cards import escape_mrkdwn
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import Mention, OutboxKind, Ticket
from mentiondesk.storage.outbox import enqueue
from mentiondesk.storage.ticket_actions import close, log_event, queue_card_refresh
from mentiondesk.storage.tickets import all_posts_deleted, mention_by_uri, record_mention_deleted, record_mention_edit
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)
router = Router()

ALL_POSTS_DELETED = "all customer posts deleted"
# Block Kit allows 3000 characters in a section; the headline (acct at most ~1000 once escaped) gets the rest.
QUOTE_MAX = 1900
_CUT_ENTITY_RE = re.compile(r"&[a-z]{0,3}$")


@router.on(PostEdited)
async def apply_edit(event: PostEdited, ctx: AppContext) -> None:
    """Store the post's new text once, say so in the card's thread and refresh the card."""
    post = event.post
    if post.edited_at is None:
        return  # an update event without an edit time carries nothing we can order
    async with transaction(ctx.sessions) as session:
        mention = await mention_by_uri(session, status_uri=post.uri)
        if mention is None or mention.id is None:
            return  # not a post we stored (the user stream also carries the home timeline)
        if not await record_mention_edit(session, mention_id=mention.id, text=post.text, edited_at=post.edited_at):
            return  # this edit (or a later one) was applied already
        told = await _tell_thread(session, mention, action="customer_edited", what="edited their post", text=post.text)
    logger.info(
        "PostEdited %s by @%s%s",
        post.id,
        post.account.acct,
        f" on ticket #{told}" if told else "",
        extra={"status_id": post.id, "ticket_id": told},
    )
    if told:
        ctx.wake_outbox()


@router.on(PostDeleted)
async def apply_delete(event: PostDeleted, ctx: AppContext) -> None:
    """Mark the post deleted on its ticket; close the ticket once none of the customer's posts is left."""
    told: list[int] = []
    async with transaction(ctx.sessions) as session:
        for mention in await record_mention_deleted(session, status_id=event.status_id, at=utcnow()):
            ticket_id = await _tell_thread(session, mention, action="customer_deleted", what="deleted a post")
            if ticket_id is None:
                continue
            told.append(ticket_id)
            if await all_posts_deleted(session, ticket_id=ticket_id) and await close(
                session, ticket_id=ticket_id, actor="customer", reason=ALL_POSTS_DELETED
            ):
                await clocks.taken_off_desk(session, ctx.sla, ticket_id, at=utcnow())
                logger.info(
                    "TicketClosed #%d: %s",
                    ticket_id,
                    ALL_POSTS_DELETED,
                    extra={"ticket_id": ticket_id, "status_id": event.status_id},
                )
    if told:
        logger.info(
            "PostDeleted %s on ticket(s) %s",
            event.status_id,
            ", ".join(f"#{t}" for t in told),
            # One id when there is one, as on every other line; a post in several tickets lists them.
            extra={"status_id": event.status_id, "ticket_id": told[0] if len(told) == 1 else told},
        )
        ctx.wake_outbox()


async def _tell_thread(
    session: AsyncSession, mention: Mention, *, action: str, what: str, text: str | None = None
) -> int | None:
    """Post the change into the card's thread, log it and refresh the card; returns the ticket id, if any."""
    if mention.ticket_id is None:
        return None
    ticket = await session.get(Ticket, mention.ticket_id)
    assert ticket is not None and ticket.id is not None
    fallback, blocks = change_message(number=ticket.id, acct=mention.account_acct, what=what, text=text)
    enqueue(
        session,
        kind=OutboxKind.FOLLOWUP,
        ticket_id=ticket.id,
        channel=ticket.channel,
        text=fallback,
        blocks=blocks,
        mention_id=mention.id,
    )
    log_event(session, ticket_id=ticket.id, actor="customer", action=action, detail=mention.status_url)
    await queue_card_refresh(session, ticket_id=ticket.id)
    return ticket.id


def change_message(*, number: int, acct: str, what: str, text: str | None) -> tuple[str, list[dict[str, Any]]]:
    """``(fallback, blocks)`` for "@acct edited their post: ..." in the ticket's thread; customer text is escaped."""
    who = escape_mrkdwn("@" + " ".join(acct.split()).lstrip("@")[:200])
    headline = f"*{who}* {what}" + (":" if text is not None else "")
    body = headline if text is None else headline + "\n" + _quote(text)
    fallback = f"Ticket #{number}: {who} {what}" + (f": {_escape_cut(' '.join(text.split()), 150)}" if text else "")
    section = {"type": "section", "block_id": f"ticket-{number}-change", "text": {"type": "mrkdwn", "text": body}}
    return fallback, [section]


def _quote(text: str) -> str:
    lines = text.strip().split("\n") if text.strip() else []
    quoted = "\n".join("&gt; " + escape_mrkdwn(line) for line in lines) or "_(no text)_"
    return _cut(quoted, QUOTE_MAX)


def _escape_cut(text: str, max_chars: int) -> str:
    return _cut(escape_mrkdwn(text), max_chars)


def _cut(escaped: str, max_chars: int) -> str:
    if len(escaped) <= max_chars:
        return escaped
    # A cut inside an entity (&amp;) would show as stray characters.
    return _CUT_ENTITY_RE.sub("", escaped[: max_chars - 1]) + "…"
