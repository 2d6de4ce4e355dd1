"""Reloading the config file (SIGHUP, `systemctl reload`): what a running daemon can take on, one reload at a time.

The file is read and validated whole; a bad one changes nothing. Keys the daemon only reads while starting (the
database, the Mastodon server and feeds, the Slack connection, the HTTP server, the ingest queue) keep their
running values until a restart, and are named in a warning; the rest apply to work that starts after
the reload. Secrets are never re-read: they are the ones the daemon started with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from mentiondesk.bot.config import Config, ConfigError, Settings, load_settings

logger = logging.getLogger(__name__)

# A section name stands for every key in it. Everything else waits for a restart.
RELOADABLE = frozenset(
    {
        "routing",
        "tickets",
        "sla",
        "reports",
        "classifier.threshold",
        "classifier.high_priority_score",
        "classifier.triage_threshold",
        "classifier.triage_channel",
        "classifier.tickets_for",
        # The model is loaded (and checked) before anything is swapped; batches begun before keep the old one.
        "classifier.model",
        "classifier.model_path",
        # Read by `mentiondesk classifier train` only; the running daemon has nothing to redo.
        "classifier.models_dir",
        # Pure rules, rebuilt into a new Judge with the thresholds.
        "classifier.priority",
        "classifier.categories",
        "mastodon.accept_bots",
        "slack.default_channel",
        "slack.thread_replies",
        "slack.label_reactions",
        "daemon.log_level",
        "daemon.shutdown_timeout_s",
    }
)


@dataclass(frozen=True)
class Reload:
    """What a reload puts in force, and what it leaves for a restart."""

    # The new file's settings, with each restart-only key at its running value.
    settings: Settings
    # Sections whose values in force change, in file order.
    changed: tuple[str, ...]
    # Keys changed in the file that take effect after a restart.
    restart_needed: tuple[str, ...]


def plan_reload(running: Settings, new: Settings) -> Reload:
    """Sort the differences between the running settings and a new file's into applied and restart-only."""
    sections: dict[str, Any] = {}
    changed: list[str] = []
    restart: list[str] = []
    for name in Settings.model_fields:
        old_value, new_value = getattr(running, name), getattr(new, name)
        kept: dict[str, Any] = {}
        if isinstance(old_value, BaseModel) and isinstance(new_value, BaseModel) and name not in RELOADABLE:
            for key in type(old_value).model_fields:
                if getattr(old_value, key) != getattr(new_value, key) and f"{name}.{key}" not in RELOADABLE:
                    restart.append(f"{name}.{key}")
                    kept[key] = getattr(old_value, key)
            # The values were valid where they came from, and no check spans a restart-only key and another.
            value = new_value.model_copy(update=kept) if kept else new_value
        elif old_value != new_value and name not in RELOADABLE:
            restart.append(name)  # a section present in one file only ([http])
            value = old_value
        else:
            value = new_value
        sections[name] = value
        if value != old_value:
            changed.append(name)
    applied = new.model_copy(update=sections) if restart else new
    return Reload(settings=applied, changed=tuple(changed), restart_needed=tuple(restart))


class Reloadable(Protocol):
    config: Config

    async def reload(self, config: Config) -> Reload: ...


class Reloader:
    """Reloads the daemon's config file on request: one reload at a time, and a request during one queues one more
    (any number of them fold into that one).

    ``before`` and ``after`` run around each reload, refused ones too (e.g. to tell a service manager
    RELOADING=1, then READY=1: it waits for the second whatever the outcome).
    """

    def __init__(
        self,
        target: Reloadable,
        path: Path,
        *,
        before: Callable[[], None] = lambda: None,
        after: Callable[[], None] = lambda: None,
    ) -> None:
        self._target = target
        self._path = path
        self._before = before
        self._after = after
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._running = False  # reloads wait until the daemon has started
        self.reloads = 0  # reloads finished, applied or refused (what tests wait on)

    def request(self) -> None:
        """Reload soon; safe to call from a signal handler installed with loop.add_signal_handler."""
        if not self._running or (self._task is not None and not self._task.done()):
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="config reload")

    def start(self) -> None:
        """The daemon is running: reloads may go ahead, first one requested while it was starting."""
        self._running = True
        if self._again:
            self.request()

    async def close(self) -> None:
        """Stop a reload in progress (the daemon is stopping; its in-memory settings no longer matter)."""
        self._running = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def _run(self) -> None:
        while True:
            self._again = False
            await self.reload_once()
            if not self._again:
                return

    async def reload_once(self) -> bool:
        """Read, validate and apply the file; True when applied. Refusals and failures are logged, not raised."""
        self._before()
        try:
            return await self._reload()
        except ConfigError as exc:
            logger.error("config reload refused, the running config stays in force: %s", exc)
            return False
        except Exception:
            logger.exception("config reload failed; the running config stays in force where it was not applied")
            return False
        finally:
            self.reloads += 1
            self._after()

    async def _reload(self) -> bool:
        settings = await asyncio.to_thread(load_settings, self._path)
        running = self._target.config
        config = Config(settings=settings, secrets=running.secrets, source=str(self._path))
        plan = await self._target.reload(config)
        if plan.restart_needed:
            logger.warning(
                "config reload: changes to %s in %s take effect after a restart; the rest is applied",
                ", ".join(plan.restart_needed),
                self._path,
            )
        if "daemon" in plan.changed:
            # The process's logging is the entry point's, which the daemon's own log_level key configures.
            logging.getLogger().setLevel(plan.settings.daemon.log_level)
        logger.info("reloaded config from %s: changed sections %s", self._path, ", ".join(plan.changed) or "none")
        return True
