"""The daemon's one aiohttp server: parts of the daemon (health probes, Slack's HTTP mode, the dashboard) add routes."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiohttp import web

from mentiondesk.bot.config import HttpSettings

logger = logging.getLogger(__name__)

# Slack's handlers answer within Slack's 3 s (listeners ack first) and a dashboard query within a second or
# two, so a short grace is enough to finish them.
SHUTDOWN_GRACE_S = 5.0
# aiohttp's own default; Slack's HTTP mode asks for its own limit.
DEFAULT_MAX_BODY_BYTES = 1024**2


class WebServer:
    """One listening socket for every HTTP route; routes are added before start()."""

    def __init__(self, settings: HttpSettings, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self._settings = settings
        self._max_body_bytes = max_body_bytes
        self._routes: list[web.RouteDef] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def add_routes(self, routes: Iterable[web.RouteDef]) -> None:
        if self._runner is not None:
            raise RuntimeError("routes are added before the server starts")
        self._routes.extend(routes)

    @property
    def port(self) -> int | None:
        """The port actually listened on (useful with port 0); None until started."""
        return self._port

    async def start(self) -> None:
        # client_max_size bounds what aiohttp will ever buffer for one request.
        app = web.Application(client_max_size=self._max_body_bytes)
        app.add_routes(self._routes)
        runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_GRACE_S)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self._settings.host, self._settings.port)
            await site.start()
        except BaseException:
            # The daemon retries start() (port in use) and cancels it on shutdown; a half-started runner
            # would leak its socket each time.
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        logger.info("HTTP server listening on %s:%d", self._settings.host, self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._port = None
