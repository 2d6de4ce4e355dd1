"""The hot paging endpoints (mentions, a hashtag's timeline) read with aiohttp: their JSON goes to FeedItems as is.

Mastodon.py turns every answer into its typed objects (entities, parsed datetimes) before post_from_json reads
them field by field again; in a catch-up that was a quarter of the daemon's CPU. These two GETs are read here
instead, keeping what Mastodon.py gave the daemon: the same request, one bound on the whole call (a server
trickling its body included), the exception classes Mastodon.py raises for the same answer (bot/retry.py sorts
them), and the rate-limit headers of every answer, errors included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from mastodon.errors import (
    MastodonAPIError,
    MastodonBadGatewayError,
    MastodonError,
    MastodonGatewayTimeoutError,
    MastodonInternalServerError,
    MastodonNetworkError,
    MastodonNotFoundError,
    MastodonRatelimitError,
    MastodonServerError,
    MastodonServiceUnavailableError,
    MastodonUnauthorizedError,
)
from yarl import URL

logger = logging.getLogger(__name__)

# Mastodon.py's words, kept: bot/mastodon/explain.py recognises its errors by them.
_API_ERROR = "Mastodon API returned error"
_NOT_JSON = "Could not parse response as JSON"
# How much of an unexpected body an error message quotes.
_QUOTED_BYTES = 200

_ERRORS: dict[int, type[MastodonAPIError]] = {
    401: MastodonUnauthorizedError,
    404: MastodonNotFoundError,
    500: MastodonInternalServerError,
    502: MastodonBadGatewayError,
    503: MastodonServiceUnavailableError,
    504: MastodonGatewayTimeoutError,
}


@dataclass(frozen=True)
class RateLimitSeen:
    """What one answer's X-RateLimit-* headers said; None where a header was missing or unreadable."""

    remaining: int | None
    limit: int | None
    reset: float | None  # Unix time by this machine's clock


def rate_limit_seen(headers: Mapping[str, str], *, now: float) -> RateLimitSeen:
    """Read as Mastodon.py reads them: the reset is Unix seconds or an ISO time, moved by how far the
    server's clock (its Date header) is off ours."""
    reset = _reset_time(headers.get("X-RateLimit-Reset"))
    if reset is not None and (server_now := _http_date(headers.get("Date"))) is not None:
        reset += now - server_now
    return RateLimitSeen(
        remaining=_integer(headers.get("X-RateLimit-Remaining")),
        limit=_integer(headers.get("X-RateLimit-Limit")),
        reset=reset,
    )


def _integer(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _reset_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)  # GoToSocial
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)  # Mastodon
    except ValueError:
        return None
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()


def _http_date(value: str | None) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None


def http_error(status: int, reason: str, body: bytes) -> MastodonError:
    """The exception Mastodon.py raises for this answer, with the server's `error` message."""
    if status == 429:
        return MastodonRatelimitError("Hit rate limit.")
    message = _server_message(body)
    if status == 404 and not message:
        message = "Endpoint not found."
    kind = _ERRORS.get(status) or (MastodonServerError if 500 <= status <= 511 else MastodonAPIError)
    return kind(_API_ERROR, status, reason, message)


def _server_message(body: bytes) -> Any:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        return data.get("error")
    return data if isinstance(data, str) else None


def read_page(what: str, status: int, body: bytes) -> list[Any]:
    """A 2xx answer's entries; MastodonAPIError when it is not a JSON list. Entries are not looked at."""
    try:
        page = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MastodonAPIError(
            f"{_NOT_JSON}, response code was {status}, bad json content was {body[:_QUOTED_BYTES]!r}.",
            f"Exception was: {exc}",
        ) from exc
    if not isinstance(page, list):
        raise MastodonAPIError(
            f"Mastodon call {what} answered a JSON {type(page).__name__} where a list of entries belongs: "
            f"{body[:_QUOTED_BYTES]!r}"
        )
    return page


class PageReader:
    """GETs of JSON lists from one Mastodon server, each bounded by timeout_s as a whole.

    Its aiohttp session is made on first use, on the running loop, and closed by aclose().
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout_s: float,
        on_rate_limit: Callable[[RateLimitSeen], None],
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._timeout_s = timeout_s
        self._on_rate_limit = on_rate_limit
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # Mastodon.py goes through the proxy the environment names, as requests does; so do these calls.
        self._proxy: URL | None = None
        self._proxy_headers: dict[str, str] | None = None
        try:
            self._proxy, proxy_auth = get_env_proxy_for_url(URL(self._base_url))
        except LookupError:
            pass
        else:
            self._proxy_headers = {"Proxy-Authorization": proxy_auth.encode()} if proxy_auth is not None else None

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the Mastodon client is closed")
        if self._session is None:
            # No timeout of aiohttp's own: get() bounds each call as a whole.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def get(self, what: str, path: str, params: Sequence[tuple[str, str]]) -> list[Any]:
        """The entries at path; ``what`` names the call in logs and errors (Mastodon.py's method name)."""
        session = self._open_session()
        started = time.monotonic()
        bound = asyncio.timeout(self._timeout_s)
        try:
            async with (
                bound,
                session.get(
                    self._base_url + path,
                    params=params,
                    headers=self._headers,
                    proxy=self._proxy,
                    proxy_headers=self._proxy_headers,
                ) as response,
            ):
                self._on_rate_limit(rate_limit_seen(response.headers, now=time.time()))
                body = await response.read()
        except TimeoutError as exc:
            if bound.expired():
                raise MastodonNetworkError(f"Mastodon call {what} timed out after {self._timeout_s:g}s") from exc
            raise MastodonNetworkError(f"Could not complete request: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise MastodonNetworkError(f"Could not complete request: {exc}") from exc
        except asyncio.CancelledError:
            # The caller was cancelled (the daemon stopping): the request is dropped, and the operator learns which.
            logger.warning(
                "Mastodon call %s cancelled after %.1fs: its request is abandoned", what, time.monotonic() - started
            )
            raise
        if response.status >= 400:
            raise http_error(response.status, response.reason or "", body)
        return read_page(what, response.status, body)
