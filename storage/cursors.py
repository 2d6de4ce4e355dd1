"""Stored read positions of the Mastodon feeds."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.storage.models import Cursor
from mentiondesk.storage.types import utcnow


async def get_cursor(session: AsyncSession, *, name: str) -> str | None:
    row = await session.get(Cursor, name)
    return row.value if row is not None else None


async def set_cursor(session: AsyncSession, *, name: str, value: str) -> None:
    """Move the cursor forward; never backwards, so a slow writer cannot undo a faster one."""
    row = await session.get(Cursor, name)
    if row is None:
        session.add(Cursor(name=name, value=value))
    elif int(value) > int(row.value):
        row.value = value
        row.updated_at = utcnow()
        session.add(row)


async def all_cursors(session: AsyncSession) -> dict[str, str]:
    rows = await session.exec(select(Cursor))
    return {row.name: row.value for row in rows}
