"""`mentiondesk db backup`: a consistent copy of the SQLite database, taken while the daemon runs.

SQLite's online backup API copies the pages of one read transaction: in WAL mode the daemon keeps writing
meanwhile, and the copy holds exactly what was committed when it began. Postgres has pg_dump for this.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from mentiondesk.storage.db import DatabaseError, NoDatabaseError
from mentiondesk.storage.urls import safe_url, sqlite_path

# How long the copy waits on a lock the daemon holds (a checkpoint, or recovery of the -wal file) before failing.
BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Backup:
    path: Path
    size_bytes: int
    revision: str | None


def backup_database(url: str, target: Path, *, force: bool = False) -> Backup:
    """Copy the SQLite database at url to target (via a temporary file beside it), checked before it is kept."""
    source = sqlite_path(url)
    if source is None:
        if url.startswith("sqlite"):
            raise DatabaseError(f"database.url {safe_url(url)} is not a SQLite file: there is nothing to back up")
        raise DatabaseError(
            f"database.url {safe_url(url)} is not SQLite: back Postgres up with pg_dump "
            "(README, Backups: pg_dump --format=custom --file=mentiondesk.dump DBNAME)"
        )
    if not source.is_file():
        raise NoDatabaseError(f"no database at {source}: nothing to back up (check database.url)")
    target = target.expanduser().absolute()
    if target.resolve() == source.resolve():
        raise DatabaseError(f"{target} is the database itself: write the backup somewhere else")
    if target.is_dir():
        raise DatabaseError(f"{target} is a folder: give the backup file's path")
    if target.exists() and not force:
        raise DatabaseError(f"{target} exists already: choose another path, or --force to replace it")
    if not target.parent.is_dir():
        raise DatabaseError(f"cannot write {target}: the folder {target.parent} does not exist")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        _copy(source, temporary)
        revision = _check(temporary)
        os.replace(temporary, target)
    except sqlite3.Error as exc:
        raise DatabaseError(f"backup of {source} to {target} failed: {exc}") from exc
    except OSError as exc:
        raise DatabaseError(f"cannot write {target}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    _sync_folder(target.parent)
    return Backup(path=target, size_bytes=target.stat().st_size, revision=revision)


def _copy(source: Path, temporary: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()  # a leftover of a copy that was killed
    # It holds every customer's posts: readable by its owner only, from the first byte (an empty file is an empty
    # database to SQLite).
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    # Not opened read-only: in WAL mode a read-only connection cannot start when the -shm file is missing.
    src = sqlite3.connect(source, timeout=BUSY_TIMEOUT_S)
    try:
        dst = sqlite3.connect(temporary)
        try:
            # All pages in one step: one read transaction, so one consistent state (stepping would restart the
            # copy each time the daemon commits, and might never finish on a busy desk).
            src.backup(dst, pages=-1)
            # One self-contained file, not a database that expects a -wal file beside it.
            dst.execute("PRAGMA journal_mode=DELETE")
            dst.commit()
        finally:
            dst.close()
    finally:
        src.close()
    with open(temporary, "rb+") as copy:
        os.fsync(copy.fileno())


def _check(path: Path) -> str | None:
    """The copy's schema revision, once SQLite finds nothing wrong in it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise DatabaseError(f"the copy failed SQLite's integrity check: {'; '.join(problems[:5])}")
        try:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            return None  # no schema yet
        return None if row is None else str(row[0])
    finally:
        db.close()


def _sync_folder(folder: Path) -> None:
    # The rename is durable once the folder's entry is on disk too.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
