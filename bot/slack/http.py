"""HTTP mode: Slack's Events API, interactivity and slash command endpoints, verified before bolt sees them.

The endpoints are routes on the daemon's one HTTP server (bot.web.server), which also serves the dashboard.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import re
import time
from collections.abc import Callable, Sequence

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from mentiondesk.bot.config import SlackSettings
from mentiondesk.bot.slack.inbound import MalformedPayload, PayloadRules, check_payload, parse_http_body

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
INTERACTIVITY_PATH = "/slack/interactivity"
COMMANDS_PATH = "/slack/commands"

# Slack's documented replay window: a request signed more than five minutes from now is refused.
REPLAY_WINDOW_S = 300
# Only validly signed requests are remembered, so only Slack (or a holder of the secret) can fill this;
# Slack sends far fewer than this in five minutes to one app.
MAX_REMEMBERED_REQUESTS = 50_000

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class RequestRejected(Exception):
    """A request that must not reach bolt; the reason is logged, the client only sees the status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ReplayGuard:
    """Remembers accepted (timestamp, signature) pairs until their timestamp leaves the replay window."""

    def __init__(self, *, window_s: int = REPLAY_WINDOW_S, max_entries: int = MAX_REMEMBERED_REQUESTS) -> None:
        self._window_s = window_s
        self._max_entries = max_entries
        self._seen: set[tuple[int, str]] = set()
        self._expiry: list[tuple[int, tuple[int, str]]] = []  # heap ordered by expiry

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, timestamp: int, signature: str, *, now_s: float) -> bool:
        """True the first time a pair is seen (and remember it); False for a replay."""
        self._forget_expired(now_s)
        key = (timestamp, signature)
        if key in self._seen:
            return False
        if len(self._seen) >= self._max_entries:
            # Forgetting the soonest-expiring entry weakens replay protection for it alone; refusing
            # Slack's genuine requests instead would take the desk down.
            logger.warning("replay memory full (%d requests); forgetting the oldest", self._max_entries)
            self._pop()
        self._seen.add(key)
        heapq.heappush(self._expiry, (timestamp + self._window_s, key))
        return True

    def _forget_expired(self, now_s: float) -> None:
        # Past its expiry a pair is refused by the timestamp check anyway, so it need not be kept.
        while self._expiry and self._expiry[0][0] < now_s:
            self._pop()

    def _pop(self) -> None:
        _, key = heapq.heappop(self._expiry)
        self._seen.discard(key)


def expected_signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature: hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` under the signing secret."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(signing_secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


class SlackRequestVerifier:
    """Every check Slack asks of a receiver, in order: headers, freshness, body size, signature, replay."""

    def __init__(self, signing_secret: str, *, max_body_bytes: int, clock: Callable[[], float] = time.time) -> None:
        if not signing_secret.strip():
            raise ValueError("a signing secret is required in HTTP mode")
        self._secret = signing_secret
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._replays = ReplayGuard()

    async def verified_body(self, request: web.Request) -> bytes:
        """The raw body of a genuine, fresh, first-seen Slack request; RequestRejected otherwise."""
        # Cheap header checks first, so junk is refused without reading its body.
        timestamp, signature = self._signature_headers(request)
        now_s = self._clock()
        sent_at = self._fresh_timestamp(timestamp, now_s)
        body = await self._read_limited(request)
        # Bytes, not str: compare_digest refuses non-ASCII str, and a forged header may be anything.
        given = signature.encode("utf-8", "replace")
        if not hmac.compare_digest(expected_signature(self._secret, timestamp, body).encode("ascii"), given):
            raise RequestRejected(401, "signature mismatch")
        # Only after the signature holds: an unsigned request must not be able to poison the memory.
        if not self._replays.first_use(sent_at, signature, now_s=now_s):
            raise RequestRejected(401, "replay of an already accepted request")
        return body

    def _signature_headers(self, request: web.Request) -> tuple[str, str]:
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        signature = request.headers.get("X-Slack-Signature")
        if not timestamp or not signature:
            raise RequestRejected(401, "missing X-Slack-Request-Timestamp or X-Slack-Signature")
        return timestamp, signature

    async def _read_limited(self, request: web.Request) -> bytes:
        # Refuse by the declared length before reading anything; the application's client_max_size
        # (the same limit) then stops a chunked or lying body while it is being read.
        if request.content_length is not None and request.content_length > self._max_body_bytes:
            raise RequestRejected(413, f"declared body of {request.content_length} bytes is over the limit")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestRejected(413, "body over the limit while reading") from None

    def _fresh_timestamp(self, timestamp: str, now_s: float) -> int:
        # Digits only: int() would also take " 12", "+12" or "1_2", none of which Slack sends.
        if not _TIMESTAMP.fullmatch(timestamp):
            raise RequestRejected(401, "timestamp is not an integer")
        sent_at = int(timestamp)
        if abs(now_s - sent_at) > REPLAY_WINDOW_S:
            raise RequestRejected(401, f"timestamp {now_s - sent_at:+.0f}s from now, outside the replay window")
        return sent_at


def checked_text(request: web.Request, body: bytes, rules: PayloadRules) -> str:
    """The body as text, once its payload is one the listeners can act on; RequestRejected (400) otherwise."""
    try:
        text = body.decode("utf-8")
        check_payload(parse_http_body(text, request.content_type), rules)
    except UnicodeDecodeError:
        raise RequestRejected(400, "signed body is not UTF-8") from None
    except MalformedPayload as exc:
        raise RequestRejected(400, f"signed but malformed: {exc}") from None
    return text


def _bolt_request(request: web.Request, text: str) -> AsyncBoltRequest:
    # Keep repeated headers (bolt reads lists); X-Slack-Retry-Num/-Reason pass through for bolt to see.
    values: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        values.setdefault(name.lower(), []).append(value)
    headers: dict[str, str | Sequence[str]] = dict(values)
    return AsyncBoltRequest(body=text, query=request.query_string, headers=headers)


class SlackHttpEndpoints:
    """HTTP mode: Slack POSTs to the daemon's HTTP server; each request is verified, then dispatched by bolt.

    The routes are served by the shared server; as the daemon's Slack intake, start() and stop() open and close
    them to Slack (closed, a request is answered 503 and Slack retries it later).
    """

    def __init__(self, app: AsyncApp, settings: SlackSettings, *, signing_secret: str, rules: PayloadRules) -> None:
        self._bolt = app
        self._rules = rules
        self._verifier = SlackRequestVerifier(signing_secret, max_body_bytes=settings.max_body_bytes)
        self._open = False
        self.max_body_bytes = settings.max_body_bytes

    def routes(self) -> list[web.RouteDef]:
        # Bolt tells events, actions and commands apart by the payload, so the three URLs share one handler;
        # separate URLs only mirror the manifest. The server's client_max_size must be max_body_bytes, so that
        # a chunked or lying body is stopped while it is read.
        return [web.post(path, self._handle) for path in (EVENTS_PATH, INTERACTIVITY_PATH, COMMANDS_PATH)]

    async def start(self) -> None:
        self._open = True

    async def stop(self) -> None:
        # Before the daemon's resources close: an action taken now could not finish.
        self._open = False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Verify and check the payload, then hand to bolt, which answers once the listener has called ack()."""
        if not self._open:
            return web.Response(status=503, text="not accepting Slack requests now")
        try:
            body = await self._verifier.verified_body(request)
            text = checked_text(request, body, self._rules)
        except RequestRejected as rejected:
            logger.warning("refused Slack request to %s from %s: %s", request.path, request.remote, rejected.reason)
            return web.Response(status=rejected.status, text=_reason(rejected.status))
        return await to_aiohttp_response(await self._bolt.async_dispatch(_bolt_request(request, text)))


def _reason(status: int) -> str:
    # Deliberately vague: which check failed is for the log, not for whoever sent the request.
    return {400: "bad request", 413: "request body too large"}.get(status, "unauthorized")
