"""The `mentiondesk` command: help, check, db, classify and the demo, as a person runs them."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tomllib
from contextlib import closing
from pathlib import Path

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot import config as config_module
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


@pytest.mark.parametrize(
    "words",
    [["check", "--config", "{}"], ["--config", "{}", "check"], ["-c", "{}", "db", "current"]],
    ids=" ".join,
)
def test_bad_config_exits_2_naming_the_key(
    words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[mastodon]\nbase_url = "https://x.example"\n[slack]\ndefault_chanel = "#s"\n', encoding="utf-8")
    assert main([w.format(path) for w in words]) == 2
    err = capsys.readouterr().err
    assert "slack.default_chanel: unknown key" in err and "slack.default_channel: required key is missing" in err


@pytest.mark.parametrize("command", ["demo"])
def test_config_before_a_command_that_reads_none_is_refused(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--config", "config.toml", command])
    assert info.value.code == 2
    assert f"mentiondesk: error: {command} reads no config file; --config is for: run, check, classify" in (
        capsys.readouterr().err
    )


def test_version_is_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8"))
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"mentiondesk {pyproject['project']['version']}\n"


def test_no_config_found_lists_the_places_searched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MENTIONDESK_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    system = tmp_path / "etc" / "config.toml"
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", system)
    assert main(["check"]) == 2
    assert capsys.readouterr().err == (
        "mentiondesk: configuration error: no config file found; looked for $MENTIONDESK_CONFIG (not set), "
        f"{tmp_path / 'config.toml'}, {system}. Name one with --config FILE (config.example.toml documents every key)\n"
    )

    monkeypatch.setenv("MENTIONDESK_CONFIG", "elsewhere.toml")
    assert main(["db", "current"]) == 2
    assert capsys.readouterr().err == (
        f"mentiondesk: configuration error: {tmp_path / 'elsewhere.toml'} (named by $MENTIONDESK_CONFIG): "
        "no such config file\n"
    )


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


@pytest.mark.parametrize("value", ["2", "-1", "nan", "inf", "1.0001"])
def test_classify_refuses_a_threshold_outside_0_to_1(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["classify", "--threshold", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --threshold: must be a number from 0 to 1, got {value!r}" in err


@pytest.mark.parametrize(("value", "label"), [("0", "complaint"), ("1", "other")])
def test_classify_accepts_the_ends_of_0_to_1(
    value: str, label: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"id": 1, "text": "do you ship to Portugal?"}) + "\n"))
    assert main(["classify", "--threshold", value]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == label


CLASSIFY_CONFIG = """
[mastodon]
base_url = "https://social.example"
[slack]
default_channel = "#support"
[classifier]
# Above any score these posts get from a model, so the rules decide what they are; --threshold 0 below checks
# that a complaint's score wins.
threshold = 0.999
triage_threshold = 0.999
tickets_for = ["complaint", "question"]
[classifier.priority]
followers_high = 500
[[classifier.priority.words]]
name = "refund"
level = "high"
words = ["refund"]
[[classifier.categories]]
name = "money"
keywords = ["refund", "price"]
"""


@pytest.mark.parametrize("before", [True, False])
def test_classify_with_a_config_applies_its_rules_line_for_line(
    before: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CLASSIFY_CONFIG, encoding="utf-8")
    lines = [
        {"id": 1, "text": "@shop can I get a refund on a sale item?", "followers_count": 900, "language": "en"},
        {"id": 2, "text": "@shop my parcel is two weeks late and nobody answers, worst service ever"},
        {"id": 3, "text": "@shop lovely weather today", "reblogs_count": None},
        {"id": 4, "text": "@shop hi", "followers_count": "many"},
        {"id": 5, "text": "@shop wo ist mein Paket?", "language": "de"},
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(x) + "\n" for x in lines)))
    argv = ["--config", str(config), "classify"] if before else ["classify", "--config", str(config)]
    assert main(argv) == 1
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["id"] for o in out] == [1, 2, 3, 4, 5]
    question, complaint, other, bad, german = out
    assert (question["kind"], question["band"], question["priority"]) == ("question", "ticket", "urgent")
    assert question["priority_reasons"] == ["2 high cues together", "refund words: refund", "900 followers"]
    assert question["categories"] == ["money"]
    assert (complaint["label"], complaint["kind"]) == ("other", "other")  # no question in it
    assert (other["kind"], other["band"], other["priority"], other["categories"]) == ("other", "stored", "normal", [])
    assert bad == {
        "id": 4,
        "error": "line 4: 'followers_count' must be a whole number of 0 or more, or null (got 'many')",
    }
    assert german["band"] == "triage"

    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(lines[0]) + "\n"))
    assert main([*argv, "--threshold", "0"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["label"], got["kind"], got["band"]) == ("complaint", "complaint", "ticket")


def test_classify_without_a_config_uses_the_default_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A config.toml where the command runs is not read: only --config names one.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text(CLASSIFY_CONFIG, encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"text": "@shop can I get a refund?"}) + "\n"))
    assert main(["classify", "--threshold", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    # Questions get low priority by default, and "refund" is a billing keyword, not a priority word.
    assert (got["kind"], got["priority"], got["priority_reasons"]) == ("question", "low", [])
    assert got["categories"] == ["billing"]


def test_classify_with_a_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CLASSIFY_CONFIG.replace("followers_high = 500", "followers_high = -5"), encoding="utf-8")
    assert main(["classify", "--config", str(config)]) == 2
    assert "classifier.priority.followers_high: must be greater than or equal to 0" in capsys.readouterr().err


def test_classify_help_explains_error_lines_ids_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["classify", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert '{"error": "line N: ..."}' in help_text
    assert '"id"' in help_text and "echoed" in help_text
    assert "exit status: 0 when every line was scored, 1 when any line was an error line" in help_text
    assert "2 for bad arguments" in help_text


async def test_demo_shows_tickets_arriving() -> None:
    out = io.StringIO()
    assert await run_demo(seconds=1, out=out) == 0
    text = out.getvalue()
    # Each card once, though dry run leaves every message queued.
    assert text.count("--- [dry run] would post to #support ---") == 2
    assert text.count("--- [dry run] would post to #billing ---") == 1  # the refund complaint is routed
    # Maya's follow-up goes into her ticket's thread (the feeds race, so her ticket's number may vary).
    maya = re.search(r"@maya +complaint score [0-9.]+ +ticket #([0-9]+)", text)
    assert maya is not None
    assert text.count(f"--- [dry run] would post to #support (thread of ticket #{maya[1]}'s card) ---") == 1
    # Theo's mixed post scores in the default model's triage band (0.16 to 0.41): one triage message, and his
    # question joins that post's ticket (a thread message and a card update).
    assert text.count("--- [dry run] would post to #support (triage: ") == 1
    assert text.count("--- [dry run]") == 7
    assert "6 mentions stored, 4 tickets opened" in text


async def _demo_until_signal(sig: signal.Signals, *options: str) -> tuple[int, str, str]:
    """Run `mentiondesk demo --seconds 0` as a user would, signal it once a card is out; (exit code, out, err)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mentiondesk.bot",
        "demo",
        "--seconds",
        "0",
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any("[dry run] would post" in line for line in seen):
                line = (await proc.stdout.readline()).decode()
                assert line, f"demo ended before posting a card: {''.join(seen)}"
                seen.append(line)
            proc.send_signal(sig)
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, "".join(seen) + out.decode(), err.decode()


def test_demo_until_ctrl_c_ends_with_the_summary_and_keeps_the_database() -> None:
    code, out, err = asyncio.run(_demo_until_signal(signal.SIGINT, "--keep"))
    assert out.index("Ctrl-C to stop") < out.index("[dry run] would post")
    assert code == 0, err
    assert re.search(r"=== [1-9]\d* mentions stored, [1-9]\d* tickets opened ===", out)
    assert "Unclosed" not in err and "Traceback" not in err
    kept = re.search(r"demo database kept at (\S+)", out)
    assert kept is not None, out
    database = Path(kept.group(1))
    try:
        with closing(sqlite3.connect(database)) as db:
            assert db.execute("SELECT count(*) FROM tickets").fetchone()[0] >= 1
    finally:
        shutil.rmtree(database.parent)


def test_demo_until_sigterm_ends_with_the_summary_and_removes_its_folder() -> None:
    code, out, err = asyncio.run(_demo_until_signal(signal.SIGTERM))
    assert code == 0, err
    assert "mentions stored" in out and "Unclosed" not in err and "Traceback" not in err
    folder = re.search(r"SQLite in (\S+),", out)
    assert folder is not None and not Path(folder.group(1)).exists()
    assert "kept at" not in out


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


def test_a_leader_that_cannot_step_down_exits_with_one_line_not_a_traceback() -> None:
    from mentiondesk.bot.cli import _known_failure
    from mentiondesk.bot.daemon import LeadershipError

    cause = LeadershipError("leader work did not stop after leadership was lost")
    failure = RuntimeError("leader election stopped")
    failure.__cause__ = cause
    assert _known_failure(failure) == (
        "leader work did not stop after leadership was lost; exiting rather than risk two leaders "
        "(the service manager starts a fresh process)"
    )
    assert _known_failure(RuntimeError("a bug")) is None
