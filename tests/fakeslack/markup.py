"""Markup the product did not mean to send: a customer's ``<!channel>``, mention or link reaching Slack live.

Slack reads ``<...>`` in mrkdwn (a message's ``text``, mrkdwn text objects, attachment text) as a control
sequence: ``<!channel>``, ``<!here>`` and ``<!everyone>`` notify a whole channel, ``<@U…>`` notifies a user,
``<#C…>`` links a channel and ``<url|label>`` makes a link whose label can hide where it goes. rich_text blocks
carry the same as elements (broadcast, user, channel, usergroup, link). Escaped text (``&lt;!channel&gt;``) is
shown as typed and is never a control sequence.

The product writes some of these on purpose (the assignee, the ticket's channel, the Mastodon post, a date).
The fake tells those from a customer's by what its workspace knows: its users, channels and user groups, and
the hosts the test declared as the product's link targets. A special mention is never the product's. Whatever
else turns up is a ``MarkupViolation``: the fake records it, and the ``slack`` fixture fails the test with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Set
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

SPECIAL_MENTIONS = frozenset({"channel", "here", "everyone"})
_TOKEN_RE = re.compile(r"<([^<>]*)>")
# With link_names (or parse=full) Slack turns the bare words into the special mentions too.
_BARE_BROADCAST_RE = re.compile(r"(?<![\w@])@(channel|here|everyone)\b")
# Attachment fields Slack formats as mrkdwn (when listed in mrkdwn_in) and links in regardless.
_ATTACHMENT_TEXT_KEYS = ("text", "pretext", "footer")
_ATTACHMENT_LINK_KEYS = ("title_link", "author_link", "from_url")
_EXCERPT_MAX = 200


@dataclass(frozen=True)
class Known:
    """What the workspace knows, so what the product may mention or link to on purpose."""

    users: Set[str]
    channels: Set[str]
    usergroups: Set[str]
    link_hosts: Set[str]


@dataclass(frozen=True)
class Finding:
    pointer: str  # where in the call's content, as a JSON pointer ("" for the message text)
    fragment: str  # the markup as sent, e.g. "<!channel>"
    reason: str
    text: str  # the field it was found in, clipped


@dataclass(frozen=True)
class MarkupViolation:
    """Markup in something the product sent that it did not add on purpose."""

    method: str  # chat.postMessage, chat.update, chat.postEphemeral, views.open, views.update, response_url, ack
    where: str  # the channel (or view, or envelope) it went to
    pointer: str
    fragment: str
    reason: str
    text: str

    def __str__(self) -> str:
        at = self.pointer or "/text"
        return f"{self.method} to {self.where} at {at}: {self.fragment!r} ({self.reason}) in {self.text!r}"


def _clip(text: str) -> str:
    return text if len(text) <= _EXCERPT_MAX else text[: _EXCERPT_MAX - 1] + "…"


def _link_problem(url: str, known: Known) -> str | None:
    host = urlsplit(url.strip()).hostname
    if host is not None and host in known.link_hosts:
        return None
    return f"link to {host or url!r}, not a host the test declared"


def _token_problem(body: str, known: Known) -> str | None:
    """Why a ``<...>`` control sequence is not the product's, or None when it may be."""
    target = body.partition("|")[0]
    if target.startswith("!"):
        command, _, argument = target[1:].partition("^")
        if command in SPECIAL_MENTIONS:
            return "special mention"
        if command == "subteam":
            return None if argument in known.usergroups else f"mention of user group {argument!r} the workspace lacks"
        if command == "date":
            # <!date^ts^format^optional link|fallback>: only its link can lead anywhere.
            link = argument.split("^")[2:3]
            return _link_problem(link[0], known) if link and link[0] else None
        return f"unknown special command {command!r}"
    if target.startswith("@"):
        return None if target[1:] in known.users else f"mention of {target[1:]!r}, not a user of the workspace"
    if target.startswith("#"):
        return None if target[1:] in known.channels else f"link to {target[1:]!r}, not a channel of the workspace"
    return _link_problem(target, known)


def scan_mrkdwn(text: str, known: Known, *, bare_mentions: bool = False) -> Iterator[tuple[str, str]]:
    """(fragment, reason) for each piece of markup in a mrkdwn string that the product did not add on purpose."""
    for match in _TOKEN_RE.finditer(text):
        problem = _token_problem(match.group(1), known)
        if problem is not None:
            yield match.group(0), problem
    if bare_mentions:
        for match in _BARE_BROADCAST_RE.finditer(text):
            yield match.group(0), "special mention (link_names is on)"


def _rich_text_problem(element: dict[str, Any], known: Known) -> tuple[str, str] | None:
    kind = element.get("type")
    if kind == "broadcast":
        return f"broadcast {element.get('range')!r}", "special mention"
    if kind == "user" and element.get("user_id") not in known.users:
        return f"user {element.get('user_id')!r}", "mention of a user not of the workspace"
    if kind == "channel" and element.get("channel_id") not in known.channels:
        return f"channel {element.get('channel_id')!r}", "link to a channel not of the workspace"
    if kind == "usergroup" and element.get("usergroup_id") not in known.usergroups:
        return f"usergroup {element.get('usergroup_id')!r}", "mention of a user group the workspace lacks"
    return None


def _scan_blocks(value: object, pointer: str, known: Known) -> Iterator[Finding]:
    """Every mrkdwn text object, rich_text element and link button, however deeply nested."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _scan_blocks(item, f"{pointer}/{i}", known)
        return
    if not isinstance(value, dict):
        return
    kind = value.get("type")
    text = value.get("text")
    if kind == "mrkdwn" and isinstance(text, str):
        for fragment, reason in scan_mrkdwn(text, known):
            yield Finding(f"{pointer}/text", fragment, reason, _clip(text))
    rich = _rich_text_problem(value, known)
    if rich is not None:
        yield Finding(pointer, rich[0], rich[1], _clip(str(value)))
    # A rich_text link element and a link button both carry "url"; an image's image_url leads nowhere.
    url = value.get("url")
    if kind in ("link", "button", "date") and isinstance(url, str) and (problem := _link_problem(url, known)):
        yield Finding(f"{pointer}/url", url, problem, _clip(str(value)))
    for key, child in value.items():
        if isinstance(child, dict | list):
            yield from _scan_blocks(child, f"{pointer}/{key}", known)


def _scan_attachments(attachments: object, known: Known) -> Iterator[Finding]:
    if not isinstance(attachments, list):
        return
    for i, attachment in enumerate(attachments):
        if not isinstance(attachment, dict):
            continue
        base = f"/attachments/{i}"
        texts = [(key, attachment.get(key)) for key in _ATTACHMENT_TEXT_KEYS]
        fields = attachment.get("fields")
        fields = fields if isinstance(fields, list) else []
        texts += [(f"fields/{j}/value", f.get("value")) for j, f in enumerate(fields) if isinstance(f, dict)]
        for key, text in texts:
            if isinstance(text, str):
                for fragment, reason in scan_mrkdwn(text, known):
                    yield Finding(f"{base}/{key}", fragment, reason, _clip(text))
        for key in _ATTACHMENT_LINK_KEYS:
            url = attachment.get(key)
            if isinstance(url, str) and (problem := _link_problem(url, known)):
                yield Finding(f"{base}/{key}", url, problem, _clip(url))
        yield from _scan_blocks(attachment.get("blocks"), f"{base}/blocks", known)


def scan_content(content: dict[str, Any], known: Known, *, bare_mentions: bool = False) -> list[Finding]:
    """Findings in a message's (or a response's) text, blocks and attachments, or in a view's blocks."""
    findings: list[Finding] = []
    text = content.get("text")
    if isinstance(text, str):
        # Even beside blocks, the text is what notifications show, and a <!channel> there notifies.
        findings += [Finding("", f, r, _clip(text)) for f, r in scan_mrkdwn(text, known, bare_mentions=bare_mentions)]
    findings += _scan_blocks(content.get("blocks"), "/blocks", known)
    findings += _scan_attachments(content.get("attachments"), known)
    view = content.get("view")
    if isinstance(view, dict):
        findings += _scan_blocks(view.get("blocks"), "/view/blocks", known)
    return findings
