"""Where the database is, what each command says about it, and what a command may create."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from mentiondesk.bot.cli import main
from mentiondesk.bot.config import load_config
from mentiondesk.storage.db import head_revision

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def write_config(folder: Path, db_url: str, *, auto_migrate: bool = True, more: str = "") -> Path:
    """A config whose Mastodon refuses connections and whose Slack is a dry run: only the database is real.

    ``more`` is TOML appended after the [database] section (other sections).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(
        f"""
[mastodon]
base_url = "http://127.0.0.1:9"
[slack]
default_channel = "#support"
dry_run = true
[database]
url = "{db_url}"
auto_migrate = {str(auto_migrate).lower()}
{more}""",
        encoding="utf-8",
    )
    return path


def run_cli(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`mentiondesk ARGS` in a fresh process: logging is set up from scratch, as for a user."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MENTIONDESK_")}
    return subprocess.run(
        [sys.executable, "-m", "mentiondesk.bot", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- where the SQLite file is ---------------------------------------------------------------------------


def test_example_config_names_the_same_file_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(EXAMPLE, environ={})
    assert make_url(config.settings.database.url).database == "/var/lib/mentiondesk/mentiondesk.db"


def test_relative_sqlite_path_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config_dir = tmp_path / "etc"
    relative = load_config(write_config(config_dir, "sqlite+aiosqlite:///data/md.db"), environ={})
    assert relative.settings.database.url == f"sqlite+aiosqlite:///{tmp_path}/data/md.db"
    home = load_config(write_config(config_dir, "sqlite+aiosqlite:///~/md.db"), environ={})
    assert home.settings.database.url == f"sqlite+aiosqlite:///{tmp_path}/home/md.db"
    (config_dir / "minimal.toml").write_text(
        '[mastodon]\nbase_url = "https://social.example"\n[slack]\ndefault_channel = "#s"\n', encoding="utf-8"
    )
    default = load_config(config_dir / "minimal.toml", environ={})
    assert default.settings.database.url == f"sqlite+aiosqlite:///{tmp_path}/mentiondesk.db"
    postgres = "postgresql+asyncpg://md:pw@db.example:5432/md"
    assert load_config(write_config(config_dir, postgres), environ={}).settings.database.url == postgres


def test_commands_print_the_absolute_database_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, "sqlite+aiosqlite:///data/md.db")
    database = tmp_path / "data" / "md.db"
    head = head_revision()

    assert main(["db", "upgrade", "--config", str(path)]) == 0
    assert f"{database}: schema at {head} (latest {head})" in capsys.readouterr().out
    assert main(["db", "current", "--config", str(path)]) == 0
    assert f"{database}: schema at {head} (latest {head})" in capsys.readouterr().out
    main(["check", "--config", str(path)])
    assert f"ok   database: {database} reachable, schema current ({head})" in capsys.readouterr().out


# --- reading commands create nothing ---------------------------------------------------------------------


def test_db_current_on_a_missing_file_says_so_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "etc", "sqlite+aiosqlite:///var/lib/mentiondesk/mentiondesk.db")
    assert main(["db", "current", "--config", str(path)]) == 1
    database = tmp_path / "var" / "lib" / "mentiondesk" / "mentiondesk.db"
    assert capsys.readouterr().err == (
        f"mentiondesk: no database at {database}: `mentiondesk db upgrade` creates it, or fix database.url\n"
    )
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize(
    ("auto_migrate", "expected"),
    [
        (True, "ok   database: no database at {db} yet: `mentiondesk run` creates it at start"),
        (False, "FAIL database: no database at {db}: `mentiondesk db upgrade` creates it, or fix database.url"),
    ],
)
def test_check_on_a_missing_file_says_so_and_creates_nothing(
    auto_migrate: bool,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "etc", "sqlite+aiosqlite:///var/lib/md.db", auto_migrate=auto_migrate)
    main(["check", "--config", str(path)])
    assert expected.format(db=tmp_path / "var" / "lib" / "md.db") in capsys.readouterr().out
    assert not (tmp_path / "var").exists()


# --- a database that cannot be made or reached is one line ----------------------------------------------


def _file_in_the_way(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "afile").write_text("", encoding="utf-8")
    database = tmp_path / "afile" / "sub" / "md.db"
    return database, f"cannot create the database {database}: {tmp_path / 'afile'} is a file, not a folder"


def _folder_in_the_way(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "md.db").mkdir()
    return tmp_path / "md.db", f"{tmp_path / 'md.db'} is a folder, not a database file: fix database.url"


@pytest.mark.parametrize("words", [["run"], ["db", "upgrade"]], ids=" ".join)
@pytest.mark.parametrize("in_the_way", [_file_in_the_way, _folder_in_the_way], ids=["file", "folder"])
def test_a_sqlite_path_that_cannot_be_used_is_one_line(
    words: list[str],
    in_the_way: Callable[[Path], tuple[Path, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database, reason = in_the_way(tmp_path)
    path = write_config(tmp_path / "etc", f"sqlite+aiosqlite:///{database}")
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", "t")
    assert main([*words, "--config", str(path)]) == 1
    assert capsys.readouterr().err == f"mentiondesk: {reason}\n"


@pytest.mark.parametrize("command", ["current", "upgrade"])
def test_db_commands_name_an_unreachable_database_in_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "postgresql+asyncpg://md:hunter2@127.0.0.1:9/md")
    assert main(["db", command, "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mentiondesk: database postgresql+asyncpg://md:***@127.0.0.1:9/md")
    assert err.count("\n") == 1 and "hunter2" not in err


# --- what a start logs ------------------------------------------------------------------------------------


def test_a_start_that_fails_on_a_missing_token_prints_only_that(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sqlite+aiosqlite:///md.db")
    result = run_cli(["run", "--config", str(path)], cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "MENTIONDESK_MASTODON_TOKEN" in result.stderr


def test_a_start_names_the_database_first_and_says_when_it_upgrades_the_schema(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sqlite+aiosqlite:///md.db")
    result = run_cli(["run", "--config", str(path)], cwd=tmp_path, env={"MENTIONDESK_MASTODON_TOKEN": "t"})
    assert result.returncode == 1  # nothing listens at the configured Mastodon
    lines = result.stderr.splitlines()
    assert f"database {tmp_path / 'md.db'}" in lines[0]
    assert sum(f"upgrading the database schema from nothing to {head_revision()}" in line for line in lines) == 1
    assert not [line for line in lines if "alembic" in line]


def test_db_upgrade_says_what_it_upgrades_only_when_there_is_something_to_do(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sqlite+aiosqlite:///md.db")
    first = run_cli(["db", "upgrade", "--config", str(path)], cwd=tmp_path)
    assert first.returncode == 0
    assert f"upgrading the database schema from nothing to {head_revision()}" in first.stderr
    assert "alembic" not in first.stderr
    again = run_cli(["db", "upgrade", "--config", str(path)], cwd=tmp_path)
    assert again.returncode == 0
    assert again.stderr == ""
    assert f"{tmp_path / 'md.db'}: schema at {head_revision()}" in again.stdout
