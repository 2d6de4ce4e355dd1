"""Where the database is, what each command says about it, and what a command may create."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from mentiondesk.bot.cli import main
from mentiondesk.bot.config import load_config
from mentiondesk.storage.db import head_revision

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def write_config(folder: Path, db_url: str, *, auto_migrate: bool = True) -> Path:
    """A config whose Mastodon refuses connections and whose Slack is a dry run: only the database is real."""
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
""",
        encoding="utf-8",
    )
    return path


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
