"""Synthetic mentions for the ingest benchmark, as Mastodon's streaming API delivers them.

Each is a copy of a mention notification mastodon-mock itself served (captured at the start of every run by
bench/mastodon_side.py), with what differs from post to post varied: the ids, URI and URL, the times, the author
(one of many customers, most on other instances) and the text. A share are follow-ups: replies to the same
customer's previous post, as a customer chasing an answer writes them. Texts are hand-written phrases composed
at random (seeded), complaints and other posts mixed; the model, not this file, decides which is which.
"""

from __future__ import annotations

import html
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Well above the snowflake ids mastodon-mock hands out (about 1.8e12 today), so synthetic ids never meet real ones.
SYNTHETIC_ID_BASE = 10**17

FIRST_POSTS = [
    "my parcel is late again",
    "the app crashes every time I open settings",
    "still waiting for a refund after three weeks",
    "why was I charged twice this month",
    "the train was cancelled with no announcement",
    "nobody has replied to my email",
    "your website keeps logging me out",
    "the replacement you sent is broken too",
    "I have been on hold for an hour",
    "the delivery driver left my box in the rain",
    "do you ship to Norway?",
    "is the shop open on bank holidays",
    "can I change the delivery address after ordering",
    "love the new colours this season",
    "great service at the Leeds branch today",
    "thanks for sorting that out so quickly",
    "what time does the sale start tomorrow",
    "best coffee in town",
]
FOLLOW_UPS = [
    "any update on this?",
    "still nothing, it has been three days",
    "hello? is anyone reading these",
    "I sent my order number by DM",
    "this is getting ridiculous",
    "ok, the refund came through, thanks",
    "same problem again today",
    "can someone please call me back",
]
DETAILS = [
    "",
    "",
    "",
    " order 48213",
    " at the Manchester store",
    " on the 8:15 from Leeds",
    " on Android 14",
    " and the chat bot just loops",
    " https://example.org/t/123",
]
TAILS = ["", "", "!", "?", " #fail", " 🙏", " 😡", " …"]
INSTANCES = ["mastodon.social", "fosstodon.org", "mas.to", "hachyderm.io", "mstdn.party", "social.example"]


@dataclass(frozen=True)
class Templates:
    """Notifications as mastodon-mock served them: a customer's first mention of the brand, and their reply to it."""

    mention: Mapping[str, Any]
    reply: Mapping[str, Any]

    @property
    def brand_acct(self) -> str:
        return str(self.mention["status"]["mentions"][0]["acct"])


@dataclass(frozen=True)
class Planned:
    """One synthetic post before it is sent: enough to build its JSON at any time (times are set when it goes)."""

    status_id: str
    customer: int
    text: str
    in_reply_to_id: str | None


class PostFactory:
    """Plans posts from many customers, a share of them follow-ups, and renders them as notification JSON."""

    def __init__(self, templates: Templates, *, customers: int, reply_share: float, seed: int) -> None:
        if customers < 1 or not 0.0 <= reply_share < 1.0:
            raise ValueError("customers must be at least 1 and reply_share from 0 up to (not including) 1")
        self.templates = templates
        self.customers = customers
        self.reply_share = reply_share
        self._rng = random.Random(seed)
        self._next_id = SYNTHETIC_ID_BASE
        self._latest: dict[int, str] = {}  # customer -> the id of their latest post
        self._posted: list[int] = []  # customers who posted, for picking whose follow-up comes next
        self._accounts: dict[int, dict[str, Any]] = {}

    def plan(self, count: int) -> list[Planned]:
        return [self._plan_one() for _ in range(count)]

    def _plan_one(self) -> Planned:
        rng = self._rng
        self._next_id += 2  # the odd one in between is the notification's own id
        status_id = str(self._next_id)
        if self._posted and rng.random() < self.reply_share:
            customer = rng.choice(self._posted)
            parent: str | None = self._latest[customer]
            text = rng.choice(FOLLOW_UPS) + rng.choice(TAILS)
        else:
            customer = rng.randrange(self.customers)
            parent = None
            body = " and ".join(rng.choice(FIRST_POSTS) for _ in range(rng.choice([1, 1, 1, 2, 3])))
            text = body + rng.choice(DETAILS) + rng.choice(TAILS)
        if customer not in self._latest:
            self._posted.append(customer)
        self._latest[customer] = status_id
        return Planned(status_id=status_id, customer=customer, text=text, in_reply_to_id=parent)

    def notification(self, planned: Planned, created_at: datetime) -> dict[str, Any]:
        """The mention notification carrying this post, as the stream sends it (shares nested parts with others)."""
        status = self.status(planned, created_at)
        base = self.templates.mention
        return {
            **base,
            "id": str(int(planned.status_id) + 1),
            "created_at": status["created_at"],
            "account": status["account"],
            "status": status,
        }

    def status(self, planned: Planned, created_at: datetime) -> dict[str, Any]:
        """The status JSON of this post, as GET /api/v1/statuses/:id answers it."""
        template = self.templates.reply if planned.in_reply_to_id else self.templates.mention
        account = self.account(planned.customer)
        brand = self.templates.brand_acct
        when = created_at.astimezone(UTC).isoformat()
        url = f"{account['url']}/{planned.status_id}"
        return {
            **template["status"],
            "id": planned.status_id,
            "uri": url,
            "url": url,
            "account": account,
            "in_reply_to_id": planned.in_reply_to_id,
            "in_reply_to_account_id": account["id"] if planned.in_reply_to_id else None,
            # mastodon-mock renders a post as one paragraph of escaped text, the @mention included.
            "content": f"<p>{html.escape(f'@{brand} {planned.text}', quote=False)}</p>",
            "created_at": when,
            "language": "en",
        }

    def account(self, customer: int) -> dict[str, Any]:
        found = self._accounts.get(customer)
        if found is None:
            template = self.templates.mention["account"]
            username = f"customer{customer}"
            # Most customers are on other instances, as on the fediverse: their acct carries the domain.
            instance = INSTANCES[customer % len(INSTANCES)]
            acct = username if customer % 5 == 0 else f"{username}@{instance}"
            url = f"https://{instance}/@{username}"
            found = {
                **template,
                "id": str(SYNTHETIC_ID_BASE // 2 + customer),
                "username": username,
                "acct": acct,
                "display_name": f"Customer {customer}",
                "url": url,
                "uri": url,
            }
            self._accounts[customer] = found
        return found


def generic_status(templates: Templates, status_id: str) -> dict[str, Any]:
    """A plausible, unedited status for a synthetic id the replay server never sent (a seeded row's post)."""
    return {**templates.mention["status"], "id": status_id, "uri": f"https://social.example/s/{status_id}"}


def ticks(start: float, rate_per_s: float | None) -> Iterator[float]:
    """When each post of a run at rate_per_s is created (epoch seconds); all at start when there is no rate."""
    i = 0
    while True:
        yield start if rate_per_s is None else start + i / rate_per_s
        i += 1


def at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
