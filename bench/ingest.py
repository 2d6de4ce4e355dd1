"""Benchmark ingest: how many mentions a second the desk classifies and stores, how soon, and in how much memory.

    .venv/bin/python -m bench.ingest [--postgres URL] [--sections ...] [--out bench/RESULTS.md]
    .venv/bin/python -m bench.ingest --smoke      # tiny sizes, checks the harness itself (CI)

Run from the repository root with the test extras installed: it uses mastodon-mock and tests/fakeslack. Postgres
is measured when --postgres or MENTIONDESK_TEST_DATABASE_URL names a server; the run creates its own database there
(``md_bench_<random>``) and drops it at the end. Every figure is written beside its ceiling from the same run:

in-process
    The pipeline's own rate (``in_process`` below: posts handed to the real ingest path in this process) beside raw
    writes of the same rows (bench/rows.py: SQLite one transaction per post and one executemany; Postgres asyncpg
    executemany and COPY) and the classifier alone (one call per post; one batch).
e2e
    ``mentiondesk run`` in its own process, reading the replay server's stream (bench/replay.py: recorded
    mastodon-mock notifications, many customers, a share of follow-ups). All posts are handed over at once; the
    rate is posts stored / (time the last row appeared - time they were handed over). Ceiling: the same stream read
    by a plain reader process that only parses each event.
latency
    Posts created at a steady rate; each post's latency is from its created_at to when its mention row was first
    seen in the database (polled every 20 ms) and, for a post that opened a ticket, to when the fake Slack (no
    rate limit) stored its card. A post not stored within --max-wait-s counts as never. Floor: the plain reader.
catch-up
    With the daemon stopped, customers post to mastodon-mock; a plain Mastodon.py client pages through those
    mentions as the daemon does (best of two), then the daemon starts with its cursor just before them. Both go
    through the same proxy; the daemon's time runs from its first notifications request to the last row stored.
rss
    The daemon's peak RSS (VmHWM) after ingesting --rss-posts posts, with --rss-rows mentions and tickets (and their
    sent cards) already in the database, beside the same with an empty database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import asyncpg

from bench import report as fmt
from bench.inprocess import run_pipeline
from bench.mastodon_side import (
    BRAND_TOKEN,
    HarnessError,
    MockProcess,
    capture_templates,
    latest_mention_id,
    plain_catch_up,
    post_mentions,
)
from bench.posts import Planned, PostFactory, Templates, at
from bench.replay import PlainReader, ReplayServer
from bench.rows import (
    TABLES,
    pipeline_rows,
    postgres_copy,
    postgres_executemany,
    postgres_seed,
    seed_chunks,
    sqlite_executemany,
    sqlite_per_post,
    sqlite_seed,
)
from bench.scratch import POSTGRES, SQLITE, Scratch, asyncpg_dsn
from bench.stage import DaemonProcess, StoreWatch, card_times, daemon_settings
from mentiondesk.bot.classify.model import ComplaintClassifier
from mentiondesk.bot.events import MentionReceived, Post
from mentiondesk.bot.mastodon.client import notification_item
from mentiondesk.storage.cursors import set_cursor
from mentiondesk.storage.db import create_engine, session_factory, transaction
from mentiondesk.storage.urls import sqlite_path
from tests.fakeslack import FakeSlack

PG_ENV = "MENTIONDESK_TEST_DATABASE_URL"
STORED_TARGET = {SQLITE: 1000, POSTGRES: 500}  # mentions per second, classified and stored
LATENCY_TARGET_S = 1.0  # p99 from post to ticket row at 200 per second
CATCH_UP_TARGET = 0.9
RSS_TARGET_MIB = 150


# The pipeline's own rate, in process: the notifications (exactly what the stream delivers) are read as the daemon
# reads them and fed through the daemon's IngestPipeline and batch handler (bench/inprocess.py) into the empty,
# migrated database at db_url; the seconds from the first post handed over to the last one stored. mastodon_url is
# mastodon-mock, for what placing a post may ask of Mastodon (a reply's unread parent).
async def in_process(db_url: str, notifications: list[dict[str, Any]], *, mastodon_url: str) -> float:
    mentions = []
    for notification in notifications:
        post = notification_item(notification).post
        if post is None:
            raise HarnessError(f"a synthetic notification did not read as a post: {notification!r}")
        mentions.append(MentionReceived(post=post, source="notification"))
    run = await run_pipeline(db_url, mentions, mastodon_url=mastodon_url, mastodon_token=BRAND_TOKEN)
    if run.failed:
        raise HarnessError(f"{run.failed} of {run.posts} posts were not stored in process")
    return run.seconds


@dataclass
class Run:
    args: argparse.Namespace
    folder: Path
    mock: MockProcess
    http: aiohttp.ClientSession
    scratch: Scratch
    templates: Templates
    report: fmt.Report
    stream_rate: str = "n/a"  # the plain reader's posts/s
    stream_floor: dict[float, list[float]] = field(default_factory=dict)  # rate -> the plain reader's latencies

    def factory(self, *, customers: int | None = None) -> PostFactory:
        # The same seed for every stage: each database gets the same posts, from the same customers.
        return PostFactory(
            self.templates,
            customers=customers or self.args.customers,
            reply_share=self.args.reply_share,
            seed=self.args.seed,
        )


class Stage:
    """A fresh database, a fake Slack, a replay server and `mentiondesk run` against them; torn down on exit."""

    def __init__(self, run: Run, kind: str, name: str, db_url: str, *, profile: bool = False) -> None:
        self.run, self.kind, self.name, self.db_url = run, kind, name, db_url
        self.factory = run.factory()
        self._profile = profile
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Stage:
        self.watch = StoreWatch(self.db_url)
        self._stack.push_async_callback(self.watch.close)
        self.slack = await self._stack.enter_async_context(FakeSlack(enforce_rate_limit=False))
        self.replay = await self._stack.enter_async_context(
            ReplayServer(self.run.mock.base_url, token=BRAND_TOKEN, factory=self.factory)
        )
        settings = daemon_settings(mastodon_url=self.replay.base_url, slack_url=self.slack.base_url, db_url=self.db_url)
        self.daemon = DaemonProcess(
            self.run.folder, f"{self.kind}-{self.name}", settings, self.slack, profile=self._profile
        )
        self._stack.push_async_callback(self.daemon.stop)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def start_daemon(self, *, wait_ready: bool = True) -> float:
        """Start `mentiondesk run` (with wait_ready: and wait until it handles streamed posts); returns when."""
        started = time.time()
        await self.daemon.start()
        # A start against a large database can be slow on a loaded machine, but not slower than a stage's wait.
        ready_timeout_s = self.run.args.max_wait_s + 10
        deadline = time.monotonic() + ready_timeout_s
        while wait_ready:
            self.daemon.check_alive()
            if self.replay.stream_released() and self.slack.connected_count:
                break
            if time.monotonic() > deadline:
                raise HarnessError(f"mentiondesk run not ready after {ready_timeout_s:.0f}s:\n{self.daemon.log_tail()}")
            await asyncio.sleep(0.05)
        return started

    def check_one_stream(self) -> None:
        if self.replay.connections != 1:
            self.run.report.note(
                "e2e",
                f"{self.kind} {self.name}: the daemon opened the stream {self.replay.connections} times; "
                "posts sent to a dropped stream are lost (polling cannot see synthetic posts)",
            )


# --- ceilings of the stream itself ---------------------------------------------------------------------------


async def stream_ceilings(run: Run) -> None:
    """The replay stream read by a plain reader process: the posts/s and latency floor the daemon is held to."""
    args = run.args
    async with ReplayServer(run.mock.base_url, token=BRAND_TOKEN, factory=run.factory()) as replay:
        planned = run.factory().plan(args.e2e_posts)
        received = await _plain_read(replay, planned, rate=None, timeout_s=args.max_wait_s)
        if len(received.arrivals) != len(planned):
            raise HarnessError(f"the plain reader got {len(received.arrivals)} of {len(planned)} posts")
        run.stream_rate = fmt.per_s(len(planned), max(received.arrivals) - received.sent_at)
        for rate in args.rates:
            planned = run.factory().plan(max(1, round(rate * args.latency_seconds)))
            got = await _plain_read(replay, planned, rate=rate, timeout_s=args.latency_seconds + args.max_wait_s)
            run.stream_floor[rate] = got.latencies_s


@dataclass
class _PlainResult:
    sent_at: float
    arrivals: list[float]
    latencies_s: list[float]


async def _plain_read(
    replay: ReplayServer, planned: list[Planned], *, rate: float | None, timeout_s: float
) -> _PlainResult:
    reader = PlainReader(replay.base_url, BRAND_TOKEN, len(planned), timeout_s=timeout_s)
    before = replay.connections
    await reader.start()
    await replay.wait_connection(after=before, timeout_s=30)
    created = await replay.send(planned, rate_per_s=rate)
    received = await reader.result()
    return _PlainResult(sent_at=created[0], arrivals=received.arrivals, latencies_s=received.latencies_s)


# --- in process, and raw writes ------------------------------------------------------------------------------


async def in_process_section(run: Run, kind: str, *, with_classifier: bool) -> None:
    args, report = run.args, run.report
    factory = run.factory()
    now = time.time()
    notifications = [factory.notification(p, at(now)) for p in factory.plan(args.ceiling_posts)]
    posts: list[Post] = []
    for notification in notifications:
        post = notification_item(notification).post  # normalised as the daemon normalises it
        if post is None:
            raise HarnessError(f"a synthetic notification did not read as a post: {notification!r}")
        posts.append(post)
    classifier = ComplaintClassifier.load()
    started = time.perf_counter()
    results = [classifier.classify(post.text) for post in posts]
    one_by_one_s = time.perf_counter() - started
    started = time.perf_counter()
    classifier.classify_many([post.text for post in posts])
    batch_s = time.perf_counter() - started
    rows = pipeline_rows(posts, results)
    n, n_rows = len(posts), sum(len(r) for r in rows)
    label = "SQLite" if kind == SQLITE else "Postgres"

    db_url = await run.scratch.fresh(kind, "in-process")
    seconds = await in_process(db_url, notifications, mastodon_url=run.mock.base_url)
    await _expect_rows(db_url, {"mentions": n})
    report.add("in-process", [label, "**pipeline in process**", fmt.per_s(n, seconds), "", f"{n:,}"])

    expected = {table: sum(1 for r in rows for t, _ in r if t == table) for table in TABLES}
    writers: list[tuple[str, Any]] = (
        [
            ("raw: one transaction per post (sqlite3)", sqlite_per_post),
            ("raw: one executemany (sqlite3)", sqlite_executemany),
        ]
        if kind == SQLITE
        else [("raw: asyncpg executemany", postgres_executemany), ("raw: COPY (asyncpg)", postgres_copy)]
    )
    for what, writer in writers:
        db_url = await run.scratch.fresh(kind, "raw")
        if kind == SQLITE:
            path = sqlite_path(db_url)
            assert path is not None
            took_s: float = await asyncio.to_thread(writer, path, rows)
        else:
            took_s = await writer(asyncpg_dsn(db_url), rows)
        await _expect_rows(db_url, expected)
        report.add("in-process", [label, what, fmt.per_s(n, took_s), fmt.per_s(n_rows, took_s), f"{n:,}"])
    if with_classifier:
        report.add(
            "in-process", ["(any)", "classifier alone, one call per post", fmt.per_s(n, one_by_one_s), "", f"{n:,}"]
        )
        report.add("in-process", ["(any)", "classifier alone, one batch", fmt.per_s(n, batch_s), "", f"{n:,}"])
        share = sum(1 for r in results if r.label == "complaint") / n
        report.note(
            "in-process",
            f"The posts: {n:,} from {args.customers:,} customers, {args.reply_share:.0%} of them follow-ups, "
            f"{share:.0%} classified as complaints; {n_rows / n:.2f} rows per post (mention, ticket, outbox, event).",
        )


async def _expect_rows(db_url: str, expected: dict[str, int]) -> None:
    watch = StoreWatch(db_url)
    try:
        for table, count in expected.items():
            found = await watch.scalar(f"SELECT count(*) FROM {table}")
            if found != count:
                raise HarnessError(f"{table}: {found} rows stored, {count} expected")
    finally:
        await watch.close()


# --- end to end ----------------------------------------------------------------------------------------------


async def e2e_section(run: Run, kind: str) -> None:
    args = run.args
    db_url = await run.scratch.fresh(kind, "e2e")
    async with Stage(run, kind, "e2e", db_url, profile=args.profile) as stage:
        await stage.start_daemon()
        planned = stage.factory.plan(args.e2e_posts)
        created = await stage.replay.send(planned, rate_per_s=None)
        stored, last_at = await stage.watch.wait_mentions(len(planned), timeout_s=args.max_wait_s)
        stage.daemon.check_alive()
        stage.check_one_stream()
    if stored == 0:
        raise HarnessError(
            f"{kind}: the daemon stored none of {len(planned)} posts; its log:\n{stage.daemon.log_tail()}"
        )
    target = f"≥ {STORED_TARGET[kind]:,}"
    posts = f"{stored:,} of {len(planned):,}" if stored < len(planned) else f"{stored:,}"
    run.report.add("e2e", [_label(kind), posts, fmt.per_s(stored, last_at - created[0]), run.stream_rate, target])
    if stage.daemon.profile_path is not None:
        _add_profile(run, kind, stage.daemon.profile_path)


def _add_profile(run: Run, kind: str, path: Path) -> None:
    own, ours = io.StringIO(), io.StringIO()
    pstats.Stats(str(path), stream=own).strip_dirs().sort_stats("tottime").print_stats(25)
    # The project's own functions by cumulative time (its folders, whether installed or editable).
    project = r"(mentiondesk|/bot|/handlers|/storage)/"
    pstats.Stats(str(path), stream=ours).sort_stats("cumulative").print_stats(project, 25)
    run.report.extra += [
        f"## Profile: `mentiondesk run` during the end-to-end run on {_label(kind)}",
        "",
        "cProfile, the whole life of the process (start-up included), main thread only: the time aiosqlite's and",
        "asyncio.to_thread's worker threads take shows up as waiting (`select.epoll`). Top 25 by own time, then",
        "the project's functions by cumulative time.",
        "",
        "```",
        *_stats_table(own.getvalue()),
        "```",
        "",
        "```",
        *_stats_table(ours.getvalue()),
        "```",
        "",
    ]


def _stats_table(printed: str) -> list[str]:
    """pstats' listing from its column header on (the preamble names a temporary file)."""
    lines = printed.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return lines[start:]


# --- latency -------------------------------------------------------------------------------------------------


async def latency_section(run: Run, kind: str, rate: float) -> None:
    args = run.args
    db_url = await run.scratch.fresh(kind, f"latency-{rate:g}")
    async with Stage(run, kind, f"latency-{rate:g}", db_url) as stage:
        await stage.start_daemon()
        planned = stage.factory.plan(max(1, round(rate * args.latency_seconds)))
        expected = {p.status_id for p in planned}
        wait_s = args.latency_seconds + args.max_wait_s
        follow = asyncio.create_task(stage.watch.follow(expected, after=await stage.watch.last_id(), timeout_s=wait_s))
        created = await stage.replay.send(planned, rate_per_s=rate)
        seen = await follow
        all_sent = await stage.watch.wait_sent(timeout_s=args.max_wait_s)
        stage.daemon.check_alive()
        stage.check_one_stream()
        cards = await stage.watch.card_posts()
        card_at = card_times(stage.slack)
    if not seen.at:
        raise HarnessError(
            f"{kind}: the daemon stored none of {len(planned)} posts; its log:\n{stage.daemon.log_tail()}"
        )
    created_of = {p.status_id: c for p, c in zip(planned, created, strict=True)}
    to_row = [seen.at.get(p.status_id, float("inf")) - c for p, c in zip(planned, created, strict=True)]
    to_card = [card_at.get(outbox, float("inf")) - created_of[status] for outbox, status in cards.items()]
    stored = f"{len(seen.at):,} of {len(planned):,} stored" if len(seen.at) < len(planned) else f"{len(planned):,}"
    target = f"p99 < {LATENCY_TARGET_S:g} s" if rate >= 200 else ""
    run.report.add(
        "latency",
        [
            _label(kind),
            f"{rate:g}",
            stored,
            fmt.spread(to_row),
            f"{fmt.spread(to_card)} ({len(to_card):,})",
            fmt.spread(run.stream_floor.get(rate, [])),
            target,
        ],
    )
    if rate == args.rates[0] and kind == run.scratch.kinds[0]:
        run.report.note(
            "latency",
            f"Each rate is kept up for {args.latency_seconds:g} s; a post not stored (or a card not posted) within "
            f"{args.max_wait_s:g} s after that counts as never. Rows are looked for every 20 ms.",
        )
    if not all_sent:
        run.report.note("latency", f"{_label(kind)} at {rate:g}/s: cards still unsent after {args.max_wait_s:g} s")


# --- catch-up ------------------------------------------------------------------------------------------------


async def catch_up_section(run: Run, kind: str) -> None:
    args = run.args
    cursor = await latest_mention_id(run.http, run.mock.base_url)
    planned = run.factory(customers=args.mock_customers).plan(args.catchup_posts)
    await post_mentions(run.http, run.mock.base_url, planned)
    db_url = await run.scratch.fresh(kind, "catch-up")
    engine = create_engine(db_url)
    try:
        async with transaction(session_factory(engine)) as session:
            await set_cursor(session, name="notifications:mention", value=cursor)
    finally:
        await engine.dispose()
    async with Stage(run, kind, "catch-up", db_url) as stage:
        plain = [await asyncio.to_thread(plain_catch_up, stage.replay.base_url, cursor) for _ in range(2)]
        if any(read != len(planned) for read, _ in plain):
            raise HarnessError(f"the plain client read {[r for r, _ in plain]} mentions, {len(planned)} were posted")
        plain_s = min(s for _, s in plain)
        plain_polls = len(stage.replay.polls)
        await stage.start_daemon(wait_ready=False)
        stored, last_at = await stage.watch.wait_mentions(len(planned), timeout_s=args.max_wait_s)
        stage.daemon.check_alive()
        first_poll = next((p.started for p in stage.replay.polls[plain_polls:] if p.min_id == cursor), None)
    if stored == 0 or first_poll is None:
        raise HarnessError(f"{kind}: the daemon caught up on nothing; its log:\n{stage.daemon.log_tail()}")
    daemon_rate = stored / (last_at - first_poll)
    plain_rate = len(planned) / plain_s
    posts = f"{stored:,} of {len(planned):,}" if stored < len(planned) else f"{stored:,}"
    run.report.add(
        "catch-up",
        [
            _label(kind),
            posts,
            f"{daemon_rate:,.0f}",
            f"{plain_rate:,.0f}",
            f"{daemon_rate / plain_rate:.2f}",
            f"≥ {CATCH_UP_TARGET}",
        ],
    )


# --- memory --------------------------------------------------------------------------------------------------


async def rss_section(run: Run, kind: str) -> None:
    args = run.args
    peaks = {}
    # The smoke run skips the empty database: the same path, one daemon start fewer.
    for seeded in (args.rss_rows,) if args.smoke else (0, args.rss_rows):
        db_url = await run.scratch.fresh(kind, f"rss-{seeded}")
        if seeded:
            await _seed(kind, db_url, seeded, customers=max(args.customers, seeded // 5))
        async with Stage(run, kind, f"rss-{seeded}", db_url) as stage:
            await stage.start_daemon()
            planned = stage.factory.plan(args.rss_posts)
            expected, after = {p.status_id for p in planned}, await stage.watch.last_id()
            follow = asyncio.create_task(stage.watch.follow(expected, after=after, timeout_s=args.max_wait_s))
            await stage.replay.send(planned, rate_per_s=None)
            seen = await follow
            # Not until all are sent: the fake Slack has never seen the seeded tickets' cards, so follow-ups in
            # their threads are refused (and kept for later), as Slack would refuse them for a deleted card.
            await stage.watch.wait_tried(timeout_s=args.max_wait_s)
            stage.daemon.check_alive()
            peaks[seeded] = stage.daemon.peak_rss_mib()
        if not seen.at:
            raise HarnessError(f"{kind}: the daemon stored none of the posts; its log:\n{stage.daemon.log_tail()}")
    if kind == run.scratch.kinds[0]:
        run.report.note(
            "rss",
            "The seeded tickets' cards were never posted to the fake Slack, so a new post joining a seeded open "
            "ticket has its follow-up refused there (thread_not_found) and parked; each stage waits for every "
            "message to have been tried once.",
        )
    run.report.add(
        "rss",
        [
            _label(kind),
            f"{args.rss_rows:,} mentions and tickets, then {args.rss_posts:,} new posts",
            f"{peaks[args.rss_rows]:.0f} MiB",
            f"{peaks[0]:.0f} MiB" if 0 in peaks else "not measured (--smoke)",
            f"< {RSS_TARGET_MIB} MiB",
        ],
    )


async def _seed(kind: str, db_url: str, rows: int, *, customers: int) -> None:
    started = time.perf_counter()
    chunks = seed_chunks(rows, customers=customers)
    if kind == SQLITE:
        path = sqlite_path(db_url)
        assert path is not None
        await asyncio.to_thread(sqlite_seed, path, chunks)
    else:
        await postgres_seed(asyncpg_dsn(db_url), chunks)
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            await conn.execute("ANALYZE")  # as autovacuum would have by now on a desk this size
        finally:
            await conn.close()
    print(f"rss: seeded {rows:,} rows into {kind} in {time.perf_counter() - started:.0f} s", flush=True)


def _label(kind: str) -> str:
    return "SQLite" if kind == SQLITE else "Postgres"


# --- the run -------------------------------------------------------------------------------------------------

SECTION_NAMES = ("in-process", "e2e", "latency", "catch-up", "rss")
SMOKE = {
    "ceiling_posts": 300,
    "e2e_posts": 60,
    "latency_seconds": 0.3,
    "catchup_posts": 40,
    "rss_rows": 2000,
    "rss_posts": 30,
    "customers": 50,
    "max_wait_s": 20.0,
    "rates": "200",  # one rate: each rate is a daemon start of its own, and the smoke run must stay short
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the harness (exits 1 if broken)")
    parser.add_argument("--postgres", default=os.environ.get(PG_ENV), help=f"Postgres server URL (default ${PG_ENV})")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--sections", default=",".join(SECTION_NAMES), help="comma-separated, of: " + ", ".join(SECTION_NAMES)
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results file (default bench/RESULTS.md; none with --smoke)"
    )
    parser.add_argument("--ceiling-posts", type=int, default=20_000, help="posts for the in-process section")
    parser.add_argument("--e2e-posts", type=int, default=10_000, help="posts handed to the daemon at once")
    parser.add_argument("--rates", default="50,200", help="posts per second for the latency section")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="how long each rate is kept up")
    parser.add_argument("--catchup-posts", type=int, default=400, help="mentions posted to mastodon-mock")
    parser.add_argument("--rss-rows", type=int, default=1_000_000, help="mentions and tickets already stored")
    parser.add_argument("--rss-posts", type=int, default=500, help="posts ingested for the RSS figure")
    parser.add_argument("--customers", type=int, default=2_000, help="customers the synthetic posts come from")
    parser.add_argument("--reply-share", type=float, default=0.25, help="share of posts that are follow-ups")
    parser.add_argument("--mock-customers", type=int, default=40, help="customer accounts on mastodon-mock")
    parser.add_argument("--max-wait-s", type=float, default=90.0, help="longest wait for a stage's posts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="run the end-to-end daemon under cProfile")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (databases, daemon logs)")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            if parser.get_default(name) == getattr(args, name):
                setattr(args, name, value)
    elif args.out is None:
        args.out = fmt.REPO_ROOT / "bench" / "RESULTS.md"
    if args.no_postgres:
        args.postgres = None
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTION_NAMES)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")
    return args


async def run_all(args: argparse.Namespace, argv: list[str], folder: Path) -> fmt.Report:
    report = fmt.Report(argv=argv)
    sections = args.sections
    async with (
        MockProcess(customers=args.mock_customers, log_path=folder / "mastodon-mock.log") as mock,
        aiohttp.ClientSession() as http,
        Scratch(folder, args.postgres) as scratch,
    ):
        templates = await capture_templates(http, mock.base_url)
        run = Run(args=args, folder=folder, mock=mock, http=http, scratch=scratch, templates=templates, report=report)
        report.setup += [f"databases: {scratch.describe(kind)}" for kind in scratch.kinds]
        if not args.postgres:
            report.setup.append(f"Postgres not measured: no --postgres URL and ${PG_ENV} not set")
        report.setup.append(
            f"posts: {args.customers:,} customers, {args.reply_share:.0%} follow-ups; sizes: in-process "
            f"{args.ceiling_posts:,}, e2e {args.e2e_posts:,}, latency {args.latency_seconds:g} s per rate, catch-up "
            f"{args.catchup_posts:,}, rss {args.rss_rows:,} stored + {args.rss_posts:,} new; waits up to "
            f"{args.max_wait_s:g} s"
        )
        if "e2e" in sections or "latency" in sections:
            await stream_ceilings(run)
        for i, kind in enumerate(scratch.kinds):
            if "in-process" in sections:
                await _timed("in-process", kind, in_process_section(run, kind, with_classifier=i == 0))
            if "e2e" in sections:
                await _timed("e2e", kind, e2e_section(run, kind))
            if "latency" in sections:
                for rate in args.rates:
                    await _timed(f"latency at {rate:g}/s", kind, latency_section(run, kind, rate))
            if "catch-up" in sections:
                await _timed("catch-up", kind, catch_up_section(run, kind))
            if "rss" in sections:
                await _timed("rss", kind, rss_section(run, kind))
    return report


async def _timed(what: str, kind: str, section: Coroutine[Any, Any, None]) -> None:
    started = time.monotonic()
    await section
    print(f"({what} on {_label(kind)} took {time.monotonic() - started:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="md_bench_"))
    try:
        report = asyncio.run(run_all(args, argv, folder))
    except HarnessError as exc:
        print(f"bench.ingest: the benchmark is broken: {exc}\n(logs in {folder})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    fmt.write(report, args.out)
    if args.keep:
        print(f"run folder kept: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
