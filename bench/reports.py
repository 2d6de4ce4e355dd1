"""Benchmark the reports at scale: the weekly report and the dashboard over a year of a busy desk.

    .venv/bin/python -m bench.reports [--tickets 1000000] [--postgres URL] [--out bench/RESULTS-reports.md]
    .venv/bin/python -m bench.reports --smoke     # 10,000 tickets, checks the harness itself (CI)

Run from the repository root. Postgres is measured when --postgres or MENTIONDESK_TEST_DATABASE_URL names a server;
the run creates its own database there (``md_bench_<random>``, bench/scratch.py) and drops it at the end.

Seeding
    ``--tickets`` tickets posted over the year before the run, ids in posting order, with what the daemon would
    have stored for each: its SLA clocks (first response; resolution; next response for customers who came back),
    its pauses (waiting on the customer, resolved), its published replies and its ticket events. The spread is
    drawn from a fixed seed: many agents and channels with skewed loads, three priorities with their own
    targets, on a 24/7 calendar (high) or office hours (normal, low: business time shorter than wall time),
    response times log-normal around half the target (so about one in five breaches), most tickets resolved
    or closed, a backlog of open and waiting tickets weighted to the last days, and some old ones forgotten.
    Mentions and the Slack outbox are left out: the reports never read them. Rows are written as bench/rows.py
    writes its ceilings (one sqlite3 executemany per table per chunk in one transaction; asyncpg COPY), then
    Postgres is VACUUM ANALYZEd (autovacuum would get there on its own within minutes; the run does not wait
    for it). SQLite gets no ANALYZE: the daemon never runs one, so its planner works from the schema alone, as
    in production.

Timing
    weekly report
        ``compute_figures`` (bot/reports/figures.py) for the last 7 days up to the run's "now", with the previous
        period: the figures of the weekly summary and of ``mentiondesk report --since 7d``.
    dashboard
        The dashboard page (bot/web/dashboard.py) for the same 7 days: its own routes on a local aiohttp server,
        one GET / timed from request to the whole page read (the figures, the SVG charts, the HTML).
    Each is run 3 times on a fresh engine (connection set up included, as a report command pays it); the median
    is the figure, the first run is shown beside it. Every statement the weekly report sends is then explained
    on each backend (EXPLAIN QUERY PLAN / EXPLAIN), and the plans are written with the results, so a full scan
    of a big table shows.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.report import REPO_ROOT, _commit, _loadavg, _machine
from bench.rows import sqlite_connect
from bench.scratch import POSTGRES, SQLITE, Scratch, asyncpg_dsn
from mentiondesk.bot.reports.figures import Figures, Period, compute_figures, figures_json
from mentiondesk.bot.web.dashboard import PAGE_PATH, dashboard_routes
from mentiondesk.storage.db import create_engine, session_factory
from mentiondesk.storage.models import (
    Reply,
    SlaClock,
    SlaPause,
    Ticket,
    TicketEvent,
)
from mentiondesk.storage.urls import sqlite_path

PG_ENV = "MENTIONDESK_TEST_DATABASE_URL"
TARGET_S = 2.0
RUNS = 3
SMOKE_TICKETS = 10_000

# In the order a transaction must write them (each table's foreign keys point at tables before it).
TABLES: dict[str, Any] = {
    "tickets": Ticket,
    "sla_clocks": SlaClock,
    "sla_pauses": SlaPause,
    "replies": Reply,
    "ticket_events": TicketEvent,
}
# The classifier's tags, priority cues and triage columns are left to the database's defaults: no report reads them.
DEFAULTED = {"categories", "priority_reasons", "triage_reason", "triage_channel", "triage_ts"}
COLUMNS = {
    name: [c.name for c in model.__table__.columns if name != "tickets" or c.name not in DEFAULTED]
    for name, model in TABLES.items()
}


# --- a year of a busy desk -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    calendar: str
    first_response_s: int
    next_response_s: int
    resolution_s: int


# Per priority, as a desk with three policies would set them: high on the 24/7 calendar, the others in office hours.
POLICIES = {
    "high": Targets("24/7", 30 * 60, 60 * 60, 8 * 3600),
    "normal": Targets("office", 60 * 60, 2 * 3600, 24 * 3600),
    "low": Targets("office", 4 * 3600, 8 * 3600, 72 * 3600),
}
PRIORITY_WEIGHTS = {"high": 15, "normal": 75, "low": 10}
CHANNELS = [f"C0{name.upper()}" for name in ("support", "billing", "outage", "shipping", "returns", "vip", "de", "fr")]
CHANNEL_WEIGHTS = [40, 15, 10, 12, 10, 3, 6, 4]
AGENTS = [f"U0AGENT{i:02d}" for i in range(60)]
# A few agents carry much of the load, as on a real team.
AGENT_WEIGHTS = [1 / (1 + i / 8) for i in range(len(AGENTS))]
CHUNK = 5_000


def _rows_per_chunk() -> dict[str, list[dict[str, Any]]]:
    return {name: [] for name in TABLES}


class Desk:
    """Draws tickets and what hangs off them; ids are assigned per table in the order rows are drawn."""

    def __init__(self, total: int, now: datetime, seed: int = 12) -> None:
        self.total = total
        self.now = now
        self.start = now - timedelta(days=365)
        self.rng = random.Random(seed)
        self.ids = dict.fromkeys(TABLES, 0)
        self.counts = dict.fromkeys(TABLES, 0)

    def chunks(self) -> Iterator[dict[str, list[dict[str, Any]]]]:
        step = (self.now - self.start) / max(self.total, 1)
        for first in range(1, self.total + 1, CHUNK):
            rows = _rows_per_chunk()
            for n in range(first, min(self.total, first + CHUNK - 1) + 1):
                posted = self.start + step * (n - 1) + step * self.rng.random()
                self._ticket(rows, n, posted)
            for name, table_rows in rows.items():
                self.counts[name] += len(table_rows)
            yield rows

    def _next(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def _delay(self, target_s: int) -> float:
        # Log-normal around half the target: about one response in five misses it.
        return max(30.0, self.rng.lognormvariate(math.log(target_s * 0.5), 0.85))

    def _business(self, targets: Targets, wall_s: float) -> float:
        if targets.calendar == "24/7":
            return wall_s
        # Office hours: a short wait mostly falls within them; a long one spans nights and weekends.
        if wall_s < 2 * 3600 and self.rng.random() < 0.7:
            return wall_s
        return wall_s * self.rng.uniform(0.25, 0.9)

    def _ticket(self, rows: dict[str, list[dict[str, Any]]], n: int, posted: datetime) -> None:
        rng = self.rng
        priority = rng.choices(list(PRIORITY_WEIGHTS), weights=list(PRIORITY_WEIGHTS.values()))[0]
        targets = POLICIES[priority]
        channel = rng.choices(CHANNELS, weights=CHANNEL_WEIGHTS)[0]
        agent = rng.choices(AGENTS, weights=AGENT_WEIGHTS)[0]
        age = self.now - posted
        recent = age < timedelta(days=3)
        draw = rng.random()
        if recent:
            state = "open" if draw < 0.25 else "waiting" if draw < 0.35 else "resolved" if draw < 0.9 else "closed"
        else:
            state = "open" if draw < 0.003 else "waiting" if draw < 0.005 else "resolved" if draw < 0.8 else "closed"
        not_a_complaint = state == "closed" and rng.random() < 0.6
        customer = rng.randrange(200_000)
        acct = f"customer{customer}@example.social"
        status_id = str(10**17 + n)
        events = rows["ticket_events"]
        changes = 0

        def add_event(actor: str, action: str, at: datetime, detail: str = "") -> None:
            nonlocal changes
            if at <= self.now:
                changes += 1
                events.append(
                    {
                        "id": self._next("ticket_events"),
                        "ticket_id": n,
                        "actor": actor,
                        "action": action,
                        "detail": detail,
                        "created_at": at,
                    }
                )

        clocks: list[dict[str, Any]] = []

        def clock(kind: str, seq: int, started: datetime, target_s: int, stopped: datetime | None) -> datetime | None:
            """Adds the clock; returns when it stopped (None: still running at `now`)."""
            if stopped is not None and stopped > self.now:
                stopped = None
            wall = (stopped - started).total_seconds() if stopped is not None else None
            business = self._business(targets, wall) if wall is not None else None
            # On office hours the due time lies further out than the target's wall length.
            due = started + timedelta(seconds=target_s * (1 if targets.calendar == "24/7" else 1.6))
            breached = business > target_s if business is not None else due < self.now
            clocks.append(
                {
                    "id": self._next("sla_clocks"),
                    "ticket_id": n,
                    "kind": kind,
                    "seq": seq,
                    "policy": priority,
                    "calendar": targets.calendar,
                    "target_s": target_s,
                    "started_at": started,
                    "due_at": due,
                    "warn_at": started + (due - started) * 0.75,
                    "escalate_at": None,
                    "achieved_at": stopped,
                    "wall_s": wall,
                    "business_s": business,
                    "breached": breached,
                    "breached_at": due if breached else None,
                }
            )
            return stopped

        def reply(at: datetime, in_reply_to: str) -> None:
            author = agent if rng.random() < 0.9 else rng.choice(AGENTS)
            reply_id = self._next("replies")
            approved = rng.random() < 0.3
            rows["replies"].append(
                {
                    "id": reply_id,
                    "ticket_id": n,
                    "author_slack_id": author,
                    "approver_slack_id": rng.choice(AGENTS) if approved else None,
                    "text": "Thanks for telling us. We are looking into it and will follow up here.",
                    "visibility": "public",
                    "in_reply_to_status_id": in_reply_to,
                    "state": "published",
                    "mastodon_status_id": str(2 * 10**17 + reply_id),
                    "mastodon_url": f"https://brand.example/@brand/{2 * 10**17 + reply_id}",
                    "error": None,
                    "approval_channel": channel if approved else None,
                    "approval_ts": f"{at.timestamp() - 60:.6f}" if approved else None,
                    "created_at": at - timedelta(seconds=90),
                    "decided_at": at - timedelta(seconds=30) if approved else None,
                    "published_at": at,
                }
            )
            add_event(author, "replied", at)

        claimed = posted + timedelta(seconds=rng.uniform(20, 900))
        assignee = None if not_a_complaint or (state == "open" and rng.random() < 0.4) else agent
        if assignee is not None:
            add_event(assignee, "claimed", claimed)

        # First response: every ticket that was worked got one, open ones only some of the time.
        answered = not not_a_complaint and (state != "open" or rng.random() < 0.5)
        first_at = clock(
            "first_response",
            0,
            posted,
            targets.first_response_s,
            posted + timedelta(seconds=self._delay(targets.first_response_s)) if answered else None,
        )
        if first_at is not None:
            reply(first_at, status_id)
            add_event(assignee or agent, "first_response", first_at)

        # Customers who came back start a next-response clock (seq 1, 2).
        last = first_at
        seq = 0
        while last is not None and seq < 2 and rng.random() < (0.3 if seq == 0 else 0.25):
            seq += 1
            came_back = last + timedelta(seconds=rng.uniform(600, 36 * 3600))
            if came_back > self.now:
                break
            add_event("customer", "customer_post", came_back)
            running = state == "open" and rng.random() < 0.5
            stopped = came_back + timedelta(seconds=self._delay(targets.next_response_s))
            last = clock("next_response", seq, came_back, targets.next_response_s, None if running else stopped)
            if last is not None:
                reply(last, str(10**17 + n * 10 + seq))

        # Resolution: stopped by Resolve or a close; after it the ticket sits in a "resolved" pause.
        ended: datetime | None = None
        if state in ("resolved", "closed"):
            base = last or posted
            ended = base + timedelta(seconds=rng.uniform(60, targets.resolution_s * 0.8))
            if not_a_complaint:
                ended = posted + timedelta(seconds=rng.uniform(60, 3600))
            ended = min(ended, self.now)
        clock("resolution", 0, posted, targets.resolution_s, ended)
        if ended is not None:
            actor = assignee or agent
            add_event(
                actor, "resolved" if state == "resolved" else "closed", ended, "not a complaint" * not_a_complaint
            )
            rows["sla_pauses"].append(
                {
                    "id": self._next("sla_pauses"),
                    "ticket_id": n,
                    "started_at": ended,
                    "ended_at": None,
                    "reason": "resolved",
                }
            )
        asked: datetime | None = None
        if state == "waiting":
            asked = min(self.now, (last or posted) + timedelta(seconds=rng.uniform(60, 3600)))
            add_event(assignee or agent, "waiting", asked)
            rows["sla_pauses"].append(
                {
                    "id": self._next("sla_pauses"),
                    "ticket_id": n,
                    "started_at": asked,
                    "ended_at": None,
                    "reason": "waiting",
                }
            )

        # A clock still running when its ticket paused (waiting, resolved, closed) has no due time ahead, and has
        # breached only if it was due before the pause.
        paused = ended if ended is not None else asked if state == "waiting" else None
        for held in clocks:
            if paused is not None and held["achieved_at"] is None and held["due_at"] > paused:
                held.update(due_at=None, breached=False, breached_at=None)
                if held["warn_at"] > paused:
                    held["warn_at"] = None
        rows["sla_clocks"] += clocks
        rows["tickets"].append(
            {
                "id": n,
                "state": state,
                "priority": priority,
                "customer_account_id": str(customer),
                "customer_acct": acct,
                "customer_display_name": f"Customer {customer}",
                "customer_url": f"https://example.social/@customer{customer}",
                "root_status_id": status_id,
                "posted_at": posted,
                "received_at": posted + timedelta(seconds=1),
                "score": round(rng.uniform(0.4, 1.0), 3),
                "channel": channel,
                # Cards go out within a second or two; old ones all have their ts.
                "slack_ts": f"{posted.timestamp() + 2:.6f}",
                "first_response_due_at": clocks[0]["due_at"],
                "created_at": posted + timedelta(seconds=1),
                "updated_at": ended or last or claimed,
                "version": 1 + changes,
                "label": "other" if not_a_complaint else "complaint",
                "assignee_slack_id": assignee,
                "first_response_at": first_at,
                "resolved_at": ended if state == "resolved" else None,
                "closed_reason": "not a complaint" if not_a_complaint else "spam" if state == "closed" else None,
                "last_customer_activity_at": posted,
                "previous_ticket_id": None,
            }
        )


# --- writing ----------------------------------------------------------------------------------------------------


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # As SQLAlchemy stores the app's UTC columns in SQLite: naive UTC text.
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


def _insert_sql(table: str) -> str:
    names = COLUMNS[table]
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"


class SqliteSink:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite_connect(path)
        self.conn.execute("BEGIN")

    async def write(self, chunk: dict[str, list[dict[str, Any]]]) -> None:
        for table, rows in chunk.items():
            names = COLUMNS[table]
            self.conn.executemany(_insert_sql(table), [tuple(_sqlite_value(r[c]) for c in names) for r in rows])

    async def finish(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


class PostgresSink:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, dsn: str) -> PostgresSink:
        sink = cls(await asyncpg.connect(dsn))
        await sink.conn.execute("BEGIN")
        return sink

    async def write(self, chunk: dict[str, list[dict[str, Any]]]) -> None:
        for table, rows in chunk.items():
            names = COLUMNS[table]
            records = [tuple(r[c] for c in names) for r in rows]
            await self.conn.copy_records_to_table(table, records=records, columns=names)

    async def finish(self) -> None:
        # Explicit ids leave the sequences at 1: the daemon's own inserts would collide with the seed.
        for table in TABLES:
            await self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT max(id) FROM {table}), 1))"
            )
        await self.conn.execute("COMMIT")
        # What autovacuum does to a table this size within minutes: statistics, and the visibility map that lets
        # an index-only scan skip the table.
        await self.conn.execute("VACUUM ANALYZE")
        await self.conn.close()


async def seed(desk: Desk, urls: dict[str, str]) -> float:
    """Writes the desk into every database at once (each chunk drawn once); returns the seconds it took."""
    started = time.perf_counter()
    sinks: list[SqliteSink | PostgresSink] = []
    for kind, url in urls.items():
        if kind == SQLITE:
            path = sqlite_path(url)
            assert path is not None
            sinks.append(SqliteSink(path))
        else:
            sinks.append(await PostgresSink.open(asyncpg_dsn(url)))
    for i, chunk in enumerate(desk.chunks()):
        for sink in sinks:
            await sink.write(chunk)
        done = min(desk.total, (i + 1) * CHUNK)
        if done % 100_000 == 0 or done == desk.total:
            print(f"  seeded {done:,} tickets ({time.perf_counter() - started:.0f} s)", flush=True)
    for sink in sinks:
        await sink.finish()
    return time.perf_counter() - started


# --- timing ---------------------------------------------------------------------------------------------------


class HarnessError(Exception):
    """The benchmark itself is broken (not a slow figure)."""


@dataclass
class Statement:
    sql: str
    parameters: Any
    seconds: float
    plan: list[str] = field(default_factory=list)


@dataclass
class Timing:
    what: str
    runs: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


class StatementLog:
    """Every statement an engine sends while `recording`, with how long the driver took over it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.recording = False
        self.statements: list[Statement] = []
        self._started: list[float] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._before)
        event.listen(engine.sync_engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        self._started.append(time.perf_counter())

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        elapsed = time.perf_counter() - self._started.pop()
        if self.recording:
            self.statements.append(Statement(statement, parameters, elapsed))


async def weekly_report(engine: AsyncEngine, now: datetime) -> Figures:
    period = Period.last(timedelta(days=7), until=now)
    return await compute_figures(session_factory(engine), period, with_previous=True, now=now)


async def dashboard_page(engine: AsyncEngine, now: datetime) -> str:
    """GET / of the dashboard (bot/web/dashboard.py) through aiohttp on a local port: figures, render and HTTP."""
    app = web.Application()
    app.add_routes(dashboard_routes(session_factory(engine), token=None, clock=lambda: now))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{PAGE_PATH}") as response:
            page = await response.text()
            if response.status != 200:
                raise HarnessError(f"the dashboard answered {response.status}: {page[:200]}")
        return page
    finally:
        await runner.cleanup()


async def timed(url: str, job: Callable[[AsyncEngine, datetime], Awaitable[Any]], now: datetime) -> tuple[float, Any]:
    """One run on a fresh engine: connecting is part of what a report command or a page load pays."""
    engine = create_engine(url)
    try:
        started = time.perf_counter()
        result = await job(engine, now)
        return time.perf_counter() - started, result
    finally:
        await engine.dispose()


async def explained(url: str, kind: str, now: datetime) -> list[Statement]:
    """The weekly report's statements, each with its plan on this backend."""
    engine = create_engine(url)
    try:
        log = StatementLog(engine)
        log.recording = True
        await weekly_report(engine, now)
        log.recording = False
        async with engine.connect() as conn:
            for statement in log.statements:
                if not statement.sql.lstrip().upper().startswith(("SELECT", "WITH")):
                    continue
                if kind == SQLITE:
                    plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement.sql, statement.parameters)
                    # (id, parent, unused, detail): the ids show the nesting.
                    statement.plan = [" ".join(map(str, (*row[:2], list(row)[-1]))) for row in plan]
                else:
                    # ANALYZE runs it again: the plan then shows where the time goes, not only the estimate.
                    rows = await conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, COSTS OFF) " + statement.sql, statement.parameters
                    )
                    statement.plan = [row[0] for row in rows]
        return log.statements
    finally:
        await engine.dispose()


# --- the run ----------------------------------------------------------------------------------------------------


@dataclass
class Result:
    kind: str
    timings: list[Timing]
    statements: list[Statement]
    summary: str
    figures: dict[str, Any]


async def measure(url: str, kind: str, now: datetime) -> Result:
    timings: list[Timing] = []
    runs: list[float] = []
    figures: Any = None
    for _ in range(RUNS):
        seconds, figures = await timed(url, weekly_report, now)
        runs.append(seconds)
    timings.append(Timing("weekly report: `compute_figures`, last 7 days with the previous 7", runs))
    if figures is None or figures.opened == 0:
        raise HarnessError(f"the weekly report on {kind} found no tickets opened: the seed and the figures disagree")
    runs = []
    page = ""
    for _ in range(RUNS):
        seconds, page = await timed(url, dashboard_page, now)
        runs.append(seconds)
    if f"{figures.opened:,}" not in page and str(figures.opened) not in page:
        raise HarnessError(f"the dashboard on {kind} does not show the {figures.opened} tickets opened")
    timings.append(Timing("dashboard page: GET / over HTTP (its figures, last 7 days with the previous 7)", runs))
    first = figures.clocks.get("first_response")
    within = f"{first.within_sla:.0%}" if first is not None and first.within_sla is not None else "n/a"
    summary = (
        f"the week: {figures.opened:,} opened, {figures.answered:,} answered, {figures.resolved:,} resolved, "
        f"{figures.still_open:,} still open; first response within SLA {within}; "
        f"{len(figures.breaches)} breaches listed; backlog {sum(n for _, n in figures.backlog):,}"
    )
    statements = await explained(url, kind, now)
    return Result(kind, timings, statements, summary, figures_json(figures))


LABEL = {SQLITE: "SQLite", POSTGRES: "Postgres"}


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def markdown(argv: list[str], tickets: int, started: datetime, setup: list[str], results: list[Result]) -> str:
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "bench.reports", *argv])
    lines = [
        f"# Reports at {tickets:,} tickets",
        "",
        f"Written by `{command}` (run from the repository root), {started:%Y-%m-%d %H:%M} UTC.",
        "",
        f"- machine: {_machine()}; load average at end {_loadavg()}",
        f"- software: Python {platform.python_version()}, {platform.system()} {platform.release()}; {_commit()}",
        *(f"- {line}" for line in setup),
        "",
        "How the desk is drawn and what is timed: the docstring of bench/reports.py. Each figure is the median of",
        f"{RUNS} runs, each on a fresh engine (connecting included); target under {TARGET_S:g} s. The indexes these",
        "plans use, and why each, are in storage/migrations/versions/0006_report_indexes.py.",
        "",
        "| database | what | median | runs | target |",
        "|---|---|---:|---|---:|",
    ]
    for result in results:
        for timing in result.timings:
            if not timing.runs:
                lines.append(f"| {LABEL[result.kind]} | {timing.what} | {timing.note} |  |  |")
                continue
            ok = "met" if timing.median < TARGET_S else "**missed**"
            runs = " / ".join(fmt_s(s) for s in timing.runs)
            lines.append(
                f"| {LABEL[result.kind]} | {timing.what} | {fmt_s(timing.median)} | {runs} | < {TARGET_S:g} s ({ok}) |"
            )
    lines.append("")
    lines += [f"- {LABEL[r.kind]}: {r.summary}" for r in results]
    for result in results:
        lines += [
            "",
            f"## The weekly report's statements on {LABEL[result.kind]}, with their plans",
            "",
            "Each statement's time as the driver took it (one run); plans from "
            + ("EXPLAIN QUERY PLAN." if result.kind == SQLITE else "EXPLAIN (ANALYZE, COSTS OFF)."),
        ]
        for number, statement in enumerate(result.statements, start=1):
            first_line = " ".join(statement.sql.split())[:110]
            lines += [
                "",
                f"<details><summary>{number}. {fmt_s(statement.seconds)}: <code>{first_line}…</code></summary>",
                "",
                "```",
                *statement.plan,
                "```",
                "</details>",
            ]
    return "\n".join(lines) + "\n"


async def run_all(args: argparse.Namespace, argv: list[str], folder: Path) -> str:
    started = datetime.now(UTC)
    now = started.replace(microsecond=0)
    async with Scratch(folder, args.postgres) as scratch:
        urls = {kind: await scratch.fresh(kind, "reports") for kind in scratch.kinds}
        desk = Desk(args.tickets, now, seed=args.seed)
        print(f"seeding {args.tickets:,} tickets into {', '.join(LABEL[k] for k in urls)}", flush=True)
        seconds = await seed(desk, urls)
        counts = ", ".join(f"{desk.counts[t]:,} {t}" for t in TABLES)
        setup = [
            f"{args.tickets:,} tickets over the year before the run: {counts}; seeded in {seconds:.0f} s",
            *(f"databases: {scratch.describe(kind)}" for kind in scratch.kinds),
        ]
        if not args.postgres:
            setup.append(f"Postgres not measured: no --postgres URL and ${PG_ENV} not set")
        results = []
        for kind, url in urls.items():
            result = await measure(url, kind, now)
            for timing in result.timings:
                shown = fmt_s(timing.median) if timing.runs else timing.note
                print(f"{LABEL[kind]}: {timing.what}: {shown}", flush=True)
            results.append(result)
    # The figures are meant to be identical on both backends; the same seed makes any difference a bug.
    if len(results) == 2 and results[0].figures != results[1].figures:
        raise HarnessError("the weekly report's figures differ between SQLite and Postgres on the same seed")
    return markdown(argv, args.tickets, started, setup, results)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_TICKETS:,} tickets, to check the harness")
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--postgres", default=os.environ.get(PG_ENV), help=f"Postgres server URL (default ${PG_ENV})")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--out", type=Path, default=None, help="results file (default bench/RESULTS-reports.md; none with --smoke)"
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (the SQLite database)")
    args = parser.parse_args(argv)
    if args.smoke:
        if args.tickets == parser.get_default("tickets"):
            args.tickets = SMOKE_TICKETS
    elif args.out is None:
        args.out = REPO_ROOT / "bench" / "RESULTS-reports.md"
    if args.no_postgres:
        args.postgres = None
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="md_bench_reports_"))
    try:
        text = asyncio.run(run_all(args, argv, folder))
    except HarnessError as exc:
        print(f"bench.reports: the benchmark is broken: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"run folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if args.out is None:
        sys.stdout.write("\n" + text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"results written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
