"""The daemon's lifecycle as a service: SIGTERM drains and flushes, SIGHUP reloads the config file in place."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from mastodon_mock.testing.server import MockServer

import mentiondesk.bot.classify.model
from mentiondesk.bot.config import Config, ConfigError, Secrets, Settings, load_settings, parse_settings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.reload import Reload, Reloader, plan_reload
from mentiondesk.storage.models import Mention, ReportSummary, Ticket
from tests.conftest import eventually, settings_dict, settled, spawn_run
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, COMPLAINT_2, PRAISE, Start, post, rows
from tests.test_slack_setup import tokens

SHUTDOWN_TIMEOUT_S = 10.0
# The unit's TimeoutStopSec: what systemd allows before it kills the process.
TIMEOUT_STOP_S = 30.0
# Between the "stopping" and "stopped: ..." log lines, beyond the deadline: the last query (the outbox count).
LOG_MARGIN_S = 1.0
# Short, so that a send cut off at the deadline (its row leased for 11 request timeouts) is retried within a test.
REQUEST_TIMEOUT_S = 2.0
START_TIMEOUT_S = 60.0
CUSTOMERS = ("alice", "bob", "carol", "dan")
STREAM_CONNECTED = "notifications:mention: stream connected"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """A config file from sections of plain keys, with [[section.list]] tables for lists of tables."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        tables: list[tuple[str, list[dict[str, Any]]]] = []
        for key, value in values.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                tables.append((key, value))
            else:
                lines.append(f"{key} = {_toml(value)}")
        for key, items in tables:
            for item in items:
                lines.append(f"[[{section}.{key}]]")
                lines.extend(f"{k} = {_toml(v)}" for k, v in item.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class DaemonProcess:
    """`mentiondesk run` in a subprocess, its log read line by line as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._reader = asyncio.create_task(self._read(proc.stderr))

    @classmethod
    async def start(cls, config: Path, slack: FakeSlack) -> DaemonProcess:
        proc = await spawn_run(config, tokens(slack.bot_token, slack.app_token))
        return cls(proc)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(line.decode().rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def logged(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    async def wait_logged(self, text: str, *, count: int = 1, timeout_s: float = 20.0) -> None:
        async def seen() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"the daemon exited ({self.proc.returncode}); it logged:\n{self.log}")
            return len(self.logged(text)) >= count

        await eventually(seen, timeout_s=timeout_s, what=f"{text!r} logged {count} time(s)")

    async def stop(self, *, timeout_s: float = TIMEOUT_STOP_S) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until it exited)."""
        self.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await asyncio.wait_for(self.proc.wait(), timeout=timeout_s)
        took_s = time.monotonic() - signalled
        await self._reader
        return code, took_s

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._reader


def _logged_at(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def _base_config(mastodon: MockServer, slack: FakeSlack, db_url: str, **sections: dict[str, Any]) -> dict[str, Any]:
    data = settings_dict(mastodon_url=mastodon.base_url, slack_url=slack.base_url, db_url=db_url)
    data["slack"]["request_timeout_s"] = REQUEST_TIMEOUT_S
    data["daemon"] = {"shutdown_timeout_s": SHUTDOWN_TIMEOUT_S}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


# --- SIGTERM ---------------------------------------------------------------------------------------------------


async def test_sigterm_mid_work_finishes_flushes_and_loses_nothing(
    tmp_path: Path,
    mastodon: MockServer,
    slack: FakeSlack,
    db_url: str,
    make_config: Callable[..., Config],
    start_daemon: Start,
) -> None:
    # Two complaints wait before the first start (its backfill reads them in one go), the rest come while it runs:
    # a card goes out per second in the channel, so cards are still queued when SIGTERM comes with the first one.
    posted = [await post(mastodon, who, f"{COMPLAINT} ({who})") for who in CUSTOMERS[:2]]
    config = write_toml(tmp_path / "config.toml", _base_config(mastodon, slack, db_url))
    daemon = await DaemonProcess.start(config, slack)
    try:
        for who in CUSTOMERS[2:]:
            posted.append(await post(mastodon, who, f"{COMPLAINT_2} ({who})"))
        posted.append(await post(mastodon, "alice", PRAISE))
        await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) >= 1, timeout_s=START_TIMEOUT_S)
        # Slack pushes back once while the daemon stops: the flush waits Retry-After and carries on.
        slack.rate_limit_next("chat.postMessage", retry_after_s=1)
        at_signal = len(slack.messages("C0SUPPORT"))
        code, took_s = await daemon.stop()
    finally:
        await daemon.kill()
    assert code == 0, daemon.log
    assert took_s < TIMEOUT_STOP_S, f"took {took_s:.1f}s to stop; it logged:\n{daemon.log}"
    assert "Traceback" not in daemon.log
    [stopping] = daemon.logged("INFO mentiondesk: stopping")
    [stopped] = daemon.logged("stopped: ")
    assert _logged_at(stopped) - _logged_at(stopping) <= timedelta(seconds=SHUTDOWN_TIMEOUT_S + LOG_MARGIN_S)
    found = re.search(r"stopped: (\d+) messages sent while stopping, (\d+) left in the outbox", stopped)
    assert found is not None, stopped
    # Cards went out after SIGTERM, and the log says how many.
    flushed = len(slack.messages("C0SUPPORT")) - at_signal
    # (Thread messages and card refreshes count as sent too.)
    assert flushed >= 1 and int(found.group(1)) >= flushed, daemon.log

    # The next start picks up whatever the stop left: mentions still queued (re-read from the stored cursor) and
    # cards still in the outbox.
    again = await start_daemon(make_config(slack={"request_timeout_s": REQUEST_TIMEOUT_S}))
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == len(CUSTOMERS), timeout_s=START_TIMEOUT_S)
    await settled(again)
    mentions = await rows(again, Mention)
    assert Counter(m.status_id for m in mentions) == Counter(str(p["id"]) for p in posted)
    tickets = await rows(again, Ticket)
    assert sorted(t.customer_acct for t in tickets) == sorted(CUSTOMERS)
    cards = slack.messages("C0SUPPORT")
    assert len(cards) == len(CUSTOMERS)
    assert sorted(c["ts"] for c in cards) == sorted(t.slack_ts for t in tickets)


async def test_stop_ends_the_flush_when_slack_is_failing(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    # Retried every half second (max_retry_delay_s), the card would keep the stop busy until its deadline.
    daemon = await start_daemon(make_config(daemon={"shutdown_timeout_s": SHUTDOWN_TIMEOUT_S}))
    slack.set_down(True)
    await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: slack.call_count("chat.postMessage") >= 1, timeout_s=20)
    started = time.monotonic()
    await daemon.stop()
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT_S / 2
    assert slack.messages() == []


# --- SIGHUP, in a real process ---------------------------------------------------------------------------------


async def test_sighup_applies_a_good_config_and_refuses_a_bad_one_without_reconnecting(
    tmp_path: Path, mastodon: MockServer, slack: FakeSlack, db_url: str
) -> None:
    refunds_to_billing = {"rules": [{"channel": "C0BILLING", "keywords": ["refund"]}]}
    data = _base_config(mastodon, slack, db_url, routing=refunds_to_billing)
    config = write_toml(tmp_path / "config.toml", data)
    daemon = await DaemonProcess.start(config, slack)
    try:
        await daemon.wait_logged(STREAM_CONNECTED, timeout_s=START_TIMEOUT_S)
        await slack.wait_connected(timeout_s=START_TIMEOUT_S)
        await post(mastodon, "alice", COMPLAINT)  # "... I want a refund"
        await slack.wait_for(lambda: len(slack.messages("C0BILLING")) == 1, timeout_s=20)

        # Crashes go to billing now, refunds no longer; the poll interval needs a restart.
        data["routing"] = {"rules": [{"channel": "C0BILLING", "keywords": ["crashes"]}]}
        data["mastodon"]["poll_interval_s"] = 5.0
        write_toml(config, data)
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_logged("reloaded config from")
        [reloaded] = daemon.logged("reloaded config from")
        assert f"from {config}: changed sections routing" in reloaded
        [restart] = daemon.logged("take effect after a restart")
        assert "WARNING" in restart and "mastodon.poll_interval_s" in restart
        await post(mastodon, "bob", COMPLAINT_2)  # "... the app crashes ..."
        await post(mastodon, "carol", f"{COMPLAINT} (carol)")
        await slack.wait_for(
            lambda: len(slack.messages("C0BILLING")) == 2 and len(slack.messages("C0SUPPORT")) == 1, timeout_s=20
        )
        assert "crashes" in str(slack.messages("C0BILLING")[1]["blocks"])

        # A broken value: refused with one line naming the key, and the rules above stay in force.
        write_toml(config, {**data, "sla": {"warn_at": 2}})
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_logged("config reload refused")
        refused = [line for line in daemon.lines if "ERROR" in line]
        assert len(refused) == 1 and "sla.warn_at" in refused[0] and str(config) in refused[0], daemon.log
        await post(mastodon, "dan", f"{COMPLAINT_2} (dan)")
        await slack.wait_for(lambda: len(slack.messages("C0BILLING")) == 3, timeout_s=20)
        assert daemon.proc.returncode is None
        assert len(daemon.logged("reloaded config from")) == 1

        # Neither the stream nor Slack's socket was opened again by either reload.
        assert len(daemon.logged(STREAM_CONNECTED)) == 1, daemon.log
        assert slack.connections_total == 1
        code, _ = await daemon.stop()
    finally:
        await daemon.kill()
    assert code == 0, daemon.log


# --- reload, in process ----------------------------------------------------------------------------------------


async def _reload(daemon: Daemon, data: dict[str, Any]) -> Reload:
    settings = parse_settings(data, source="reloaded.toml")
    return await daemon.reload(Config(settings=settings, secrets=daemon.config.secrets, source="reloaded.toml"))


async def test_reload_moves_open_tickets_due_times_and_applies_the_threshold(
    mastodon: MockServer, slack: FakeSlack, db_url: str, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    one_hour = {"policies": [{"name": "standard", "first_response": "1h"}]}
    daemon = await start_daemon(make_config(sla=one_hour))
    await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=20)
    [before] = await rows(daemon, Ticket)
    assert before.first_response_due_at == before.posted_at + timedelta(hours=1)

    data = settings_dict(mastodon_url=mastodon.base_url, slack_url=slack.base_url, db_url=db_url)
    data["sla"] = {"policies": [{"name": "standard", "first_response": "3h"}]}
    # Nothing is a complaint any more, nor worth triage (the model's own triage band would catch it).
    data["classifier"] = {"threshold": 1.0, "triage_threshold": 1.0}
    result = await _reload(daemon, data)
    assert result.changed == ("classifier", "sla") and result.restart_needed == ()

    [after] = await rows(daemon, Ticket)
    assert after.first_response_due_at == before.posted_at + timedelta(hours=3)
    await post(mastodon, "bob", COMPLAINT_2)
    await settled(daemon)
    bob = [m for m in await rows(daemon, Mention) if m.account_acct == "bob"]
    assert [m.label for m in bob] == ["other"] and len(await rows(daemon, Ticket)) == 1


def _model_copy(directory: Path, *, threshold: float) -> Path:
    """The shipped default model under another name, deciding at ``threshold``: what `classifier train` installs."""
    shipped = Path(mentiondesk.bot.classify.model.__file__).parent / "artifacts" / "complaint_model"
    directory.mkdir(exist_ok=True)
    npz = directory / "current.npz"
    shutil.copyfile(shipped.with_suffix(".npz"), npz)
    meta = json.loads(shipped.with_suffix(".json").read_text(encoding="utf-8"))
    meta.update(threshold=threshold, triage_threshold=threshold)
    npz.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    return npz


async def test_reload_takes_up_a_retrained_model_and_refuses_one_that_does_not_load(
    mastodon: MockServer,
    slack: FakeSlack,
    db_url: str,
    tmp_path: Path,
    make_config: Callable[..., Config],
    start_daemon: Start,
) -> None:
    # The retraining workflow: `classifier train` installs current.npz, then `systemctl reload` puts it in force.
    model = _model_copy(tmp_path / "models", threshold=0.5)
    data = settings_dict(mastodon_url=mastodon.base_url, slack_url=slack.base_url, db_url=db_url)
    data["classifier"] = {"model": str(model)}
    daemon = await start_daemon(make_config(classifier={"model": str(model)}))
    await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=20)

    # The same path, a new model behind it (one that opens no ticket): the reload loads it.
    _model_copy(tmp_path / "models", threshold=0.99)
    result = await _reload(daemon, data)
    assert result.restart_needed == ()
    await post(mastodon, "bob", COMPLAINT_2)
    await settled(daemon)
    bob = [m for m in await rows(daemon, Mention) if m.account_acct == "bob"]
    assert [m.label for m in bob] == ["other"] and len(await rows(daemon, Ticket)) == 1

    # A model that cannot load is refused, naming the key; the one in force stays.
    data["classifier"] = {"model": str(tmp_path / "missing.npz")}
    with pytest.raises(ConfigError, match=r"classifier\.model .*missing\.npz.*no such file"):
        await _reload(daemon, data)
    assert daemon.context is not None and daemon.context.classifier.threshold == 0.99

    # Back to the shipped model by name.
    data["classifier"] = {"model": "default"}
    result = await _reload(daemon, data)
    assert result.changed == ("classifier",) and daemon.context.classifier.threshold < 0.5
    await post(mastodon, "carol", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 2, timeout_s=20)


async def test_reload_moves_the_next_summary_to_the_new_schedule(
    mastodon: MockServer, slack: FakeSlack, db_url: str, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    reports = {"channel": "C0BILLING", "timezone": "Europe/Berlin", "daily": "08:00"}
    daemon = await start_daemon(make_config(reports=reports))
    zone = ZoneInfo("Europe/Berlin")

    async def next_daily_at(hour: int) -> bool:
        upcoming = [r for r in await rows(daemon, ReportSummary) if r.state == "scheduled" and r.kind == "daily"]
        return len(upcoming) == 1 and upcoming[0].due_at.astimezone(zone).hour == hour

    await eventually(lambda: next_daily_at(8), what="the next daily summary scheduled at 08:00")
    data = settings_dict(mastodon_url=mastodon.base_url, slack_url=slack.base_url, db_url=db_url)
    data["reports"] = {**reports, "daily": "09:30"}
    result = await _reload(daemon, data)
    assert result.changed == ("reports",)
    await eventually(lambda: next_daily_at(9), what="the next daily summary moved to 09:30")


# --- the reload plan and the reloader --------------------------------------------------------------------------


def _data(**sections: dict[str, Any]) -> dict[str, Any]:
    # No server behind these: the plan and the reloader never connect.
    return settings_dict(
        mastodon_url="http://mastodon.invalid",
        slack_url="http://slack.invalid/api/",
        db_url="sqlite+aiosqlite:///unused.db",
        **sections,
    )


def _settings(**sections: dict[str, Any]) -> Settings:
    return parse_settings(_data(**sections), source="test")


def test_plan_keeps_restart_only_keys_at_their_running_values() -> None:
    running = _settings()
    new = _settings(
        database={"url": "sqlite+aiosqlite:///other.db"},
        mastodon={"poll_interval_s": 9.0, "accept_bots": True},
        slack={"mode": "http", "thread_replies": "confirm"},
        http={"port": 9999},
        routing={"rules": [{"channel": "C0BILLING", "keywords": ["refund"]}]},
    )
    plan = plan_reload(running, new)
    assert plan.restart_needed == ("mastodon.poll_interval_s", "slack.mode", "database.url", "http.port")
    assert plan.changed == ("mastodon", "slack", "routing")
    applied = plan.settings
    assert applied.database.url == running.database.url and applied.http.port == running.http.port
    assert applied.slack.mode == "socket" and applied.mastodon.poll_interval_s == running.mastodon.poll_interval_s
    assert applied.slack.thread_replies == "confirm" and applied.mastodon.accept_bots is True
    assert applied.routing == new.routing


def test_plan_applies_new_priority_cues_and_categories() -> None:
    new = _settings(
        classifier={
            "priority": {"followers_high": 500},
            "categories": [{"name": "app", "keywords": ["app"]}],
        }
    )
    plan = plan_reload(_settings(), new)
    assert (plan.changed, plan.restart_needed) == (("classifier",), ())
    assert plan.settings.classifier == new.classifier


def test_plan_of_the_same_file_changes_nothing() -> None:
    plan = plan_reload(_settings(), _settings())
    assert plan.changed == () and plan.restart_needed == ()


class _SlowTarget:
    """Stands in for the daemon: each reload waits until the test lets it finish."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.applied: list[Config] = []
        self.release = asyncio.Event()

    async def reload(self, config: Config) -> Reload:
        self.applied.append(config)
        await self.release.wait()
        self.release.clear()
        return plan_reload(self.config.settings, config.settings)


def _config_file(tmp_path: Path) -> tuple[Path, Config]:
    path = write_toml(tmp_path / "config.toml", _data())
    return path, Config(settings=load_settings(path), secrets=Secrets(), source=str(path))


async def test_requests_during_a_reload_queue_exactly_one_more(tmp_path: Path) -> None:
    path, config = _config_file(tmp_path)
    target = _SlowTarget(config)
    reloader = Reloader(target, path)
    reloader.request()  # while the daemon is still starting: waits for it
    assert target.applied == []
    reloader.start()
    await until(lambda: len(target.applied) == 1, what="the first reload to begin")
    for _ in range(3):
        reloader.request()
    target.release.set()
    await until(lambda: len(target.applied) == 2, what="the queued reload to begin")
    target.release.set()
    await until(lambda: reloader.reloads == 2, what="both reloads to end")
    reloader.request()
    target.release.set()
    await until(lambda: reloader.reloads == 3, what="a later request to reload again")
    assert len(target.applied) == 3
    await reloader.close()


async def test_a_bad_file_is_refused_in_one_error_line_and_never_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, config = _config_file(tmp_path)
    target = _SlowTarget(config)
    told: list[str] = []
    reloader = Reloader(target, path, before=lambda: told.append("RELOADING=1"), after=lambda: told.append("READY=1"))
    reloader.start()
    path.write_text(path.read_text(encoding="utf-8") + "[classifier]\nthreshold = 7\n", encoding="utf-8")
    with caplog.at_level(logging.INFO):
        assert await reloader.reload_once() is False
    assert target.applied == []
    # A service manager told "reloading" hears "ready" again, whatever became of the reload.
    assert told == ["RELOADING=1", "READY=1"]
    [record] = [r for r in caplog.records if r.name == "mentiondesk.bot.reload"]
    assert record.levelno == logging.ERROR
    assert "classifier.threshold" in record.getMessage() and str(path) in record.getMessage()


async def until(check: Callable[[], bool], what: str) -> None:
    async def holds() -> bool:
        return check()

    await eventually(holds, what=what)
