"""SQLite serves one daemon: a lock file beside the database says a second one must not start.

An OS lock (flock) on `<db>.lock`, held for the daemon's whole life: the kernel releases it when the process
ends, however it ends (crash, SIGKILL), so no stale lock is ever left to clean up by hand. The file itself
stays (deleting it would let a third process lock a new file while the second still holds the old one).
Commands that only read or make one change (report, check, db backup, forget) take no lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from mentiondesk.storage.db import DatabaseError
from mentiondesk.storage.urls import sqlite_path


class AnotherDaemonRunning(DatabaseError):
    """A daemon is running on this SQLite file already."""


class DaemonLock:
    """The lock on one SQLite file; release() (or the process ending) gives it up."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        try:
            # Opened without truncating: the holder's pid must stay readable until this process holds the lock.
            lock_file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the daemon's life
        except OSError as exc:
            raise DatabaseError(f"cannot create the lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise AnotherDaemonRunning(
                f"another mentiondesk daemon (pid {holder}) is running on {self.database}; "
                "SQLite supports one daemon — use Postgres to run several"
            ) from None
        except OSError as exc:
            lock_file.close()
            raise DatabaseError(f"cannot lock {self.path}: {exc.strerror}") from exc
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._file = lock_file

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def lock_single_daemon(url: str) -> DaemonLock | None:
    """Hold the lock of the SQLite file url names; None for Postgres and in-memory SQLite, which need none."""
    path = sqlite_path(url)
    if path is None:
        return None
    lock = DaemonLock(path)
    lock.acquire()
    return lock
