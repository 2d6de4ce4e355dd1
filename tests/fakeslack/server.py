"""A strict fake of Slack's Web API and Socket Mode, served on loopback.

The product talks to it through the real slack-sdk (``AsyncWebClient(base_url=...)``
and ``SocketModeClient``), so anything that works here has been exercised through
the same request encoding, error parsing and reconnect logic as in production.

Strictness is deliberate: where Slack documents a limit or an error, the fake
enforces it and answers with Slack's error code and HTTP status, so the product
is written against Slack's behaviour rather than against a forgiving fake.

This module is ``FakeSlack``'s core: its state, lifecycle, the fault controls
tests program (fail_next, rate_limit_next, slow_next, drop_next, set_down; slow_socket_upgrade), the
workspace controls (add_channel, remove_bot, invite_bot, archive, revoke_token,
``scopes``, ``known_users``, ``link_hosts``), inspection helpers, and the ``/api/{method}`` dispatch (auth,
faults, errors).
Each Slack surface is a mixin in a module of its own that contributes its
handlers to the method table or its routes to ``start``:

- web_api.py: auth.test, chat.*, conversations.*, views.*, usergroups.*, files.* uploads (their upload URL is
  served here, ``/upload/{file_id}``)
- socket_mode.py: apps.connections.open, the ``/socket`` websocket, envelopes
- payloads.py: the interaction/event/slash-command payloads tests send
- markup.py: which mentions and links in what the product sends it did not add on purpose
- state.py: state the surfaces share (message store, ids, timestamps, markup checks)
- protocol.py: ApiError, faults, request parsing
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import time
from collections import defaultdict, deque
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from aiohttp import web

from .payloads import PayloadsMixin
from .protocol import ApiError, Handler, JSONDict, _Fault, _read_request, _request_token
from .socket_mode import SocketModeMixin
from .state import FakeChannel
from .web_api import UPDATE_LIMIT, UPDATE_WINDOW_S, WebApiMixin

_T = TypeVar("_T")

DEFAULT_CHANNELS = {"C0SUPPORT": "support", "C0BILLING": "billing", "C0APPROVE": "approvals"}
# Methods that take the app-level (xapp-) token; every other method refuses it.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
# The bot scopes deploy/slack-app-manifest.yaml asks for (a test keeps the two in step), so a method the
# product calls without asking for its scope fails here as it would in Slack.
DEFAULT_SCOPES = frozenset(
    {
        "chat:write",
        "channels:history",
        "groups:history",
        "channels:read",
        "groups:read",
        "commands",
        "usergroups:read",
        "files:write",
        "reactions:read",
    }
)


def _describe(predicate: Callable[[], object]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)


class FakeSlack(WebApiMixin, SocketModeMixin, PayloadsMixin):
    """Fake Slack Web API (``/api/<method>``) and Socket Mode (``/socket``) server."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-bot",
        app_token: str = "xapp-test-app",
        channels: dict[str, str] | None = None,
        team_id: str = "T0TEST",
        bot_user_id: str = "U0BOT",
        enforce_rate_limit: bool = True,
        scopes: frozenset[str] = DEFAULT_SCOPES,
        link_hosts: frozenset[str] = frozenset(),
    ) -> None:
        """``enforce_rate_limit``: answer 429 past Slack's documented rates (chat.postMessage about one message a
        second per channel, chat.update Tier 3), as Slack does; a test that must go faster turns it off and says
        why. ``link_hosts``: the hosts the product links to on purpose (the Mastodon server's); a ``<url|label>``
        to any other is recorded in ``markup_violations``."""
        # Each attribute's type is declared where it is used: in state.FakeSlackState when several
        # surfaces share it, else in the surface's mixin (web_api, socket_mode, payloads).
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.enforce_rate_limit = enforce_rate_limit
        self.update_limit = UPDATE_LIMIT
        self.update_window_s = UPDATE_WINDOW_S
        self.scopes = set(scopes)
        self.link_hosts = set(link_hosts)
        self.known_users = set()
        self.markup_violations = []
        # ``channels`` (ID -> name) are public channels the bot is in; add_channel makes any other kind.
        self._channels = {
            channel_id: FakeChannel(channel_id, name)
            for channel_id, name in (DEFAULT_CHANNELS if channels is None else channels).items()
        }
        self._revoked: set[str] = set()

        # Inspection state (public, read by tests).
        self.calls: list[tuple[str, JSONDict]] = []
        self.updates = []
        self.ephemerals = []
        self.views = []
        self.envelopes = []
        self.socket_frames = []
        self.response_url_posts = []
        self.rate_limited_count = 0
        self.connections_total = 0
        # User group ID (S...) -> member user IDs, answered by usergroups.users.list; tests set it.
        self.usergroups = {}

        # Message store: top-level posts in order, every message by (channel, ts),
        # and thread replies by (channel, parent ts).
        self._top = []
        self._by_key = {}
        self._replies = defaultdict(list)
        self._open_views = {}
        self._last_ts_us = 0
        self._ids = itertools.count(1)
        self._last_post_at = {}
        self._update_times = deque()
        self._triggers = {}
        self._used_triggers = set()

        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._slow: dict[str, deque[float]] = defaultdict(deque)
        self._drops: dict[str, int] = defaultdict(int)
        self._stopping = asyncio.Event()
        self._down = False
        self._tickets = set()
        self._sockets = []
        self._pending_acks = {}
        self._slow_upgrades = deque()

        self._pending_uploads = {}
        self.uploads = []

        self._runner: web.AppRunner | None = None
        self._port = None
        # Each surface contributes its Web API methods to the dispatch table.
        self._handlers: dict[str, Handler] = {**self._web_api_methods(), **self._socket_mode_methods()}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/socket", self._handle_socket)
        app.router.add_post("/response_url/{id}", self._handle_response_url)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        # Port 0 lets the OS pick a free port; the runner reports what was bound.
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._stopping.set()  # slow answers (slow_next) finish now instead of holding up the shutdown
        await self._close_sockets()
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

    # ------------------------------------------------------------------ workspace controls

    def add_channel(
        self,
        name: str,
        *,
        channel_id: str | None = None,
        private: bool = False,
        archived: bool = False,
        bot_member: bool = True,
    ) -> str:
        """Create a channel (its ID is returned); the bot is in it unless ``bot_member`` is false."""
        channel_id = channel_id or self._new_id("G" if private else "C")
        self._channels[channel_id] = FakeChannel(
            channel_id, name.removeprefix("#"), is_private=private, is_archived=archived, bot_is_member=bot_member
        )
        return channel_id

    def remove_bot(self, channel: str) -> None:
        """Someone removed the bot from the channel (or it was never invited)."""
        self._channels[self._channel_id(channel, allow_name=True)].bot_is_member = False

    def invite_bot(self, channel: str) -> None:
        """``/invite @mentiondesk`` in the channel."""
        self._channels[self._channel_id(channel, allow_name=True)].bot_is_member = True

    def archive(self, channel: str, *, archived: bool = True) -> None:
        self._channels[self._channel_id(channel, allow_name=True)].is_archived = archived

    def revoke_token(self, token: str) -> None:
        """The token was revoked (app uninstalled, token regenerated): every call with it answers token_revoked."""
        self._revoked.add(token)

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
            if err.status == 429:  # only the enforced limits; programmed 429s are faults
                self.rate_limited_count += 1
            response = err.response()
        else:
            response = web.json_response({"ok": True, **result})
        await self._answer_slowly(method)
        if self._take_drop(method) and request.transport is not None:
            request.transport.abort()  # reset the connection before a byte of the answer is written
        return response

    async def _handle_upload(self, request: web.Request) -> web.Response:
        """The upload URL files.getUploadURLExternal hands out: the file's bytes, raw or as a multipart "file"."""
        # Faults for it are programmed as for a method named "upload" (fail_next("upload")).
        self.calls.append(("upload", {"file_id": request.match_info["file_id"]}))
        if self._down:
            return _Fault(503).response()
        fault = self._take_fault("upload")
        if fault is not None:
            return fault.response()
        if request.content_type == "multipart/form-data":
            form = await request.post()
            field = form.get("file")
            data = field.file.read() if isinstance(field, web.FileField) else b""
        else:
            data = await request.read()
        problem = self._receive_upload(request.match_info["file_id"], data)
        if problem is not None:
            return web.Response(status=404 if problem.startswith("no upload") else 400, text=problem)
        return web.Response(text=f"OK - {len(data)}")

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
        if token in self._revoked:
            raise ApiError("token_revoked")
        if token not in (self.bot_token, self.app_token):
            raise ApiError("invalid_auth")
        if (token == self.app_token) != (method in APP_TOKEN_METHODS):
            raise ApiError("not_allowed_token_type")
