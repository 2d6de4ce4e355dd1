"""The brand account on Mastodon: Mastodon.py in bounded threads (calls.py), payloads normalised to Posts.

The two feeds' pages, the hot path of a catch-up, skip Mastodon.py: paging.py reads their JSON with aiohttp.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from mastodon import Mastodon
from mastodon.errors import MastodonAPIError, MastodonError, MastodonNotFoundError

from mentiondesk.bot.events import AccountRef, Post, PostChange, PostDeleted, PostEdited
from mentiondesk.bot.mastodon.calls import BlockingCalls
from mentiondesk.bot.mastodon.explain import MastodonSetupError, explain
from mentiondesk.bot.mastodon.fields import (
    MAX_CLOCK_SKEW,
    UnreadablePost,
    count_field,
    feed_id,
    objects,
    optional_id,
    plain_string,
    required_id,
    text_field,
    time_field,
)
from mentiondesk.bot.mastodon.paging import PageReader, RateLimitSeen
from mentiondesk.bot.mastodon.text import MentionRef, clean_fields, status_to_text
from mentiondesk.bot.retry import errors_counted
from mentiondesk.storage.models import Cursor, Mention, Ticket, max_length

T = TypeVar("T")

USER_AGENT = "mentiondesk/0.1 (+https://github.com/mentiondesk/mentiondesk)"


@dataclass(frozen=True)
class StatusLimits:
    max_characters: int
    characters_reserved_per_url: int


@dataclass(frozen=True)
class FeedItem:
    """One entry of a paged feed: the feed's own id (the cursor) and the post it carries.

    An entry that cannot be read carries why instead of a post, and one without a usable id no cursor_id;
    either way `raw` keeps it as it came, for the dead-letter table.
    """

    cursor_id: str | None
    post: Post | None
    unreadable: str | None = None
    raw: Any = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """What names this entry in its feed, also when it came without an id (then its status's, if any)."""
        if self.cursor_id is not None:
            return self.cursor_id
        status_id = raw_status_id(self.raw)
        if status_id:
            return "status:" + status_id[:_STATUS_ID_MAX]
        return "sha256:" + hashlib.sha256(raw_json(self.raw).encode()).hexdigest()


def raw_json(payload: Any) -> str:
    """A payload as JSON text, whatever it holds (a value JSON cannot spell, such as a datetime, as its str())."""
    return json.dumps(payload, default=str)


def raw_status(payload: Any) -> Mapping[str, Any] | None:
    """The status in a feed entry as it came (a notification's `status`, or the entry itself), if an object."""
    status = payload.get("status") if isinstance(payload, Mapping) and "status" in payload else payload
    return status if isinstance(status, Mapping) else None


def raw_status_id(payload: Any) -> str:
    status = raw_status(payload)
    return text_field(status.get("id")) if status is not None else ""


# Where each part of a post is stored: it is cut to fit the narrowest of those columns.
_STATUS_ID_MAX = max_length(Mention.status_id, Ticket.root_status_id)
_REPLY_ID_MAX = max_length(Mention.in_reply_to_id)
_URI_MAX = max_length(Mention.status_uri)
_URL_MAX = max_length(Mention.status_url)
_ACCOUNT_ID_MAX = max_length(Mention.account_id, Ticket.customer_account_id)
_ACCT_MAX = max_length(Mention.account_acct, Ticket.customer_acct)
_NAME_MAX = max_length(Mention.account_display_name, Ticket.customer_display_name)
_PROFILE_URL_MAX = max_length(Mention.account_url, Ticket.customer_url)
_VISIBILITY_MAX = max_length(Mention.visibility)
_LANGUAGE_MAX = max_length(Mention.language)
_CURSOR_MAX = max_length(Cursor.value)


def account_from_json(data: Any) -> AccountRef:
    if not isinstance(data, Mapping):
        raise UnreadablePost("the author (account) is missing")
    return AccountRef(
        id=required_id(data.get("id"), what="the author's account id", limit=_ACCOUNT_ID_MAX),
        acct=text_field(data.get("acct") or data.get("username"), limit=_ACCT_MAX),
        display_name=text_field(data.get("display_name"), limit=_NAME_MAX),
        url=text_field(data.get("url"), limit=_PROFILE_URL_MAX),
        bot=data.get("bot") is True,
        followers_count=count_field(data.get("followers_count")),
    )


def post_from_json(data: Any) -> Post:
    """Normalise a status from the REST API (Mastodon.py dict) or the streaming API (raw JSON).

    Whatever the server sent, what fits is kept (see bot/mastodon/fields.py); a status without an id or an
    author raises UnreadablePost. Without a believable time of its own, the post is dated when it was received.
    """
    if not isinstance(data, Mapping):
        raise UnreadablePost("the status is not a JSON object")
    received_at = datetime.now(UTC)
    status_id = required_id(data.get("id"), what="the status id", limit=_STATUS_ID_MAX)
    uri = text_field(data.get("uri")) or text_field(data.get("url")) or status_id
    if len(uri) > _URI_MAX:
        # The URI is the post's unique key: cut, two posts could share one.
        raise UnreadablePost(f"the status URI is {len(uri)} characters long, more than the {_URI_MAX} stored")
    mentions = objects(data.get("mentions"))
    text = status_to_text(
        plain_string(data.get("content")),
        mentions=[MentionRef(url=text_field(m.get("url")), acct=text_field(m.get("acct"))) for m in mentions],
        spoiler_text=plain_string(data.get("spoiler_text")),
    )
    created_at = time_field(data.get("created_at"), latest=received_at + MAX_CLOCK_SKEW)
    post = Post(
        id=status_id,
        uri=uri,
        url=text_field(data.get("url") or data.get("uri"), limit=_URL_MAX),
        account=account_from_json(data.get("account")),
        text=text,
        created_at=created_at or received_at,
        created_at_known=created_at is not None,
        visibility=text_field(data.get("visibility"), limit=_VISIBILITY_MAX) or "public",
        language=text_field(data.get("language"), limit=_LANGUAGE_MAX) or None,
        in_reply_to_id=optional_id(data.get("in_reply_to_id"), limit=_REPLY_ID_MAX),
        in_reply_to_account_id=optional_id(data.get("in_reply_to_account_id"), limit=_ACCOUNT_ID_MAX),
        tags=tuple(name for t in objects(data.get("tags")) if (name := text_field(t.get("name")).lower())),
        is_reblog=data.get("reblog") is not None,
        edited_at=time_field(data.get("edited_at")),
        mentioned_account_ids=tuple(
            found for m in mentions if (found := optional_id(m.get("id"), limit=_ACCOUNT_ID_MAX)) is not None
        ),
        reblogs_count=count_field(data.get("reblogs_count")),
        favourites_count=count_field(data.get("favourites_count")),
    )
    # Names, handles, URLs and tags are the customer's (or their server's): no bidi or invisible controls.
    return clean_fields(post)


def notification_item(data: Any) -> FeedItem:
    """A mention notification's post (other notifications carry none); never raises, whatever data holds."""
    cursor_id = feed_id(data.get("id"), limit=_CURSOR_MAX) if isinstance(data, Mapping) else None
    if cursor_id is None:
        return FeedItem(cursor_id=None, post=None, unreadable="the notification has no usable id", raw=data)
    # A deleted status can leave its notification behind with status=null (some servers drop it).
    status = data.get("status")
    if data.get("type") != "mention" or status is None:
        return FeedItem(cursor_id=cursor_id, post=None)
    return _read(cursor_id, status, raw=data)


def status_item(data: Any) -> FeedItem:
    """A hashtag timeline's post; never raises, whatever data holds."""
    cursor_id = feed_id(data.get("id"), limit=_CURSOR_MAX) if isinstance(data, Mapping) else None
    if cursor_id is None:
        return FeedItem(cursor_id=None, post=None, unreadable="the status has no usable id", raw=data)
    return _read(cursor_id, data, raw=data)


def _read(cursor_id: str, status: Any, *, raw: Any) -> FeedItem:
    try:
        return FeedItem(cursor_id=cursor_id, post=post_from_json(status), raw=raw)
    except UnreadablePost as exc:
        return FeedItem(cursor_id=cursor_id, post=None, unreadable=str(exc), raw=raw)


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


def _after(cursor: str | None) -> list[tuple[str, str]]:
    return [("min_id", cursor)] if cursor is not None else []


def _by_id(item: FeedItem) -> int:
    # Mastodon ids are numeric strings (snowflakes); compare them as numbers, not text. Entries without one
    # cannot be placed: they go first, so the page's last entry still carries its cursor.
    return int(item.cursor_id) if item.cursor_id is not None else -1


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
        self._pages = PageReader(
            self.base_url,
            headers={**self.auth_header, "User-Agent": USER_AGENT},
            timeout_s=timeout_s,
            on_rate_limit=self._rate_limit_seen,
        )

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One Mastodon.py call, given up after mastodon.request_timeout_s as a whole."""
        # A 404 is an answer (the post was deleted), not a failed call.
        with errors_counted("mastodon", ignore=(MastodonNotFoundError,)):
            return await self._calls.run(fn.__name__, fn, *args, **kwargs)

    def close(self) -> None:
        """Walk away from calls still running (each is logged): their threads are not waited for."""
        self._calls.abandon()

    async def aclose(self) -> None:
        """Close the connections of the paging calls (after close(), on the loop that made them)."""
        await self._pages.aclose()

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def _rate_limit_seen(self, seen: RateLimitSeen) -> None:
        # Kept where Mastodon.py keeps its own, as it would: ratelimit_* then name the latest answer of either route.
        # (Any: mypy infers int for ratelimit_reset from one assignment; Mastodon.py itself stores floats and None.)
        api: Any = self._api
        if seen.remaining is not None:
            api.ratelimit_remaining = seen.remaining
        if seen.limit is not None:
            api.ratelimit_limit = seen.limit
        now = time.time()
        if seen.reset is not None:
            api.ratelimit_reset = seen.reset if seen.reset > now else None
        elif api.ratelimit_reset is not None and api.ratelimit_reset <= now:
            api.ratelimit_reset = None

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
        params = [("types[]", "mention"), ("limit", str(limit)), *_after(cursor)]
        with errors_counted("mastodon"):
            page = await self._pages.get("notifications", "/api/v1/notifications", params)
        return sorted(map(notification_item, page), key=_by_id)

    async def hashtag_after(self, tag: str, cursor: str | None, *, limit: int = 40) -> list[FeedItem]:
        """Posts under #tag newer than cursor, oldest first."""
        path = "/api/v1/timelines/tag/" + quote(tag, safe="")
        with errors_counted("mastodon"):
            page = await self._pages.get("timeline_hashtag", path, [("limit", str(limit)), *_after(cursor)])
        return sorted(map(status_item, page), key=_by_id)

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
