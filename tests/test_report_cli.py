"""`mentiondesk report` as a manager runs it: the three formats, the breakdowns, read-only, and its progress line."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.cli import main
from mentiondesk.bot.reports import cli as report_cli
from tests.test_cli import write_config
from tests.test_report_figures import PERIOD, TICKETS, group_rows, percentile, seed

REPO = Path(__file__).resolve().parent.parent
UNTIL = "2025-03-10"  # PERIOD's end


@pytest.fixture
async def config_file(sessions: async_sessionmaker[AsyncSession], db_url: str, tmp_path: Path) -> Path:
    await seed(sessions, TICKETS)
    return write_config(
        tmp_path, mastodon_url="https://mastodon.example", slack_url="https://slack.example", db_url=db_url
    )


async def report(capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str, str]:
    # In a thread: the command runs its own event loop, as it does from a shell.
    code = await asyncio.to_thread(main, ["report", *words])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_json_has_the_figures(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await report(
        capsys, "--config", str(config_file), "--since", "7d", "--until", UNTIL, "--format", "json"
    )
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["period"] == {"start": "2025-03-03T00:00:00Z", "end": "2025-03-10T00:00:00Z"}
    assert data["tickets"] == {"opened": 7, "answered": 6, "resolved": 3, "still_open": 4}
    first = data["clocks"]["first_response"]
    business = [300, 450.5, 600, 1800, 5400, 7200]
    assert first["business"]["median_s"] == pytest.approx(percentile(business, 0.5))
    assert first["business"]["p90_s"] == pytest.approx(percentile(business, 0.9))
    assert first["within_sla"] == pytest.approx(4 / 6) and first["breaches"] == 3
    assert data["previous"]["tickets"]["opened"] == 1
    assert data["change"]["tickets"]["opened"] == pytest.approx(6.0)
    assert {row["key"] for row in data["by_agent"]} == set(group_rows("agent"))
    # Ticket 2's resolution breached at noon on the 4th, ticket 3's first response at 02:00 that day.
    assert [(b["ticket_id"], b["clock"]) for b in data["breaches"]] == [
        (6, "first_response"),
        (5, "first_response"),
        (2, "resolution"),
        (3, "first_response"),
    ]


def documented_keys() -> set[str]:
    """The JSON keys the README's Reports section names (in backticks, in its key list)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Reports", 1)[1].split("\n## ", 1)[0]
    listing = section.split("<!-- json keys -->", 2)[1]
    return set(re.findall(r"`([a-z_0-9<>.\[\]]+)`", listing))


def keys_of(value: Any, prefix: str = "") -> set[str]:
    """Every key path in the JSON, lists and the per-clock and backlog maps written generically."""
    found: set[str] = set()
    if isinstance(value, dict):
        generic = prefix.endswith(("clocks", "backlog"))
        for key, inner in value.items():
            name = "<clock>" if generic and prefix.endswith("clocks") else "<age>" if generic else key
            path = f"{prefix}.{name}" if prefix else name
            found.add(path)
            found |= keys_of(inner, path)
    elif isinstance(value, list) and value:
        found |= keys_of(value[0], prefix + "[]")
    return found


async def test_the_readme_documents_every_json_key(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = await report(capsys, "-c", str(config_file), "--since", "7d", "--until", UNTIL, "--format", "json")
    data = json.loads(out)
    # previous has the same keys as the top level (without previous and change): the README says so once.
    paths = {p for p in keys_of(data) if not p.startswith("previous.")}
    assert paths - documented_keys() == set(), "document these keys in README.md's Reports section"
    # Dotted names are paths; the list also names values (`first_response`, `<1h`) in passing.
    stale = {key for key in documented_keys() - paths if "." in key}
    assert stale == set(), "the README names keys the JSON does not have"


@pytest.mark.parametrize("by", ["agent", "channel", "priority"])
async def test_csv_has_a_row_per_agent_channel_or_priority(
    config_file: Path, capsys: pytest.CaptureFixture[str], by: str
) -> None:
    code, out, _ = await report(
        capsys, "-c", str(config_file), "--since", "7d", "--until", UNTIL, "--format", "csv", "--by", by
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = group_rows(by)
    assert [row[by] for row in rows] == list(expected)
    for row in rows:
        opened, answered, median, share = expected[row[by]]
        assert (int(row["opened"]), int(row["answered"])) == (opened, answered)
        assert (float(row["first_response_median_s"]) if row["first_response_median_s"] else None) == median
        assert (float(row["within_sla"]) if row["within_sla"] else None) == pytest.approx(share)


async def test_table_for_a_person(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await report(capsys, "-c", str(config_file), "--since", "7d", "--until", UNTIL, "--by", "priority")
    assert code == 0
    assert "Report 2025-03-03 00:00 UTC .. 2025-03-10 00:00 UTC" in out
    lines = {line.split("  ")[0].strip(): line.split() for line in out.splitlines() if line.strip()}
    assert lines["opened"][1:] == ["7", "1", "+600%"]
    # first response: 6 measured, 67% within SLA, median 20 minutes, p90 1h45m, 3 breaches.
    assert lines["first response"][2:6] == ["6", "67%", "20m", "1h45m"] and lines["first response"][-1] == "3"
    assert lines[">3d"] == [">3d", "4"]
    assert lines["high"] == ["high", "2", "2", "1h00m", "50%"]
    assert "https://slack.com/archives/C2/p1700000000000100" in out


async def test_progress_on_stderr_only_when_the_query_is_slow(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    words = ["-c", str(config_file), "--since", "7d", "--until", UNTIL, "--format", "json"]
    _, quick_out, quick_err = await report(capsys, *words)
    assert quick_err == ""
    monkeypatch.setattr(report_cli, "PROGRESS_AFTER_S", 0.0)
    _, out, err = await report(capsys, *words)
    assert "computing the figures" in err and "done in" in err
    assert json.loads(out) == json.loads(quick_out)  # stdout is the report alone


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_missing_database_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    missing = tmp_path / "nowhere" / "desk.db"
    config = write_config(
        tmp_path,
        mastodon_url="https://m.example",
        slack_url="https://s.example",
        db_url=f"sqlite+aiosqlite:///{missing}",
    )
    code, out, err = await report(capsys, "-c", str(config), "--since", "7d")
    assert code == 1 and out == ""
    assert f"no database at {missing}" in err
    assert not missing.parent.exists()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_schema_behind_is_refused_not_migrated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    config = write_config(
        tmp_path, mastodon_url="https://m.example", slack_url="https://s.example", db_url=f"sqlite+aiosqlite:///{empty}"
    )
    code, _, err = await report(capsys, "-c", str(config), "--since", "7d")
    assert code == 1
    assert "schema is at nothing" in err and "mentiondesk db upgrade" in err
    with closing(sqlite3.connect(empty)) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []  # no tables made


@pytest.mark.parametrize("since", ["7", "0d", "1y", "-3d"])
def test_a_bad_length_is_refused(since: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report", f"--since={since}"])
    assert info.value.code == 2
    assert "must be a length like 12h, 7d or 4w" in capsys.readouterr().err


def test_until_takes_a_date_or_a_time() -> None:
    assert report_cli.instant("2025-03-10") == PERIOD.end
    assert report_cli.instant("2025-03-10T01:00+01:00") == PERIOD.end
    assert report_cli.instant("2025-03-10T00:00") == PERIOD.end


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report", "--help"])
    assert info.value.code == 0
    assert "usage: mentiondesk report" in capsys.readouterr().out
