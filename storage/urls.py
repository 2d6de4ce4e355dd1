"""Database URLs: which SQLite file one names, and how to show one to a person.

Kept apart from storage.db so that loading the config does not import Alembic and the ORM.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url


def safe_url(url: str) -> str:
    """The URL with any password masked, for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names; None for other databases, in-memory SQLite and `file:` URIs."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    # With uri=true the "path" is a file: URI handed to SQLite as written.
    if parsed.query.get("uri"):
        return None
    return Path(parsed.database)


def with_absolute_sqlite_path(url: str) -> str:
    """The URL with a relative (or ~) SQLite path made absolute against the current directory.

    Three slashes in sqlite:///x.db mean a path relative to wherever the command runs; resolving it once, at
    config load, keeps every later step (and every message) on the same file.
    """
    path = sqlite_path(url)
    if path is None or path.is_absolute():
        return url
    absolute = path.expanduser().absolute()
    return make_url(url).set(database=str(absolute)).render_as_string(hide_password=False)


def describe_database(url: str) -> str:
    """How to name the database to a person: a SQLite file's path, or the URL with any password masked."""
    path = sqlite_path(url)
    return str(path) if path is not None else safe_url(url)
