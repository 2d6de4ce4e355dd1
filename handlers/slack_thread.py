"""Agents' messages in a ticket's Slack thread: stored as internal notes, sent to the customer only on request.

Every human message in the card's thread becomes a Note and never reaches Mastodon by itself. With
slack.thread_replies = "confirm" the author is also asked, privately, whether to send it publicly; only
their Send publishes it, through bot.replies.submit like every other reply.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import IntegrityError

from mentiondesk.bot.context import AppContext
from mentiondesk.bot.mastodon.compose import allowed_visibilities
from mentiondesk.bot.replies import ReplyError, latest_customer_post, submit
from mentiondesk.bot.retry import wait_out_slack_rate_limit
from mentiondesk.bot.slack.cards import escape_mrkdwn
from mentiondesk.bot.slack.ephemeral import tell
from mentiondesk.bot.slack.inbound import PayloadRules, action_number
from mentiondesk.bot.slack.permissions import Permissions
from mentiondesk.storage import queries_desk
from mentiondesk.storage.db import transaction
from mentiondesk.storage.models import Note, Ticket
from mentiondesk.storage.ticket_actions import log_event

logger = logging.getLogger(__name__)

# action_ids of the buttons on the "send this publicly?" prompt; the value is the note id.
SEND_NOTE, KEEP_NOTE = "note_send", "note_keep"
# Message subtypes that are a person writing: plain messages, "also send to channel", and file uploads.
# Edits, deletions, joins and bot posts are not new notes.
_HUMAN_SUBTYPES = frozenset({None, "thread_broadcast", "file_share"})


def message_event(event: Mapping[str, Any]) -> None:
    """What on_message reads of a message event: its place as strings, and the author and text if given."""
    for key in ("channel", "ts"):
        if not isinstance(event.get(key), str) or not event[key]:
            raise ValueError(f"message event without a {key}")
    for key in ("user", "thread_ts", "text", "subtype"):
        if event.get(key) is not None and not isinstance(event[key], str):
            raise ValueError(f"message event {key} is not a string")


def _is_agent_thread_message(event: dict[str, Any], bot_user_id: str | None) -> bool:
    """A person's message inside some thread (not the parent itself), not from a bot."""
    if event.get("subtype") not in _HUMAN_SUBTYPES or event.get("bot_id"):
        return False
    user, thread_ts = event.get("user"), event.get("thread_ts")
    if not user or user == bot_user_id or not thread_ts or thread_ts == event.get("ts"):
        return False
    return bool((event.get("text") or "").strip())


async def _store_note(ctx: AppContext, event: dict[str, Any]) -> tuple[Note, Ticket] | None:
    """Store the message as a note on its ticket; None when it is not in a ticket thread or already stored."""
    channel, ts = str(event["channel"]), str(event["ts"])
    try:
        async with transaction(ctx.sessions) as session:
            ticket = await queries_desk.ticket_for_thread(session, channel=channel, thread_ts=str(event["thread_ts"]))
            if ticket is None or ticket.id is None:
                return None
            # Slack redelivers events it thinks were lost; the (channel, ts) key makes a repeat a no-op.
            if await queries_desk.note_for_message(session, channel=channel, ts=ts) is not None:
                return None
            note = Note(
                ticket_id=ticket.id,
                author_slack_id=str(event["user"]),
                text=str(event["text"]),
                slack_channel=channel,
                slack_ts=ts,
            )
            session.add(note)
            await session.flush()
            log_event(session, ticket_id=ticket.id, actor=note.author_slack_id, action="note", detail=f"note {note.id}")
    except IntegrityError:
        return None  # a concurrent redelivery stored it first
    return note, ticket


async def on_message(event: dict[str, Any], context: dict[str, Any]) -> None:
    """A message in a ticket's thread: keep it as an internal note, and in confirm mode offer to send it."""
    if not _is_agent_thread_message(event, context.get("bot_user_id")):
        return
    ctx: AppContext = context["desk"]
    stored = await _store_note(ctx, event)
    if stored is None:
        return
    note, ticket = stored
    logger.info(
        "note %d on ticket #%d by %s",
        note.id,
        note.ticket_id,
        note.author_slack_id,
        extra={"ticket_id": note.ticket_id},
    )
    if ctx.settings.slack.thread_replies == "confirm":
        text, blocks = confirm_prompt(note, ticket)
        await _tell(ctx, note.author_slack_id, note, ticket, text, blocks=blocks)


def confirm_prompt(note: Note, ticket: Ticket) -> tuple[str, list[dict[str, Any]]]:
    """The private question under an agent's thread message: publish it, or leave it internal."""
    question = f"Send this to {escape_mrkdwn('@' + ticket.customer_acct)} publicly?"
    value = str(note.id)
    buttons = [
        {
            "type": "button",
            "action_id": SEND_NOTE,
            "value": value,
            "style": "primary",
            "text": {"type": "plain_text", "text": "Send"},
        },
        {
            "type": "button",
            "action_id": KEEP_NOTE,
            "value": value,
            "text": {"type": "plain_text", "text": "Keep as note"},
        },
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "block_id": f"note-{value}-question", "text": {"type": "mrkdwn", "text": question}},
        {"type": "actions", "block_id": f"note-{value}-actions", "elements": buttons},
    ]
    return question, blocks


async def _tell(
    ctx: AppContext, user: str, note: Note, ticket: Ticket, text: str, blocks: list[dict[str, Any]] | None = None
) -> None:
    """An ephemeral message to user in the ticket's thread, where the note was written.

    The place comes from the note rather than the click: a click on an ephemeral message does not
    reliably say which thread the message was in.
    """
    slack = ctx.slack
    if slack is None:
        return
    try:
        await wait_out_slack_rate_limit(
            lambda: slack.chat_postEphemeral(
                channel=note.slack_channel, user=user, text=text, blocks=blocks, thread_ts=ticket.slack_ts
            ),
            what=f"a message to {user} about note {note.id}",
        )
    except SlackApiError as exc:
        logger.warning("could not tell %s about note %s: %s", user, note.id, exc.response.get("error"))


async def _load(ctx: AppContext, body: dict[str, Any]) -> tuple[Note, Ticket] | None:
    """The note a prompt's button is about, with its ticket; None, and the agent told, when it is not there."""
    note_id = action_number(body["actions"][0])
    async with ctx.sessions() as session:
        note = await session.get(Note, note_id)
        ticket = await session.get(Ticket, note.ticket_id) if note is not None else None
    if note is None or ticket is None:
        await tell(ctx, body, f"Note {note_id} does not exist (any more); nothing was sent.")
        return None
    return note, ticket


async def on_send(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Send: publish the author's own note to the customer, at most once however often it is clicked."""
    await ack()
    ctx: AppContext = context["desk"]
    loaded = await _load(ctx, body)
    if loaded is None:
        return
    note, ticket = loaded
    user = str(body["user"]["id"])
    if user != note.author_slack_id:
        await _tell(ctx, user, note, ticket, f"Only <@{note.author_slack_id}> can send their note publicly.")
        return
    async with transaction(ctx.sessions) as session:
        claimed = await queries_desk.claim_note_send(session, note=note, actor=user)
    if not claimed:
        await _tell(ctx, user, note, ticket, "This note was already sent.")
        return
    try:
        outcome = await _publish(ctx, context["permissions"], note, user)
    except ReplyError as exc:
        async with transaction(ctx.sessions) as session:
            await queries_desk.release_note_send(session, note=note, reason=str(exc))
        await _tell(ctx, user, note, ticket, _refusal(str(exc), note.text))
        return
    await _tell(ctx, user, note, ticket, outcome)


async def _publish(ctx: AppContext, permissions: Permissions, note: Note, user: str) -> str:
    """Submit the note as a reply, as widely visible as the customer's latest post allows; say what happened."""
    async with ctx.sessions() as session:
        ticket = await session.get(Ticket, note.ticket_id)
        if ticket is None:
            raise ReplyError(f"ticket #{note.ticket_id} does not exist")
        parent = await latest_customer_post(session, ticket)
    visibility = allowed_visibilities(parent.visibility)[0]
    submitted = await submit(
        ctx, permissions, ticket_id=note.ticket_id, author=user, text=note.text, visibility=visibility
    )
    if submitted.awaiting_approval:
        return "Your note was sent for approval; it is published once an approver accepts it."
    return f"Sent to {escape_mrkdwn('@' + ticket.customer_acct)} publicly ({visibility})."


def _refusal(reason: str, text: str) -> str:
    """Why the note could not be sent, with its text so the agent can rework it in the Reply dialog."""
    quoted = "\n".join("&gt; " + escape_mrkdwn(line) for line in text.splitlines())
    return f"Your note was not sent: {escape_mrkdwn(reason)}.\n{quoted}"[:3000]


async def on_keep(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Keep as note: nothing to change, the note is already stored; just confirm it."""
    await ack()
    ctx: AppContext = context["desk"]
    loaded = await _load(ctx, body)
    if loaded is not None:
        note, ticket = loaded
        await _tell(ctx, str(body["user"]["id"]), note, ticket, "Kept as an internal note.")


# What these listeners read from an event or a click; the intakes refuse a payload without it.
PAYLOADS = PayloadRules(actions=dict.fromkeys((SEND_NOTE, KEEP_NOTE), action_number), events={"message": message_event})


def register(app: AsyncApp) -> None:
    app.event("message")(on_message)
    app.action(SEND_NOTE)(on_send)
    app.action(KEEP_NOTE)(on_keep)
