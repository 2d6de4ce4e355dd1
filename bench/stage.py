"""One stage of the benchmark: `mentiondesk run` in a process of its own, and what the benchmark watches it by.

The daemon is started as an operator starts it (a TOML config file, secrets in the environment), against the
replay server (bench/replay.py) in front of mastodon-mock and a fake Slack without rate limits. The benchmark
watches it only from outside: the rows appearing in its database, the cards arriving at the fake Slack, its
memory in /proc.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import tomllib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.mastodon_side import BRAND_TOKEN, REPO_ROOT, HarnessError
from mentiondesk.bot.config import parse_settings
from mentiondesk.storage.db import create_engine
from tests.fakeslack import FakeSlack

POLL_S = 0.02  # how often the database is looked at: the resolution of every "stored" time
SETTLE_S = 1.0  # rows may commit out of id order for this long (several writers): looked at again till then


def daemon_settings(*, mastodon_url: str, slack_url: str, db_url: str, log_level: str = "INFO") -> dict[str, Any]:
    """The daemon's config: defaults, except what points it at the benchmark's servers and lets Slack go unpaced."""
    data: dict[str, Any] = {
        "mastodon": {
            "base_url": mastodon_url,
            # Only the benchmark's posts: none of mastodon-mock's older mentions on the first start.
            "backfill": 0,
            # Polls are spaced to a third of this budget: 0.3 s apart instead of 3 s, so the poll that follows the
            # stream's connect (and ends the daemon's hold on what the stream brings) comes sooner. No figure
            # depends on it: a stage sends nothing before that poll, and with the stream up the daemon polls
            # once a minute (poll_interval_s) whatever the budget.
            "rate_limit_window_s": 30.0,
        },
        # The fake Slack has no rate limit here: cards go out as fast as the daemon sends them.
        "slack": {"base_url": slack_url, "default_channel": "C0SUPPORT", "post_interval_s": 0.0},
        "database": {"url": db_url},
        "daemon": {"log_level": log_level},
    }
    parse_settings(data, source="bench")  # a config the daemon would refuse is the harness's fault: fail here
    return data


def to_toml(data: Mapping[str, Mapping[str, Any]]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a TOML basic string
        raise TypeError(f"no TOML for {v!r}")

    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value(v)}" for key, v in values.items())
    written = "\n".join(lines) + "\n"
    if tomllib.loads(written) != data:
        raise HarnessError(f"config did not survive TOML: {written}")
    return written


def command_line() -> list[str]:
    """`mentiondesk` as installed beside this interpreter."""
    script = Path(sys.executable).with_name("mentiondesk")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mentiondesk.bot"]


class DaemonProcess:
    """`mentiondesk run --config FILE` as a child process, its log in a file beside the config."""

    def __init__(self, folder: Path, name: str, settings: dict[str, Any], slack: FakeSlack, *, profile: bool) -> None:
        self.config_path = folder / f"{name}.toml"
        self.log_path = folder / f"{name}.log"
        self.profile_path = folder / f"{name}.prof" if profile else None
        self.config_path.write_text(to_toml(settings), encoding="utf-8")
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("MENTIONDESK_")}
        self._env.update(
            MENTIONDESK_MASTODON_TOKEN=BRAND_TOKEN,
            MENTIONDESK_SLACK_BOT_TOKEN=slack.bot_token,
            MENTIONDESK_SLACK_APP_TOKEN=slack.app_token,
        )
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if self.profile_path is not None:
            # cProfile writes its file when `run` returns, which it does on SIGTERM (bot/cli.py).
            argv = [sys.executable, "-m", "cProfile", "-o", str(self.profile_path), "-m", "mentiondesk.bot"]
        else:
            argv = command_line()
        with self.log_path.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, "run", "--config", str(self.config_path), env=self._env, stderr=log, cwd=REPO_ROOT
            )

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def check_alive(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            code = None if self._proc is None else self._proc.returncode
            raise HarnessError(f"mentiondesk run exited (code {code}); its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def peak_rss_mib(self) -> float:
        """The process's peak resident set so far (VmHWM), in MiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return kib / 1024

    async def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            # The daemon's own shutdown is bounded by daemon.shutdown_timeout_s (10 s); cProfile then writes out.
            await asyncio.wait_for(proc.wait(), timeout=60)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class Seen:
    """When each post's row was first seen in the database (epoch seconds), by status id."""

    at: dict[str, float]


class StoreWatch:
    """Reads the daemon's database from outside, as often as POLL_S, to time when rows become visible."""

    def __init__(self, db_url: str) -> None:
        self._engine = create_engine(db_url)

    async def close(self) -> None:
        await self._engine.dispose()

    async def scalar(self, sql: str) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(text(sql))).scalar_one())

    async def mentions(self) -> int:
        return await self.scalar("SELECT count(*) FROM mentions")

    async def unsent(self) -> int:
        return await self.scalar("SELECT count(*) FROM slack_outbox WHERE state <> 'sent'")

    async def wait_mentions(self, total: int, *, timeout_s: float) -> tuple[int, float]:
        """Wait until `total` mentions are stored or the time is up: (mentions stored, epoch time last seen to grow)."""
        deadline = time.monotonic() + timeout_s
        count, grew_at = await self.mentions(), time.time()
        while count < total and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            now_count = await self.mentions()
            if now_count > count:
                count, grew_at = now_count, time.time()
        return count, grew_at

    async def last_id(self) -> int:
        return await self.scalar("SELECT coalesce(max(id), 0) FROM mentions")

    async def follow(self, expected: set[str], *, after: int, timeout_s: float) -> Seen:
        """Note when each expected post's mention row first appears, until all have or the time is up.

        Rows up to id `after` (last_id() before the posts were sent: a seeded history) are not read.
        """
        seen: dict[str, float] = {}
        low = top = after
        # (time of a poll, highest id seen by then): ids at or below what was highest SETTLE_S ago are settled.
        history: deque[tuple[float, int]] = deque()
        deadline = time.monotonic() + timeout_s
        while not expected <= seen.keys() and time.monotonic() < deadline:
            async with self._engine.connect() as conn:
                rows = (
                    await conn.execute(text("SELECT id, status_id FROM mentions WHERE id > :low"), {"low": low})
                ).all()
            now = time.time()
            for _, status_id in rows:
                if status_id in expected:
                    seen.setdefault(status_id, now)
            top = max([top, *(row_id for row_id, _ in rows)])
            history.append((now, top))
            while history and history[0][0] < now - SETTLE_S:
                low = max(low, history.popleft()[1])
            await asyncio.sleep(POLL_S)
        return Seen(at=seen)

    async def wait_sent(self, *, timeout_s: float) -> bool:
        """Wait until the outbox is empty (every card and follow-up at Slack); False if the time ran out."""
        deadline = time.monotonic() + timeout_s
        while await self.unsent() > 0:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def wait_tried(self, *, timeout_s: float) -> bool:
        """Wait until every outbox message has been tried at least once; False if the time ran out."""
        deadline = time.monotonic() + timeout_s
        while await self.scalar("SELECT count(*) FROM slack_outbox WHERE state = 'pending' AND attempts = 0") > 0:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def card_posts(self) -> dict[int, str]:
        """Outbox id of each card -> the status id of the post that opened its ticket."""
        sql = (
            "SELECT o.id, m.status_id FROM slack_outbox o JOIN mentions m ON m.id = o.mention_id WHERE o.kind = 'card'"
        )
        async with self._engine.connect() as conn:
            return {int(row_id): str(status_id) for row_id, status_id in (await conn.execute(text(sql))).all()}


def card_times(slack: FakeSlack) -> dict[int, float]:
    """Outbox id -> when the fake Slack stored that card (its message ts is the wall clock then)."""
    found = {}
    for message in slack.messages():
        payload = (message.get("metadata") or {}).get("event_payload") or {}
        if "outbox_id" in payload:
            found[int(payload["outbox_id"])] = float(message["ts"])
    return found
