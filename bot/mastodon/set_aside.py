"""Feed entries that cannot be read or stored: tried a few times, then set aside so the feed moves on.

A post that failed because the database or Mastodon was away is retried for as long as it takes: only a
failure that trying again cannot cure (the database refused the values, the post is gone) counts towards
MAX_TRIES. What is set aside goes to the dead_letters table with the reason and the entry as Mastodon sent it;
`mentiondesk check` shows them.
"""

from __future__ import annotations

import logging

from mastodon.errors import MastodonAPIError, MastodonError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.mastodon.client import FeedItem, raw_json, raw_status
from mentiondesk.bot.mastodon.fields import cut, text_field
from mentiondesk.storage.db import transaction
from mentiondesk.storage.dead_letters import refused_values, set_aside
from mentiondesk.storage.models import DeadLetter, max_length

logger = logging.getLogger(__name__)

MAX_TRIES = 3
REASON_MAX = 500
# Mastodon's answers about this post's own requests (its parent, its thread) that another try will not change.
_POST_REFUSED_STATUSES = frozenset({400, 404, 410, 422})
_STATUS_ID_MAX = max_length(DeadLetter.status_id)
_STATUS_URI_MAX = max_length(DeadLetter.status_uri)


def is_transient(exc: BaseException) -> bool:
    """Whether storing the same post again can succeed: the database or Mastodon away, not the post's fault."""
    if isinstance(exc, MastodonError):
        status = exc.args[1] if isinstance(exc, MastodonAPIError) and len(exc.args) > 1 else None
        return status not in _POST_REFUSED_STATUSES
    if isinstance(exc, SQLAlchemyError):
        return not refused_values(exc)
    return isinstance(exc, OSError | TimeoutError)


def failure_reason(exc: BaseException) -> str:
    """One line saying what failed: the underlying error's type and first line, not SQLAlchemy's SQL dump."""
    root: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    while root.__cause__ is not None:  # asyncpg's own error sits under SQLAlchemy's adapter
        root = root.__cause__
    lines = str(root).strip().splitlines()
    return cut(f"{type(root).__name__}: {lines[0]}" if lines else type(root).__name__, REASON_MAX)


class SetAside:
    """One feed's entries that failed: how often each did, and setting them aside in the dead-letter table."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, feed: str) -> None:
        self._sessions = sessions
        self._feed = feed
        self._failures: dict[str, int] = {}
        self.count = 0  # entries this feed set aside since the start

    def failed(self, item: FeedItem) -> int:
        """Note one more try at item that trying again will not cure; returns how many there have been."""
        tries = self._failures.get(item.key, 0) + 1
        self._failures[item.key] = tries
        return tries

    def stored(self, item: FeedItem) -> None:
        self._failures.pop(item.key, None)

    async def put(self, item: FeedItem, reason: str, *, attempts: int = 1) -> None:
        """Record item as set aside (once per entry, however often it is read); raises what the database raises."""
        status_id, status_uri = _status_of(item)
        reason = cut(text_field(reason), REASON_MAX)
        async with transaction(self._sessions) as session:
            await set_aside(
                session,
                feed=self._feed,
                item_key=item.key,
                status_id=status_id,
                status_uri=status_uri,
                reason=reason,
                payload=raw_json(item.raw),
                attempts=attempts,
            )
        self._failures.pop(item.key, None)
        self.count += 1
        logger.warning(
            "%s: status %s set aside: %s",
            self._feed,
            status_id or item.key,
            reason,
            extra={"feed": self._feed, "status_id": status_id, "attempt": attempts},
        )


def _status_of(item: FeedItem) -> tuple[str | None, str | None]:
    """The status id and URI, as far as they can be read, cut to fit (they may be what was wrong)."""
    if item.post is not None:
        return item.post.id, item.post.uri
    status = raw_status(item.raw)
    if status is None:
        return None, None
    status_id, uri = text_field(status.get("id")), text_field(status.get("uri"))
    return (cut(status_id, _STATUS_ID_MAX) or None), (cut(uri, _STATUS_URI_MAX) or None)
