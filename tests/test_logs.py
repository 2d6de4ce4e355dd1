"""Logs: text or JSON lines on stderr, and no configured secret in any of them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from mastodon_mock.config import MastodonMockConfig, SeedAccount, SeedConfig
from mastodon_mock.testing.server import MockServer
from sqlalchemy.engine import make_url

from mentiondesk.bot.config import Config, Secrets, parse_settings
from mentiondesk.bot.logs import REDACTED, JsonFormatter, RedactingFilter, TextFormatter, secret_values, setup_logging
from tests.conftest import SEED, eventually, spawn_run
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, COMPLAINT_2, post
from tests.test_slack_http import command_body, signed
from tests.test_slack_setup import write_config

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
    record = _record(
        "calling with %s and %r",
        TOKEN,
        {"auth": f"Bearer {OTHER}"},
        channel=f"C1-{TOKEN}",
        headers={"Authorization": f"Bearer {OTHER}"},
        ticket_id=7,
    )
    assert redacting.filter(record)
    text = TextFormatter().format(record)
    assert TOKEN not in text and OTHER not in text
    assert f"calling with {REDACTED} and {{'auth': 'Bearer {REDACTED}'}}" in text
    assert vars(record)["channel"] == f"C1-{REDACTED}"
    assert vars(record)["headers"] == f"{{'Authorization': 'Bearer {REDACTED}'}}"
    assert vars(record)["ticket_id"] == 7


def test_the_filter_redacts_a_traceback_and_keeps_the_rest_of_it() -> None:
    record = _failure(f"bad token {TOKEN} refused")
    RedactingFilter([TOKEN]).filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert TOKEN not in text
    assert f"RuntimeError: bad token {REDACTED} refused" in text
    assert "Traceback (most recent call last)" in text


def test_one_time_credentials_in_urls_and_form_bodies_are_redacted_without_being_configured() -> None:
    record = _record(
        "body: {'ok': True, 'url': 'wss://wss-primary.slack.com/link/?ticket=6f1c-99ab&app_id=A0TEST'} / %s",
        "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001",
    )
    RedactingFilter([]).filter(record)
    assert record.getMessage() == (
        f"body: {{'ok': True, 'url': 'wss://wss-primary.slack.com/link/?ticket={REDACTED}&app_id=A0TEST'}} / "
        f"token={REDACTED}&team_id=T0001"
    )
    # Not a parameter of that name: left alone.
    assert RedactingFilter([]).redact("max_token=3 x-ticket=4") == "max_token=3 x-ticket=4"


def test_a_value_too_short_to_be_a_secret_does_not_mangle_the_lines() -> None:
    record = _record("starting with database /tmp/test.db")
    RedactingFilter(["t", "test"]).filter(record)
    assert record.getMessage() == "starting with database /tmp/test.db"


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
        logging.captureWarnings(False)


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


def test_setup_logging_again_applies_a_new_format_and_secrets_to_the_same_handler(clean_root: logging.Logger) -> None:
    clean_root.handlers.clear()
    stream = io.StringIO()
    setup_logging("INFO", secrets=[TOKEN], environ={}, stream=stream)
    logging.getLogger("mentiondesk.test").info("first %s", TOKEN)
    setup_logging("DEBUG", log_format="json", secrets=[OTHER], environ={}, stream=stream)
    logging.getLogger("mentiondesk.test").debug("second %s", OTHER)
    first, second = stream.getvalue().splitlines()
    assert first.endswith(f"INFO mentiondesk.test: first {REDACTED}")
    assert json.loads(second)["message"] == f"second {REDACTED}"
    assert len(clean_root.handlers) == 1


def test_a_traceback_python_would_print_itself_is_logged_redacted_in_the_logs_format(
    clean_root: logging.Logger,
) -> None:
    clean_root.handlers.clear()
    stream = io.StringIO()
    setup_logging("INFO", log_format="json", secrets=[TOKEN], environ={}, stream=stream)
    try:
        raise ValueError(f"header Authorization: Bearer {TOKEN}")
    except ValueError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    entry = json.loads(stream.getvalue())
    assert (entry["level"], entry["message"]) == ("CRITICAL", "uncaught ValueError")
    assert entry["exc"].endswith(f"ValueError: header Authorization: Bearer {REDACTED}")
    assert TOKEN not in stream.getvalue()


def test_setup_logging_redacts_what_any_logger_writes(clean_root: logging.Logger) -> None:
    clean_root.handlers.clear()
    stream = io.StringIO()
    setup_logging("DEBUG", log_format="json", secrets=[TOKEN], environ={}, stream=stream)
    logging.getLogger("slack_sdk.web").debug("headers: %s", {"Authorization": f"Bearer {TOKEN}"})
    entry = json.loads(stream.getvalue())
    assert entry["message"] == f"headers: {{'Authorization': 'Bearer {REDACTED}'}}"


# ---------------------------------------------------------------- the daemon's whole output, start to stop

# Distinctive values, so that any piece of one in the output is found; the servers here accept them.
MASTODON_TOKEN = "mdlogs-mastodon-8c41f0d29e7b"
BOT_TOKEN = "xoxb-mdlogs-bot-5a7e93c1d40f"
APP_TOKEN = "xapp-mdlogs-app-e62b07d9f318"
SIGNING_SECRET = "mdlogs-signing-0f4d2a96c7e1"
DASHBOARD_TOKEN = "mdlogs-dashboard-b39e5c17a20d"
DB_PASSWORD = "mdlogs-pw-71c5e0a8d2f4"
# Long enough that no word of an ordinary log line matches by chance, short enough that what is left of a
# token after a prefix is cut off (or a URL-encoded password's middle) is still caught.
PIECE_LEN = 10
STOP_WAIT_S = 30.0


@pytest.fixture
def mastodon_mock_config(mastodon_mock_config: MastodonMockConfig) -> MastodonMockConfig:
    """The usual accounts, the brand's with a token that cannot be mistaken for anything else."""
    accounts = [
        SeedAccount(username="brand", display_name="Acme Support", access_token=MASTODON_TOKEN)
        if account.username == "brand"
        else account
        for account in SEED.accounts
    ]
    return mastodon_mock_config.model_copy(update={"seed": SeedConfig(accounts=accounts)})


def pieces(secret: str) -> set[str]:
    return {secret[i : i + PIECE_LEN] for i in range(len(secret) - PIECE_LEN + 1)}


def assert_no_secret(output: str, secrets: list[str]) -> None:
    for secret in secrets:
        found = sorted(piece for piece in pieces(secret) if piece in output)
        assert not found, f"{secret!r} leaked ({found}) in:\n{output}"


class Run:
    """`mentiondesk run` in a subprocess, its stdout and stderr read in full."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        self.err_lines: list[str] = []
        self._out = asyncio.create_task(proc.stdout.read())
        self._err = asyncio.create_task(self._read_lines(proc.stderr))

    async def _read_lines(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.err_lines.append(line.decode())

    @classmethod
    async def start(cls, config: Path, env: dict[str, str]) -> Run:
        proc = await spawn_run(config, env, stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    async def stop(self) -> tuple[int, str, str]:
        """SIGTERM, then (exit code, stdout, stderr)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout=STOP_WAIT_S)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        await self._err
        return code, (await self._out).decode(), "".join(self.err_lines)


def _assert_nothing_redacted(output: str) -> None:
    # The redaction is the second line of defence: no configured secret should have reached a log call to begin
    # with. (Socket Mode's one-time ticket does, in slack-sdk's DEBUG lines; it is not ours to keep out.)
    one_time = re.compile(rf"(ticket|token|access_token)={re.escape(REDACTED)}")
    leaked = [line for line in output.splitlines() if REDACTED in one_time.sub("", line)]
    assert not leaked, "a secret reached a log call (and was redacted there); keep it out at its source:\n" + "\n".join(
        leaked
    )


async def _http_port(run: Run) -> int:
    found: list[int] = []

    def listening() -> bool:
        for line in run.err_lines:
            match = re.search(r"HTTP server listening on [^:]+:(\d+)", line)
            if match:
                found.append(int(match.group(1)))
                return True
        return False

    await _until(listening, run, "the HTTP server to listen")
    return found[0]


async def _until(check: Callable[[], bool], run: Run, what: str) -> None:
    async def holds() -> bool:
        assert run.proc.returncode is None, f"the daemon exited while waiting for {what}"
        return check()

    await eventually(holds, timeout_s=60, what=what)


def _with_password(db_url: str) -> str:
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        return db_url
    # The test server trusts local connections: the password is sent and ignored, as a real one would be sent.
    return url.set(password=DB_PASSWORD).render_as_string(hide_password=False)


async def test_no_secret_in_the_daemons_output_through_start_errors_and_stop(
    tmp_path: Path, mastodon: MockServer, db_url: str
) -> None:
    database_url = _with_password(db_url)
    on_postgres = database_url != db_url
    secrets = [MASTODON_TOKEN, BOT_TOKEN, APP_TOKEN, *([DB_PASSWORD] if on_postgres else [])]
    # Both formats go through the same redaction; one run each (SQLite always runs, so JSON is always checked).
    log_format = "text" if on_postgres else "json"
    async with FakeSlack(bot_token=BOT_TOKEN, app_token=APP_TOKEN, link_hosts=frozenset({"127.0.0.1"})) as slack:
        config = write_config(
            tmp_path,
            mastodon_url=mastodon.base_url,
            slack_url=slack.base_url,
            db_url=database_url,
            extra=f'parked_retry_s = 1.0\n[daemon]\nlog_level = "DEBUG"\nlog_format = "{log_format}"\n',
        )
        env = {
            "MENTIONDESK_MASTODON_TOKEN": MASTODON_TOKEN,
            "MENTIONDESK_SLACK_BOT_TOKEN": BOT_TOKEN,
            "MENTIONDESK_SLACK_APP_TOKEN": APP_TOKEN,
        }
        # Errors on the way: Mastodon failing the catch-up, Slack refusing the token once, then failing with a 5xx.
        mastodon.fault(path="/api/v1/notifications", status=503, count=2)
        slack.fail_next("chat.postMessage", status=200, body=json.dumps({"ok": False, "error": "invalid_auth"}))
        slack.fail_next("chat.postMessage", status=502)
        run = await Run.start(config, env)
        try:
            await _until(lambda: slack.connections_total > 0, run, "Socket Mode to connect")
            await post(mastodon, "alice", COMPLAINT)
            await post(mastodon, "carol", COMPLAINT_2)
            await _until(lambda: len(slack.messages("C0SUPPORT")) == 2, run, "both cards in Slack")
        finally:
            code, out, err = await run.stop()
    assert code == 0, err
    assert_no_secret(out + err, secrets)
    _assert_nothing_redacted(out + err)
    # The errors were logged (so the search above went through them), each with its cause.
    assert "503" in err, err
    assert "invalid_auth" in err, err
    assert "HTTP 502" in err, err
    assert f"ticket={REDACTED}" in err, "slack-sdk's DEBUG line with the Socket Mode URL is gone or not redacted"
    if log_format == "json":
        _check_json_lines(err)
    else:
        assert "Traceback" not in err
        assert "ERROR mentiondesk.bot.slack.parking: Slack message for ticket #" in err, err


def _check_json_lines(err: str) -> None:
    entries = []
    for line in err.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(entry, dict) and {"ts", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)

    def about(start: str) -> list[dict[str, object]]:
        return [e for e in entries if str(e["message"]).startswith(start)]

    opened = about("TicketOpened #")
    assert len(opened) == 2, opened
    assert all(isinstance(e["ticket_id"], int) and isinstance(e["status_id"], str) for e in opened), opened
    assert {e["channel"] for e in opened} == {"C0SUPPORT"}
    mentions = about("mention ")
    assert {e["status_id"] for e in mentions} == {e["status_id"] for e in opened}, mentions
    posted = about("CardPosted ticket #")
    assert {e["ticket_id"] for e in posted} == {e["ticket_id"] for e in opened}, posted
    retried = [e for e in about("Slack message for ticket #") if "not sent" in str(e["message"])]
    assert retried and all(isinstance(e["outbox_id"], int) and e["attempt"] == 2 for e in retried), retried
    polls = about("notifications:mention: polling failed")
    assert polls and all(e["feed"] == "notifications:mention" and e["level"] == "WARNING" for e in polls), polls


async def test_no_secret_in_the_output_of_an_http_mode_run_with_bad_signatures_and_tokens(
    tmp_path: Path, mastodon: MockServer
) -> None:
    secrets = [MASTODON_TOKEN, BOT_TOKEN, SIGNING_SECRET, DASHBOARD_TOKEN]
    async with FakeSlack(bot_token=BOT_TOKEN, link_hosts=frozenset({"127.0.0.1"})) as slack:
        config = write_config(
            tmp_path,
            mastodon_url=mastodon.base_url,
            slack_url=slack.base_url,
            db_url=f"sqlite+aiosqlite:///{tmp_path / 'md.db'}",
            extra='mode = "http"\n[daemon]\nlog_level = "DEBUG"\n'
            '[http]\nport = 0\ntoken_env = "MDLOGS_DASHBOARD_TOKEN"\n',
        )
        env = {
            "MENTIONDESK_MASTODON_TOKEN": MASTODON_TOKEN,
            "MENTIONDESK_SLACK_BOT_TOKEN": BOT_TOKEN,
            "MENTIONDESK_SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "MDLOGS_DASHBOARD_TOKEN": DASHBOARD_TOKEN,
        }
        run = await Run.start(config, env)
        try:
            port = await _http_port(run)
            base = f"http://127.0.0.1:{port}"
            body = command_body(slack)
            async with aiohttp.ClientSession() as http:
                wrong = signed(body, secret="not-the-secret")
                async with http.post(f"{base}/slack/commands", data=body, headers=wrong) as response:
                    assert response.status == 401
                right = signed(body, secret=SIGNING_SECRET)
                async with http.post(f"{base}/slack/commands", data=body, headers=right) as response:
                    assert response.status == 200
                bearer = {"Authorization": f"Bearer {DASHBOARD_TOKEN}x"}
                async with http.get(f"{base}/dashboard.json", headers=bearer) as response:
                    assert response.status == 401
                bearer = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
                async with http.get(f"{base}/dashboard.json", headers=bearer) as response:
                    assert response.status == 200
        finally:
            code, out, err = await run.stop()
    assert code == 0, err
    assert_no_secret(out + err, secrets)
    _assert_nothing_redacted(out + err)
    assert "signature mismatch" in err, err


async def test_a_refused_stream_raises_an_error_that_does_not_carry_the_token(tmp_path: Path) -> None:
    # asyncio prints the repr of an exception nobody retrieved, and a ClientResponseError's repr shows its
    # request's headers: the stream's error must not hold the Authorization header at all.
    from aiohttp import web

    from mentiondesk.bot.config import MastodonSettings
    from mentiondesk.bot.mastodon.client import MastodonClient
    from mentiondesk.bot.mastodon.watcher import FeedWatcher, notification_feed
    from mentiondesk.storage.db import create_engine, session_factory

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/api/v1/streaming/user", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    token = "stream-token-that-must-stay-out-0123456789"
    client = MastodonClient(base_url, token, timeout_s=5.0)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'md.db'}")

    async def no_ingest(event: object) -> asyncio.Future[None]:
        raise AssertionError("nothing is ingested from a refused stream")

    try:
        async with aiohttp.ClientSession() as http:
            watcher = FeedWatcher(
                notification_feed(client),
                client=client,
                sessions=session_factory(engine),
                ingest=no_ingest,
                settings=MastodonSettings(base_url=base_url, request_timeout_s=5.0),
                http=http,
                stream_base_url=base_url,
            )
            with pytest.raises(aiohttp.ClientResponseError) as caught:
                await watcher._stream_once()
    finally:
        client.close()
        await client.aclose()
        await engine.dispose()
        await runner.cleanup()
    assert caught.value.status == 503
    assert "Authorization" not in caught.value.request_info.headers
    assert token not in repr(caught.value) and token not in str(caught.value)
