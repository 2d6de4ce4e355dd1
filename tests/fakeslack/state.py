"""State that more than one Slack surface of the fake reads or writes.

``FakeSlackState`` is the common base of the surface mixins (``WebApiMixin``,
``SocketModeMixin``, ``PayloadsMixin``) and of ``FakeSlack`` itself. It only
declares the shared attributes, so each mixin type-checks on its own;
``FakeSlack.__init__`` sets them. State that one surface alone uses is declared
in that surface's mixin. The helpers here are the ones every surface needs:
channel lookup, ids and timestamps, and the message store.
"""

from __future__ import annotations

import copy
import itertools
import re
import time
from collections import defaultdict
from dataclasses import dataclass

from .markup import Known, MarkupViolation, scan_content
from .protocol import APP_ID, BOT_ID, ApiError, JSONDict


@dataclass
class FakeChannel:
    """A channel as Slack keeps it: what conversations.* report and what decides whether the bot may post."""

    id: str
    name: str
    is_private: bool = False
    is_archived: bool = False
    bot_is_member: bool = True
    created: int = 1_600_000_000

    def visible_to_bot(self) -> bool:
        # A bot sees every public channel, but a private one only once it has been invited.
        return self.bot_is_member or not self.is_private

    def info(self) -> JSONDict:
        """The conversation object conversations.info and conversations.list return."""
        return {
            "id": self.id,
            "name": self.name,
            "name_normalized": self.name,
            "is_channel": not self.is_private,
            "is_group": self.is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": self.is_private,
            "is_archived": self.is_archived,
            "is_general": False,
            "is_shared": False,
            "is_org_shared": False,
            "is_member": self.bot_is_member,
            "created": self.created,
        }


class FakeSlackState:
    """Shared attributes (set in ``FakeSlack.__init__``) and the helpers all surfaces use."""

    team_id: str
    bot_user_id: str
    # Channel ID -> channel; tests change membership and archiving through FakeSlack's controls.
    _channels: dict[str, FakeChannel]
    # The bot token's OAuth scopes; a method needing one the token lacks answers missing_scope.
    scopes: set[str]
    # User group ID (S...) -> member user IDs, answered by usergroups.users.list; tests set it.
    usergroups: dict[str, list[str]]
    # Users the product may mention on purpose besides the bot and user groups' members: everyone a test has
    # acted as (payload builders add them) and whoever a test adds. Hosts the product may link to.
    known_users: set[str]
    link_hosts: set[str]
    # Markup in what the product sent that it did not add on purpose (see markup.py); the slack fixture fails on it.
    markup_violations: list[MarkupViolation]

    # Message store: top-level posts in order, every message by (channel, ts),
    # and thread replies by (channel, parent ts).
    _top: list[JSONDict]
    _by_key: dict[tuple[str, str], JSONDict]
    _replies: defaultdict[tuple[str, str], list[JSONDict]]
    # Ephemeral messages posted (chat.postEphemeral), and chat.update's edits with what each replaced, in order;
    # a click refers back to what a message shows, or showed before an edit.
    ephemerals: list[JSONDict]
    updates: list[JSONDict]
    # Views opened or updated through views.* (by view ID), which interaction payloads refer back to.
    _open_views: dict[str, JSONDict]
    _last_ts_us: int
    _ids: itertools.count[int]
    # trigger_id -> when it was issued (time.monotonic()); payloads issue them, views.open consumes them.
    _triggers: dict[str, float]

    _down: bool
    _port: int | None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return self._port

    def _channel_id(self, value: object, *, allow_name: bool) -> str:
        """Resolve a channel ID (or, where Slack allows it, ``#name``/``name``)."""
        if isinstance(value, str) and value in self._channels:
            return value
        if allow_name and isinstance(value, str):
            name = value.removeprefix("#")
            for channel in self._channels.values():
                if channel.name == name:
                    return channel.id
        raise ApiError("channel_not_found")

    def _require_scope(self, *needed: str) -> None:
        """Slack answers missing_scope (naming the first scope missing) before looking at the arguments."""
        for scope in needed:
            if scope not in self.scopes:
                raise ApiError("missing_scope", needed=scope, provided=",".join(sorted(self.scopes)))

    def _read_scope(self, channel: FakeChannel, kind: str) -> str:
        """The scope reading ``kind`` ("read" or "history") of this channel needs: channels:* or groups:*."""
        return f"{'groups' if channel.is_private else 'channels'}:{kind}"

    def _react(self, user_id: str, channel_id: str, ts: str, name: object) -> JSONDict:
        """Add user_id's reaction to a stored message, as reactions.add does; returns the message."""
        record = self._by_key.get((channel_id, ts))
        if record is None:
            raise ApiError("message_not_found")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_+'-]{1,100}", name):
            raise ApiError("invalid_name")
        reactions: list[JSONDict] = record.setdefault("reactions", [])
        found = next((r for r in reactions if r["name"] == name), None)
        if found is None:
            found = {"name": name, "users": [], "count": 0}
            reactions.append(found)
        if user_id in found["users"]:
            raise ApiError("already_reacted")
        found["users"].append(user_id)
        found["count"] += 1
        return record

    def _visible_channel(self, value: object, *, allow_name: bool, scope_kind: str | None = None) -> FakeChannel:
        """The channel, as far as the bot may see it: a private channel it is not in does not exist for it."""
        channel = self._channels[self._channel_id(value, allow_name=allow_name)]
        if not channel.visible_to_bot():
            raise ApiError("channel_not_found")
        if scope_kind is not None:
            self._require_scope(self._read_scope(channel, scope_kind))
        return channel

    def _known(self) -> Known:
        members = {user for users in self.usergroups.values() for user in users}
        return Known(
            users={self.bot_user_id, *self.known_users, *members},
            channels=set(self._channels),
            usergroups=set(self.usergroups),
            link_hosts=set(self.link_hosts),
        )

    def _check_markup(self, method: str, where: str, content: JSONDict, *, bare_mentions: bool = False) -> None:
        """Record markup in what the product had Slack show that it did not add on purpose; Slack shows it all."""
        for finding in scan_content(content, self._known(), bare_mentions=bare_mentions):
            self.markup_violations.append(
                MarkupViolation(method, where, finding.pointer, finding.fragment, finding.reason, finding.text)
            )

    def _next_ts(self) -> str:
        # Slack ts values are unique per channel and sort by time; keep them strictly increasing.
        now_us = int(time.time() * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 100)
        seconds, micros = divmod(self._last_ts_us, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}0{next(self._ids):08X}"

    # ------------------------------------------------------------------ message store

    def _store(self, channel_id: str, fields: JSONDict, *, ts: str | None = None) -> JSONDict:
        record: JSONDict = {
            "type": "message",
            "channel": channel_id,
            "ts": ts or self._next_ts(),
            "user": fields.get("user", self.bot_user_id),
            "text": fields.get("text") or "",
            "blocks": fields.get("blocks"),
            "attachments": fields.get("attachments"),
            "thread_ts": fields.get("thread_ts"),
            "metadata": fields.get("metadata"),
            "team": self.team_id,
        }
        if record["user"] == self.bot_user_id:
            record.update(bot_id=BOT_ID, app_id=APP_ID)
        for key in ("unfurl_links", "unfurl_media", "edited"):
            if key in fields:
                record[key] = fields[key]
        self._by_key[(channel_id, record["ts"])] = record
        if record["thread_ts"] is None:
            self._top.append(record)
        else:
            self._replies[(channel_id, record["thread_ts"])].append(record)
        return record

    def _render(self, record: JSONDict, *, with_metadata: bool) -> JSONDict:
        """A stored message as Slack returns it (no channel; thread fields derived)."""
        keys = ("type", "user", "bot_id", "app_id", "text", "ts", "team", "blocks", "attachments", "edited")
        msg = {k: record[k] for k in keys if record.get(k) is not None}
        channel_id, ts = record["channel"], record["ts"]
        if record["thread_ts"] is not None:
            parent = self._by_key[(channel_id, record["thread_ts"])]
            msg.update(thread_ts=record["thread_ts"], parent_user_id=parent["user"])
        elif replies := self._replies.get((channel_id, ts)):
            users = sorted({r["user"] for r in replies})
            msg.update(
                thread_ts=ts,
                reply_count=len(replies),
                reply_users=users,
                reply_users_count=len(users),
                latest_reply=replies[-1]["ts"],
            )
        if with_metadata and record.get("metadata"):
            msg["metadata"] = record["metadata"]
        return copy.deepcopy(msg)
