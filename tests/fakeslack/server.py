"""A strict fake of Slack's Web API and Socket Mode, served on loopback.

The product talks to it through the real slack-sdk (``AsyncWebClient(base_url=...)``
and ``SocketModeClient``), so anything that works here has been exercised through
the same request encoding, error parsing and reconnect logic as in production.

Strictness is deliberate: where Slack documents a limit or an error, the fake
enforces it and answers with Slack's error code and HTTP status, so the product
is written against Slack's behaviour rather than against a forgiving fake.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import inspect
import itertools
import json
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from .blockkit import MESSAGE_TEXT_MAX, validate_blocks, validate_modal

JSONDict = dict[str, Any]
Handler = Callable[[JSONDict], JSONDict]
_T = TypeVar("_T")

DEFAULT_CHANNELS = {"C0SUPPORT": "support", "C0BILLING": "billing", "C0APPROVE": "approvals"}
APP_ID = "A0TEST"
BOT_ID = "B0BOT"
# Methods that take the app-level (xapp-) token; every other method refuses it.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
# Slack allows ~1 message per second per channel; leave slack for timer jitter.
POST_INTERVAL_S = 0.9
# Slack's trigger_ids expire three seconds after the user's interaction.
TRIGGER_TTL_S = 3.0

_EDGE_ERROR_HTML = "<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"


class ApiError(Exception):
    """An ``ok: false`` answer; raised by method handlers, rendered by the dispatcher."""

    def __init__(
        self,
        error: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> web.Response:
        body = {"ok": False, "error": self.error, **self.extra}
        return web.json_response(body, status=self.status, headers=self.headers)


def _invalid_arguments(*messages: str) -> ApiError:
    return ApiError("invalid_arguments", response_metadata={"messages": [f"[ERROR] {m}" for m in messages]})


def _ratelimited(retry_after_s: int) -> ApiError:
    return ApiError("ratelimited", status=429, headers={"Retry-After": str(retry_after_s)})


@dataclass
class _Fault:
    """One programmed failure (fail_next / rate_limit_next)."""

    status: int
    body: str | None = None
    content_type: str | None = None
    retry_after_s: int | None = None

    def response(self) -> web.Response:
        if self.retry_after_s is not None:
            return _ratelimited(self.retry_after_s).response()
        body = self.body if self.body is not None else _EDGE_ERROR_HTML.format(status=self.status)
        content_type = self.content_type or _guess_type(body)
        return web.Response(status=self.status, text=body, content_type=content_type)


def _guess_type(body: str) -> str:
    # Slack's edge answers outages with HTML; a JSON body is only sent by the API itself.
    try:
        return "application/json" if isinstance(json.loads(body), dict) else "text/html"
    except ValueError:
        return "text/html"


@dataclass(eq=False)
class _Socket:
    ws: web.WebSocketResponse
    gone: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Incoming:
    params: JSONDict
    form_token: str | None
    parse_error: str | None


async def _read_request(request: web.Request) -> _Incoming:
    """Merge query string and body the way Slack does (body wins)."""
    params: JSONDict = dict(request.query)
    form_token: str | None = None
    parse_error: str | None = None
    if request.method == "POST" and request.body_exists:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                body, parse_error = {}, "invalid_json"
            if not isinstance(body, dict):
                body, parse_error = {}, "json_not_object"
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            form_token = fields.get("token")
            params.update(fields)
    # Slack ignores tokens in JSON bodies and refuses them in query strings for
    # apps created since 2021, so only the header and a form field authenticate.
    params.pop("token", None)
    return _Incoming(params, form_token, parse_error)


def _request_token(request: web.Request, incoming: _Incoming) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip() or None
    return incoming.form_token or None


def _truthy(value: object) -> bool:
    # Form posts carry "true"/"1"; slack-sdk turns True into "1" in query strings.
    if isinstance(value, str):
        return value.lower() in ("1", "true")
    return bool(value)


def _decode_json(value: object, error: str) -> Any:
    """Form posts carry structured fields as JSON strings; JSON posts carry them inline."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(error) from None
    return value


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


def _describe(predicate: Callable[[], object]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)


class FakeSlack:
    """Fake Slack Web API (``/api/<method>``) and Socket Mode (``/socket``) server."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-bot",
        app_token: str = "xapp-test-app",
        channels: dict[str, str] | None = None,
        team_id: str = "T0TEST",
        bot_user_id: str = "U0BOT",
        enforce_rate_limit: bool = False,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.enforce_rate_limit = enforce_rate_limit
        self._channels = dict(DEFAULT_CHANNELS if channels is None else channels)

        # Inspection state (public, read by tests).
        self.calls: list[tuple[str, JSONDict]] = []
        self.updates: list[JSONDict] = []
        self.ephemerals: list[JSONDict] = []
        self.views: list[JSONDict] = []
        self.envelopes: list[JSONDict] = []
        self.socket_frames: list[JSONDict] = []
        self.response_url_posts: list[JSONDict] = []
        self.rate_limited_count = 0
        self.connections_total = 0
        # User group ID (S...) -> member user IDs, answered by usergroups.users.list; tests set it.
        self.usergroups: dict[str, list[str]] = {}

        # Message store: top-level posts in order, every message by (channel, ts),
        # and thread replies by (channel, parent ts).
        self._top: list[JSONDict] = []
        self._by_key: dict[tuple[str, str], JSONDict] = {}
        self._replies: dict[tuple[str, str], list[JSONDict]] = defaultdict(list)
        self._open_views: dict[str, JSONDict] = {}
        self._last_ts_us = 0
        self._ids = itertools.count(1)
        self._last_post_at: dict[str, float] = {}
        self._triggers: dict[str, float] = {}
        self._used_triggers: set[str] = set()

        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._slow: dict[str, deque[float]] = defaultdict(deque)
        self._drops: dict[str, int] = defaultdict(int)
        self._stopping = asyncio.Event()
        self._down = False
        self._tickets: set[str] = set()
        self._sockets: list[_Socket] = []
        self._pending_acks: dict[str, asyncio.Future[JSONDict]] = {}

        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._handlers: dict[str, Handler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "conversations.info": self._conversations_info,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "apps.connections.open": self._apps_connections_open,
            "usergroups.users.list": self._usergroups_users_list,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/socket", self._handle_socket)
        app.router.add_post("/response_url/{id}", self._handle_response_url)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        # Port 0 lets the OS pick a free port; the runner reports what was bound.
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._stopping.set()  # slow answers (slow_next) finish now instead of holding up the shutdown
        for pending in self._pending_acks.values():
            if not pending.done():
                pending.set_exception(RuntimeError("FakeSlack stopped before the envelope was acked"))
        for sock in list(self._sockets):
            await sock.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return self._port

    @property
    def base_url(self) -> str:
        # Trailing slash matters: slack-sdk urljoin()s the method name onto it.
        return f"http://127.0.0.1:{self.port}/api/"

    # ------------------------------------------------------------------ test controls

    def fail_next(
        self,
        method: str,
        *,
        status: int = 500,
        count: int = 1,
        body: str | None = None,
        content_type: str | None = None,
    ) -> None:
        """Answer the next ``count`` calls of ``method`` ("*" = any) with a bare HTTP error.

        The default body is an HTML page, like Slack's edge; nothing is recorded.
        """
        for _ in range(count):
            self._faults[method].append(_Fault(status, body, content_type))

    def rate_limit_next(self, method: str, *, retry_after_s: int = 1, count: int = 1) -> None:
        """Answer the next ``count`` calls of ``method`` with 429 + Retry-After."""
        for _ in range(count):
            self._faults[method].append(_Fault(429, retry_after_s=retry_after_s))

    def slow_next(self, method: str, *, delay_s: float, count: int = 1) -> None:
        """Process the next ``count`` calls of ``method`` ("*" = any) normally, but answer only after ``delay_s``.

        The call takes effect at once (a posted message is stored and visible to history), as when Slack is slow
        to answer: a client that times out first cannot tell whether its request was carried out. Calls
        answered by fail_next/rate_limit_next or set_down never reach the method and do not use one up.
        """
        for _ in range(count):
            self._slow[method].append(delay_s)

    def drop_next(self, method: str, *, count: int = 1) -> None:
        """Process the next ``count`` calls of ``method`` ("*" = any) normally, then cut the connection unanswered.

        Like a connection lost after Slack acted on the request: the client sees a disconnect or reset and
        cannot tell whether the call took effect. Faults and set_down take precedence, as for slow_next.
        """
        self._drops[method] += count

    def set_down(self, down: bool) -> None:
        """While down, every Web API call and Socket Mode upgrade answers 503."""
        self._down = down

    def new_trigger_id(self) -> str:
        """Issue a trigger_id, as Slack does with each interaction payload."""
        trigger_id = f"{next(self._ids)}.{int(time.time())}.{uuid.uuid4().hex}"
        self._triggers[trigger_id] = time.monotonic()
        return trigger_id

    def inject_message(
        self, channel: str, user_id: str, text: str, *, ts: str | None = None, thread_ts: str | None = None
    ) -> JSONDict:
        """Record a message as if a human had posted it (visible to history/replies)."""
        channel_id = self._channel_id(channel, allow_name=True)
        if ts is not None and (channel_id, ts) in self._by_key:
            return self._by_key[(channel_id, ts)]
        parent = self._by_key.get((channel_id, thread_ts or ""))
        if thread_ts is not None and (parent is None or parent["thread_ts"] is not None):
            raise ValueError(f"no top-level message {thread_ts} in {channel_id} to reply to")
        return self._store(channel_id, {"user": user_id, "text": text, "thread_ts": thread_ts}, ts=ts)

    # ------------------------------------------------------------------ inspection

    def messages(self, channel: str | None = None) -> list[JSONDict]:
        """Top-level messages in posting order (optionally in one channel, by ID or name)."""
        channel_id = None if channel is None else self._channel_id(channel, allow_name=True)
        return [dict(m) for m in self._top if channel_id in (None, m["channel"])]

    def thread(self, channel: str, ts: str) -> list[JSONDict]:
        """Replies in the thread under ``ts`` (parent excluded), oldest first."""
        channel_id = self._channel_id(channel, allow_name=True)
        return [dict(m) for m in self._replies.get((channel_id, ts), [])]

    def call_count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    async def wait_for(self, predicate: Callable[[], _T], timeout_s: float = 5.0) -> _T:
        """Poll ``predicate`` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                recent = [name for name, _ in self.calls[-10:]]
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting for: {_describe(predicate)}\n"
                    f"last Slack calls: {recent}; connected sockets: {self.connected_count}"
                )
            await asyncio.sleep(0.01)

    @property
    def connected_count(self) -> int:
        return len(self._open_sockets())

    async def wait_connected(self, timeout_s: float = 5.0, *, count: int = 1) -> None:
        await self.wait_for(lambda: self.connected_count >= count, timeout_s)

    # ------------------------------------------------------------------ Web API dispatch

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        incoming = await _read_request(request)
        self.calls.append((method, incoming.params))
        if self._down:
            return _Fault(503).response()
        fault = self._take_fault(method)
        if fault is not None:
            return fault.response()
        try:
            handler = self._handlers.get(method)
            if handler is None:
                raise ApiError("unknown_method", req_method=method)
            self._check_auth(method, _request_token(request, incoming))
            if incoming.parse_error is not None:
                raise ApiError(incoming.parse_error)
            result = handler(incoming.params)
        except ApiError as err:
            if err.status == 429:  # only the enforced per-channel limit; programmed 429s are faults
                self.rate_limited_count += 1
            response = err.response()
        else:
            response = web.json_response({"ok": True, **result})
        await self._answer_slowly(method)
        if self._take_drop(method) and request.transport is not None:
            request.transport.abort()  # reset the connection before a byte of the answer is written
        return response

    def _take_drop(self, method: str) -> bool:
        for key in (method, "*"):
            if self._drops[key]:
                self._drops[key] -= 1
                return True
        return False

    async def _answer_slowly(self, method: str) -> None:
        for key in (method, "*"):
            if self._slow[key]:
                delay_s = self._slow[key].popleft()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)
                return

    def _take_fault(self, method: str) -> _Fault | None:
        for key in (method, "*"):
            if self._faults[key]:
                return self._faults[key].popleft()
        return None

    def _check_auth(self, method: str, token: str | None) -> None:
        if token is None:
            raise ApiError("not_authed")
        if token not in (self.bot_token, self.app_token):
            raise ApiError("invalid_auth")
        if (token == self.app_token) != (method in APP_TOKEN_METHODS):
            raise ApiError("not_allowed_token_type")

    # ------------------------------------------------------------------ shared helpers

    def _channel_id(self, value: object, *, allow_name: bool) -> str:
        """Resolve a channel ID (or, where Slack allows it, ``#name``/``name``)."""
        if isinstance(value, str) and value in self._channels:
            return value
        if allow_name and isinstance(value, str):
            name = value.removeprefix("#")
            for channel_id, channel_name in self._channels.items():
                if channel_name == name:
                    return channel_id
        raise ApiError("channel_not_found")

    def _next_ts(self) -> str:
        # Slack ts values are unique per channel and sort by time; keep them strictly increasing.
        now_us = int(time.time() * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 100)
        seconds, micros = divmod(self._last_ts_us, 1_000_000)
        return f"{seconds}.{micros:06d}"

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

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}0{next(self._ids):08X}"

    # ------------------------------------------------------------------ methods

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

    def _chat_post_message(self, p: JSONDict) -> JSONDict:
        channel_id = self._channel_id(p.get("channel"), allow_name=True)
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
        message = self._render(record, with_metadata=True)
        return {"channel": channel_id, "ts": record["ts"], "message": message}

    def _chat_update(self, p: JSONDict) -> JSONDict:
        channel_id = self._channel_id(p.get("channel"), allow_name=False)
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
        message = self._render(record, with_metadata=True)
        return {"channel": channel_id, "ts": record["ts"], "text": record["text"], "message": message}

    def _chat_post_ephemeral(self, p: JSONDict) -> JSONDict:
        channel_id = self._channel_id(p.get("channel"), allow_name=True)
        user = p.get("user")
        if not isinstance(user, str) or not user:
            raise _invalid_arguments("missing required field: user")
        fields = self._content(p)
        ts = self._next_ts()
        self.ephemerals.append(
            {"channel": channel_id, "user": user, "ts": ts, "thread_ts": p.get("thread_ts"), **fields}
        )
        return {"message_ts": ts}

    def _conversations_history(self, p: JSONDict) -> JSONDict:
        channel_id = self._channel_id(p.get("channel"), allow_name=False)
        oldest = _ts_value(p.get("oldest") or "0", "invalid_ts_oldest")
        latest = _ts_value(p["latest"], "invalid_ts_latest") if p.get("latest") else None
        inclusive = _truthy(p.get("inclusive"))

        def in_range(ts: Decimal) -> bool:
            above = ts >= oldest if inclusive else ts > oldest
            below = latest is None or (ts <= latest if inclusive else ts < latest)
            return above and below

        newest_first = [
            m for m in reversed(self._top) if m["channel"] == channel_id and in_range(Decimal(m["ts"]))
        ]
        return self._page(newest_first, p)

    def _conversations_replies(self, p: JSONDict) -> JSONDict:
        channel_id = self._channel_id(p.get("channel"), allow_name=False)
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
        channel_id = self._channel_id(p.get("channel"), allow_name=False)
        name = self._channels[channel_id]
        return {
            "channel": {
                "id": channel_id,
                "name": name,
                "name_normalized": name,
                "is_channel": True,
                "is_private": False,
                "is_archived": False,
                "is_member": True,
            }
        }

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

    def _usergroups_users_list(self, p: JSONDict) -> JSONDict:
        group = p.get("usergroup")
        if not group:
            raise _invalid_arguments("missing required field: usergroup")
        if group not in self.usergroups:
            raise ApiError("no_such_subteam")
        return {"users": list(self.usergroups[str(group)])}

    def _apps_connections_open(self, p: JSONDict) -> JSONDict:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}"}

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.response_url_posts.append({"id": request.match_info["id"], "body": body})
        return web.json_response({"ok": True})

    # ------------------------------------------------------------------ Socket Mode

    def _open_sockets(self) -> list[_Socket]:
        return [s for s in self._sockets if not s.ws.closed]

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        if self._down:
            return _Fault(503).response()
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid or used ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        # Consume the ticket only once the upgrade succeeded: slack-sdk retries a
        # failed handshake with the same URL, so burning it early would wedge it.
        self._tickets.discard(ticket)
        self.connections_total += 1
        sock = _Socket(ws)
        self._sockets.append(sock)
        try:
            await ws.send_json(self._hello())
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._on_socket_frame(frame.data)
        finally:
            self._sockets.remove(sock)
            sock.gone.set()
        return ws

    def _hello(self) -> JSONDict:
        return {
            "type": "hello",
            "num_connections": self.connected_count,
            "debug_info": {
                "host": "applink-fake-1",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": APP_ID},
        }

    def _on_socket_frame(self, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            self.socket_frames.append({"unparsed": data})
            return
        self.socket_frames.append(frame)
        pending = self._pending_acks.get(str(frame.get("envelope_id")))
        if pending is not None and not pending.done():
            pending.set_result(frame)

    async def send_envelope(
        self,
        type_: str,
        payload: JSONDict,
        *,
        timeout_s: float = 5.0,
        accepts_response_payload: bool | None = None,
    ) -> JSONDict:
        """Deliver an envelope to the newest client and return its ack frame."""
        sockets = self._open_sockets()
        if not sockets:
            raise RuntimeError(f"no Socket Mode client connected to deliver a {type_} envelope")
        envelope = self._envelope(type_, payload, accepts_response_payload)
        ack: asyncio.Future[JSONDict] = asyncio.get_running_loop().create_future()
        self._pending_acks[envelope["envelope_id"]] = ack
        try:
            await sockets[-1].ws.send_json(envelope)
            self.envelopes.append(envelope)
            return await asyncio.wait_for(ack, timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"no ack for {type_} envelope {envelope['envelope_id']} within {timeout_s}s"
            ) from None
        finally:
            del self._pending_acks[envelope["envelope_id"]]

    @staticmethod
    def _envelope(type_: str, payload: JSONDict, accepts_response_payload: bool | None) -> JSONDict:
        if accepts_response_payload is None:
            # Slack offers a response payload for slash commands and for the
            # interactions whose answer shapes the UI (modal submits, option loads).
            accepts_response_payload = type_ == "slash_commands" or (
                type_ == "interactive" and payload.get("type") in ("view_submission", "block_suggestion")
            )
        envelope: JSONDict = {
            "envelope_id": str(uuid.uuid4()),
            "type": type_,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if type_ == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        return envelope

    async def disconnect_clients(self, reason: str = "refresh_requested", *, grace_s: float = 1.0) -> None:
        """Ask every client to reconnect, then close whatever is still open after ``grace_s``.

        This mirrors Slack: it announces the disconnect, a well-behaved client
        opens a new connection and drops the old one itself.
        """
        sockets = self._open_sockets()
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake-1"}}
        for sock in sockets:
            await sock.ws.send_json(message)
        gone = [asyncio.ensure_future(sock.gone.wait()) for sock in sockets]
        if gone:
            _, still_waiting = await asyncio.wait(gone, timeout=grace_s)
            for waiter in still_waiting:
                waiter.cancel()
        await self.drop_clients(only=sockets)

    async def drop_clients(self, *, only: list[_Socket] | None = None) -> None:
        """Close sockets abruptly, without a disconnect message (a network blip)."""
        for sock in list(self._sockets if only is None else only):
            if not sock.ws.closed:
                await sock.ws.close(code=WSCloseCode.GOING_AWAY, message=b"connection dropped")

    # ------------------------------------------------------------------ payload builders

    def _user(self, user_id: str) -> JSONDict:
        name = f"user-{user_id.lower()}"
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _team(self) -> JSONDict:
        return {"id": self.team_id, "domain": "fake-team"}

    def _response_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/response_url/{uuid.uuid4().hex}"

    def _find_element(self, message: JSONDict | None, action_id: str) -> tuple[str | None, JSONDict]:
        """Locate an element by action_id in a stored message's blocks (block_id, element)."""
        for block in (message or {}).get("blocks") or []:
            candidates = [*block.get("elements", []), block.get("accessory") or {}]
            for element in candidates:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    return block.get("block_id"), element
        return None, {}

    def block_actions_payload(
        self,
        user_id: str,
        action_id: str,
        value: str,
        channel: str,
        message_ts: str,
        trigger_id: str | None = None,
    ) -> JSONDict:
        """An ``interactive`` block_actions payload for a button click on a posted message."""
        channel_id = self._channel_id(channel, allow_name=True)
        trigger_id = self._register_trigger(trigger_id)
        record = self._by_key.get((channel_id, message_ts))
        message = (
            self._render(record, with_metadata=True) if record else {"type": "message", "ts": message_ts}
        )
        block_id, element = self._find_element(record, action_id)
        container: JSONDict = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        if record is not None and record["thread_ts"] is not None:
            container["thread_ts"] = record["thread_ts"]
        action = {
            "type": element.get("type", "button"),
            "action_id": action_id,
            "block_id": block_id or "fake-block",
            "text": element.get("text", {"type": "plain_text", "text": action_id, "emoji": True}),
            "value": value,
            "action_ts": self._next_ts(),
        }
        if "style" in element:
            action["style"] = element["style"]
        return {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": "fake-verification-token",
            "container": container,
            "trigger_id": trigger_id,
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._channels[channel_id]},
            "message": message,
            "state": {"values": {}},
            "response_url": self._response_url(),
            "actions": [action],
        }

    def view_block_actions_payload(
        self,
        user_id: str,
        view_id: str,
        action_id: str,
        value: str,
        trigger_id: str | None = None,
    ) -> JSONDict:
        """An ``interactive`` block_actions payload from an input with ``dispatch_action`` in an open modal.

        The view is the one last opened or updated under ``view_id`` (with its current hash), its state
        holding ``value`` in that input, as Slack sends while the user types.
        """
        current = self._open_views.get(view_id)
        if current is None:
            raise ValueError(f"no open view {view_id}")
        block_id, element = self._find_element(current, action_id)
        if block_id is None:
            for block in current.get("blocks") or []:
                if (block.get("element") or {}).get("action_id") == action_id:
                    block_id, element = block.get("block_id"), block["element"]
        if block_id is None:
            raise ValueError(f"no element {action_id!r} in view {view_id}")
        view = copy.deepcopy(current)
        view["state"] = {"values": {block_id: {action_id: {"type": element.get("type"), "value": value}}}}
        return {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": "fake-verification-token",
            "container": {"type": "view", "view_id": view_id},
            "trigger_id": self._register_trigger(trigger_id),
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "view": view,
            "actions": [
                {
                    "type": element.get("type"),
                    "action_id": action_id,
                    "block_id": block_id,
                    "value": value,
                    "action_ts": self._next_ts(),
                }
            ],
        }

    def view_submission_payload(
        self,
        user_id: str,
        callback_id: str,
        private_metadata: str,
        state_values: JSONDict,
    ) -> JSONDict:
        """An ``interactive`` view_submission payload; reuses the last opened view with that callback_id."""
        opened = [v for v in self._open_views.values() if v["callback_id"] == callback_id]
        view: JSONDict = copy.deepcopy(opened[-1]) if opened else self._synthetic_view()
        view.update(
            callback_id=callback_id,
            private_metadata=private_metadata,
            state={"values": copy.deepcopy(state_values)},
        )
        return {
            "type": "view_submission",
            "team": self._team(),
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": "fake-verification-token",
            "trigger_id": self.new_trigger_id(),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def _synthetic_view(self) -> JSONDict:
        view_id = self._new_id("V")
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "title": {"type": "plain_text", "text": "Fake modal"},
            "blocks": [],
            "external_id": "",
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
        }

    def message_event_payload(
        self,
        user_id: str,
        channel: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        *,
        record: bool = True,
    ) -> JSONDict:
        """An ``events_api`` event_callback for a user's message.

        With ``record`` (default) the message is also stored, since Slack would
        show it in history and accept replies in its thread.
        """
        channel_id = self._channel_id(channel, allow_name=True)
        ts = ts or self._next_ts()
        if record:
            self.inject_message(channel_id, user_id, text, ts=ts, thread_ts=thread_ts)
        event: JSONDict = {
            "type": "message",
            "channel": channel_id,
            "user": user_id,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel_type": "channel",
            "client_msg_id": str(uuid.uuid4()),
            "team": self.team_id,
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
            parent = self._by_key.get((channel_id, thread_ts))
            if parent is not None:
                event["parent_user_id"] = parent["user"]
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": self._new_id("Ev"),
            "event_time": int(Decimal(ts)),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    def slash_command_payload(
        self,
        user_id: str,
        command: str,
        text: str,
        channel_id: str,
        trigger_id: str | None = None,
    ) -> JSONDict:
        """A ``slash_commands`` payload; like Slack's form post, every value is a string."""
        resolved = self._channel_id(channel_id, allow_name=True)
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "team_domain": "fake-team",
            "channel_id": resolved,
            "channel_name": self._channels[resolved],
            "user_id": user_id,
            "user_name": f"user-{user_id.lower()}",
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self._response_url(),
            "trigger_id": self._register_trigger(trigger_id),
        }

    def _register_trigger(self, trigger_id: str | None) -> str:
        if trigger_id is None:
            return self.new_trigger_id()
        self._triggers.setdefault(trigger_id, time.monotonic())
        return trigger_id
