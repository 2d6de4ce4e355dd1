"""The brand account on Mastodon: Mastodon.py in bounded threads (calls.py), payloads normalised to Posts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from mastodon import Mastodon
from mastodon.errors import MastodonAPIError, MastodonError, MastodonNotFoundError

from mentiondesk.bot.events import AccountRef, Post, PostChange, PostDeleted, PostEdited
from mentiondesk.bot.mastodon.calls import BlockingCalls
from mentiondesk.bot.mastodon.explain import MastodonSetupError, explain
from mentiondesk.bot.mastodon.text import MentionRef, clean_fields, status_to_text

T = TypeVar("T")

USER_AGENT = "mentiondesk/0.1 (+https://github.com/mentiondesk/mentiondesk)"


@dataclass(frozen=True)
class StatusLimits:
    max_characters: int
    characters_reserved_per_url: int


@dataclass(frozen=True)
class FeedItem:
    """One entry of a paged feed: the feed's own id (the cursor) and the post it carries."""

    cursor_id: str
    post: Post | None


def _as_datetime(value: Any) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def account_from_json(data: Mapping[str, Any]) -> AccountRef:
    return AccountRef(
        id=str(data["id"]),
        acct=str(data.get("acct") or data.get("username") or ""),
        display_name=str(data.get("display_name") or ""),
        url=str(data.get("url") or ""),
        bot=bool(data.get("bot")),
    )


def post_from_json(data: Mapping[str, Any]) -> Post:
    """Normalise a status from the REST API (Mastodon.py dict) or the streaming API (raw JSON)."""
    mentions = [
        MentionRef(url=str(m.get("url") or ""), acct=str(m.get("acct") or "")) for m in data.get("mentions") or []
    ]
    text = status_to_text(
        str(data.get("content") or ""),
        mentions=mentions,
        spoiler_text=str(data.get("spoiler_text") or ""),
    )
    in_reply_to = data.get("in_reply_to_id")
    in_reply_to_account = data.get("in_reply_to_account_id")
    post = Post(
        id=str(data["id"]),
        uri=str(data.get("uri") or data.get("url") or data["id"]),
        url=str(data.get("url") or data.get("uri") or ""),
        account=account_from_json(data["account"]),
        text=text,
        created_at=_as_datetime(data["created_at"]),
        visibility=str(data.get("visibility") or "public"),
        language=str(data["language"]) if data.get("language") else None,
        in_reply_to_id=str(in_reply_to) if in_reply_to is not None else None,
        in_reply_to_account_id=str(in_reply_to_account) if in_reply_to_account is not None else None,
        tags=tuple(str(t.get("name", "")).lower() for t in data.get("tags") or []),
        is_reblog=data.get("reblog") is not None,
        edited_at=_as_datetime(data["edited_at"]) if data.get("edited_at") else None,
        mentioned_account_ids=tuple(str(m["id"]) for m in data.get("mentions") or [] if m.get("id") is not None),
    )
    # Names, handles, URLs and tags are the customer's (or their server's): no bidi or invisible controls.
    return clean_fields(post)


def notification_item(data: Mapping[str, Any]) -> FeedItem:
    # A deleted status can leave its notification behind with status=null (some servers drop it).
    status = data.get("status")
    post = post_from_json(status) if data.get("type") == "mention" and status else None
    return FeedItem(cursor_id=str(data["id"]), post=post)


def status_item(data: Mapping[str, Any]) -> FeedItem:
    return FeedItem(cursor_id=str(data["id"]), post=post_from_json(data))


# Mastodon names the edit event "status.update"; mastodon-mock 0.6 sends it as "status_update".
EDIT_EVENTS = frozenset({"status.update", "status_update"})
DELETE_EVENT = "delete"
CHANGE_EVENTS = EDIT_EVENTS | {DELETE_EVENT}


def post_change_from_stream(name: str, data: str) -> PostChange | None:
    """Normalise a streamed edit (payload: the status JSON) or delete (payload: the bare status id)."""
    if name in EDIT_EVENTS:
        return PostEdited(post=post_from_json(json.loads(data)))
    if name == DELETE_EVENT:
        # SSE sends the id bare; tolerate a JSON-quoted one as well.
        status_id = data.strip().strip('"')
        if not status_id:
            raise ValueError("delete event without a status id")
        return PostDeleted(status_id=status_id)
    return None


def _by_id(item: FeedItem) -> int:
    # Mastodon ids are numeric strings (snowflakes); compare them as numbers, not text.
    return int(item.cursor_id)


class MastodonClient:
    """Async facade over Mastodon.py for the calls mentiondesk makes as the brand account."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        # "throw" instead of the default "wait": Mastodon.py would otherwise sleep inside the call,
        # in a worker thread, for up to five minutes; the daemon's own backoff handles 429s.
        self._api = Mastodon(
            access_token=token,
            api_base_url=self.base_url,
            request_timeout=timeout_s,
            ratelimit_method="throw",
            user_agent=USER_AGENT,
            version_check_mode="none",
        )
        # Not asyncio.to_thread: a call stuck past its timeout must not hold the daemon's exit (see calls.py).
        self._calls = BlockingCalls(timeout_s=timeout_s)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One Mastodon.py call, given up after mastodon.request_timeout_s as a whole."""
        return await self._calls.run(fn.__name__, fn, *args, **kwargs)

    def close(self) -> None:
        """Walk away from calls still running (each is logged): their threads are not waited for."""
        self._calls.abandon()

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    @property
    def ratelimit_reset(self) -> float | None:
        """Unix time at which the rate-limit window resets, from the last response's headers (if any)."""
        reset = self._api.ratelimit_reset
        return float(reset) if reset is not None else None

    @property
    def ratelimit_remaining(self) -> int | None:
        remaining = self._api.ratelimit_remaining
        return int(remaining) if remaining is not None else None

    @contextmanager
    def _setup_call(self) -> Iterator[None]:
        """For the calls that check the setup (check, the daemon's start): a failure says what to fix."""
        try:
            yield
        except MastodonSetupError:
            raise
        except MastodonError as exc:
            raise MastodonSetupError(explain(exc, base_url=self.base_url, timeout_s=self._timeout_s)) from exc

    async def verify_credentials(self) -> AccountRef:
        """The brand account; raises MastodonSetupError."""
        with self._setup_call():
            data = await self._call(self._api.account_verify_credentials)
        return account_from_json(data)

    async def streaming_base_url(self) -> str:
        """Where this instance serves its streaming API; large instances put it on a separate host."""
        url: object = None
        with self._setup_call():
            try:
                data = await self._call(self._api.instance_v2)
                url = ((data.get("configuration") or {}).get("urls") or {}).get("streaming")
            except MastodonAPIError:
                data = await self._call(self._api.instance_v1)
                url = (data.get("urls") or {}).get("streaming_api")
        if url:
            return str(url).replace("wss://", "https://", 1).replace("ws://", "http://", 1).rstrip("/")
        return self.base_url

    async def mentions_after(self, cursor: str | None, *, limit: int = 40) -> list[FeedItem]:
        """Mention notifications newer than cursor, oldest first (the page adjacent to cursor)."""
        kwargs: dict[str, Any] = {"types": ["mention"], "limit": limit}
        if cursor is not None:
            kwargs["min_id"] = cursor
        page = await self._call(self._api.notifications, **kwargs)
        return sorted((notification_item(n) for n in page), key=_by_id)

    async def hashtag_after(self, tag: str, cursor: str | None, *, limit: int = 40) -> list[FeedItem]:
        """Posts under #tag newer than cursor, oldest first."""
        kwargs: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            kwargs["min_id"] = cursor
        page = await self._call(self._api.timeline_hashtag, tag, **kwargs)
        return sorted((status_item(s) for s in page), key=_by_id)

    async def status_limits(self) -> StatusLimits:
        """The instance's post length limit and how many characters a link counts as."""
        with self._setup_call():
            try:
                data = await self._call(self._api.instance_v2)
                statuses = (data.get("configuration") or {}).get("statuses") or {}
            except MastodonAPIError:
                statuses = {}
        return StatusLimits(
            max_characters=int(statuses.get("max_characters") or 500),
            characters_reserved_per_url=int(statuses.get("characters_reserved_per_url") or 23),
        )

    async def post_reply(self, text: str, *, in_reply_to_id: str, visibility: str, idempotency_key: str) -> Post:
        """Publish text as the brand in reply to a status.

        The idempotency key makes a retried call (after a timeout) return the first post instead of a second one.
        """
        data = await self._call(
            self._api.status_post,
            text,
            in_reply_to_id=in_reply_to_id,
            visibility=visibility,
            idempotency_key=idempotency_key,
        )
        return post_from_json(data)

    async def status(self, status_id: str) -> Post | None:
        """The status as it is now, or None when it was deleted."""
        try:
            data = await self._call(self._api.status, status_id)
        except MastodonNotFoundError:
            return None
        return post_from_json(data)

    async def ancestors(self, status_id: str) -> list[str]:
        """Ids of the posts above status_id in its reply chain, nearest last."""
        context = await self._call(self._api.status_context, status_id)
        return [str(s["id"]) for s in context.get("ancestors") or []]
