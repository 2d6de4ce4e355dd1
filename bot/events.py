"""What flows through the daemon, normalised at the edge: handlers never see raw API payloads.

The names tell the story: MentionReceived -> (classified) -> TicketOpened -> CardPosted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class AccountRef:
    id: str
    acct: str
    display_name: str
    url: str
    bot: bool = False
    # None when the server left it out or sent something that is not a count (a judging cue, never required).
    followers_count: int | None = None


@dataclass(frozen=True)
class Post:
    """A Mastodon status, reduced to what mentiondesk uses."""

    id: str
    uri: str
    url: str
    account: AccountRef
    text: str
    created_at: datetime
    visibility: str
    language: str | None
    in_reply_to_id: str | None
    in_reply_to_account_id: str | None
    tags: tuple[str, ...]
    is_reblog: bool = False
    edited_at: datetime | None = None
    # Whom the post mentions (account ids): whether it reached the brand's notifications.
    mentioned_account_ids: tuple[str, ...] = ()
    # False when the server gave no believable time: created_at is then when the post was received.
    created_at_known: bool = True
    # As Mastodon counted them when the post was read; None when absent or unreadable.
    reblogs_count: int | None = None
    favourites_count: int | None = None


@dataclass(frozen=True)
class MentionReceived:
    post: Post
    source: str  # "notification" or "hashtag:<tag>"


@dataclass(frozen=True)
class MentionsReceived:
    """Posts read together, in the order read: stored as one batch.

    The handler sets one outcome per post in `outcomes`: None when it was stored (or is none of the desk's
    business), else the error that kept it out, so that one bad post does not fail the others.
    """

    mentions: tuple[MentionReceived, ...]
    outcomes: list[BaseException | None] = field(default_factory=list)


@dataclass(frozen=True)
class TicketOpened:
    ticket_id: int
    channel: str
    post: Post


@dataclass(frozen=True)
class CardPosted:
    ticket_id: int
    channel: str
    ts: str


@dataclass(frozen=True)
class PostEdited:
    """A customer's post as it reads after an edit (from the stream's status.update or the refresh sweep)."""

    post: Post


@dataclass(frozen=True)
class PostDeleted:
    """A post was deleted; Mastodon only tells us its id."""

    status_id: str


PostChange = PostEdited | PostDeleted
