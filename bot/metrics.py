"""The Prometheus metrics: every one is defined here, on one registry that /metrics (bot/web/metrics.py) serves.

This module imports nothing of mentiondesk, so any layer above storage may count (bot.retry sorts the API
errors it counts).

Counters and histograms are bumped where things happen. The figures that live in the database (outbox depth,
open tickets) are read at scrape time by an async refresh and handed to DatabaseGauges, so they are right in
every process that shares the database; collect() itself does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Not prometheus_client's global REGISTRY: a library that registers its own metrics there would show up in ours.
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

try:
    VERSION = version("mentiondesk")
except PackageNotFoundError:  # a source checkout that was never installed
    VERSION = "unknown"

BUILD = Info("mentiondesk_build", "The running version of mentiondesk.", registry=REGISTRY)
BUILD.info({"version": VERSION})

MENTIONS_INGESTED = Counter(
    "mentiondesk_mentions_ingested_total",
    "Posts stored, by the feed that brought them and their kind (complaint, question, other).",
    ["source", "label"],
    registry=REGISTRY,
)
TICKETS_OPENED = Counter(
    "mentiondesk_tickets_opened_total", "Tickets opened (not items put in triage).", registry=REGISTRY
)
TICKETS_RESOLVED = Counter(
    "mentiondesk_tickets_resolved_total", "Tickets resolved by an agent in Slack.", registry=REGISTRY
)
TICKETS_REOPENED = Counter(
    "mentiondesk_tickets_reopened_total",
    "Resolved tickets reopened, by an agent or by the customer posting again.",
    registry=REGISTRY,
)
CLASSIFY_SECONDS = Histogram(
    "mentiondesk_classification_seconds",
    "Time the classifier took per batch of posts (one call scores a whole ingest batch).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
INGEST_LAG_SECONDS = Histogram(
    "mentiondesk_ingest_lag_seconds",
    "From a post's own created_at to its row being committed (posts without a believable time are left out).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
    registry=REGISTRY,
)
FIRST_RESPONSE_SECONDS = Histogram(
    "mentiondesk_first_response_seconds",
    "Wall-clock seconds from the customer's post to the brand's first public reply on its ticket.",
    buckets=(60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 604800.0),
    registry=REGISTRY,
)
STREAM_RECONNECTS = Counter(
    "mentiondesk_stream_reconnects_total",
    "Mastodon streaming connections that ended (dropped, closed or refused) and are being reopened, by feed.",
    ["feed"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    "mentiondesk_api_errors_total",
    "Failed Mastodon and Slack API calls, by api and kind: "
    "rate_limited, timeout, server_error, network, refused, client_error, other.",
    ["api", "kind"],
    registry=REGISTRY,
)
RATE_LIMIT_WAITS = Counter(
    "mentiondesk_rate_limit_waits_total",
    "Times a rate limit made mentiondesk hold its calls (a 429, or the Mastodon budget running low).",
    ["api"],
    registry=REGISTRY,
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "mentiondesk_rate_limit_wait_seconds_total",
    "Seconds mentiondesk was asked to hold its calls by rate limits, summed.",
    ["api"],
    registry=REGISTRY,
)
MASTODON_BUDGET = Gauge(
    "mentiondesk_mastodon_rate_limit_remaining",
    "Mastodon requests left in the current rate-limit window (X-RateLimit-Remaining of the latest answer).",
    registry=REGISTRY,
)
SLA_WARNINGS = Counter(
    "mentiondesk_sla_warnings_total",
    "SLA warnings sent, by policy and clock kind.",
    ["policy", "kind"],
    registry=REGISTRY,
)
SLA_BREACHES = Counter(
    "mentiondesk_sla_breaches_total",
    "SLA clocks that breached (their escalation queued), by policy and clock kind.",
    ["policy", "kind"],
    registry=REGISTRY,
)
STREAM_CONNECTED = Gauge(
    "mentiondesk_stream_connected",
    "1 while the feed's Mastodon stream is connected, 0 while the feed is only polled.",
    ["feed"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "mentiondesk_leader",
    "1 while this process is the leader (consumes the Mastodon feeds, runs the scheduled jobs), else 0.",
    registry=REGISTRY,
)
DATABASE_SCRAPE_OK = Gauge(
    "mentiondesk_scrape_database_ok",
    "1 when this scrape read the database-derived gauges, 0 when the database did not answer in time.",
    registry=REGISTRY,
)


@dataclass(frozen=True)
class OutboxBacklog:
    """One channel's Slack messages not sent yet."""

    pending: int = 0
    parked: int = 0
    oldest_pending_age_s: float | None = None


@dataclass(frozen=True)
class DatabaseSnapshot:
    """What a scrape read from the database."""

    outbox: Mapping[str, OutboxBacklog] = field(default_factory=dict)
    tickets_by_state: Mapping[str, int] = field(default_factory=dict)


class DatabaseGauges(Collector):
    """The database-derived gauges, from the latest snapshot: none when it could not be read."""

    def __init__(self) -> None:
        self._snapshot: DatabaseSnapshot | None = None

    def update(self, snapshot: DatabaseSnapshot | None) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._snapshot))

    @staticmethod
    def _families(snapshot: DatabaseSnapshot | None) -> Iterator[Metric]:
        messages = GaugeMetricFamily(
            "mentiondesk_outbox_messages",
            "Slack messages in the outbox not sent yet, by channel and state (pending: being tried; parked: "
            "refused by Slack until a person fixes the cause).",
            labels=["channel", "state"],
        )
        oldest = GaugeMetricFamily(
            "mentiondesk_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending Slack message, by channel (0 when none is pending).",
            labels=["channel"],
        )
        tickets = GaugeMetricFamily(
            "mentiondesk_open_tickets", "Tickets on the desk, by state (open, waiting).", labels=["state"]
        )
        if snapshot is not None:
            for channel, backlog in sorted(snapshot.outbox.items()):
                messages.add_metric([channel, "pending"], backlog.pending)
                messages.add_metric([channel, "parked"], backlog.parked)
                oldest.add_metric([channel], backlog.oldest_pending_age_s or 0.0)
            for state, count in sorted(snapshot.tickets_by_state.items()):
                tickets.add_metric([state], count)
        yield from (messages, oldest, tickets)


DATABASE_GAUGES = DatabaseGauges()
REGISTRY.register(DATABASE_GAUGES)


# ---------------------------------------------------------------- the calls the rest of the daemon makes


def rate_limit_waited(api: str, wait_s: float) -> None:
    RATE_LIMIT_WAITS.labels(api=api).inc()
    RATE_LIMIT_WAIT_SECONDS.labels(api=api).inc(max(0.0, wait_s))


def set_mastodon_budget(remaining: int | None) -> None:
    MASTODON_BUDGET.set(math.nan if remaining is None else remaining)


def metric_names() -> set[str]:
    """Every metric family the registry exposes, by its exposed name (a counter's with its _total)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "info":
            names.add(family.name + "_info")
        else:
            names.add(family.name)
    return names
