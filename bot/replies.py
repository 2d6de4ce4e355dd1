"""Public replies to customers: checking them against the instance's limits, and publishing them as the brand.

Publishing is the one place mentiondesk speaks for the brand, so every path to it (the Reply modal, a
confirmed thread message, an approval) ends here, and every reply is kept in the audit trail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mastodon.errors import MastodonError
from slack_sdk.errors import SlackApiError
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot import metrics
from mentiondesk.bot.context import AppContext
from mentiondesk.bot.mastodon.compose import allowed_visibilities, mastodon_length, with_mention
from mentiondesk.bot.retry import wait_out_slack_rate_limit
from mentiondesk.bot.sla import clocks
from mentiondesk.bot.sla.policy import SlaBook
from mentiondesk.bot.slack.cards import escape_mrkdwn
from mentiondesk.bot.slack.permissions import Permissions
from mentiondesk.storage.db import execute, transaction
from mentiondesk.storage.models import Mention, OutboxKind, Reply, ReplyState, Ticket
from mentiondesk.storage.outbox import enqueue
from mentiondesk.storage.retention import ERASED
from mentiondesk.storage.ticket_actions import log_event, record_first_response
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)


class ReplyError(Exception):
    """The reply cannot be published as it stands; the message tells the agent why."""


def check_length(text: str, ctx: AppContext) -> None:
    used = mastodon_length(text, url_chars=ctx.limits.characters_reserved_per_url)
    if used > ctx.limits.max_characters:
        raise ReplyError(
            f"{used} characters, over the instance's limit of {ctx.limits.max_characters} (the @mention counts too)"
        )


async def latest_customer_post(session: AsyncSession, ticket: Ticket) -> Mention:
    """The customer's most recent post in the ticket that still exists: replies go under it."""
    if ticket.customer_acct == ERASED:
        raise ReplyError(
            "this customer's data was erased (retention or `mentiondesk forget`): there is no one to reply to"
        )
    stmt = (
        select(Mention)
        .where(
            Mention.ticket_id == ticket.id,
            Mention.account_id == ticket.customer_account_id,
            col(Mention.deleted_at).is_(None),
        )
        .order_by(col(Mention.posted_at).desc(), col(Mention.id).desc())
        .limit(1)
    )
    mention = (await session.exec(stmt)).first()
    if mention is None:
        raise ReplyError("the customer deleted every post in this ticket; there is nothing to reply to")
    return mention


async def create_reply(
    ctx: AppContext, *, ticket_id: int, author: str, text: str, visibility: str, state: str
) -> Reply:
    """Record a reply (pending approval or about to publish) after checking it can be published."""
    async with transaction(ctx.sessions) as session:
        ticket = await session.get(Ticket, ticket_id)
        if ticket is None:
            raise ReplyError(f"ticket #{ticket_id} does not exist")
        parent = await latest_customer_post(session, ticket)
        if visibility not in allowed_visibilities(parent.visibility):
            raise ReplyError(f"the customer posted as {parent.visibility}; a reply cannot be {visibility}")
        full_text = with_mention(text, ticket.customer_acct)
        check_length(full_text, ctx)
        reply = Reply(
            ticket_id=ticket_id,
            author_slack_id=author,
            text=full_text,
            visibility=visibility,
            in_reply_to_status_id=parent.status_id,
            state=state,
        )
        session.add(reply)
        await session.flush()
        log_event(session, ticket_id=ticket_id, actor=author, action="reply_written", detail=f"reply {reply.id}")
    return reply


async def publish(ctx: AppContext, *, reply_id: int, approver: str | None = None, text: str | None = None) -> Reply:
    """Post the reply on Mastodon; on success record it, thread it under the card and stamp first response.

    Without an approver only a reply submit() has just created (state publishing) goes out. With one, the
    reply must be waiting for approval, and the decision is one conditional UPDATE: of two approvers
    clicking at once exactly one publishes. `text` is an approver's edit, which replaces the author's text.
    """
    reply = await _claim(ctx, reply_id=reply_id, approver=approver, text=text)
    try:
        posted = await ctx.mastodon.post_reply(
            reply.text,
            in_reply_to_id=reply.in_reply_to_status_id,
            visibility=reply.visibility,
            idempotency_key=f"mentiondesk-reply-{reply.id}",
        )
    except MastodonError as exc:
        await _record_failure(ctx, reply, f"Mastodon did not accept the reply: {exc}")
        raise ReplyError(f"Mastodon did not accept the reply: {exc}") from exc
    async with transaction(ctx.sessions) as session:
        reply, waited_s = await _record_published(session, reply, status_id=posted.id, url=posted.url, book=ctx.sla)
    if waited_s is not None:
        metrics.FIRST_RESPONSE_SECONDS.observe(waited_s)
    ctx.wake_outbox()
    logger.info(
        "ReplySent ticket #%d by %s: %s",
        reply.ticket_id,
        reply.author_slack_id,
        posted.url,
        extra={"ticket_id": reply.ticket_id, "status_id": posted.id},
    )
    return reply


async def _claim(ctx: AppContext, *, reply_id: int, approver: str | None, text: str | None) -> Reply:
    """Take the reply for publishing, or raise ReplyError saying who got there first."""
    async with transaction(ctx.sessions) as session:
        if approver is None:
            if text is not None:
                raise ValueError("only an approver can edit a reply on its way out")
            reply = await session.get(Reply, reply_id)
            if reply is None or reply.state != ReplyState.PUBLISHING:
                raise ReplyError(handled_message(reply))
            return reply
        values: dict[str, Any] = {"state": ReplyState.PUBLISHING, "approver_slack_id": approver, "decided_at": utcnow()}
        if text is not None:
            values["text"] = await _edited_text(ctx, session, reply_id, text)
        if not await _decide(session, reply_id=reply_id, values=values):
            raise ReplyError(handled_message(await session.get(Reply, reply_id)))
        reply = await _reload(session, reply_id)
        action = "reply_edited" if text is not None else "reply_approved"
        log_event(session, ticket_id=reply.ticket_id, actor=approver, action=action, detail=f"reply {reply.id}")
    return reply


async def reject(ctx: AppContext, *, reply_id: int, approver: str) -> Reply:
    """Refuse a reply waiting for approval; when approvers decide at once, the first decision stands."""
    async with transaction(ctx.sessions) as session:
        values = {"state": ReplyState.REJECTED, "approver_slack_id": approver, "decided_at": utcnow()}
        if not await _decide(session, reply_id=reply_id, values=values):
            raise ReplyError(handled_message(await session.get(Reply, reply_id)))
        reply = await _reload(session, reply_id)
        log_event(
            session, ticket_id=reply.ticket_id, actor=approver, action="reply_rejected", detail=f"reply {reply.id}"
        )
    logger.info(
        "reply %d on ticket #%d rejected by %s",
        reply_id,
        reply.ticket_id,
        approver,
        extra={"ticket_id": reply.ticket_id},
    )
    return reply


async def _decide(session: AsyncSession, *, reply_id: int, values: dict[str, Any]) -> bool:
    # The WHERE clause is the lock: a second decision finds the state changed and updates nothing.
    stmt = (
        update(Reply).where(col(Reply.id) == reply_id, col(Reply.state) == ReplyState.PENDING_APPROVAL).values(**values)
    )
    return await execute(session, stmt) == 1


async def _reload(session: AsyncSession, reply_id: int) -> Reply:
    reply = await session.get(Reply, reply_id)
    assert reply is not None
    await session.refresh(reply)  # the UPDATE bypassed the identity map
    return reply


async def _edited_text(ctx: AppContext, session: AsyncSession, reply_id: int, text: str) -> str:
    reply = await session.get(Reply, reply_id)
    ticket = await session.get(Ticket, reply.ticket_id) if reply is not None else None
    if reply is None or ticket is None:
        raise ReplyError(handled_message(None))
    full_text = with_mention(text, ticket.customer_acct)
    check_length(full_text, ctx)
    return full_text


def handled_message(reply: Reply | None) -> str:
    """Why a reply can no longer be decided on, for the agent who tried."""
    if reply is None:
        return "this reply no longer exists"
    by = f" by <@{reply.approver_slack_id}>" if reply.approver_slack_id else ""
    if reply.state == ReplyState.PUBLISHED:
        return f"it was already approved{by} and published: {reply.mastodon_url}"
    if reply.state == ReplyState.PUBLISHING:
        return f"it was already approved{by} and is being published"
    if reply.state == ReplyState.REJECTED:
        return f"it was already rejected{by}"
    if reply.state == ReplyState.FAILED:
        return f"publishing it already failed: {reply.error}"
    return f"it is {reply.state}"


async def _record_failure(ctx: AppContext, reply: Reply, error: str) -> None:
    async with transaction(ctx.sessions) as session:
        stored = await session.get(Reply, reply.id)
        assert stored is not None
        stored.state, stored.error = ReplyState.FAILED, error[:2000]
        session.add(stored)
        log_event(
            session, ticket_id=stored.ticket_id, actor=stored.author_slack_id, action="reply_failed", detail=error
        )


async def _record_published(
    session: AsyncSession, reply: Reply, *, status_id: str, url: str, book: SlaBook
) -> tuple[Reply, float | None]:
    """Record the published reply; with how long the customer waited, when it is the ticket's first response."""
    stored = await session.get(Reply, reply.id)
    assert stored is not None
    now = utcnow()
    stored.state, stored.mastodon_status_id, stored.mastodon_url, stored.published_at = (
        ReplyState.PUBLISHED,
        status_id,
        url,
        now,
    )
    session.add(stored)
    log_event(session, ticket_id=stored.ticket_id, actor=stored.author_slack_id, action="replied", detail=url)
    # The SLA clock stops when Mastodon accepted the post, not when the agent pressed Send.
    first = await record_first_response(session, ticket_id=stored.ticket_id, at=now, actor=stored.author_slack_id)
    await clocks.replied(session, book, stored.ticket_id, at=now)
    ticket = await session.get(Ticket, stored.ticket_id)
    assert ticket is not None
    waited_s = max(0.0, (now - ticket.posted_at).total_seconds()) if first else None
    text, blocks = replied_message(stored)
    enqueue(
        session, kind=OutboxKind.FOLLOWUP, ticket_id=stored.ticket_id, channel=ticket.channel, text=text, blocks=blocks
    )
    return stored, waited_s


def replied_message(reply: Reply) -> tuple[str, list[dict[str, Any]]]:
    """The thread message that shows the team what was said publicly, by whom."""
    by = f"<@{reply.author_slack_id}>"
    if reply.approver_slack_id:
        by += f" (approved by <@{reply.approver_slack_id}>)"
    quoted = "\n".join("&gt; " + line for line in escape_mrkdwn(reply.text).splitlines())
    link = f"<{reply.mastodon_url}|{reply.visibility} reply>" if reply.mastodon_url else reply.visibility
    body = f"Replied publicly by {by}: {link}\n{quoted}"[:3000]
    return f"Replied publicly by {by}", [{"type": "section", "text": {"type": "mrkdwn", "text": body}}]


# action_ids on an approval request; handlers/slack_reply.py listens for them.
APPROVE, EDIT, REJECT = "reply_approve", "reply_edit", "reply_reject"


@dataclass(frozen=True)
class Submitted:
    reply: Reply
    awaiting_approval: bool


async def submit(
    ctx: AppContext, permissions: Permissions, *, ticket_id: int, author: str, text: str, visibility: str
) -> Submitted:
    """The one way a reply leaves Slack: refused, sent for approval, or published. Raises ReplyError to refuse."""
    if not await permissions.can_reply(author):
        raise ReplyError("you are not allowed to reply publicly for the brand (ask to be added to slack.repliers)")
    if await permissions.needs_approval(author):
        reply = await create_reply(
            ctx, ticket_id=ticket_id, author=author, text=text, visibility=visibility, state=ReplyState.PENDING_APPROVAL
        )
        await request_approval(ctx, reply)
        return Submitted(reply, awaiting_approval=True)
    reply = await create_reply(
        ctx, ticket_id=ticket_id, author=author, text=text, visibility=visibility, state=ReplyState.PUBLISHING
    )
    return Submitted(await publish(ctx, reply_id=reply.id or 0), awaiting_approval=False)


def approval_request(reply: Reply) -> tuple[str, list[dict[str, Any]]]:
    """The message approvers see: the exact text that would be posted, and the three choices."""
    assert reply.id is not None
    quoted = "\n".join("&gt; " + line for line in escape_mrkdwn(reply.text).splitlines())
    summary = (
        f"<@{reply.author_slack_id}> wants to reply publicly ({reply.visibility}) on ticket "
        f"#{reply.ticket_id}:\n{quoted}"
    )[:3000]
    value = str(reply.id)
    buttons = [
        {
            "type": "button",
            "action_id": APPROVE,
            "value": value,
            "style": "primary",
            "text": {"type": "plain_text", "text": "Approve"},
        },
        {"type": "button", "action_id": EDIT, "value": value, "text": {"type": "plain_text", "text": "Edit"}},
        {
            "type": "button",
            "action_id": REJECT,
            "value": value,
            "style": "danger",
            "text": {"type": "plain_text", "text": "Reject"},
        },
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "block_id": f"reply-{value}-text", "text": {"type": "mrkdwn", "text": summary}},
        {"type": "actions", "block_id": f"reply-{value}-actions", "elements": buttons},
    ]
    return f"Reply on ticket #{reply.ticket_id} waiting for approval", blocks


async def request_approval(ctx: AppContext, reply: Reply) -> None:
    """Post the approval request and remember where, so the decision can update it.

    A request that cannot be posted marks the reply failed (with its text kept) instead of leaving it
    waiting for an approval nobody was asked for.
    """
    channel = ctx.settings.slack.approval_channel
    text, blocks = approval_request(reply)
    try:
        slack = ctx.slack
        if slack is None or channel is None:
            raise ReplyError("replies need approval but no approval channel is configured")
        response = await wait_out_slack_rate_limit(
            lambda: slack.chat_postMessage(channel=channel, text=text, blocks=blocks), what="an approval request"
        )
    except SlackApiError as exc:
        error = f"could not ask for approval in <#{channel}>: {exc.response.get('error')}"
        await _record_failure(ctx, reply, error)
        raise ReplyError(error) from exc
    except ReplyError as exc:
        await _record_failure(ctx, reply, str(exc))
        raise
    async with transaction(ctx.sessions) as session:
        stored = await session.get(Reply, reply.id)
        assert stored is not None
        stored.approval_channel, stored.approval_ts = str(response["channel"]), str(response["ts"])
        session.add(stored)
        log_event(
            session,
            ticket_id=stored.ticket_id,
            actor=stored.author_slack_id,
            action="approval_requested",
            detail=f"reply {stored.id}",
        )


def approval_decided(reply: Reply, outcome: str) -> tuple[str, list[dict[str, Any]]]:
    """The approval request once decided: the outcome (mrkdwn, ours) and the text; no buttons left to click."""
    quoted = "\n".join("&gt; " + line for line in escape_mrkdwn(reply.text).splitlines())
    body = (
        f"{outcome}\nReply by <@{reply.author_slack_id}> ({reply.visibility}) on ticket #{reply.ticket_id}:\n{quoted}"
    )[:3000]
    return (
        f"Reply on ticket #{reply.ticket_id}: {outcome}"[:3000],
        [{"type": "section", "block_id": f"reply-{reply.id}-decided", "text": {"type": "mrkdwn", "text": body}}],
    )
