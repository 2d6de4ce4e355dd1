"""Agents' reactions as training labels: an emoji named in slack.label_reactions, added to a ticket's card or a
triage message, records that label for the post, like the buttons do."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp

from mentiondesk.bot.context import AppContext
from mentiondesk.bot.slack.inbound import PayloadRules
from mentiondesk.storage import triage
from mentiondesk.storage.db import transaction
from mentiondesk.storage.labels import record_ticket_label
from mentiondesk.storage.models import LabelSource

logger = logging.getLogger(__name__)


def reaction_event(event: Mapping[str, Any]) -> None:
    """What on_reaction reads of a reaction_added event: who, which emoji, and on which message."""
    for key in ("user", "reaction"):
        if not isinstance(event.get(key), str) or not event[key]:
            raise ValueError(f"reaction_added event without a {key}")
    item = event.get("item")
    if not isinstance(item, dict):
        raise ValueError("reaction_added event without an item")
    if item.get("type") == "message" and not all(isinstance(item.get(k), str) and item[k] for k in ("channel", "ts")):
        raise ValueError("reaction_added event on a message without its channel and ts")


async def on_reaction(event: dict[str, Any], context: dict[str, Any]) -> None:
    """A labelling reaction on a card or triage message: the post that opened the ticket gets that label."""
    ctx: AppContext = context["desk"]
    label = ctx.settings.slack.label_reactions.get(event["reaction"])
    item = event["item"]
    # Reactions on files, other messages, or by the bot itself label nothing.
    if label is None or item.get("type") != "message" or event["user"] == context.get("bot_user_id"):
        return
    user = str(event["user"])
    async with transaction(ctx.sessions) as session:
        ticket_id = await triage.ticket_shown_at(session, channel=str(item["channel"]), ts=str(item["ts"]))
        recorded = ticket_id is not None and await record_ticket_label(
            session, ticket_id=ticket_id, label=label, source=LabelSource.REACTION, agent=user
        )
    if recorded:
        logger.info(
            "ticket #%s labelled %s by %s (:%s:)",
            ticket_id,
            label,
            user,
            event["reaction"],
            extra={"ticket_id": ticket_id},
        )


# What the listener needs of the event; both intakes refuse an event without it before it reaches the listener.
PAYLOADS = PayloadRules(events={"reaction_added": reaction_event})


def register(app: AsyncApp) -> None:
    app.event("reaction_added")(on_reaction)
