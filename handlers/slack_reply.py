"""Public replies from Slack: the card's Reply button and its modal, and approvers' Approve / Edit / Reject.

The publishing itself (permissions, approval, Mastodon, audit trail) is bot.replies; this module is the UI
around it. Whatever goes wrong after a modal has closed is told to the agent with their full text, so a
reply is never silently lost.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from mentiondesk.bot.context import AppContext
from mentiondesk.bot.replies import (
    APPROVE,
    EDIT,
    REJECT,
    ReplyError,
    approval_decided,
    handled_message,
    latest_customer_post,
    publish,
    reject,
    submit,
)
from mentiondesk.bot.retry import wait_out_slack_rate_limit
from mentiondesk.bot.slack.card_view import REPLY
from mentiondesk.bot.slack.cards import escape_mrkdwn
from mentiondesk.bot.slack.ephemeral import tell
from mentiondesk.bot.slack.inbound import PayloadRules, action_number
from mentiondesk.bot.slack.permissions import Permissions
from mentiondesk.bot.slack.reply_modal import (
    EDIT_CALLBACK,
    REPLY_CALLBACK,
    TEXT_ACTION,
    TEXT_BLOCK,
    ReplyTarget,
    edit_view,
    length_error,
    length_hint,
    reply_view,
    submitted_text,
    submitted_visibility,
    target_of,
    with_hint,
)
from mentiondesk.storage.models import Reply, ReplyState, Ticket

logger = logging.getLogger(__name__)

NOT_A_REPLIER = (
    "You can't reply publicly for the brand: only the people and user groups listed in "
    "`slack.repliers` can. You can still claim this ticket and write notes in its thread; "
    "ask an admin to add you if you should be answering customers."
)
NOT_AN_APPROVER = (
    "Only approvers can approve, edit or reject replies: people in `slack.repliers` whose own replies need no approval."
)
# A modal opens only within three seconds of the click (then its trigger_id expires): a longer 429 is not waited out.
MODAL_WAIT_MAX_S = 2.0


def _slack(ctx: AppContext) -> AsyncWebClient:
    # Listeners only run when the daemon connected to Slack, which it does only with a client.
    assert ctx.slack is not None
    return ctx.slack


def _user(body: dict[str, Any]) -> str:
    return str(body["user"]["id"])


def _action_int(body: dict[str, Any]) -> int:
    return action_number(body["actions"][0])


def _at(channel: str | None, user: str, thread_ts: str | None = None) -> dict[str, Any]:
    """A stand-in interaction body for `tell`, when the real one (a modal's) says nothing about where."""
    return {
        "user": {"id": user},
        "channel": {"id": channel} if channel else None,
        "container": {"thread_ts": thread_ts} if thread_ts else {},
    }


def _kept_text(text: str) -> str:
    quoted = "\n".join("> " + line for line in escape_mrkdwn(text.strip()).splitlines())
    return f"Your text, so you can try again:\n{quoted}"


# ---------------------------------------------------------------- the Reply modal


async def on_reply(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Reply: open the modal for repliers; anyone else is told why not."""
    await ack()
    ctx: AppContext = context["desk"]
    permissions: Permissions = context["permissions"]
    ticket_id = _action_int(body)
    if not await permissions.can_reply(_user(body)):
        await tell(ctx, body, NOT_A_REPLIER)
        return
    try:
        view = await _reply_view(ctx, body, ticket_id)
    except ReplyError as exc:
        await tell(ctx, body, f"Cannot reply on ticket #{ticket_id}: {exc}.")
        return
    # The trigger_id lives three seconds: nothing slow may come between the click and this call.
    await _open_modal(ctx, body["trigger_id"], view)


async def _open_modal(ctx: AppContext, trigger_id: str, view: dict[str, Any]) -> None:
    """views.open, waiting out a rate limit only as long as the trigger_id lives."""
    await wait_out_slack_rate_limit(
        lambda: _slack(ctx).views_open(trigger_id=trigger_id, view=view), what="a modal", max_wait_s=MODAL_WAIT_MAX_S
    )


async def _reply_view(ctx: AppContext, body: dict[str, Any], ticket_id: int) -> dict[str, Any]:
    async with ctx.sessions() as session:
        ticket = await session.get(Ticket, ticket_id)
        if ticket is None:
            raise ReplyError("it does not exist")
        post = await latest_customer_post(session, ticket)
    container = body.get("container") or {}
    channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
    target = ReplyTarget(
        ticket_id=ticket_id,
        acct=ticket.customer_acct,
        channel=channel,
        thread_ts=container.get("thread_ts") or (body.get("message") or {}).get("thread_ts"),
    )
    return reply_view(
        target, post_text=post.text, post_url=post.status_url, post_visibility=post.visibility, limits=ctx.limits
    )


async def on_text_changed(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Each edit of a reply's text: refresh the count of characters left, as Mastodon will count them."""
    await ack()
    ctx: AppContext = context["desk"]
    view = body["view"]
    target = target_of(view)
    hint = length_hint(str(body["actions"][0].get("value") or ""), target.acct, ctx.limits)
    try:
        await _slack(ctx).views_update(view_id=view["id"], hash=view["hash"], view=with_hint(view, hint))
    except SlackApiError as exc:
        # hash_conflict means a later keystroke already refreshed the count; its number is the right one.
        logger.debug("reply modal count not refreshed: %s", exc.response.get("error"))


async def on_reply_submitted(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Post reply: an empty or too long text stays in the modal; otherwise it closes and the reply goes out."""
    ctx: AppContext = context["desk"]
    view = body["view"]
    target = target_of(view)
    text, visibility = submitted_text(view), submitted_visibility(view)
    problem = length_error(text, target.acct, ctx.limits)
    if problem is not None:
        await ack(response_action="errors", errors={TEXT_BLOCK: problem})
        return
    await ack()
    user, where = _user(body), _at(target.channel, _user(body), target.thread_ts)
    try:
        outcome = await submit(
            ctx,
            context["permissions"],
            ticket_id=target.ticket_id,
            author=user,
            text=text,
            visibility=visibility or "direct",
        )
    except ReplyError as exc:
        await tell(ctx, where, f"Your reply on ticket #{target.ticket_id} was not posted: {exc}.\n{_kept_text(text)}")
        return
    except Exception:
        # The modal is gone: whatever broke, the agent must hear of it and get their text back.
        logger.exception(
            "reply on ticket #%d by %s failed", target.ticket_id, user, extra={"ticket_id": target.ticket_id}
        )
        await tell(
            ctx,
            where,
            f"Your reply on ticket #{target.ticket_id} was not posted: something went wrong "
            f"on our side (it is in the logs).\n{_kept_text(text)}",
        )
        return
    if outcome.awaiting_approval:
        await tell(
            ctx,
            where,
            f"Your reply on ticket #{target.ticket_id} was sent for approval to "
            f"<#{ctx.settings.slack.approval_channel}>; it is posted once an approver approves it.",
        )


# ---------------------------------------------------------------- approval


async def _may_decide(ctx: AppContext, permissions: Permissions, body: dict[str, Any]) -> bool:
    if await permissions.can_approve(_user(body)):
        return True
    await tell(ctx, body, NOT_AN_APPROVER)
    return False


async def on_approve(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Approve: publish the reply as written, once, whichever approver clicks first."""
    await ack()
    ctx: AppContext = context["desk"]
    if await _may_decide(ctx, context["permissions"], body):
        await _publish_approved(ctx, body, reply_id=_action_int(body), approver=_user(body), text=None)


async def on_reject(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Reject: nothing is posted; the approval message says who decided and the author is told."""
    await ack()
    ctx: AppContext = context["desk"]
    if not await _may_decide(ctx, context["permissions"], body):
        return
    approver = _user(body)
    try:
        reply = await reject(ctx, reply_id=_action_int(body), approver=approver)
    except ReplyError as exc:
        await tell(ctx, body, f"Not rejected: {exc}.")
        return
    await _show_decision(ctx, reply, f"*Rejected by <@{approver}>*: not posted.", body)
    await _tell_author(
        ctx,
        reply,
        f"<@{approver}> rejected your reply on ticket #{reply.ticket_id}; it was not posted.\n{_kept_text(reply.text)}",
    )


async def on_edit(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Edit: open the reply's text in a modal; posting the edit approves it."""
    await ack()
    ctx: AppContext = context["desk"]
    if not await _may_decide(ctx, context["permissions"], body):
        return
    reply_id = _action_int(body)
    async with ctx.sessions() as session:
        reply = await session.get(Reply, reply_id)
        ticket = await session.get(Ticket, reply.ticket_id) if reply is not None else None
    if reply is None or ticket is None or reply.state != ReplyState.PENDING_APPROVAL:
        await tell(ctx, body, f"Cannot edit: {handled_message(reply)}.")
        return
    target = ReplyTarget(
        ticket_id=reply.ticket_id,
        acct=ticket.customer_acct,
        reply_id=reply_id,
        channel=reply.approval_channel or (body.get("channel") or {}).get("id"),
    )
    view = edit_view(
        target, author=reply.author_slack_id, text=reply.text, visibility=reply.visibility, limits=ctx.limits
    )
    await _open_modal(ctx, body["trigger_id"], view)


async def on_edit_submitted(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Approve & post from the Edit modal: the edited text is checked again, then published as approved."""
    ctx: AppContext = context["desk"]
    view = body["view"]
    target = target_of(view)
    text = submitted_text(view)
    problem = length_error(text, target.acct, ctx.limits)
    if problem is not None:
        await ack(response_action="errors", errors={TEXT_BLOCK: problem})
        return
    await ack()
    where = _at(target.channel, _user(body))
    if target.reply_id is None or not await _may_decide(ctx, context["permissions"], where):
        return
    await _publish_approved(ctx, where, reply_id=target.reply_id, approver=_user(body), text=text)


async def _publish_approved(
    ctx: AppContext, where: dict[str, Any], *, reply_id: int, approver: str, text: str | None
) -> None:
    """Publish on an approver's word and show the outcome on the approval message."""
    try:
        reply = await publish(ctx, reply_id=reply_id, approver=approver, text=text)
    except ReplyError as exc:
        await _approved_but_not_published(ctx, where, reply_id=reply_id, approver=approver, error=str(exc), text=text)
        return
    except Exception:
        logger.exception("approved reply %d could not be published", reply_id)
        await _approved_but_not_published(
            ctx,
            where,
            reply_id=reply_id,
            approver=approver,
            error="something went wrong on our side (it is in the logs)",
            text=text,
        )
        return
    published = f"*Approved by <@{approver}>* — published <{reply.mastodon_url}|on Mastodon>"
    await _show_decision(ctx, reply, published, where)


async def _approved_but_not_published(
    ctx: AppContext, where: dict[str, Any], *, reply_id: int, approver: str, error: str, text: str | None
) -> None:
    async with ctx.sessions() as session:
        reply = await session.get(Reply, reply_id)
    mine = reply is not None and reply.approver_slack_id == approver and reply.state == ReplyState.FAILED
    kept = f"\n{_kept_text(text)}" if text else ""
    if not mine or reply is None:
        # Someone else decided first (or the edit was refused): only the one who clicked needs to know.
        await tell(ctx, where, f"Not published: {error}.{kept}")
        return
    await _show_decision(ctx, reply, f"*Approved by <@{approver}>*, but not published: {escape_mrkdwn(error)}", where)
    await tell(ctx, where, f"The reply you approved was not published: {error}.\n{_kept_text(reply.text)}")
    await _tell_author(
        ctx,
        reply,
        f"Your reply on ticket #{reply.ticket_id} was approved by <@{approver}> but "
        f"could not be published: {error}.\n{_kept_text(reply.text)}",
    )


async def _show_decision(ctx: AppContext, reply: Reply, outcome: str, where: dict[str, Any] | None = None) -> None:
    """Replace the approval request's buttons with the decision, so nobody decides twice."""
    place = _recorded_request(reply) or _clicked_message(where)
    if place is None:
        return
    text, blocks = approval_decided(reply, outcome)
    channel, ts = place
    try:
        await wait_out_slack_rate_limit(
            lambda: _slack(ctx).chat_update(channel=channel, ts=ts, text=text, blocks=blocks),
            what=f"the decision on reply {reply.id}",
        )
    except SlackApiError as exc:
        # The decision stands regardless; a stale button only earns "already handled".
        logger.warning("approval message for reply %s not updated: %s", reply.id, exc.response.get("error"))


def _recorded_request(reply: Reply) -> tuple[str, str] | None:
    if reply.approval_channel is None or reply.approval_ts is None:
        return None
    return reply.approval_channel, reply.approval_ts


def _clicked_message(where: dict[str, Any] | None) -> tuple[str, str] | None:
    """The approval request a button was clicked on: a click can come before the request's place is recorded."""
    container = (where or {}).get("container")
    if not isinstance(container, dict) or container.get("type") != "message":
        return None
    channel, ts = container.get("channel_id"), container.get("message_ts")
    return (channel, ts) if isinstance(channel, str) and isinstance(ts, str) else None


async def _tell_author(ctx: AppContext, reply: Reply, text: str) -> None:
    """Tell the reply's author, next to the ticket's card (they may not be in the approvers' channel)."""
    async with ctx.sessions() as session:
        ticket = await session.get(Ticket, reply.ticket_id)
    channel = ticket.channel if ticket is not None else None
    await tell(ctx, _at(channel, reply.author_slack_id), text)


# What these listeners read from a click or a modal; the intakes refuse a payload without it.
PAYLOADS = PayloadRules(
    actions=dict.fromkeys((REPLY, APPROVE, REJECT, EDIT), action_number),
    views=dict.fromkeys((REPLY_CALLBACK, EDIT_CALLBACK), target_of),
)


def register(app: AsyncApp) -> None:
    app.action(REPLY)(on_reply)
    app.action(TEXT_ACTION)(on_text_changed)
    app.view(REPLY_CALLBACK)(on_reply_submitted)
    app.action(APPROVE)(on_approve)
    app.action(REJECT)(on_reject)
    app.action(EDIT)(on_edit)
    app.view(EDIT_CALLBACK)(on_edit_submitted)
