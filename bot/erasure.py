"""Erasing customers' data: the retention job the daemon runs, and `mentiondesk forget` for one person.

storage/retention.py says what is erased and what is kept; this module decides when, and whose.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.config import RetentionSettings
from mentiondesk.bot.retry import backoff_delay
from mentiondesk.bot.sla import clocks
from mentiondesk.bot.sla.policy import SlaBook
from mentiondesk.storage import retention
from mentiondesk.storage.db import transaction
from mentiondesk.storage.retention import Erasure, PersonData
from mentiondesk.storage.ticket_actions import close
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 3600.0
FORGET_REASON = "customer data erased on request"

# Mastodon's username rule (letters, digits, underscores; dots and dashes inside) and a host name, with a port
# for instances reached on one (tests, private instances).
_USERNAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HANDLE = re.compile(rf"@?(?P<user>{_USERNAME})(?:@(?P<domain>{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?))?")


class HandleError(ValueError):
    """Not a Mastodon handle; the message says what one looks like."""


@dataclass(frozen=True)
class Handle:
    """A person's handle, and the accts Mastodon stores for it on the brand's instance."""

    shown: str
    accts: tuple[str, ...]


def parse_handle(text: str, *, instance_url: str) -> Handle:
    """@user@instance, user@instance, or @user / user for an account on the brand's own instance.

    Mastodon names local accounts by username alone, so a handle on the brand's instance matches both forms.
    """
    match = _HANDLE.fullmatch(text.strip())
    if match is None:
        raise HandleError(
            f"{text!r} is not a Mastodon handle: write @user@instance (like @alice@social.example), "
            "or @user for an account on the brand's own instance"
        )
    user, domain = match["user"], (match["domain"] or "").lower()
    own = {urlsplit(instance_url).netloc.lower(), (urlsplit(instance_url).hostname or "").lower()}
    if not domain or domain in own:
        host = urlsplit(instance_url).netloc.lower()
        return Handle(shown=f"@{user}@{host}", accts=(user, f"{user}@{host}"))
    return Handle(shown=f"@{user}@{domain}", accts=(f"{user}@{domain}",))


@dataclass(frozen=True)
class Forgotten:
    """What `forget` found and erased of one person."""

    handle: Handle
    erased: Erasure
    closed: int

    def summary(self) -> str:
        if not self.erased and not self.closed:
            return f"nothing stored of {self.handle.shown}: nothing erased"
        e = self.erased
        parts = [
            _count(e.mentions, "mention"),
            _count(e.tickets, "ticket"),
            _count(e.replies, "reply", "replies"),
            _count(e.notes, "note"),
            _count(e.dead_letters, "set-aside feed entry", "set-aside feed entries"),
        ]
        line = f"erased {', '.join(parts)} of {self.handle.shown}"
        if self.closed:
            line += f"; closed {_count(self.closed, 'open ticket')} ({FORGET_REASON})"
        if e.cards:
            line += f"; {_count(e.cards, 'Slack card')} will be updated"
            line += " (by the running daemon within a minute, or at its next start)"
        return line


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


async def forget(
    sessions: async_sessionmaker[AsyncSession], book: SlaBook, handle: Handle, *, chunk: int = retention.CHUNK
) -> Forgotten:
    """Erase everything stored of one person now, whatever its age; their open tickets are closed first.

    Closed as an agent's close would (the resolution clock stops): a ticket with nobody left to answer must
    not keep its SLA clocks running and raising alerts.
    """
    async with sessions() as session:
        person = await retention.find_person(session, handle.accts)
    erased, closed = Erasure(), 0
    active = set(person.active_ticket_ids)
    for ids in _slices(person.ticket_ids, chunk):
        async with transaction(sessions) as session:
            closed += await _close(session, book, [t for t in ids if t in active])
            erased += await retention.erase_tickets(session, ids, finished_only=False)
    for ids in _slices(person.loose_mention_ids, chunk):
        async with transaction(sessions) as session:
            erased += Erasure(mentions=await retention.erase_loose_mentions(session, ids))
    for ids in _slices(person.dead_letter_ids, chunk):
        async with transaction(sessions) as session:
            erased += Erasure(dead_letters=await retention.erase_dead_letters(session, ids))
    return Forgotten(handle=handle, erased=erased, closed=closed)


async def _close(session: AsyncSession, book: SlaBook, ticket_ids: Sequence[int]) -> int:
    closed = 0
    at = utcnow()
    for ticket_id in ticket_ids:
        if await close(session, ticket_id=ticket_id, actor="forget", reason=FORGET_REASON):
            await clocks.taken_off_desk(session, book, ticket_id, at=at)
            closed += 1
    return closed


def _slices(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


async def retention_job(
    sessions: async_sessionmaker[AsyncSession],
    settings: RetentionSettings,
    *,
    on_erased: Callable[[], None],
    interval_s: float = RETENTION_INTERVAL_S,
) -> None:
    """Erase expired conversations at start and then every interval_s, until cancelled."""
    failures = 0
    while True:
        try:
            before = utcnow() - timedelta(days=settings.customer_data_days)
            erased = await erase_before(sessions, before)
            failures = 0
            wait_s = interval_s
            if erased:
                on_erased()  # the queued card refreshes go out now
        except Exception as exc:  # the database went away: the same erasure is tried again soon
            failures += 1
            wait_s = min(interval_s, backoff_delay(failures, cap_s=300.0))
            logger.warning("retention: erasing expired customer data failed: %s; next try in %.0fs", exc, wait_s)
        await asyncio.sleep(wait_s)


async def erase_before(sessions: async_sessionmaker[AsyncSession], before: datetime) -> Erasure:
    """One retention pass: every conversation that ended before `before`, logged when it erased any."""
    erased = await retention.erase_expired(sessions, before=before)
    if erased:
        logger.info(
            "retention: erased %d mentions, %d tickets, %d replies, %d notes and %d set-aside entries "
            "older than %s; %d Slack cards to update",
            erased.mentions,
            erased.tickets,
            erased.replies,
            erased.notes,
            erased.dead_letters,
            before.isoformat(timespec="seconds"),
            erased.cards,
        )
    return erased


__all__ = ["Forgotten", "Handle", "HandleError", "PersonData", "forget", "parse_handle", "retention_job"]
