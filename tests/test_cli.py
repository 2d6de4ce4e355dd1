"""The `mentiondesk` command: help, check, db, classify and the demo, as a person runs them."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.cli import main
from mentiondesk.bot.demo import run_demo
from mentiondesk.storage.db import head_revision
from tests.conftest import BRAND_TOKEN
from tests.fakeslack import FakeSlack

SUBCOMMANDS = [["run"], ["check"], ["classify"], ["db"], ["db", "upgrade"], ["db", "current"], ["demo"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*words, "--help"])
    assert info.value.code == 0
    assert "usage: mentiondesk " + " ".join(words) in capsys.readouterr().out


def write_config(tmp_path: Path, *, mastodon_url: str, slack_url: str, db_url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[mastodon]
base_url = "{mastodon_url}"
[slack]
base_url = "{slack_url}"
default_channel = "C0SUPPORT"
[database]
url = "{db_url}"
""",
        encoding="utf-8",
    )
    return path


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[mastodon]\nbase_url = "https://x.example"\n[slack]\ndefault_chanel = "#s"\n', encoding="utf-8")
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "slack.default_chanel: unknown key" in err and "slack.default_channel: required key is missing" in err


async def test_check_reports_each_connection(
    tmp_path: Path,
    db_url: str,
    mastodon: MockServer,
    slack: FakeSlack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_config(tmp_path, mastodon_url=mastodon.base_url, slack_url=slack.base_url, db_url=db_url)
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", BRAND_TOKEN)
    monkeypatch.setenv("MENTIONDESK_SLACK_BOT_TOKEN", slack.bot_token)
    monkeypatch.setenv("MENTIONDESK_SLACK_APP_TOKEN", slack.app_token)
    assert await asyncio.to_thread(main, ["db", "upgrade", "--config", str(path)]) == 0
    assert f"schema at {head_revision()} (latest {head_revision()})" in capsys.readouterr().out

    assert await asyncio.to_thread(main, ["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok   mastodon: signed in as @brand" in out
    assert "ok   slack: bot" in out and "Socket Mode app token accepted" in out
    assert "ok   database:" in out and "schema current" in out

    monkeypatch.setenv("MENTIONDESK_SLACK_BOT_TOKEN", "xoxb-wrong")
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", "wrong")
    assert await asyncio.to_thread(main, ["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL slack: Slack rejected MENTIONDESK_SLACK_BOT_TOKEN (invalid_auth)" in out
    assert "FAIL mastodon:" in out
    assert BRAND_TOKEN not in out and "xoxb-wrong" not in out

    monkeypatch.setenv("MENTIONDESK_SLACK_BOT_TOKEN", slack.bot_token)
    monkeypatch.setenv("MENTIONDESK_SLACK_APP_TOKEN", "xapp-revoked")
    assert await asyncio.to_thread(main, ["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL slack: Slack rejected MENTIONDESK_SLACK_APP_TOKEN (invalid_auth)" in out


def test_check_names_an_unreachable_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        tmp_path,
        mastodon_url="http://127.0.0.1:9",
        slack_url="http://127.0.0.1:9/api/",
        db_url="postgresql+asyncpg://md:hunter2@127.0.0.1:9/md",
    )
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", "t")
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL database: database postgresql+asyncpg://md:***@127.0.0.1:9/md unreachable" in out
    assert "hunter2" not in out
    assert "FAIL mastodon:" in out and "FAIL slack:" in out


def test_classify_command_streams_json_lines() -> None:
    lines: list[dict[str, str] | str] = [
        {"text": "my parcel is two weeks late and nobody answers, worst service ever"},
        {"text": "thanks a lot, the new version is great"},
        "not json",
    ]
    stdin = "\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n"
    result = subprocess.run(
        [sys.executable, "-m", "mentiondesk.bot", "classify"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o.get("label") for o in out] == ["complaint", "other", None]
    assert "line 3" in out[2]["error"]
    assert result.returncode == 1


async def test_demo_shows_tickets_arriving() -> None:
    out = io.StringIO()
    assert await run_demo(seconds=1, out=out) == 0
    text = out.getvalue()
    assert "[dry run] would post to #support" in text
    assert "[dry run] would post to #billing" in text  # the refund complaint is routed
    assert "(thread of dry-run." in text  # maya's follow-up joins her ticket
    assert "6 mentions stored, 3 tickets opened" in text


def test_run_with_a_rejected_token_says_so(
    tmp_path: Path, mastodon: MockServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        tmp_path,
        mastodon_url=mastodon.base_url,
        slack_url="http://127.0.0.1:9/api/",
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'md.db'}",
    )
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", "not-the-token")
    monkeypatch.setenv("MENTIONDESK_SLACK_BOT_TOKEN", "xoxb-x")
    monkeypatch.setenv("MENTIONDESK_SLACK_APP_TOKEN", "xapp-x")
    assert main(["run", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Mastodon refused MENTIONDESK_MASTODON_TOKEN" in err
    assert "not-the-token" not in err
