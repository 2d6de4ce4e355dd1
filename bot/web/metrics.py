"""GET /metrics: the Prometheus text format of bot.metrics' registry.

The database-derived gauges are read here, in the request, with a short timeout, before the registry is
rendered: a slow database costs one scrape those gauges (mentiondesk_scrape_database_ok 0), never a stuck loop.
/metrics is not behind the dashboard's token: it holds counts and timings, no customer data, and the server
listens on loopback unless http.host says otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot import metrics
from mentiondesk.storage.gauges import tickets_on_desk, unsent_messages
from mentiondesk.storage.models import OutboxState
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# Prometheus' default scrape timeout is 10 s; the database part must leave the rest of the scrape its time.
DATABASE_TIMEOUT_S = 3.0


def metrics_routes(
    sessions: async_sessionmaker[AsyncSession],
    *,
    is_leader: Callable[[], bool],
    mastodon_remaining: Callable[[], int | None],
    streams: Callable[[], Mapping[str, bool]] = dict,
    channels: Iterable[str] = (),
) -> list[web.RouteDef]:
    """The /metrics route; `streams` says which feed's stream is connected, and `channels` always appear in the
    outbox gauges (at 0 when nothing waits for them)."""
    known = tuple(channels)

    async def scrape(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_S):
                snapshot = await read_snapshot(sessions, channels=known, now=utcnow())
        except Exception as exc:
            logger.warning("/metrics: the database gauges are left out of this scrape: %s", exc or type(exc).__name__)
            snapshot = None
        metrics.DATABASE_GAUGES.update(snapshot)
        metrics.DATABASE_SCRAPE_OK.set(0 if snapshot is None else 1)
        metrics.LEADER.set(1 if is_leader() else 0)
        metrics.set_mastodon_budget(mastodon_remaining())
        # Only the feeds this process reads now: a leader that stepped down must not keep reporting its streams.
        metrics.STREAM_CONNECTED.clear()
        for feed, connected in streams().items():
            metrics.STREAM_CONNECTED.labels(feed=feed).set(1 if connected else 0)
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get(METRICS_PATH, scrape)]


async def read_snapshot(
    sessions: async_sessionmaker[AsyncSession], *, channels: Iterable[str], now: datetime
) -> metrics.DatabaseSnapshot:
    async with sessions() as session:
        unsent = await unsent_messages(session)
        tickets = await tickets_on_desk(session)
    backlog = {channel: metrics.OutboxBacklog() for channel in channels}
    for row in unsent:
        seen = backlog.get(row.channel, metrics.OutboxBacklog())
        if row.state == OutboxState.PENDING:
            age_s = max(0.0, (now - row.oldest_created_at).total_seconds())
            backlog[row.channel] = replace(seen, pending=row.count, oldest_pending_age_s=age_s)
        else:
            backlog[row.channel] = replace(seen, parked=row.count)
    return metrics.DatabaseSnapshot(outbox=backlog, tickets_by_state=tickets)
