"""Slack's Web API methods, as ``WebApiMixin`` handlers of ``FakeSlack``'s ``/api/{method}`` dispatch.

auth.test, chat.*, conversations.*, views.*, usergroups.* and the files.* upload methods, with the checks
Slack applies to each (scopes, channels and the bot's membership, Block Kit
limits, per-channel post rate, chat.update's Tier 3 rate, trigger_id expiry, view
hashes) and their helpers: message validation, paging and cursors, ts handling.
What a method shows people is also checked for markup the product did not add on
purpose (markup.py). ``_web_api_methods`` is this module's part of the
method table; a new family of methods adds its handlers there (or, once this
module grows large, in a mixin of its own that contributes a table the same way).
apps.connections.open belongs to Socket Mode and lives in socket_mode.py.
"""

from __future__ import annotations

import base64
import copy
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from .blockkit import MESSAGE_TEXT_MAX, validate_blocks, validate_modal
from .protocol import (
    APP_ID,
    BOT_ID,
    ApiError,
    Handler,
    JSONDict,
    _decode_json,
    _invalid_arguments,
    _ratelimited,
    _truthy,
)
from .state import FakeChannel, FakeSlackState

# Slack allows ~1 message per second per channel; leave slack for timer jitter.
POST_INTERVAL_S = 0.9
# chat.update is a Tier 3 method: "50+ per minute" per workspace, for all channels together. The fake allows
# exactly 50 in any sliding minute (FakeSlack.update_limit / update_window_s, which a test may shrink).
UPDATE_LIMIT = 50
UPDATE_WINDOW_S = 60.0
# Slack's trigger_ids expire three seconds after the user's interaction.
TRIGGER_TTL_S = 3.0
# conversations.list: the scope each conversation type needs, and the largest page Slack serves.
LIST_TYPE_SCOPES = {
    "public_channel": "channels:read",
    "private_channel": "groups:read",
    "mpim": "mpim:read",
    "im": "im:read",
}
LIST_LIMIT_MAX = 1000


# What Slack takes in one upload (files.getUploadURLExternal's length): 1 GB.
UPLOAD_MAX_BYTES = 1_000_000_000


@dataclass
class FakeUpload:
    """One file upload: declared by files.getUploadURLExternal, its bytes POSTed to the upload URL, then shared
    (or kept private) by files.completeUploadExternal."""

    file_id: str
    filename: str
    length: int
    alt_txt: str | None
    data: bytes | None = None  # what reached the upload URL
    completed: bool = False
    title: str | None = None
    channel: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None


def _ts_value(ts: object, error: str) -> Decimal:
    try:
        return Decimal(str(ts))
    except InvalidOperation:
        raise ApiError(error) from None


def _int_param(value: object, *, default: int, low: int, high: int) -> int:
    if value in (None, "", 0, "0"):
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise _invalid_arguments(f"invalid integer value {value!r}") from None
    return max(low, min(high, number))


def _encode_cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: object) -> int:
    if not cursor:
        return 0
    try:
        kind, _, number = base64.b64decode(str(cursor)).decode().partition(":")
        if kind == "offset":
            return int(number)
    except ValueError:
        pass
    raise ApiError("invalid_cursor")


def _list_limit(value: object) -> int:
    if value in (None, ""):
        return 100
    try:
        limit = int(str(value))
    except ValueError:
        raise ApiError("invalid_limit") from None
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ApiError("invalid_limit")
    return limit


def _listed(channel: FakeChannel, types: list[str], exclude_archived: bool) -> bool:
    if exclude_archived and channel.is_archived:
        return False
    if channel.is_private:
        # A bot only ever sees the private channels it was invited to.
        return "private_channel" in types and channel.bot_is_member
    return "public_channel" in types


class WebApiMixin(FakeSlackState):
    """The Web API methods (other than Socket Mode's apps.connections.open) and their checks."""

    enforce_rate_limit: bool
    # Inspection state (public, read by tests).
    views: list[JSONDict]
    # chat.update's Tier 3 limit: at most update_limit calls in any update_window_s; when the accepted ones were.
    update_limit: int
    update_window_s: float
    _update_times: deque[float]
    _last_post_at: dict[str, float]
    _used_triggers: set[str]
    # Uploads begun with files.getUploadURLExternal, by file ID (see FakeUpload); completed ones are also in
    # ``uploads``, in order (public, read by tests).
    _pending_uploads: dict[str, FakeUpload]
    uploads: list[FakeUpload]

    def _web_api_methods(self) -> dict[str, Handler]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "conversations.info": self._conversations_info,
            "conversations.list": self._conversations_list,
            "reactions.add": self._reactions_add,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "usergroups.users.list": self._usergroups_users_list,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
        }

    # ------------------------------------------------------------------ message checks

    def _content(self, p: JSONDict) -> JSONDict:
        """Validate text/blocks/attachments of a message; returns only the fields sent."""
        content: JSONDict = {}
        text = p.get("text")
        if text is not None:
            if not isinstance(text, str):
                raise _invalid_arguments("text must be a string")
            if len(text) > MESSAGE_TEXT_MAX:
                raise ApiError("msg_too_long")
            content["text"] = text
        if p.get("blocks") is not None:
            blocks = _decode_json(p["blocks"], "invalid_blocks_format")
            if not isinstance(blocks, list):
                raise ApiError("invalid_blocks_format")
            errors = validate_blocks(blocks)
            if errors:
                raise ApiError(
                    "invalid_blocks",
                    errors=errors,
                    response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
                )
            content["blocks"] = blocks
        if p.get("attachments") is not None:
            content["attachments"] = _decode_json(p["attachments"], "invalid_attachments")
        if not (content.get("text") or content.get("blocks") or content.get("attachments")):
            raise ApiError("no_text")
        return content

    def _metadata(self, p: JSONDict) -> JSONDict | None:
        raw = _decode_json(p.get("metadata"), "invalid_metadata_format")
        if raw is None:
            return None
        if not (
            isinstance(raw, dict)
            and isinstance(raw.get("event_type"), str)
            and raw["event_type"]
            and isinstance(raw.get("event_payload"), dict)
        ):
            raise ApiError("invalid_metadata_schema")
        return {"event_type": raw["event_type"], "event_payload": raw["event_payload"]}

    def _thread_parent(self, channel_id: str, thread_ts: object) -> str | None:
        if thread_ts in (None, ""):
            return None
        # Real Slack silently posts to the channel for an unknown thread_ts; the
        # fake refuses, so a wrong ts shows up in tests instead of as a lost thread.
        parent = self._by_key.get((channel_id, str(thread_ts)))
        if parent is None or parent["thread_ts"] is not None:
            raise ApiError("thread_not_found")
        return str(thread_ts)

    def _check_post_rate(self, channel_id: str) -> None:
        if not self.enforce_rate_limit:
            return
        last = self._last_post_at.get(channel_id)
        if last is not None and time.monotonic() - last < POST_INTERVAL_S:
            raise _ratelimited(1)

    def _check_update_rate(self) -> None:
        if not self.enforce_rate_limit:
            return
        now = time.monotonic()
        while self._update_times and now - self._update_times[0] >= self.update_window_s:
            self._update_times.popleft()
        if len(self._update_times) >= self.update_limit:
            # Retry-After: until the oldest call in the window leaves it.
            raise _ratelimited(max(1, math.ceil(self._update_times[0] + self.update_window_s - now)))
        self._update_times.append(now)

    def _check_sent_markup(self, method: str, where: str, p: JSONDict, content: JSONDict) -> None:
        bare = _truthy(p.get("link_names")) or p.get("parse") == "full"
        self._check_markup(method, where, content, bare_mentions=bare)

    # ------------------------------------------------------------------ auth.test, chat.*

    def _auth_test(self, p: JSONDict) -> JSONDict:
        return {
            "url": "https://fake-team.slack.com/",
            "team": "Fake Team",
            "user": "mentiondesk",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _postable_channel(self, value: object, *, allow_name: bool) -> str:
        """A channel the bot may post in, or Slack's reason why not."""
        self._require_scope("chat:write")
        channel = self._visible_channel(value, allow_name=allow_name)
        if channel.is_archived:
            raise ApiError("is_archived")
        # chat:write.public lets an app post in public channels it was never invited to.
        if not channel.bot_is_member and "chat:write.public" not in self.scopes:
            raise ApiError("not_in_channel")
        return channel.id

    def _readable_channel(self, value: object) -> str:
        """A channel whose messages the bot may read: it needs the history scope and to be a member."""
        channel = self._visible_channel(value, allow_name=False, scope_kind="history")
        if not channel.bot_is_member:
            raise ApiError("not_in_channel")
        return channel.id

    def _chat_post_message(self, p: JSONDict) -> JSONDict:
        channel_id = self._postable_channel(p.get("channel"), allow_name=True)
        # Slack's rate limiter sits in front of validation, so check it first;
        # only accepted posts start a new interval.
        self._check_post_rate(channel_id)
        fields = self._content(p)
        fields["metadata"] = self._metadata(p)
        fields["thread_ts"] = self._thread_parent(channel_id, p.get("thread_ts"))
        for key in ("unfurl_links", "unfurl_media"):
            if key in p:
                fields[key] = _truthy(p[key])
        record = self._store(channel_id, fields)
        self._last_post_at[channel_id] = time.monotonic()
        self._check_sent_markup("chat.postMessage", channel_id, p, fields)
        message = self._render(record, with_metadata=True)
        return {"channel": channel_id, "ts": record["ts"], "message": message}

    def _chat_update(self, p: JSONDict) -> JSONDict:
        # A Tier 3 limit is counted per call, whatever becomes of it, so it comes first.
        self._check_update_rate()
        self._require_scope("chat:write")
        channel = self._visible_channel(p.get("channel"), allow_name=False)
        if channel.is_archived:
            raise ApiError("is_inactive")  # no edits in an archived channel
        channel_id = channel.id
        record = self._by_key.get((channel_id, str(p.get("ts"))))
        if record is None:
            raise ApiError("message_not_found")
        if record["user"] != self.bot_user_id:
            raise ApiError("cant_update_message")
        changes = self._content(p)
        metadata = self._metadata(p)
        if metadata is not None:
            changes["metadata"] = metadata
        # Fields left out of chat.update keep their previous value (Slack's documented rule).
        previous = {k: copy.deepcopy(record[k]) for k in ("text", "blocks", "attachments", "metadata")}
        record.update(changes)
        record["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        self.updates.append({"channel": channel_id, "ts": record["ts"], **changes, "previous": previous})
        self._check_sent_markup("chat.update", channel_id, p, changes)
        message = self._render(record, with_metadata=True)
        return {"channel": channel_id, "ts": record["ts"], "text": record["text"], "message": message}

    def _reactions_add(self, p: JSONDict) -> JSONDict:
        # The manifest does not ask for reactions:write: the product only reads reactions, so a call fails.
        self._require_scope("reactions:write")
        channel_id = self._visible_channel(p.get("channel"), allow_name=False).id
        self._react(self.bot_user_id, channel_id, str(p.get("timestamp")), p.get("name"))
        return {}

    def _chat_post_ephemeral(self, p: JSONDict) -> JSONDict:
        self._require_scope("chat:write")
        channel_id = self._visible_channel(p.get("channel"), allow_name=True).id
        user = p.get("user")
        if not isinstance(user, str) or not user:
            raise _invalid_arguments("missing required field: user")
        fields = self._content(p)
        ts = self._next_ts()
        self.ephemerals.append(
            {"channel": channel_id, "user": user, "ts": ts, "thread_ts": p.get("thread_ts"), **fields}
        )
        self._check_sent_markup("chat.postEphemeral", f"{channel_id} (to {user})", p, fields)
        return {"message_ts": ts}

    # ------------------------------------------------------------------ conversations.*

    def _conversations_history(self, p: JSONDict) -> JSONDict:
        channel_id = self._readable_channel(p.get("channel"))
        oldest = _ts_value(p.get("oldest") or "0", "invalid_ts_oldest")
        latest = _ts_value(p["latest"], "invalid_ts_latest") if p.get("latest") else None
        inclusive = _truthy(p.get("inclusive"))

        def in_range(ts: Decimal) -> bool:
            above = ts >= oldest if inclusive else ts > oldest
            below = latest is None or (ts <= latest if inclusive else ts < latest)
            return above and below

        newest_first = [m for m in reversed(self._top) if m["channel"] == channel_id and in_range(Decimal(m["ts"]))]
        return self._page(newest_first, p)

    def _conversations_replies(self, p: JSONDict) -> JSONDict:
        channel_id = self._readable_channel(p.get("channel"))
        if not p.get("ts"):
            raise _invalid_arguments("missing required field: ts")
        record = self._by_key.get((channel_id, str(p["ts"])))
        if record is None:
            raise ApiError("thread_not_found")
        parent_ts = record["thread_ts"] or record["ts"]
        parent = self._by_key[(channel_id, parent_ts)]
        return self._page([parent, *self._replies.get((channel_id, parent_ts), [])], p)

    def _page(self, records: list[JSONDict], p: JSONDict) -> JSONDict:
        """One cursor-paginated page of messages, as conversations.* return them."""
        limit = _int_param(p.get("limit"), default=100, low=1, high=999)
        offset = _decode_cursor(p.get("cursor"))
        with_metadata = _truthy(p.get("include_all_metadata"))
        page = records[offset : offset + limit]
        has_more = offset + limit < len(records)
        result: JSONDict = {
            "messages": [self._render(m, with_metadata=with_metadata) for m in page],
            "has_more": has_more,
        }
        if has_more:
            result["response_metadata"] = {"next_cursor": _encode_cursor(offset + limit)}
        return result

    def _conversations_info(self, p: JSONDict) -> JSONDict:
        # Takes an ID only; a public channel the bot is not in is still described (is_member false).
        channel = self._visible_channel(p.get("channel"), allow_name=False, scope_kind="read")
        return {"channel": channel.info()}

    def _conversations_list(self, p: JSONDict) -> JSONDict:
        """Channels the bot can see, in pages; unlike history, the last page has an empty next_cursor."""
        types = [t.strip() for t in str(p.get("types") or "public_channel").split(",") if t.strip()]
        if not types or any(t not in LIST_TYPE_SCOPES for t in types):
            raise ApiError("invalid_types")
        self._require_scope(*(LIST_TYPE_SCOPES[t] for t in types))
        limit = _list_limit(p.get("limit"))
        offset = _decode_cursor(p.get("cursor"))
        listed = [c for c in self._channels.values() if _listed(c, types, _truthy(p.get("exclude_archived")))]
        page = listed[offset : offset + limit]
        more = offset + limit < len(listed)
        return {
            "channels": [c.info() for c in page],
            "response_metadata": {"next_cursor": _encode_cursor(offset + limit) if more else ""},
        }

    # ------------------------------------------------------------------ views.*

    def _consume_trigger(self, trigger_id: object) -> None:
        if not isinstance(trigger_id, str) or not trigger_id:
            raise _invalid_arguments("missing required field: trigger_id")
        issued_at = self._triggers.get(trigger_id)
        if issued_at is None:
            raise ApiError("invalid_trigger_id")
        if trigger_id in self._used_triggers:
            raise ApiError("exchanged_trigger_id")
        if time.monotonic() - issued_at > TRIGGER_TTL_S:
            raise ApiError("expired_trigger_id")
        self._used_triggers.add(trigger_id)

    def _checked_view(self, p: JSONDict) -> JSONDict:
        view = _decode_json(p.get("view"), "invalid_arguments")
        if view is None:
            raise _invalid_arguments("missing required field: view")
        errors = validate_modal(view)
        if errors:
            # Slack reports view problems as invalid_arguments, not invalid_blocks.
            raise _invalid_arguments(*errors)
        assert isinstance(view, dict)
        return view

    def _publish_view(self, method: str, view_id: str, view: JSONDict, trigger_id: str | None) -> JSONDict:
        stored: JSONDict = {
            "state": {"values": {}},
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            **copy.deepcopy(view),
            "id": view_id,
            "team_id": self.team_id,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
            "root_view_id": view_id,
            "previous_view_id": None,
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
        }
        self._open_views[view_id] = stored
        self.views.append({"method": method, "id": view_id, "trigger_id": trigger_id, "view": stored})
        self._check_markup(method, view_id, {"blocks": view.get("blocks")})
        return {"view": copy.deepcopy(stored)}

    def _views_open(self, p: JSONDict) -> JSONDict:
        view = self._checked_view(p)
        self._consume_trigger(p.get("trigger_id"))
        return self._publish_view("views.open", self._new_id("V"), view, p["trigger_id"])

    def _views_update(self, p: JSONDict) -> JSONDict:
        view = self._checked_view(p)
        view_id = p.get("view_id")
        if not view_id and p.get("external_id"):
            view_id = next(
                (v["id"] for v in self._open_views.values() if v["external_id"] == p["external_id"]),
                None,
            )
        elif not view_id:
            raise _invalid_arguments("either view_id or external_id is required")
        current = self._open_views.get(str(view_id))
        if current is None:
            raise ApiError("not_found")
        if p.get("hash") and p["hash"] != current["hash"]:
            raise ApiError("hash_conflict")
        return self._publish_view("views.update", current["id"], view, None)

    # ------------------------------------------------------------------ usergroups.*

    def _usergroups_users_list(self, p: JSONDict) -> JSONDict:
        self._require_scope("usergroups:read")
        group = p.get("usergroup")
        if not group:
            raise _invalid_arguments("missing required field: usergroup")
        if group not in self.usergroups:
            raise ApiError("no_such_subteam")
        return {"users": list(self.usergroups[str(group)])}

    # ------------------------------------------------------------------ files.* (uploads)
    # Slack's upload flow since files.upload was retired: ask for an upload URL for a file of a declared length,
    # POST the bytes there (server.py serves the URL), then complete the upload, which shares the file in a
    # channel (or thread) or keeps it private. Slack does not document every error code of these methods; where
    # it does not, the fake's codes are its own, named after what went wrong.

    def _files_get_upload_url_external(self, p: JSONDict) -> JSONDict:
        self._require_scope("files:write")
        filename = p.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            raise _invalid_arguments("missing required field: filename")
        length = p.get("length")
        try:
            size = int(str(length))
        except ValueError:
            raise _invalid_arguments("missing required field: length") from None
        if not 0 < size <= UPLOAD_MAX_BYTES:
            raise _invalid_arguments(f"length must be between 1 and {UPLOAD_MAX_BYTES}, got {size}")
        alt_txt = p.get("alt_txt")
        file_id = self._new_id("F")
        self._pending_uploads[file_id] = FakeUpload(
            file_id, filename, size, alt_txt if isinstance(alt_txt, str) and alt_txt else None
        )
        return {"upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}", "file_id": file_id}

    def _receive_upload(self, file_id: str, data: bytes) -> str | None:
        """The upload URL's work: None when the bytes are taken, else why not (the URL answers 4xx)."""
        upload = self._pending_uploads.get(file_id)
        if upload is None or upload.completed:
            return "no upload in progress for this URL"
        if len(data) != upload.length:
            return f"got {len(data)} bytes, files.getUploadURLExternal declared {upload.length}"
        upload.data = data
        return None

    def _files_complete_upload_external(self, p: JSONDict) -> JSONDict:
        self._require_scope("files:write")
        files = _decode_json(p.get("files"), "invalid_arguments")
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) and f.get("id") for f in files):
            raise _invalid_arguments("files must be a JSON array of objects with an id")
        channel_id: str | None = None
        thread_ts: str | None = None
        if p.get("channel_id"):
            # Sharing in a channel is posting in it: the same checks as chat.postMessage.
            channel_id = self._postable_channel(p["channel_id"], allow_name=False)
            thread_ts = self._thread_parent(channel_id, p.get("thread_ts"))
        elif p.get("thread_ts"):
            raise _invalid_arguments("thread_ts needs channel_id")
        uploads = []
        for entry in files:
            upload = self._pending_uploads.get(str(entry["id"]))
            if upload is None:
                raise ApiError("file_not_found")
            if upload.completed:
                raise ApiError("file_upload_already_completed")
            if upload.data is None:
                raise ApiError("file_upload_not_received")  # completed before its bytes were POSTed
            uploads.append((upload, entry))
        comment = p.get("initial_comment")
        shown = []
        for upload, entry in uploads:
            upload.completed = True
            upload.title = str(entry.get("title") or upload.filename)
            upload.channel, upload.thread_ts = channel_id, thread_ts
            upload.initial_comment = comment if isinstance(comment, str) and comment else None
            self.uploads.append(upload)
            shown.append({"id": upload.file_id, "name": upload.filename, "title": upload.title, "size": upload.length})
        if channel_id is not None:
            record = self._store(channel_id, {"text": comment or "", "thread_ts": thread_ts})
            record["files"] = shown
            self._check_sent_markup("files.completeUploadExternal", channel_id, p, {"text": comment or ""})
        return {"files": shown}
