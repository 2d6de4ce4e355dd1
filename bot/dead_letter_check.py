"""What `mentiondesk check` says about the posts the feeds set aside (the dead_letters table)."""

from __future__ import annotations

from mentiondesk.storage.db import NoDatabaseError, current_revision, head_revision, open_engine, session_factory
from mentiondesk.storage.dead_letters import dead_letter_count, newest_dead_letters
from mentiondesk.storage.models import DeadLetter

SHOWN = 5


async def check_dead_letters(database_url: str) -> str:
    """How many posts were set aside, and the newest few with why; raises DatabaseError when it cannot look."""
    try:
        engine = await open_engine(database_url, create=False)
    except NoDatabaseError:
        return "none (no database yet)"
    try:
        if await current_revision(engine) != head_revision():
            return "not looked at until the schema is upgraded"
        async with session_factory(engine)() as session:
            count = await dead_letter_count(session)
            newest = await newest_dead_letters(session, limit=SHOWN)
    finally:
        await engine.dispose()
    if count == 0:
        return "none"
    lines = [f"{count} post{'s' if count != 1 else ''} set aside (table dead_letters), newest first:"]
    lines += [_line(dead) for dead in newest]
    if count > len(newest):
        lines.append(f"  … and {count - len(newest)} more")
    return "\n".join(lines)


def _line(dead: DeadLetter) -> str:
    when = dead.last_seen_at.strftime("%Y-%m-%d %H:%M UTC")
    what = f"status {dead.status_id}" if dead.status_id else f"entry {dead.item_key}"
    return f"  {when} {dead.feed} {what}: {dead.reason}"
