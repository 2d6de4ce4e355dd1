"""The ingest pipeline's own rate: posts fed through the real ingest path in process, as a stream delivers them.

No HTTP: posts are built here (realistic texts, many customers, a share of them follow-ups replying to the
customer's previous post) and handed to the same IngestPipeline and batch handler the daemon uses, against a
scratch database. What is timed is everything from the first post queued until the last one is committed:
classifying, placing, and writing tickets, mentions, events and Slack outbox rows.

    .venv/bin/python -m bench.inprocess --posts 20000 --database sqlite+aiosqlite:////tmp/x.db
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from mentiondesk.bot.classify.model import ComplaintClassifier
from mentiondesk.bot.config import parse_settings
from mentiondesk.bot.context import AppContext
from mentiondesk.bot.events import AccountRef, MentionReceived, MentionsReceived, Post, PostChange
from mentiondesk.bot.ingest import IngestPipeline
from mentiondesk.bot.mastodon.client import MastodonClient
from mentiondesk.handlers.mention import record_mentions
from mentiondesk.storage.db import create_engine, session_factory, upgrade

BRAND = AccountRef(id="1", acct="brand", display_name="Acme Support", url="https://social.example/@brand")
# Nothing listens here: the posts are built so that placing them never needs Mastodon (see build_posts).
NO_SERVER = "http://127.0.0.1:9"

COMPLAINTS = [
    "my parcel is late again and nobody answers",
    "still waiting for a refund after three weeks, this is ridiculous",
    "the app crashes every time I open settings",
    "why was I charged twice?? fix this now",
    "worst customer service ever, I have been on hold for an hour",
    "the train was cancelled with no announcement, again",
]
OTHER = [
    "thanks for sorting that out so quickly!",
    "do you ship to Norway?",
    "love the new colours this season",
    "is the shop open on bank holidays",
    "great service at the Leeds branch today",
]
FOLLOW_UPS = ["any news?", "hello?? still nothing", "this is getting silly", "ok thanks, waiting"]


@dataclass(frozen=True)
class PipelineRun:
    posts: int
    seconds: float
    batches: int
    failed: int
    tickets_opened: int

    @property
    def rate(self) -> float:
        return self.posts / self.seconds


def build_posts(n: int, *, customers: int, follow_up_share: float = 0.3, seed: int = 11) -> list[MentionReceived]:
    """n mentions from `customers` accounts; a share reply to the same customer's previous post."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(seconds=n)
    previous: dict[str, str] = {}
    posts = []
    for i in range(n):
        account_id = str(10_000 + rng.randrange(customers))
        parent = previous.get(account_id) if rng.random() < follow_up_share else None
        status_id = str(110_000_000_000 + i)
        body = rng.choice(FOLLOW_UPS) if parent else rng.choice(COMPLAINTS if rng.random() < 0.6 else OTHER)
        account = AccountRef(
            id=account_id,
            acct=f"user{account_id}@other.example",
            display_name=f"User {account_id}",
            url=f"https://other.example/@user{account_id}",
        )
        post = Post(
            id=status_id,
            uri=f"https://other.example/users/user{account_id}/statuses/{status_id}",
            url=f"https://other.example/@user{account_id}/{status_id}",
            account=account,
            text=f"@brand {body}",
            created_at=start + timedelta(seconds=i),
            visibility="public",
            language="en",
            in_reply_to_id=parent,
            # A reply's parent is the customer's previous post, stored already or earlier in the same batch.
            in_reply_to_account_id=account_id if parent else None,
            tags=(),
            mentioned_account_ids=(BRAND.id,),
        )
        posts.append(MentionReceived(post=post, source="notification"))
        previous[account_id] = status_id
    return posts


async def run_pipeline(
    database_url: str,
    posts: Sequence[MentionReceived],
    *,
    batch_size: int = 500,
    mastodon_url: str = NO_SERVER,
    mastodon_token: str = "not-a-token",
) -> PipelineRun:
    """Feed posts through the daemon's pipeline and batch handler into database_url (migrated here).

    mastodon_url serves what placing a post may ask Mastodon (a reply's unread parent); posts from build_posts
    never need it.
    """
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        sessions = session_factory(engine)
        settings = parse_settings(
            {
                "mastodon": {"base_url": mastodon_url},
                "slack": {"default_channel": "C0SUPPORT"},
                "database": {"url": database_url},
            },
            source="bench",
        )
        classifier = await asyncio.to_thread(ComplaintClassifier.load)
        mastodon = MastodonClient(mastodon_url, mastodon_token)
        ctx = AppContext(
            settings=settings,
            sessions=sessions,
            classifier=classifier,
            mastodon=mastodon,
            brand=BRAND,
            wake_outbox=lambda: None,
        )

        async def on_posts(mentions: Sequence[MentionReceived]) -> list[BaseException | None]:
            batch = MentionsReceived(mentions=tuple(mentions))
            await record_mentions(batch, ctx)
            return batch.outcomes

        async def on_change(change: PostChange) -> None:
            raise AssertionError(f"no changes are fed: {change}")

        pipeline = IngestPipeline(on_posts=on_posts, on_change=on_change, batch_size=batch_size)
        worker = asyncio.create_task(pipeline.run())
        try:
            started = time.perf_counter()
            queued = [await pipeline.submit(post) for post in posts]
            outcomes = await asyncio.gather(*queued, return_exceptions=True)
            seconds = time.perf_counter() - started
        finally:
            worker.cancel()
            await asyncio.wait([worker])
            mastodon.close()
            await mastodon.aclose()
        async with engine.connect() as conn:
            opened = (await conn.execute(text("SELECT count(*) FROM tickets"))).scalar_one()
        return PipelineRun(
            posts=len(posts),
            seconds=seconds,
            batches=pipeline.batches,
            failed=sum(1 for o in outcomes if o is not None),
            tickets_opened=int(opened),
        )
    finally:
        await engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=20_000)
    ap.add_argument("--customers", type=int, default=5_000)
    ap.add_argument("--database", required=True, help="a scratch database URL (its tables are created)")
    args = ap.parse_args()
    run = asyncio.run(run_pipeline(args.database, build_posts(args.posts, customers=args.customers)))
    print(
        f"{run.posts} posts in {run.seconds:.2f} s: {run.rate:.0f} per second "
        f"({run.batches} batches, {run.tickets_opened} tickets, {run.failed} failed)"
    )


if __name__ == "__main__":
    main()
