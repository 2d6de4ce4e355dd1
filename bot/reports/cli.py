"""`mentiondesk report`: a period's figures on stdout, as a table, CSV or JSON, without Slack.

Read-only: the database is opened without creating it and never migrated; a schema behind the code is refused
with what to run. Taking more than a second, the query says so on stderr, so a person at a terminal knows it
is working; stdout stays the report alone, for pipes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import time
from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, TextIO, TypeVar

if TYPE_CHECKING:
    # Imported where used otherwise: bot/cli.py builds this command's arguments on every start, and the database
    # side (SQLAlchemy, Alembic) would slow down `mentiondesk --help` and every other command.
    from mentiondesk.bot.config import Config
    from mentiondesk.bot.reports.figures import Figures, Period

FORMATS = ("table", "csv", "json")
GROUPINGS = ("agent", "channel", "priority")
# How long the query runs before stderr says it is working, and how often it says so again.
PROGRESS_AFTER_S = 1.0
PROGRESS_EVERY_S = 5.0

_SPAN = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}

T = TypeVar("T")


def span(text: str) -> timedelta:
    """`--since`: a whole number of hours, days or weeks (12h, 7d, 4w)."""
    found = _SPAN.match(text)
    if found is None or int(found[1]) == 0:
        raise argparse.ArgumentTypeError(f"must be a length like 12h, 7d or 4w, got {text!r}")
    return int(found[1]) * _UNITS[found[2]]


def instant(text: str) -> datetime:
    """`--until`: a date (its midnight, UTC) or an ISO date and time (UTC unless it names its offset)."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), tzinfo=UTC)
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date like 2025-03-10 or 2025-03-10T08:00, got {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=span, required=True, metavar="LENGTH", help="the period's length: 12h, 7d, 4w")
    parser.add_argument(
        "--until",
        type=instant,
        default=None,
        metavar="DATE",
        help="the period's end, exclusive: a date (its midnight, UTC) or an ISO date and time (default: now)",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument(
        "--by", choices=GROUPINGS, default="agent", help="the breakdown in the table and the CSV (default: agent)"
    )


async def _with_progress(work: Awaitable[T], err: TextIO) -> T:
    """Await work; past PROGRESS_AFTER_S, say on err that it is still running, and when it is done."""
    started = time.monotonic()
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=PROGRESS_AFTER_S)
    if done:
        return task.result()
    print("mentiondesk report: computing the figures...", file=err, flush=True)
    while not (await asyncio.wait({task}, timeout=PROGRESS_EVERY_S))[0]:
        print(f"mentiondesk report: still computing ({time.monotonic() - started:.0f}s)", file=err, flush=True)
    result = task.result()
    print(f"mentiondesk report: done in {time.monotonic() - started:.1f}s", file=err, flush=True)
    return result


async def load_figures(config: Config, period: Period) -> Figures:
    """The figures of the period, from a database that is read, never created or migrated."""
    from mentiondesk.bot.reports.figures import compute_figures
    from mentiondesk.storage.db import DatabaseError, current_revision, head_revision, open_engine, session_factory
    from mentiondesk.storage.urls import describe_database

    url = config.settings.database.url
    engine = await open_engine(url, create=False)
    try:
        current, head = await current_revision(engine), head_revision()
        if current != head:
            raise DatabaseError(
                f"{describe_database(url)}: schema is at {current or 'nothing'}, needs {head}: "
                "run `mentiondesk db upgrade`"
            )
        return await compute_figures(session_factory(engine), period)
    finally:
        await engine.dispose()


def run_report(config: Config, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    from mentiondesk.bot.reports.figures import Period, figures_json

    until = args.until or datetime.now(UTC)
    period = Period.last(args.since, until=until)
    figures = asyncio.run(_with_progress(load_figures(config, period), err))
    if args.format == "json":
        json.dump(figures_json(figures), out, indent=2)
        out.write("\n")
    elif args.format == "csv":
        write_csv(figures, args.by, out)
    else:
        write_table(figures, args.by, out)


# --- CSV and table ---------------------------------------------------------------------------------------------

CSV_COLUMNS = ("key", "opened", "answered", "first_response_median_s", "within_sla")


def write_csv(figures: Figures, by: str, out: TextIO) -> None:
    """One row per agent, channel or priority; empty cells where nothing was measured."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([by, *CSV_COLUMNS[1:]])
    for row in figures.groups(by):
        writer.writerow(["" if (value := getattr(row, name)) is None else value for name in CSV_COLUMNS])


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes}m" if minutes else f"{seconds:.0f}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def relative(value: float | None) -> str:
    return "" if value is None else f"{value:+.0%}"


def _columns(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))]
        out.write("  ".join(cells).rstrip() + "\n")


def _day(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M") + " UTC"


def write_table(figures: Figures, by: str, out: TextIO) -> None:
    from mentiondesk.bot.reports.figures import CLOCKS, change

    before = figures.previous
    out.write(f"Report {_day(figures.period.start)} .. {_day(figures.period.end)}, against the period before\n\n")
    rows = [["Tickets", "now", "before", "change"]]
    for name in ("opened", "answered", "resolved", "still_open"):
        now_value, old = getattr(figures, name), getattr(before, name, None)
        rows.append(
            [name.replace("_", " "), str(now_value), "" if old is None else str(old), relative(change(now_value, old))]
        )
    _columns(rows, out)

    out.write("\n")
    rows = [["Clock (business time)", "measured", "within SLA", "median", "p90", "mean", "wall median", "breaches"]]
    for kind in CLOCKS:
        clock = figures.clocks[kind]
        rows.append(
            [
                kind.replace("_", " "),
                str(clock.measured),
                share(clock.within_sla),
                duration(clock.business.median_s),
                duration(clock.business.p90_s),
                duration(clock.business.mean_s),
                duration(clock.wall.median_s),
                str(clock.breaches),
            ]
        )
    _columns(rows, out)

    out.write("\n")
    _columns([["Backlog by age", "tickets"], *([label, str(count)] for label, count in figures.backlog)], out)

    out.write("\n")
    rows = [[f"By {by}", "opened", "answered", "first response median", "within SLA"]]
    for group in figures.groups(by):
        rows.append(
            [
                group.key,
                str(group.opened),
                str(group.answered),
                duration(group.first_response_median_s),
                share(group.within_sla),
            ]
        )
    if len(rows) == 1:
        rows.append(["(none)", "", "", "", ""])
    _columns(rows, out)

    if figures.breaches:
        out.write(f"\nBreaches ({len(figures.breaches)} shown, newest first)\n")
        for breach in figures.breaches:
            link = breach.card_url or "(no card yet)"
            when = _day(breach.breached_at) if breach.breached_at else "-"
            out.write(f"  #{breach.ticket_id} {breach.clock.replace('_', ' ')} breached {when}  {link}\n")
