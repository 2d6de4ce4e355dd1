"""HTTP mode: signed Slack requests reach the handlers; unsigned, stale, replayed or oversized ones do not."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from mastodon_mock.testing.server import MockServer
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from mentiondesk.bot.config import Config, ConfigError, HttpSettings, Secrets, SlackSettings, parse_settings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.slack.http import ReplayGuard, SlackHttpEndpoints
from mentiondesk.bot.slack.inbound import PayloadRules, action_number
from mentiondesk.bot.web.server import WebServer
from mentiondesk.storage.models import Ticket
from tests.conftest import BRAND_TOKEN, eventually, settings_dict
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows

SECRET = "test-signing-secret"  # signs requests to a local test server, not a credential
ALICE, BOB = "U0ALICE", "U0BOB"
FORM = "application/x-www-form-urlencoded"
Start = Callable[[Config], Awaitable[Daemon]]


def signed(body: bytes, *, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """Headers as Slack sends them: v0 HMAC-SHA256 of ``v0:{ts}:{body}``."""
    timestamp = str(int(time.time()) if ts is None else ts)
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}


def interactive_body(payload: dict[str, Any]) -> bytes:
    # Slack posts interactivity as a form with the JSON in one "payload" field.
    return urlencode({"payload": json.dumps(payload)}).encode()


def http_settings(**values: Any) -> SlackSettings:
    return SlackSettings(default_channel="C0SUPPORT", mode="http", **values)


# ---------------------------------------------------------------- the server alone, with a tiny bolt app


class Recorder:
    """A bolt app with one slash command listener, recording what reached it."""

    def __init__(self, slack: FakeSlack) -> None:
        self.commands: list[dict[str, Any]] = []
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url, retry_handlers=[])
        self.app = AsyncApp(client=client, request_verification_enabled=False)
        self.app.command("/mentiondesk")(self._on_command)

    async def _on_command(self, ack: Any, command: dict[str, Any]) -> None:
        await ack(f"got {command['text']}")
        self.commands.append(command)


ServerFactory = Callable[..., Awaitable[tuple[str, Recorder]]]


@pytest.fixture
async def serve(slack: FakeSlack) -> AsyncIterator[ServerFactory]:
    """Serve Slack's endpoints on web servers on free ports; returns (base URL, recorder). All stop at teardown."""
    servers: list[WebServer] = []

    async def start(**settings: Any) -> tuple[str, Recorder]:
        recorder = Recorder(slack)
        endpoints = SlackHttpEndpoints(
            recorder.app, http_settings(**settings), signing_secret=SECRET, rules=PayloadRules()
        )
        server = WebServer(HttpSettings(port=0), max_body_bytes=endpoints.max_body_bytes)
        server.add_routes(endpoints.routes())
        await server.start()
        await endpoints.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}", recorder

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def command_body(slack: FakeSlack, text: str = "mine") -> bytes:
    return urlencode(slack.slash_command_payload(ALICE, "/mentiondesk", text, "C0SUPPORT")).encode()


async def send(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], content_type: str = FORM
) -> tuple[int, str]:
    async with http.post(url, data=body, headers={"Content-Type": content_type, **headers}) as response:
        return response.status, await response.text()


async def test_signed_slash_command_reaches_bolt(
    serve: ServerFactory, http: aiohttp.ClientSession, slack: FakeSlack
) -> None:
    base, recorder = await serve()
    body = command_body(slack, "unclaimed")
    status, text = await send(http, f"{base}/slack/commands", body, signed(body))
    assert (status, text) == (200, "got unclaimed")
    assert [c["user_id"] for c in recorder.commands] == [ALICE]


def _missing_timestamp(body: bytes) -> dict[str, str]:
    return {"X-Slack-Signature": signed(body)["X-Slack-Signature"]}


def _missing_signature(body: bytes) -> dict[str, str]:
    return {"X-Slack-Request-Timestamp": signed(body)["X-Slack-Request-Timestamp"]}


def _wrong_secret(body: bytes) -> dict[str, str]:
    return signed(body, secret="not-the-secret")


def _other_body(body: bytes) -> dict[str, str]:
    return signed(body + b"&text=tampered")


def _six_minutes_old(body: bytes) -> dict[str, str]:
    return signed(body, ts=int(time.time()) - 360)


def _six_minutes_ahead(body: bytes) -> dict[str, str]:
    return signed(body, ts=int(time.time()) + 360)


def _timestamp_not_integer(body: bytes) -> dict[str, str]:
    ts = f"{time.time():.3f}"
    digest = hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def _non_ascii_signature(body: bytes) -> dict[str, str]:
    return {**signed(body), "X-Slack-Signature": "v0=é"}


@pytest.mark.parametrize(
    ("make_headers", "reason"),
    [
        (lambda body: {}, "missing"),
        (_missing_timestamp, "missing"),
        (_missing_signature, "missing"),
        (_wrong_secret, "signature mismatch"),
        (_other_body, "signature mismatch"),
        (_non_ascii_signature, "signature mismatch"),
        (_six_minutes_old, "outside the replay window"),
        (_six_minutes_ahead, "outside the replay window"),
        (_timestamp_not_integer, "not an integer"),
    ],
)
async def test_unverified_requests_are_refused(
    serve: ServerFactory,
    http: aiohttp.ClientSession,
    slack: FakeSlack,
    caplog: pytest.LogCaptureFixture,
    make_headers: Callable[[bytes], dict[str, str]],
    reason: str,
) -> None:
    base, recorder = await serve()
    body = command_body(slack)
    headers = make_headers(body)
    with caplog.at_level(logging.WARNING, logger="mentiondesk.bot.slack.http"):
        status, text = await send(http, f"{base}/slack/commands", body, headers)
    assert (status, text) == (401, "unauthorized")
    assert recorder.commands == []
    assert reason in caplog.text
    assert SECRET not in caplog.text
    if "X-Slack-Signature" in headers:
        assert headers["X-Slack-Signature"] not in caplog.text


async def test_a_replayed_request_is_refused(
    serve: ServerFactory, http: aiohttp.ClientSession, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    base, recorder = await serve()
    body = command_body(slack)
    headers = signed(body)
    assert (await send(http, f"{base}/slack/commands", body, headers))[0] == 200
    with caplog.at_level(logging.WARNING, logger="mentiondesk.bot.slack.http"):
        assert (await send(http, f"{base}/slack/commands", body, headers))[0] == 401
    assert len(recorder.commands) == 1
    assert "replay" in caplog.text


async def test_slack_retry_is_signed_anew_and_accepted(
    serve: ServerFactory, http: aiohttp.ClientSession, slack: FakeSlack
) -> None:
    # Slack re-sends an unacknowledged request with a new timestamp and signature; that is not a replay.
    base, recorder = await serve()
    body = command_body(slack)
    now = int(time.time())
    assert (await send(http, f"{base}/slack/commands", body, signed(body, ts=now - 2)))[0] == 200
    retry = {**signed(body, ts=now), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert (await send(http, f"{base}/slack/commands", body, retry))[0] == 200
    assert len(recorder.commands) == 2


async def test_oversized_bodies_are_refused(
    serve: ServerFactory, http: aiohttp.ClientSession, slack: FakeSlack
) -> None:
    base, recorder = await serve(max_body_bytes=2048)
    big = command_body(slack, "x" * 4096)
    assert await send(http, f"{base}/slack/commands", big, signed(big)) == (413, "request body too large")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    # No Content-Length (chunked): refused while reading, not after buffering it all.
    async with http.post(
        f"{base}/slack/commands", data=chunks(), headers={"Content-Type": FORM, **signed(big)}
    ) as response:
        assert response.status == 413
    assert recorder.commands == []

    small = command_body(slack)
    assert len(small) < 2048
    assert (await send(http, f"{base}/slack/commands", small, signed(small)))[0] == 200


async def test_slacks_ssl_check_is_answered(serve: ServerFactory, http: aiohttp.ClientSession) -> None:
    # Slack probes a slash command's URL with a form that has neither a type nor a command.
    base, recorder = await serve()
    body = b"ssl_check=1&token=fake-verification-token"
    assert (await send(http, f"{base}/slack/commands", body, signed(body)))[0] == 200
    assert recorder.commands == []


def test_two_listeners_cannot_declare_the_same_action() -> None:
    rules = PayloadRules(actions={"ticket_claim": action_number})
    with pytest.raises(ValueError, match="ticket_claim"):
        _ = rules | PayloadRules(actions={"ticket_claim": action_number})


def test_replay_memory_forgets_after_the_window_and_stays_bounded() -> None:
    guard = ReplayGuard(window_s=300, max_entries=3)
    assert guard.first_use(1000, "v0=a", now_s=1000)
    assert not guard.first_use(1000, "v0=a", now_s=1299)
    # Once the timestamp is past the window the freshness check refuses it, so it may be forgotten.
    assert guard.first_use(1001, "v0=b", now_s=1301)
    assert len(guard) == 1
    for sig in ("v0=c", "v0=d", "v0=e"):
        assert guard.first_use(1100, sig, now_s=1301)
    assert len(guard) == 3


# ---------------------------------------------------------------- the daemon in HTTP mode


def http_config(mastodon: MockServer, slack: FakeSlack, db_url: str, *, signing_secret: str | None = SECRET) -> Config:
    """A daemon config in HTTP mode (conftest's make_config has no signing secret)."""
    data = settings_dict(
        mastodon_url=mastodon.base_url,
        slack_url=slack.base_url,
        db_url=db_url,
        slack={"mode": "http"},
        http={"port": 0},
    )
    settings = parse_settings(data, source="test")
    return Config(
        settings=settings,
        secrets=Secrets(
            mastodon_token=BRAND_TOKEN, slack_bot_token=slack.bot_token, slack_signing_secret=signing_secret
        ),
    )


async def daemon_url(daemon: Daemon) -> str:
    """The daemon's Slack endpoint base URL, once its HTTP server is listening (it starts in the background)."""
    assert isinstance(daemon.slack_intake, SlackHttpEndpoints)
    server = daemon.web
    assert server is not None

    async def listening() -> bool:
        return server.port is not None

    await eventually(listening, timeout_s=5, what="HTTP server listening")
    return f"http://127.0.0.1:{server.port}"


async def test_signed_click_claims_a_ticket(
    mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start, http: aiohttp.ClientSession
) -> None:
    daemon = await start_daemon(http_config(mastodon, slack, db_url))
    base = await daemon_url(daemon)
    await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    card = slack.messages("C0SUPPORT")[0]
    number = str((await rows(daemon, Ticket))[0].id)

    forged = interactive_body(slack.block_actions_payload(BOB, "ticket_claim", number, "C0SUPPORT", card["ts"]))
    assert (await send(http, f"{base}/slack/interactivity", forged, signed(forged, secret="guess")))[0] == 401

    click = interactive_body(slack.block_actions_payload(ALICE, "ticket_claim", number, "C0SUPPORT", card["ts"]))
    assert (await send(http, f"{base}/slack/interactivity", click, signed(click)))[0] == 200
    await slack.wait_for(lambda: any("Assigned to <@U0ALICE>" in str(u["blocks"]) for u in slack.updates))
    assert (await rows(daemon, Ticket))[0].assignee_slack_id == ALICE


async def test_url_verification_challenge(
    mastodon: MockServer, slack: FakeSlack, db_url: str, start_daemon: Start, http: aiohttp.ClientSession
) -> None:
    daemon = await start_daemon(http_config(mastodon, slack, db_url))
    base = await daemon_url(daemon)
    body = json.dumps({"token": "x", "challenge": "c-123", "type": "url_verification"}).encode()
    status, text = await send(http, f"{base}/slack/events", body, signed(body), content_type="application/json")
    assert status == 200
    assert json.loads(text) == {"challenge": "c-123"}


def test_http_mode_without_signing_secret_refuses_to_start(tmp_path: Path) -> None:
    data = settings_dict(
        mastodon_url="http://127.0.0.1:9",
        slack_url="http://127.0.0.1:9",
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        slack={"mode": "http"},
    )
    config = Config(
        settings=parse_settings(data, source="test"),
        secrets=Secrets(mastodon_token=BRAND_TOKEN, slack_bot_token="xoxb-test-bot"),
    )
    with pytest.raises(ConfigError, match="MENTIONDESK_SLACK_SIGNING_SECRET"):
        Daemon(config)


# ---------------------------------------------------------------- signed but malformed

JSON = "application/json"
# Slack waits three seconds for an answer; a refusal must come well before that.
QUICK_S = 2.0


def _payload(payload: object) -> tuple[str, bytes, str]:
    return INTERACTIVITY, urlencode({"payload": json.dumps(payload)}).encode(), FORM


def _raw(path: str, body: bytes, content_type: str) -> tuple[str, bytes, str]:
    return path, body, content_type


INTERACTIVITY, EVENTS, COMMANDS = "/slack/interactivity", "/slack/events", "/slack/commands"


def malformed_requests(slack: FakeSlack) -> dict[str, tuple[tuple[str, bytes, str], str]]:
    """Signed requests our listeners could not act on: (path, body, content type) and what the log must say."""

    def click(value: str, **changes: Any) -> dict[str, Any]:
        payload = slack.block_actions_payload(
            ALICE, "ticket_claim", value, "C0SUPPORT", "1700000000.000100", forged=True
        )
        payload.update(changes)
        return payload

    no_user = click("1")
    del no_user["user"]
    priority = slack.block_actions_payload(ALICE, "ticket_priority", "", "C0SUPPORT", "1700000000.000100", forged=True)
    priority["actions"][0]["selected_option"] = {"value": "1:critical"}

    def submission(metadata: str) -> dict[str, Any]:
        return slack.view_submission_payload(ALICE, "reply_modal", metadata, {})

    command = slack.slash_command_payload(ALICE, "/mentiondesk", "mine", "C0SUPPORT")
    del command["user_id"]
    return {
        "body not JSON": (_raw(EVENTS, b'{"type": "event_callback", ', JSON), "not valid JSON"),
        "JSON array": (_raw(EVENTS, b'[{"type": "event_callback"}]', JSON), "not a JSON object"),
        "JSON number": (_raw(EVENTS, b"42", JSON), "not a JSON object"),
        "empty body": (_raw(EVENTS, b"", JSON), "neither"),
        "payload=null": (_raw(INTERACTIVITY, b"payload=null", FORM), "not a JSON object"),
        "payload not JSON": (_raw(INTERACTIVITY, b"payload=%7Bbroken", FORM), "not valid JSON"),
        "payload an array": (_payload([click("1")]), "not a JSON object"),
        "payload without user": (_payload(no_user), "user.id"),
        "user without id": (_payload(click("1", user={"name": "alice"})), "user.id"),
        "unknown type": (_payload(click("1", type="mystery")), "unknown payload type"),
        "no actions": (_payload(click("1", actions=[])), "actions"),
        "claim value not a number": (_payload(click("abc")), "ticket_claim"),
        "claim value not ASCII digits": (_payload(click("١٢")), "ticket_claim"),
        "claim value out of range": (_payload(click("99999999999")), "ticket_claim"),
        "claim value zero": (_payload(click("0")), "ticket_claim"),
        "priority not one we offer": (_payload(priority), "ticket_priority"),
        "private_metadata not JSON": (_payload(submission("{broken")), "private_metadata"),
        "private_metadata without ticket": (_payload(submission('{"acct": "alice"}')), "private_metadata"),
        "private_metadata an array": (_payload(submission("[1, 2]")), "private_metadata"),
        "event without event": (_raw(EVENTS, json.dumps({"type": "event_callback"}).encode(), JSON), "event"),
        "command without user": (_raw(COMMANDS, urlencode(command).encode(), FORM), "user_id"),
    }


async def test_signed_malformed_requests_get_400_at_once(
    mastodon: MockServer,
    slack: FakeSlack,
    db_url: str,
    start_daemon: Start,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = await start_daemon(http_config(mastodon, slack, db_url))
    base = await daemon_url(daemon)
    answers: dict[str, tuple[int, str]] = {}
    slow: dict[str, float] = {}
    logged: dict[str, bool] = {}
    for name, ((path, body, content_type), reason) in malformed_requests(slack).items():
        caplog.clear()
        started = time.monotonic()
        with caplog.at_level(logging.WARNING):
            answers[name] = await send(http, base + path, body, signed(body), content_type=content_type)
        if time.monotonic() - started > QUICK_S:
            slow[name] = time.monotonic() - started
        refusals = [r.getMessage() for r in caplog.records if r.name == "mentiondesk.bot.slack.http"]
        logged[name] = len(refusals) == 1 and reason in refusals[0] and SECRET not in caplog.text
    assert answers == {name: (400, "bad request") for name in answers}
    assert slow == {}
    assert logged == {name: True for name in logged}
    assert slack.ephemerals == [] and slack.views == []

    # The daemon is none the worse: a genuine click still claims the ticket.
    await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    card = slack.messages("C0SUPPORT")[0]
    number = str((await rows(daemon, Ticket))[0].id)
    click = interactive_body(slack.block_actions_payload(ALICE, "ticket_claim", number, "C0SUPPORT", card["ts"]))
    assert (await send(http, f"{base}/slack/interactivity", click, signed(click)))[0] == 200
    await slack.wait_for(lambda: any("Assigned to <@U0ALICE>" in str(u["blocks"]) for u in slack.updates))
