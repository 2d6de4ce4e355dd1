"""Logs: text or JSON lines on stderr, and no configured secret in any of them."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mentiondesk.bot.config import Config, Secrets, parse_settings
from mentiondesk.bot.logs import REDACTED, JsonFormatter, RedactingFilter, TextFormatter, secret_values, setup_logging

TOKEN = "mdtok-3f9a1c7e5b2d4f60"
OTHER = "xoxb-77aa66bb55cc44dd"


def _record(msg: str, *args: object, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("mentiondesk.test", level, __file__, 1, msg, args or None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _failure(message: str) -> logging.LogRecord:
    try:
        raise RuntimeError(message)
    except RuntimeError:
        record = logging.LogRecord("mentiondesk.test", logging.ERROR, __file__, 1, "it failed", None, sys.exc_info())
    return record


def test_the_filter_redacts_secrets_in_the_message_its_arguments_and_extra_fields() -> None:
    redacting = RedactingFilter([TOKEN, OTHER])
    record = _record("calling with %s and %r", TOKEN, {"auth": f"Bearer {OTHER}"}, channel=f"C1-{TOKEN}")
    assert redacting.filter(record)
    text = TextFormatter().format(record)
    assert TOKEN not in text and OTHER not in text
    assert f"calling with {REDACTED} and {{'auth': 'Bearer {REDACTED}'}}" in text
    assert vars(record)["channel"] == f"C1-{REDACTED}"


def test_the_filter_redacts_a_traceback_and_keeps_the_rest_of_it() -> None:
    record = _failure(f"bad token {TOKEN} refused")
    RedactingFilter([TOKEN]).filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert TOKEN not in text
    assert f"RuntimeError: bad token {REDACTED} refused" in text
    assert "Traceback (most recent call last)" in text


def test_a_secret_containing_another_is_redacted_whole() -> None:
    record = _record(f"{TOKEN}-extra")
    RedactingFilter([TOKEN, f"{TOKEN}-extra"]).filter(record)
    assert record.getMessage() == REDACTED


def test_secret_values_include_each_token_and_the_database_password() -> None:
    settings = parse_settings(
        {
            "mastodon": {"base_url": "https://example.social"},
            "slack": {"default_channel": "#support"},
            "database": {"url": "postgresql+asyncpg://md:p%40ss%2Fw0rd@db.example:5432/md"},
        },
        source="test",
    )
    config = Config(settings=settings, secrets=Secrets(mastodon_token=TOKEN, slack_bot_token=OTHER))
    values = secret_values(config)
    assert {TOKEN, OTHER, "p@ss/w0rd", "p%40ss%2Fw0rd"} <= set(values)
    record = _record("engine for %s", settings.database.url)
    RedactingFilter(values).filter(record)
    assert record.getMessage() == f"engine for postgresql+asyncpg://md:{REDACTED}@db.example:5432/md"


def test_the_json_formatter_writes_one_object_with_the_required_keys_and_the_extra_fields() -> None:
    record = _record("ticket %s opened", 42, ticket_id=42, status_id="1129", channel="#support")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "INFO"
    assert entry["logger"] == "mentiondesk.test"
    assert entry["message"] == "ticket 42 opened"
    assert entry["ts"].endswith("Z") and entry["ts"][:4].isdigit()
    assert (entry["ticket_id"], entry["status_id"], entry["channel"]) == (42, "1129", "#support")
    assert "exc" not in entry


def test_the_json_formatter_puts_a_multi_line_traceback_on_one_line_under_exc() -> None:
    line = JsonFormatter().format(_failure("boom"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "it failed"
    assert entry["exc"].startswith("Traceback") and entry["exc"].endswith("RuntimeError: boom")


def test_for_the_journal_every_line_carries_its_priority_and_no_time() -> None:
    record = _failure("boom")
    text = TextFormatter(journal=True).format(record)
    lines = text.split("\n")
    assert lines[0] == "<3>ERROR mentiondesk.test: it failed"
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert TextFormatter(journal=True).format(_record("hello", level=logging.WARNING)).startswith("<4>WARNING ")
    assert json.loads(JsonFormatter(priority_prefix=True).format(_record("x")).removeprefix("<6>"))["message"] == "x"


@pytest.fixture
def clean_root() -> Iterator[logging.Logger]:
    """The root logger as a fresh `mentiondesk run` finds it, and everything setup_logging changes, restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook)
    try:
        yield root
    finally:
        for handler in root.handlers:
            if handler not in saved[0]:
                handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        sys.excepthook, threading.excepthook = saved[2], saved[3]


def test_setup_logging_uses_the_journal_format_only_when_stderr_is_the_journal(
    clean_root: logging.Logger, tmp_path: Path
) -> None:
    clean_root.handlers.clear()  # pytest's capture, added after the fixtures are set up
    with open(tmp_path / "stderr", "w+") as stream:
        stat = os.fstat(stream.fileno())
        setup_logging("INFO", environ={"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}, stream=stream)
        logging.getLogger("mentiondesk.test").warning("to the journal")
        clean_root.handlers.clear()
        # Inherited by a child whose stderr is somewhere else: not the journal.
        setup_logging("INFO", environ={"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"}, stream=stream)
        logging.getLogger("mentiondesk.test").warning("to a file")
        stream.seek(0)
        first, second = stream.read().splitlines()
    assert first == "<4>WARNING mentiondesk.test: to the journal"
    assert second.endswith(" WARNING mentiondesk.test: to a file") and second[:4].isdigit()


def test_setup_logging_redacts_what_any_logger_writes(clean_root: logging.Logger) -> None:
    clean_root.handlers.clear()
    stream = io.StringIO()
    setup_logging("DEBUG", log_format="json", secrets=[TOKEN], environ={}, stream=stream)
    logging.getLogger("slack_sdk.web").debug("headers: %s", {"Authorization": f"Bearer {TOKEN}"})
    entry = json.loads(stream.getvalue())
    assert entry["message"] == f"headers: {{'Authorization': 'Bearer {REDACTED}'}}"
