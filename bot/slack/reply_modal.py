"""The Reply modal and the approvers' Edit modal: what they show, and reading back what the agent typed.

Pure functions over Block Kit dicts; handlers/slack_reply.py opens, updates and answers them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mentiondesk.bot.mastodon.client import StatusLimits
from mentiondesk.bot.mastodon.compose import allowed_visibilities, mastodon_length, with_mention
from mentiondesk.bot.mastodon.text import clean_text
from mentiondesk.bot.slack.cards import escape_mrkdwn, link_if_safe
from mentiondesk.bot.slack.inbound import MAX_ROW_NUMBER, shown

REPLY_CALLBACK, EDIT_CALLBACK = "reply_modal", "reply_edit_modal"
POST_BLOCK, HINT_BLOCK = "reply_customer_post", "reply_length_hint"
TEXT_BLOCK, TEXT_ACTION = "reply_text", "reply_text_input"
VISIBILITY_BLOCK, VISIBILITY_ACTION = "reply_visibility", "reply_visibility_select"

VISIBILITY_LABELS = {
    "public": "Public",
    "unlisted": "Unlisted (public, kept off timelines)",
    "private": "Followers only",
    "direct": "Direct (only the customer)",
}
_QUOTE_MAX = 2500  # leaves room for the header line inside a section's 3000 characters
# The parts of a view views.update accepts back; the rest of a payload's view (id, hash, state...) is Slack's.
_VIEW_KEYS = (
    "type",
    "title",
    "submit",
    "close",
    "blocks",
    "private_metadata",
    "callback_id",
    "clear_on_close",
    "notify_on_close",
    "external_id",
)


@dataclass(frozen=True)
class ReplyTarget:
    """What a modal's events need, carried in private_metadata: Slack hands it back with every event.

    It says what the modal is about and where to answer the agent; it grants nothing: every submission
    checks the user's permissions again.
    """

    ticket_id: int
    acct: str  # the customer, whose @mention the reply starts with
    channel: str | None = None  # where the agent clicked, so errors are told there
    thread_ts: str | None = None
    reply_id: int | None = None  # the reply an approver is editing

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: object) -> ReplyTarget:
        """Read back what to_json wrote; ValueError for anything else, since it comes back through Slack."""
        try:
            data = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ValueError("private_metadata is not the JSON object we wrote")
        reply_id = data.get("reply_id")
        return cls(
            ticket_id=_row_id(data.get("ticket_id"), "ticket_id"),
            acct=_text(data.get("acct"), "acct"),
            channel=None if data.get("channel") is None else _text(data["channel"], "channel"),
            thread_ts=None if data.get("thread_ts") is None else _text(data["thread_ts"], "thread_ts"),
            reply_id=None if reply_id is None else _row_id(reply_id, "reply_id"),
        )


def _row_id(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ROW_NUMBER:
        raise ValueError(f"private_metadata {name} {shown(value)} is not a number we issue")
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"private_metadata {name} {shown(value)} is not a string")
    return value


def target_of(view: Mapping[str, Any]) -> ReplyTarget:
    """What the modals' listeners read from the view Slack sends back with each event."""
    if not isinstance(view.get("id"), str) or not isinstance(view.get("hash"), str):
        raise ValueError("the view has no id and hash")
    return ReplyTarget.from_json(view.get("private_metadata"))


def counted_length(text: str, acct: str, limits: StatusLimits) -> int:
    """The reply's length as Mastodon will count it, with the @mention it will start with."""
    return mastodon_length(with_mention(text, acct), url_chars=limits.characters_reserved_per_url)


def length_hint(text: str, acct: str, limits: StatusLimits) -> str:
    left = limits.max_characters - counted_length(text, acct, limits)
    if left < 0:
        return f"{-left} characters over this instance's limit of {limits.max_characters}: shorten it to post."
    return (
        f"{left} of {limits.max_characters} characters left (the @{acct} mention counts, "
        f"a link counts as {limits.characters_reserved_per_url})"
    )


def length_error(text: str, acct: str, limits: StatusLimits) -> str | None:
    """Why the text cannot be posted as it stands, or None."""
    if with_mention(text, acct).casefold() == f"@{acct}".casefold():
        return "Write the reply first."
    over = counted_length(text, acct, limits) - limits.max_characters
    if over > 0:
        return f"{over} characters too long: this instance allows {limits.max_characters}, counting the @mention."
    return None


def _plain(text: str) -> dict[str, str]:
    # Slack shows plain_text as it is: only bidi and invisible controls need to go (the acct is the customer's).
    return {"type": "plain_text", "text": clean_text(text)}


def _quote(text: str) -> str:
    # Customer text is untrusted: escaped, it cannot ping anyone or forge a link in our modal.
    clamped = text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 1] + "…"
    return "\n".join("&gt; " + line for line in escape_mrkdwn(clamped).splitlines() or [""])


def _text_input(initial: str, target: ReplyTarget, limits: StatusLimits) -> list[dict[str, Any]]:
    """The text box and, under it, the live count (refreshed on each edit through dispatch_action)."""
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": TEXT_ACTION,
        "multiline": True,
        "placeholder": _plain(f"Your public reply to @{target.acct}"[:150]),
        "dispatch_action_config": {"trigger_actions_on": ["on_character_entered"]},
    }
    if initial:
        element["initial_value"] = initial
    return [
        # dispatch_action on the input block makes Slack send block_actions while the agent types.
        {
            "type": "input",
            "block_id": TEXT_BLOCK,
            "dispatch_action": True,
            "label": _plain("Reply"),
            "element": element,
        },
        {"type": "context", "block_id": HINT_BLOCK, "elements": [_plain(length_hint(initial, target.acct, limits))]},
    ]


def _visibility_input(customer_visibility: str) -> dict[str, Any]:
    """Only visibilities no wider than the customer's post; theirs is the default."""
    options = [
        {"text": _plain(VISIBILITY_LABELS.get(v, v)), "value": v} for v in allowed_visibilities(customer_visibility)
    ]
    initial = next((o for o in options if o["value"] == customer_visibility), options[-1])
    return {
        "type": "input",
        "block_id": VISIBILITY_BLOCK,
        "label": _plain("Visibility"),
        "element": {
            "type": "static_select",
            "action_id": VISIBILITY_ACTION,
            "options": options,
            "initial_option": initial,
        },
    }


def reply_view(
    target: ReplyTarget, *, post_text: str, post_url: str, post_visibility: str, limits: StatusLimits
) -> dict[str, Any]:
    """The Reply modal: the customer's latest post, the text box with its count, the visibility choice."""
    link = link_if_safe(post_url, "view post")
    where = f" ({link})" if link else ""
    header = f"*@{escape_mrkdwn(target.acct)}* wrote ({escape_mrkdwn(post_visibility)}){where}:"
    return {
        "type": "modal",
        "callback_id": REPLY_CALLBACK,
        "private_metadata": target.to_json(),
        "title": _plain("Public reply"),
        "submit": _plain("Post reply"),
        "close": _plain("Cancel"),
        "blocks": [
            {
                "type": "section",
                "block_id": POST_BLOCK,
                "text": {"type": "mrkdwn", "text": f"{header}\n{_quote(post_text)}"},
            },
            *_text_input("", target, limits),
            _visibility_input(post_visibility),
        ],
    }


def edit_view(target: ReplyTarget, *, author: str, text: str, visibility: str, limits: StatusLimits) -> dict[str, Any]:
    """The approver's Edit modal: the reply's text to change; posting it approves it."""
    intro = (
        f"Editing <@{author}>'s {visibility} reply on ticket #{target.ticket_id}. "
        "Posting it publishes your version, approved by you."
    )
    return {
        "type": "modal",
        "callback_id": EDIT_CALLBACK,
        "private_metadata": target.to_json(),
        "title": _plain("Edit reply"),
        "submit": _plain("Approve & post"),
        "close": _plain("Cancel"),
        "blocks": [
            {"type": "section", "block_id": POST_BLOCK, "text": {"type": "mrkdwn", "text": intro}},
            *_text_input(text, target, limits),
        ],
    }


def with_hint(view: dict[str, Any], hint: str) -> dict[str, Any]:
    """The view from an event payload, ready for views.update, with the count replaced."""
    updated = {k: view[k] for k in _VIEW_KEYS if view.get(k) not in (None, "")}
    updated["blocks"] = [
        {"type": "context", "block_id": HINT_BLOCK, "elements": [_plain(hint)]}
        if block.get("block_id") == HINT_BLOCK
        else block
        for block in view.get("blocks") or []
    ]
    return updated


def submitted_text(view: dict[str, Any]) -> str:
    value = ((view.get("state") or {}).get("values") or {}).get(TEXT_BLOCK, {}).get(TEXT_ACTION, {}).get("value")
    return str(value or "")


def submitted_visibility(view: dict[str, Any]) -> str | None:
    values = ((view.get("state") or {}).get("values") or {}).get(VISIBILITY_BLOCK, {})
    selected = (values.get(VISIBILITY_ACTION) or {}).get("selected_option") or {}
    value = selected.get("value")
    return str(value) if value else None
