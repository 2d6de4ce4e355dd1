"""systemd hears from the daemon: READY once caught up, STATUS lines, watchdog pings while workers live, STOPPING."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config, DaemonSettings
from mentiondesk.bot.systemd import Notifier
from tests.conftest import eventually, spawn_run
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, COMPLAINT_2, Start, post
from tests.test_slack_setup import tokens, write_config

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "mentiondesk.service"
INSTALLED_MENTIONDESK = "ExecStart=/opt/mentiondesk/venv/bin/mentiondesk run"

# WATCHDOG_USEC given to the daemon: it pings every half of it, 0.1 s.
WATCHDOG_USEC = 200_000
PING_INTERVAL_S = WATCHDOG_USEC / 2 / 1_000_000


class NotifySocket:
    """systemd's end of $NOTIFY_SOCKET: a bound datagram socket that collects each message as its KEY=value pairs."""

    def __init__(self, env_value: str) -> None:
        self.env_value = env_value
        self.messages: list[dict[str, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + env_value[1:] if env_value.startswith("@") else env_value)
        self._sock.setblocking(False)

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[NotifySocket]:
        reader = asyncio.create_task(self._read())
        try:
            yield self
        finally:
            reader.cancel()
            await asyncio.wait({reader})
            self._sock.close()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 65536)
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value}

    def with_key(self, key: str) -> list[dict[str, str]]:
        return [m for m in self.messages if key in m]

    def index_of(self, key: str, value: str | None = None) -> int:
        """Where the first message with key (equal to value, if given) came, or -1."""
        for i, message in enumerate(self.messages):
            if key in message and (value is None or message[key] == value):
                return i
        return -1

    async def wait_for(self, check: Callable[[], bool], *, what: str, timeout_s: float = 10.0) -> None:
        async def holds() -> bool:
            return check()

        try:
            await eventually(holds, timeout_s=timeout_s, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; systemd heard: {self.messages}") from None


@pytest.fixture(params=["path", "abstract"])
async def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[NotifySocket]:
    """A notify socket on a file, as systemd gives a service, or an abstract @name, as some containers do."""
    env_value = str(tmp_path / "notify") if request.param == "path" else f"@mentiondesk-test-{uuid.uuid4().hex}"
    async with NotifySocket(env_value).listening() as listening:
        yield listening


# ---------------------------------------------------------------- the protocol


def test_outside_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    assert not notifier.notify("READY=1")
    notifier.ready("up")
    notifier.stopping()


async def test_each_message_arrives_as_systemd_reads_it(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.env())
    notifier.ready("streaming, 0 open tickets,\noutbox 0")
    notifier.status("polling (stream down)")
    before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.stopping()
    await notify_socket.wait_for(lambda: len(notify_socket.messages) == 4, what="four messages")
    ready, status, reloading, stopping = notify_socket.messages
    # A newline in a status would start another KEY=value line: the status stays one line.
    assert ready == {"READY": "1", "STATUS": "streaming, 0 open tickets, outbox 0"}
    assert status == {"STATUS": "polling (stream down)"}
    assert reloading.keys() == {"RELOADING", "MONOTONIC_USEC"} and reloading["RELOADING"] == "1"
    # systemd 253+ checks the reload's time against its own CLOCK_MONOTONIC.
    assert before_us <= int(reloading["MONOTONIC_USEC"]) <= after_us
    assert stopping == {"STOPPING": "1"}
    notifier.close()


def test_a_socket_nobody_listens_on_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.WARNING, logger="mentiondesk.bot.systemd"):
        assert not notifier.notify("READY=1")
        assert not notifier.notify("WATCHDOG=1")
    warnings = [r.getMessage() for r in caplog.records if r.name == "mentiondesk.bot.systemd"]
    assert len(warnings) == 1 and "NOTIFY_SOCKET" in warnings[0], warnings
    notifier.close()


@pytest.mark.parametrize(
    ("watchdog_env", "interval_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        # Set for another process (a parent), and inherited: not ours to ping.
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
    ids=["usec", "our-pid", "other-pid", "not-a-number", "zero", "unset"],
)
def test_the_watchdog_is_pinged_at_half_the_timeout_systemd_asks_for(
    tmp_path: Path, watchdog_env: dict[str, str], interval_s: float | None
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), **watchdog_env})
    assert notifier.watchdog_interval_s == interval_s


async def test_pings_stop_while_a_worker_is_dead_and_say_which_once(
    notify_socket: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    dead: list[str] = []
    notifier = Notifier({**notify_socket.env(), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    pinging = asyncio.create_task(notifier.watchdog(lambda: list(dead)))
    try:
        await notify_socket.wait_for(lambda: len(notify_socket.with_key("WATCHDOG")) >= 3, what="pings")
        dead.append("watch notifications:mention")
        await _pings_stopped(notify_socket, caplog, "watch notifications:mention")
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]

        dead.clear()
        before = len(notify_socket.with_key("WATCHDOG"))
        await notify_socket.wait_for(lambda: len(notify_socket.with_key("WATCHDOG")) > before, what="pings again")
    finally:
        pinging.cancel()
        await asyncio.wait({pinging})
        notifier.close()


async def _pings_stopped(notify_socket: NotifySocket, caplog: pytest.LogCaptureFixture, worker: str) -> None:
    """Wait for the watchdog to name the dead worker, then show that no ping follows for several intervals."""

    async def named() -> bool:
        return any(r.levelno == logging.ERROR and worker in r.getMessage() for r in caplog.records)

    await eventually(named, what=f"an error naming {worker}")
    # A ping sent just before the check failed may still be on its way to the reader: one interval drains it.
    await asyncio.sleep(PING_INTERVAL_S)
    pings = len(notify_socket.with_key("WATCHDOG"))
    # Absence can only be shown by waiting: five ping intervals in which pinging would have sent five.
    await asyncio.sleep(5 * PING_INTERVAL_S)
    assert len(notify_socket.with_key("WATCHDOG")) == pings


# ---------------------------------------------------------------- the daemon's side


async def test_a_dead_worker_stops_the_daemons_watchdog_pings(
    make_config: Callable[..., Config],
    start_daemon: Start,
    notify_socket: NotifySocket,
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = await start_daemon(make_config())
    notifier = Notifier({**notify_socket.env(), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    pinging = asyncio.create_task(notifier.watchdog(daemon.dead_workers))
    try:
        await notify_socket.wait_for(lambda: len(notify_socket.with_key("WATCHDOG")) >= 3, what="pings")
        assert daemon.dead_workers() == []
        sender = next(t for t in asyncio.all_tasks() if t.get_name() == "slack sender")
        sender.cancel()
        await _pings_stopped(notify_socket, caplog, "slack sender")
        assert daemon.dead_workers() == ["slack sender"]
        assert (await daemon.status_line()).endswith("stopped: slack sender")
    finally:
        pinging.cancel()
        await asyncio.wait({pinging})
        notifier.close()


async def test_the_status_line_counts_open_tickets_and_the_outbox(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon = await start_daemon(make_config())
    assert await daemon.wait_caught_up(10.0)
    await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)

    async def counted() -> bool:
        return await daemon.status_line() == "streaming, 1 open ticket, outbox 0"

    await eventually(counted, what="the status line to count the ticket")

    async def unreachable(*args: object, **kwargs: object) -> int:
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr("mentiondesk.bot.daemon.tickets_on_desk", unreachable)
    assert await daemon.status_line() == "streaming, database unreachable"


async def test_caught_up_waits_for_a_complete_poll(
    mastodon: MockServer, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    with mastodon.fault(path="/api/v1/notifications", status=503, count=None):
        daemon = await start_daemon(make_config())
        assert not await daemon.wait_caught_up(1.0)
        assert (await daemon.status_line()).startswith("catching up with Mastodon, 0 open tickets")
    assert await daemon.wait_caught_up(10.0)


async def test_mentiondesk_run_tells_systemd_ready_status_watchdog_and_stopping(
    tmp_path: Path, mastodon: MockServer, slack: FakeSlack, notify_socket: NotifySocket
) -> None:
    # Posted before the start: READY=1 must wait until the first catch-up has stored it.
    await post(mastodon, "alice", COMPLAINT)
    config = write_config(
        tmp_path,
        mastodon_url=mastodon.base_url,
        slack_url=slack.base_url,
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'md.db'}",
        extra="[daemon]\nshutdown_timeout_s = 5.0\n",
    )
    env = {**tokens(slack.bot_token, slack.app_token), **notify_socket.env()}
    env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    proc = await spawn_run(config, env)
    assert proc.stderr is not None
    reader = asyncio.create_task(proc.stderr.read())
    try:
        await notify_socket.wait_for(lambda: notify_socket.index_of("READY") >= 0, what="READY=1", timeout_s=60)
        ready = notify_socket.messages[notify_socket.index_of("READY")]
        assert "1 open ticket, outbox" in ready["STATUS"], ready
        assert 0 <= notify_socket.index_of("STATUS", "starting") < notify_socket.index_of("READY")
        # Pinged from the event loop while the workers run.
        pings = len(notify_socket.with_key("WATCHDOG"))
        await notify_socket.wait_for(lambda: len(notify_socket.with_key("WATCHDOG")) >= pings + 3, what="pings")

        # The status line follows what happens (it is looked at every few seconds).
        await post(mastodon, "bob", COMPLAINT_2)
        await notify_socket.wait_for(
            lambda: notify_socket.index_of("STATUS", "streaming, 2 open tickets, outbox 0") >= 0,
            what="a status counting both tickets",
            timeout_s=30,
        )

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (await reader).decode()
    assert code == 0, err
    assert notify_socket.index_of("STOPPING", "1") > notify_socket.index_of("READY"), notify_socket.messages
    assert "Traceback" not in err and "no more watchdog pings" not in err, err


# ---------------------------------------------------------------- the unit


def _unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_waits_for_ready_restarts_on_failure_but_not_on_a_config_error() -> None:
    unit = _unit_settings(UNIT.read_text(encoding="utf-8"))
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["Restart"] == ["on-failure"] and unit["RestartPreventExitStatus"] == ["2"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # Pinged every half of it; the daemon's stop must fit in TimeoutStopSec with room to close its connections.
    assert int(unit["WatchdogSec"][0]) >= 10
    assert int(unit["TimeoutStopSec"][0]) >= DaemonSettings().shutdown_timeout_s + 15
    assert INSTALLED_MENTIONDESK in UNIT.read_text(encoding="utf-8")


def _verify(unit_text: str, tmp_path: Path) -> str:
    """What systemd-analyze verify says of the unit, with ExecStart on this venv's mentiondesk ("" if all is well)."""
    mentiondesk = Path(sys.executable).parent / "mentiondesk"
    path = tmp_path / "mentiondesk.service"
    path.write_text(unit_text.replace(INSTALLED_MENTIONDESK, f"ExecStart={mentiondesk} run"), encoding="utf-8")
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    done = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60)
    # It exits 0 after an unknown key or a bad value (ignored, with a warning): what it prints is the verdict.
    return f"{done.stdout}{done.stderr}".strip() or ("" if done.returncode == 0 else f"exit {done.returncode}")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (apt-get install systemd)")
def test_systemd_analyze_accepts_the_unit_and_would_catch_a_mistake(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert _verify(text, tmp_path) == ""
    assert "thirty" in _verify(text.replace("WatchdogSec=30", "WatchdogSec=thirty"), tmp_path)
