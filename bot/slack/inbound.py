"""What the Slack listeners may take for granted in a payload, checked once before bolt sees it.

Both intakes run every payload through check_payload: HTTP mode answers 400 to one that fails, Socket Mode
acks it and drops it, and both log what was wrong. Past this check a listener can rely on the payload being
a JSON object of a kind Slack sends, on user.id in every interaction, and on whatever the listener for an
action, view or event declared it needs (PayloadRules), so a malformed or hostile payload never reaches a
listener to fail there: in HTTP mode that would be a 500 or a three-second wait for an ack that never comes,
in Socket Mode an envelope Slack keeps waiting on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from slack_bolt.request.internals import parse_body

__all__ = [
    "MalformedPayload",
    "PayloadRules",
    "action_number",
    "check_envelope",
    "check_payload",
    "parse_http_body",
    "row_number",
    "shown",
]

# Row ids are 32-bit integers on Postgres: a larger "ticket number" cannot name a ticket, and asking the
# database for one would fail as a data error rather than find nothing.
MAX_ROW_NUMBER = 2**31 - 1
_ROW_NUMBER = re.compile(r"[1-9][0-9]{0,9}")  # ASCII digits only: int() would also take " 7", "+7" or "٧"

_INTERACTIONS = frozenset(
    {
        "block_actions",
        "block_suggestion",
        "view_submission",
        "view_closed",
        "shortcut",
        "message_action",
        "interactive_message",
        "dialog_submission",
        "dialog_cancellation",
        "dialog_suggestion",
        "workflow_step_edit",
    }
)
_NOTICES = frozenset({"url_verification", "app_rate_limited"})  # answered by bolt itself, no listener of ours
_ENVELOPES = frozenset({"events_api", "interactive", "slash_commands"})
_SHOWN_MAX = 40

PartCheck = Callable[[Mapping[str, Any]], object]
"""Parses the part of a payload a listener relies on; raises ValueError (or KeyError, TypeError) if it cannot."""


class MalformedPayload(ValueError):
    """A payload our listeners could not act on; the message says what was wrong, for the log."""


@dataclass(frozen=True)
class PayloadRules:
    """What each listener needs of its part of a payload, declared next to the listener.

    actions: by action_id, a check of the action (a button's value, a select's choice);
    views: by callback_id, a check of the view (its private_metadata), for submissions and for actions
    inside the modal alike; events: by event type, a check of the event.
    """

    actions: Mapping[str, PartCheck] = field(default_factory=dict)
    views: Mapping[str, PartCheck] = field(default_factory=dict)
    events: Mapping[str, PartCheck] = field(default_factory=dict)

    def __or__(self, other: PayloadRules) -> PayloadRules:
        return PayloadRules(
            actions=_merged(self.actions, other.actions, "action"),
            views=_merged(self.views, other.views, "view"),
            events=_merged(self.events, other.events, "event"),
        )


def _merged(a: Mapping[str, PartCheck], b: Mapping[str, PartCheck], what: str) -> dict[str, PartCheck]:
    both = sorted(a.keys() & b.keys())
    if both:
        raise ValueError(f"two listeners declare the {what} {both[0]!r}; each id belongs to one listener")
    return {**a, **b}


def shown(value: object) -> str:
    """A value from a payload as it may appear in a log line: quoted, one line, short."""
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 1] + "…"


def row_number(value: object) -> int:
    """A ticket, reply or note number as our controls carry it (the decimal digits of a row id)."""
    if not isinstance(value, str) or not _ROW_NUMBER.fullmatch(value) or int(value) > MAX_ROW_NUMBER:
        raise ValueError(f"value {shown(value)} is not a number we issue")
    return int(value)


def action_number(action: Mapping[str, Any]) -> int:
    """The number a button carries as its value."""
    return row_number(action.get("value"))


def parse_http_body(text: str, content_type: str | None) -> object:
    """The payload of an HTTP request body, parsed by bolt's own rules so the check sees what bolt will."""
    try:
        return parse_body(text, content_type)
    except ValueError as exc:
        raise MalformedPayload(f"payload is not valid JSON ({exc})") from None


def check_envelope(message: Mapping[str, Any], rules: PayloadRules) -> None:
    """A Socket Mode envelope: an id to ack, a type Slack sends, and a payload that passes check_payload."""
    if not _text(message.get("envelope_id")):
        raise MalformedPayload("envelope without an envelope_id")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in _ENVELOPES:
        raise MalformedPayload(f"unknown envelope type {shown(kind)}")
    check_payload(message.get("payload"), rules)


def check_payload(payload: object, rules: PayloadRules) -> None:
    """Raise MalformedPayload unless every listener the payload can reach will find what it relies on."""
    if not isinstance(payload, dict):
        raise MalformedPayload(f"payload is {type(payload).__name__}, not a JSON object")
    kind = payload.get("type")
    if kind is None:
        _check_untyped(payload)
    elif not isinstance(kind, str):
        raise MalformedPayload(f"payload type {shown(kind)} is not a string")
    elif kind in _INTERACTIONS:
        _check_interaction(payload, rules)
    elif kind == "event_callback":
        _check_event(payload, rules)
    elif kind not in _NOTICES:
        raise MalformedPayload(f"unknown payload type {shown(kind)}")


def _text(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


def _check_untyped(payload: Mapping[str, Any]) -> None:
    # Slash commands come as a form with no type; so does the ssl_check Slack sends to a command's URL.
    if "ssl_check" in payload:
        return
    if "command" not in payload:
        raise MalformedPayload("payload has neither a type nor a command")
    if not (_text(payload.get("command")) and str(payload["command"]).startswith("/")):
        raise MalformedPayload(f"slash command name {shown(payload.get('command'))} does not start with /")
    if not _text(payload.get("user_id")):
        raise MalformedPayload("slash command without a user_id")


def _check_interaction(payload: Mapping[str, Any], rules: PayloadRules) -> None:
    user = payload.get("user")
    if not isinstance(user, dict) or not _text(user.get("id")):
        raise MalformedPayload(f"{payload['type']} without a user.id")
    view = payload.get("view")
    if view is not None or payload["type"] in ("view_submission", "view_closed"):
        _check_view(view, rules)
    if payload["type"] == "block_actions":
        _check_actions(payload, rules)


def _check_view(view: object, rules: PayloadRules) -> None:
    if not isinstance(view, dict):
        raise MalformedPayload("view is not a JSON object")
    callback_id = view.get("callback_id")
    if isinstance(callback_id, str) and callback_id in rules.views:
        _apply(rules.views[callback_id], view, f"view {callback_id}")


def _check_actions(payload: Mapping[str, Any], rules: PayloadRules) -> None:
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions:
        raise MalformedPayload("block_actions without actions")
    if not _text(payload.get("trigger_id")):
        raise MalformedPayload("block_actions without a trigger_id")
    for action in actions:
        action_id = action.get("action_id") if isinstance(action, dict) else None
        if not _text(action_id):
            raise MalformedPayload("an action without an action_id")
        if action_id in rules.actions:
            _apply(rules.actions[action_id], action, f"action {action_id}")


def _check_event(payload: Mapping[str, Any], rules: PayloadRules) -> None:
    event = payload.get("event")
    if not isinstance(event, dict) or not _text(event.get("type")):
        raise MalformedPayload("event_callback without an event and its type")
    if event["type"] in rules.events:
        _apply(rules.events[event["type"]], event, f"{event['type']} event")


def _apply(check: PartCheck, part: Mapping[str, Any], where: str) -> None:
    try:
        check(part)
    except KeyError as exc:
        raise MalformedPayload(f"{where}: no {exc}") from None
    except (ValueError, TypeError) as exc:
        raise MalformedPayload(f"{where}: {exc}") from None
