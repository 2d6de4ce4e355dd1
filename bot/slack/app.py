"""The Slack side of the desk: a slack-bolt app whose listeners live in handlers/, reached by Socket Mode or HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from mentiondesk.bot.context import AppContext
from mentiondesk.bot.slack.inbound import MalformedPayload, PayloadRules, check_envelope, shown
from mentiondesk.bot.slack.permissions import Permissions

logger = logging.getLogger(__name__)


def build_app(
    ctx: AppContext, permissions: Permissions, client: AsyncWebClient, listeners: Iterable[Callable[[AsyncApp], None]]
) -> AsyncApp:
    """A bolt app with the given listeners registered; requests are verified before they reach it (HTTP mode).

    The listeners (handlers/) are passed in rather than imported, so the Slack side never reaches up into them.
    """
    app = AsyncApp(
        client=client,
        # Socket Mode needs no signature; in HTTP mode bot.slack.http verifies (and limits) each request
        # before bolt sees it, so bolt's own check would only repeat it.
        request_verification_enabled=False,
        raise_error_for_unhandled_request=False,
        logger=logging.getLogger("slack_bolt"),
    )

    @app.middleware
    async def provide_desk(context: dict[str, Any], next: Any) -> None:
        context["desk"] = ctx
        context["permissions"] = permissions
        await next()

    @app.error
    async def log_error(error: Exception, body: dict[str, Any]) -> None:
        logger.error("Slack %s handler failed: %s", body.get("type"), error, exc_info=error)

    for register in listeners:
        register(app)
    return app


def listeners_in_progress() -> list[asyncio.Task[Any]]:
    """Listeners that already acked and are still running (a reply on its way to Mastodon).

    bolt runs each listener after ack() in a task it does not keep; its coroutine's name is the only
    handle on it.
    """
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").endswith("run_ack_function_asynchronously")
    ]


async def finish_listeners(timeout_s: float) -> None:
    """Let listeners that already acked finish before resources close.

    Anything still running after timeout_s is left to be cancelled with the loop.
    """
    running = listeners_in_progress()
    if running:
        logger.info("waiting for %d Slack action(s) in progress", len(running))
        await asyncio.wait(running, timeout=timeout_s)


class SlackIntake(Protocol):
    """How events reach the app: Socket Mode or the HTTP endpoints."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# Frames about the connection itself, which slack-sdk acts on; they carry no envelope to ack.
_CONNECTION_FRAMES = frozenset({"hello", "disconnect"})


class SocketModeConnection:
    """Socket Mode: mentiondesk dials out to Slack, so it needs no public URL. slack-sdk reconnects on its own."""

    def __init__(
        self,
        app: AsyncApp,
        *,
        app_token: str,
        web_client: AsyncWebClient,
        rules: PayloadRules,
        request_timeout_s: float,
    ) -> None:
        self._handler = AsyncSocketModeHandler(app, app_token=app_token, web_client=web_client)
        self._rules = rules
        self._request_timeout_s = request_timeout_s
        self._upgrade_session: aiohttp.ClientSession | None = None
        client = self._handler.client
        # Every envelope is checked before bolt sees it, so bolt's handler is not registered for them directly:
        # slack-sdk would hand it only payloads it could parse, and nobody would ack the rest.
        client.socket_mode_request_listeners.clear()
        client.message_listeners.append(self._on_message)

    async def _on_message(self, _client: AsyncBaseSocketModeClient, message: dict[str, Any], _raw: str | None) -> None:
        """Hand a well-formed envelope to bolt; ack and log any other, so Slack neither waits nor retries it."""
        if message.get("type") in _CONNECTION_FRAMES:
            return
        client = self._handler.client  # the one calling; typed as the aiohttp client bolt's handler takes
        try:
            check_envelope(message, self._rules)
        except MalformedPayload as exc:
            envelope_id = message.get("envelope_id")
            logger.warning("refused Slack envelope %s: %s", shown(envelope_id), exc)
            if isinstance(envelope_id, str) and envelope_id:
                await client.send_socket_mode_response(SocketModeResponse(envelope_id=envelope_id))
            return
        request = SocketModeRequest.from_dict(message)
        assert request is not None  # check_envelope saw its type, envelope_id and payload
        await self._handler.handle(client, request)

    async def start(self) -> None:
        await self._bound_upgrades()
        await self._handler.connect_async()
        logger.info("Slack Socket Mode connected")

    async def _bound_upgrades(self) -> None:
        """Give slack-sdk's websocket handshakes request_timeout_s instead of aiohttp's 300 s default.

        slack-sdk opens the websocket through a session of its own; the one put in its place here is closed
        with the client. Per read, not in total: once upgraded, the connection's reads are the websocket's.
        """
        if self._upgrade_session is not None:
            return
        client = self._handler.client
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._request_timeout_s, sock_read=self._request_timeout_s
        )
        await client.aiohttp_client_session.close()
        self._upgrade_session = client.aiohttp_client_session = aiohttp.ClientSession(timeout=timeout)

    async def connected(self) -> bool:
        """Whether the websocket is up now (False while slack-sdk reconnects); /readyz asks."""
        return bool(await self._handler.client.is_connected())

    async def stop(self) -> None:
        await self._handler.close_async()
