"""Logging to stderr, as text or one JSON object per line, with every configured secret redacted.

The secrets never reach a log call on purpose (see the README's "Logs"); the redaction here is the second line
of defence, for what a library or an exception's text might carry.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, TextIO
from urllib.parse import quote

from sqlalchemy.engine import make_url

from mentiondesk.bot.config import Config

REDACTED = "[redacted]"
LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# journald stamps each line itself.
JOURNAL_TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"

# sd-daemon(3) priorities: journald reads a leading "<N>" on each line as the entry's priority, so
# `journalctl -p err` finds the daemon's errors.
_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

# Credentials that are not in the config but pass through URLs and form bodies a library may log at DEBUG: Socket
# Mode's connection URL carries a one-time ticket, and Slack's older payloads a verification token.
_CREDENTIAL_PARAM = re.compile(r"(?<![\w-])(ticket|token|access_token)=[^&\s'\"]+")

# Shorter values are not told apart from ordinary words: replacing a one-letter "token" would mangle every line.
MIN_SECRET_LEN = 6

# What every LogRecord has; anything else on a record came in through `extra=` and is a field of its own.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def secret_values(config: Config) -> list[str]:
    """Every secret the config holds: the tokens from the environment and a database URL's password."""
    values = [value for value in config.secrets.model_dump().values() if isinstance(value, str) and value]
    password = make_url(config.settings.database.url).password
    if password:
        values.append(str(password))
        # As written in the URL, where characters like @ or / are percent-encoded.
        values.append(quote(str(password), safe=""))
    return values


class RedactingFilter(logging.Filter):
    """Replaces each secret with [redacted] in a record's message, its `extra` fields and its traceback text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first: a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "=" in text:
            text = _CREDENTIAL_PARAM.sub(rf"\1={REDACTED}", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        # Formatted here so that a secret inside an argument cannot survive in the args.
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _format_exception(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or value is None or isinstance(value, bool | int | float):
                continue
            text = value if isinstance(value, str) else str(value)
            redacted = self.redact(text)
            if redacted != text or isinstance(value, str):
                setattr(record, key, redacted)
        return True


def _format_exception(exc_info: Any) -> str:
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, exc when there is one, and the `extra` fields."""

    def __init__(self, *, priority_prefix: bool = False) -> None:
        super().__init__()
        self._priority_prefix = priority_prefix

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        line = json.dumps(entry, default=str, ensure_ascii=False)
        return f"<{_priority(record.levelno)}>{line}" if self._priority_prefix else line


class TextFormatter(logging.Formatter):
    """Today's text lines; for the journal without the time and with a priority on every line of the entry."""

    def __init__(self, *, journal: bool = False) -> None:
        super().__init__(JOURNAL_TEXT_FORMAT if journal else TEXT_FORMAT)
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self._journal:
            return text
        # journald splits the stream at newlines: each line of a traceback is an entry of its own.
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


def _priority(levelno: int) -> int:
    for level in sorted(_SYSLOG_PRIORITY, reverse=True):
        if levelno >= level:
            return _SYSLOG_PRIORITY[level]
    return 7


def stderr_is_journal(environ: Mapping[str, str], stream: TextIO) -> bool:
    """Whether stream is systemd's journal: $JOURNAL_STREAM names its device and inode (systemd.exec(5))."""
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def make_formatter(log_format: LogFormat, *, journal: bool) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(priority_prefix=journal)
    return TextFormatter(journal=journal)


def setup_logging(
    level: str,
    *,
    log_format: LogFormat = "text",
    secrets: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Log to stderr in log_format, redacting secrets; uncaught exceptions go through the same redaction.

    Called again (a reloaded config), it applies the new level, format and secrets to the same handler.
    """
    stream = sys.stderr if stream is None else stream
    journal = stderr_is_journal(os.environ if environ is None else environ, stream)
    root = logging.getLogger()
    root.setLevel(level)
    # Handlers someone else put there first (a test's capture) mean the process's logging is theirs: they are
    # kept, and only get the redaction.
    ours = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    owned = ours is not None or not root.handlers
    if owned:
        if ours is None:
            ours = _StderrHandler(stream)
            root.addHandler(ours)
        ours.setFormatter(make_formatter(log_format, journal=journal))
    redacting = RedactingFilter(secrets)
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redacting)
    if owned:
        _log_uncaught()
    # Alembic logs its plugins and every step at INFO on each start; storage.db says when the schema changes.
    logging.getLogger("alembic").setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
    # A line per hop to its thread and back, hundreds a second: it drowns what DEBUG is for.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """The handler setup_logging installs, found again when it is called again."""


def _log_uncaught() -> None:
    """What Python would print to stderr itself goes through the log instead: redacted, and in the log's format."""
    # Warnings (a coroutine never awaited, a resource left open) would otherwise be lines of their own.
    logging.captureWarnings(True)
    uncaught = logging.getLogger("mentiondesk.uncaught")

    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        uncaught.critical("uncaught %s", kind.__name__, exc_info=(kind, value, tb))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
        uncaught.critical("uncaught %s in thread %s", args.exc_type.__name__, name, exc_info=exc_info)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
