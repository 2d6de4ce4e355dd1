"""A triage item's Slack message: a borderline post, why it is borderline, and the agent's two choices.

Rendered from the database each time it is sent or refreshed, like a card, so an agent's decision (or a follow-up
the customer posted meanwhile) shows whenever the message is next drawn. Everything the customer controls goes
through the card's escaping (bot/slack/cards.py).
"""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.mastodon.text import clean_text
from mentiondesk.bot.slack.cards import escape_mrkdwn, link_if_safe
from mentiondesk.storage import triage
from mentiondesk.storage.models import Ticket, TicketState
from mentiondesk.storage.retention import ERASED
from mentiondesk.storage.tickets import ticket_mentions

# action_ids of the triage message's buttons; handlers/triage.py registers one listener per id.
OPEN_TICKET, DISMISS = "triage_open", "triage_dismiss"

_SECTION_MAX = 3000
_CONTEXT_MAX = 2000
_HEADER_MAX = 150
_TEXT_MAX = 2500  # of the post's text, before escaping: room is left for the quote marks
_NAME_MAX = 100
_REASON_MAX = 200
_SLACK_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,30}$")


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(text: str) -> str:
    """The post as an escaped mrkdwn quote that fits a section whatever it holds."""
    text = text.strip()
    if not text:
        return "_(no text)_"
    cut = len(text) > _TEXT_MAX
    while True:
        shown = text[:_TEXT_MAX] if cut else text
        quoted = "\n".join("&gt; " + escape_mrkdwn(line) for line in shown.split("\n"))
        if len(quoted) <= _SECTION_MAX - 20:
            return quoted + ("\n_… (truncated)_" if cut else "")
        # Escaping grows the text (& is five characters): halve until it fits.
        text, cut = text[: max(1, len(shown) // 2)], True


def _button(action_id: str, label: str, ticket_id: int, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "value": str(ticket_id),
        "style": style,
        "text": {"type": "plain_text", "text": label},
    }


def _who(user: str) -> str:
    return f"<@{user}>" if _SLACK_USER_RE.match(user) else escape_mrkdwn(_one_line(user, _NAME_MAX))


async def render_triage(session: AsyncSession, ticket: Ticket) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of the ticket's triage message as it stands now."""
    assert ticket.id is not None
    mentions = await ticket_mentions(session, ticket_id=ticket.id)
    root = next((m for m in mentions if m.status_id == ticket.root_status_id), mentions[0] if mentions else None)
    text = root.text if root is not None and root.deleted_at is None else ""
    acct = _one_line(ticket.customer_acct.lstrip("@"), 200)
    name = _one_line(ticket.customer_display_name, _NAME_MAX)
    label = f"{name} (@{acct})" if name else f"@{acct}"
    author = link_if_safe(ticket.customer_url, label) or escape_mrkdwn(label)
    prefix = f"triage-{ticket.id}"
    meta = [
        link_if_safe(root.status_url, "View post") if root is not None else "",
        f"complaint score {ticket.score:.2f}",
        f"Language: {escape_mrkdwn(_one_line(root.language, 20))}" if root is not None and root.language else "",
        f"Posted {ticket.posted_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
    ]
    followups = len(mentions) - 1
    if followups > 0:
        meta.append(f"{followups} more post{'s' if followups > 1 else ''} from the customer in the thread")
    reason = escape_mrkdwn(_one_line(ticket.triage_reason or "borderline", _REASON_MAX))
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "block_id": f"{prefix}-header",
            "text": {"type": "plain_text", "text": clean_text(f"Triage: is this a complaint? (#{ticket.id})")},
        },
        {
            "type": "section",
            "block_id": f"{prefix}-author",
            "text": {"type": "mrkdwn", "text": f"*{author}* wrote:"[:_SECTION_MAX]},
        },
        {"type": "section", "block_id": f"{prefix}-text", "text": {"type": "mrkdwn", "text": _quote(text)}},
        {
            "type": "context",
            "block_id": f"{prefix}-meta",
            "elements": [{"type": "mrkdwn", "text": p[:_CONTEXT_MAX]} for p in meta if p],
        },
        {
            "type": "context",
            "block_id": f"{prefix}-reason",
            "elements": [{"type": "mrkdwn", "text": f"Why triage: {reason}"[:_CONTEXT_MAX]}],
        },
    ]
    outcome = await _outcome(session, ticket)
    if outcome is None:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"{prefix}-actions",
                "elements": [
                    _button(OPEN_TICKET, "Open ticket", ticket.id, "primary"),
                    _button(DISMISS, "Not a complaint", ticket.id, "danger"),
                ],
            }
        )
    else:
        blocks.append({"type": "section", "block_id": f"{prefix}-outcome", "text": {"type": "mrkdwn", "text": outcome}})
    fallback = f"Triage #{ticket.id} from {escape_mrkdwn('@' + acct)}: {escape_mrkdwn(_one_line(text, 150))}"
    return fallback, blocks


async def _outcome(session: AsyncSession, ticket: Ticket) -> str | None:
    """What became of the item, or None while an agent still has to decide."""
    if ticket.customer_acct == ERASED and ticket.state == TicketState.TRIAGE:
        return "The post was erased under the data retention policy: nothing is left to decide."
    if ticket.state == TicketState.TRIAGE:
        return None
    assert ticket.id is not None
    decided = await triage.decision(session, ticket_id=ticket.id)
    if decided is None:
        return f"No longer in triage: the ticket is {ticket.state}."
    if decided.action == triage.OPENED and decided.actor == triage.AUTOMATIC:
        return f":white_check_mark: Opened as ticket #{ticket.id}: a later post from the customer is a complaint"
    if decided.action == triage.OPENED:
        return f":white_check_mark: Opened as ticket #{ticket.id} by {_who(decided.actor)}"
    return f":heavy_multiplication_x: Not a complaint, said {_who(decided.actor)}"
