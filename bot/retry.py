"""One place that sorts errors from Mastodon and Slack into: wait Retry-After, retry soon, back off, or fail."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Protocol, TypeVar

import aiohttp
from mastodon.errors import (
    MastodonAPIError,
    MastodonNetworkError,
    MastodonRatelimitError,
    MastodonServerError,
    MastodonUnauthorizedError,
)
from slack_sdk.errors import SlackApiError

from mentiondesk.bot import metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RateLimited(Protocol):
    @property
    def ratelimit_remaining(self) -> int | None: ...

    @property
    def ratelimit_reset(self) -> float | None: ...


class Verdict(Enum):
    RATE_LIMITED = "rate_limited"  # wait as long as the server said
    TRANSIENT = "transient"  # network trouble or a 5xx: back off with jitter
    FATAL = "fatal"  # credentials or a request the server will never accept: say so loudly


@dataclass(frozen=True)
class Sorted:
    verdict: Verdict
    reason: str
    wait_s: float | None = None  # set for RATE_LIMITED


def backoff_delay(attempt: int, *, base_s: float = 1.0, cap_s: float = 300.0) -> float:
    """Full-jitter exponential backoff: spreads reconnecting clients instead of stampeding together."""
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None, *, default_s: float = 1.0) -> float:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return default_s
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default_s


def sort_mastodon_error(exc: BaseException, *, ratelimit_reset: float | None = None) -> Sorted:
    if isinstance(exc, MastodonRatelimitError):
        wait = max(1.0, (ratelimit_reset or time.time() + 60) - time.time())
        return Sorted(Verdict.RATE_LIMITED, "Mastodon rate limit reached", wait_s=wait)
    if isinstance(exc, MastodonUnauthorizedError):
        return Sorted(Verdict.FATAL, f"Mastodon refused the access token: {exc}")
    if isinstance(
        exc, MastodonNetworkError | MastodonServerError | aiohttp.ClientError | asyncio.TimeoutError | OSError
    ):
        return Sorted(Verdict.TRANSIENT, f"{type(exc).__name__}: {exc}")
    return Sorted(Verdict.FATAL, f"{type(exc).__name__}: {exc}")


def sort_slack_error(exc: BaseException) -> Sorted:
    """Whether to try again; what a FATAL Slack error means, and how far it reaches, is bot.slack.problems'."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        if status == 429:
            wait = parse_retry_after(exc.response.headers.get("Retry-After"))
            return Sorted(Verdict.RATE_LIMITED, "Slack rate limit", wait_s=wait)
        if status >= 500:
            return Sorted(Verdict.TRANSIENT, f"Slack answered HTTP {status}")
        if error in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
            return Sorted(Verdict.TRANSIENT, f"Slack error {error}")
        if error == "ratelimited":
            return Sorted(Verdict.RATE_LIMITED, "Slack rate limit", wait_s=1.0)
        return Sorted(Verdict.FATAL, f"Slack error {error or status}")
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return Sorted(Verdict.TRANSIENT, f"{type(exc).__name__}: {exc}")
    return Sorted(Verdict.FATAL, f"{type(exc).__name__}: {exc}")


# Slack's answers that mean the token or the app is refused, not the request.
SLACK_REFUSALS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "missing_scope"}
)


def error_kind(exc: BaseException) -> str:
    """A failed API call's kind, for the error counters; the same sorting as sort_*_error, a little finer.

    rate_limited, timeout, server_error, network, refused (credentials or permissions), client_error (Slack or
    Mastodon will not take this request), other.
    """
    if isinstance(exc, MastodonRatelimitError):
        return "rate_limited"
    if isinstance(exc, SlackApiError):
        verdict = sort_slack_error(exc).verdict
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        if verdict is Verdict.RATE_LIMITED:
            return "rate_limited"
        if verdict is Verdict.TRANSIENT:
            return "server_error"
        return "refused" if error in SLACK_REFUSALS or exc.response.status_code in (401, 403) else "client_error"
    if _timed_out(exc):
        return "timeout"
    if isinstance(exc, MastodonUnauthorizedError):
        return "refused"
    if isinstance(exc, aiohttp.ClientResponseError):
        if exc.status == 429:
            return "rate_limited"
        return "server_error" if exc.status >= 500 else "refused" if exc.status in (401, 403) else "client_error"
    if isinstance(exc, MastodonServerError):
        return "server_error"
    if isinstance(exc, MastodonNetworkError | aiohttp.ClientError | OSError):
        return "network"
    if isinstance(exc, MastodonAPIError):
        return "client_error"
    return "other"


@contextmanager
def errors_counted(api: str, *, ignore: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Count an exception leaving the block as a failed call to `api` (but not the `ignore` ones); re-raise it."""
    try:
        yield
    except ignore:
        raise
    except Exception as exc:
        metrics.API_ERRORS.labels(api=api, kind=error_kind(exc)).inc()
        raise


def _timed_out(exc: BaseException) -> bool:
    # Mastodon.py and our bounded calls wrap the timeout in a MastodonNetworkError: look down the chain.
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError) or type(seen).__name__ in ("ReadTimeout", "ConnectTimeout", "Timeout"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# Slack's rate limits are counted per minute: no 429 asks for a longer wait than that.
SLACK_LIMIT_WINDOW_S = 60.0
SLACK_CALL_ATTEMPTS = 3


async def wait_out_slack_rate_limit(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    max_wait_s: float = SLACK_LIMIT_WINDOW_S,
    attempts: int = SLACK_CALL_ATTEMPTS,
) -> T:
    """Make a Slack call; when Slack answers 429, wait as long as its Retry-After says and make it again.

    For the calls listeners make while someone waits on them (the outbox's sender retries on its own): a
    rate limit is Slack asking for patience, not refusing. Past ``attempts`` calls, or when the wait would be
    longer than ``max_wait_s`` (a modal's trigger_id expires three seconds after the click), the 429 is raised.
    """
    attempt = 1
    while True:
        try:
            return await call()
        except SlackApiError as exc:
            verdict = sort_slack_error(exc)
            wait_s = verdict.wait_s if verdict.verdict is Verdict.RATE_LIMITED else None
            if wait_s is None or wait_s > max_wait_s or attempt >= attempts:
                raise
        logger.info("Slack rate limit on %s: trying again in %.1fs", what, wait_s)
        metrics.rate_limit_waited("slack", wait_s)
        await asyncio.sleep(wait_s)
        attempt += 1


# Requests kept in reserve per rate-limit window (Mastodon: 300 per 5 minutes) for replies and lookups.
RATE_LIMIT_LOW_WATER = 20


def rate_limit_pause_s(client: RateLimited, *, cap_s: float, what: str) -> float:
    """Nearly out of requests for this window: sit out the rest of it rather than run into 429s."""
    remaining, reset = client.ratelimit_remaining, client.ratelimit_reset
    if remaining is None or reset is None or remaining > RATE_LIMIT_LOW_WATER:
        return 0.0
    pause_s = min(max(0.0, reset - time.time()), cap_s)
    if pause_s > 0:
        metrics.rate_limit_waited("mastodon", pause_s)
        logger.warning("%d Mastodon requests left in this window; pausing %s %.0fs", remaining, what, pause_s)
    return pause_s
