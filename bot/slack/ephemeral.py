"""Telling one agent something only they see, next to where they acted."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError

from mentiondesk.bot.context import AppContext
from mentiondesk.bot.retry import wait_out_slack_rate_limit

logger = logging.getLogger(__name__)


def _where(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """The channel (and thread) an interaction came from."""
    channel = (body.get("channel") or {}).get("id") or body.get("channel_id")
    message = body.get("message") or {}
    container = body.get("container") or {}
    thread_ts = message.get("thread_ts") or container.get("thread_ts")
    return channel, thread_ts


async def tell(
    ctx: AppContext,
    body: dict[str, Any],
    text: str,
    *,
    channel: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
) -> None:
    """An ephemeral message to the user behind body; falls back to a DM when there is no channel."""
    slack = ctx.slack
    if slack is None:
        return
    user = str((body.get("user") or {}).get("id") or body.get("user_id") or "")
    where, thread_ts = _where(body)
    try:
        await wait_out_slack_rate_limit(
            lambda: slack.chat_postEphemeral(
                channel=channel or where or user, user=user, text=text, blocks=blocks, thread_ts=thread_ts
            ),
            what=f"a message to {user}",
        )
    except SlackApiError as exc:
        logger.warning("could not tell %s %r: %s", user, text, exc.response.get("error"))
