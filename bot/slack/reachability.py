"""Whether Slack answers, as the daemon's own Slack calls last found it.

/readyz asks this every few seconds. Calling Slack for each probe would spend a rate-limited method (auth.test)
on health checks, so the sender's calls are recorded as they happen, and only when none was made for a while
does one auth.test, at most once a minute, say whether Slack still answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError

from mentiondesk.bot.retry import Verdict, sort_slack_error
from mentiondesk.bot.slack.problems import TOKEN_CODES

# An answer older than this says little about Slack now: the next probe makes a call of its own.
STALE_AFTER_S = 60.0


@dataclass(frozen=True)
class _Seen:
    ok: bool
    method: str
    at: float  # monotonic
    reason: str = ""


def refused_or_unreachable(exc: BaseException) -> str | None:
    """Why ``exc`` shows Slack unusable (no answer, a 5xx, the token refused); None when Slack did answer.

    A channel the bot is not in, a message Slack will not take or a rate limit are answers: Slack is there.
    """
    if isinstance(exc, TimeoutError):
        return "no answer within slack.request_timeout_s"
    sorted_ = sort_slack_error(exc)
    if sorted_.verdict is Verdict.TRANSIENT:
        return sorted_.reason
    if isinstance(exc, SlackApiError):
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        return f"Slack refuses the bot token ({error})" if error in TOKEN_CODES else None
    # Anything else is not about Slack (a bug in building the call): it says nothing either way.
    return None


class SlackReachability:
    """The last Slack call's outcome, and a cached auth.test when there was none for STALE_AFTER_S."""

    def __init__(self, auth_test: Callable[[], Awaitable[Any]]) -> None:
        self._auth_test = auth_test
        self._seen: _Seen | None = None
        self._tested_at: float | None = None
        self._lock = asyncio.Lock()

    def saw(self, method: str, exc: BaseException | None) -> None:
        """Record one call's outcome: ``exc`` None when Slack answered it."""
        reason = None if exc is None else refused_or_unreachable(exc)
        if exc is not None and reason is None and not isinstance(exc, SlackApiError):
            return
        self._seen = _Seen(ok=reason is None, method=method, at=time.monotonic(), reason=reason or "")

    async def check(self, *, timeout_s: float) -> tuple[bool, str]:
        """(Slack usable, one line saying what was last seen), calling auth.test first when that is stale."""
        if self._stale():
            async with self._lock:
                if self._stale():
                    await self._test(timeout_s)
        return self._verdict()

    def _stale(self) -> bool:
        now = time.monotonic()
        if self._seen is not None and now - self._seen.at < STALE_AFTER_S:
            return False
        return self._tested_at is None or now - self._tested_at >= STALE_AFTER_S

    async def _test(self, timeout_s: float) -> None:
        self._tested_at = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                await self._auth_test()
        except TimeoutError:
            self._seen = _Seen(False, "auth.test", time.monotonic(), f"no answer within {timeout_s:g}s")
        except Exception as exc:
            self.saw("auth.test", exc)
        else:
            self.saw("auth.test", None)

    def _verdict(self) -> tuple[bool, str]:
        seen = self._seen
        if seen is None:
            return False, "no Slack call has been answered yet"
        ago_s = time.monotonic() - seen.at
        if seen.ok:
            return True, f"{seen.method} answered {ago_s:.0f}s ago"
        return False, f"{seen.method} failed {ago_s:.0f}s ago: {seen.reason}"
