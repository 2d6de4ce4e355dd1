"""What happens on each event. Each module owns one kind of event and registers its own listeners."""

from __future__ import annotations

from collections.abc import Callable

from slack_bolt.async_app import AsyncApp

from mentiondesk.bot.dispatch import Router
from mentiondesk.bot.slack.inbound import PayloadRules
from mentiondesk.handlers import (
    mention,
    post_changes,
    slack_actions,
    slack_reactions,
    slack_reply,
    slack_thread,
    slash_command,
    triage,
)


def build_router() -> Router:
    """Listeners for events from Mastodon."""
    router = Router()
    router.include(mention.router)
    router.include(post_changes.router)
    return router


def slack_listeners() -> list[Callable[[AsyncApp], None]]:
    """Registration functions for everything that arrives from Slack."""
    return [
        slack_actions.register,
        slack_reply.register,
        slack_thread.register,
        slash_command.register,
        triage.register,
        slack_reactions.register,
    ]


def slack_payload_rules() -> PayloadRules:
    """What those listeners need of the payloads they get; both Slack intakes refuse payloads without it."""
    return (
        slack_actions.PAYLOADS
        | slack_reply.PAYLOADS
        | slack_thread.PAYLOADS
        | triage.PAYLOADS
        | slack_reactions.PAYLOADS
    )
