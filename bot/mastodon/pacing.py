"""How often the watchers may spend Mastodon requests: pure functions of the budget, tested on their own.

Mastodon counts requests per account in a window (stock: 300 per 5 minutes). Every stream connect and
every stream end asks for a catch-up poll, so a server that closes streams every second would have the
daemon poll and reconnect without pause; spacing both by the budget holds whatever the stream does.
"""

from __future__ import annotations

from mentiondesk.bot.config import MastodonSettings

# Shares of the budget that polls and stream connects may use, all feeds together. The rest is for
# paging through a backlog, the refresh sweep (a third at its default), replies and lookups.
POLL_SHARE = 1 / 3
STREAM_SHARE = 1 / 10
# A stream that stayed up this long was healthy: its end starts the reconnect backoff afresh.
STREAM_STABLE_S = 60.0


def min_interval_s(settings: MastodonSettings, share: float) -> float:
    """Shortest time between two polls (or two stream connects) of one feed, so all feeds stay within share."""
    feeds = 1 + len(settings.hashtags)
    return settings.rate_limit_window_s * feeds / (settings.rate_limit_requests * share)


def next_attempt(attempt: int, *, up_s: float) -> int:
    """The backoff step after a stream ended: a normal end counts like an error unless the stream had stayed up."""
    return 1 if up_s >= STREAM_STABLE_S else attempt + 1
