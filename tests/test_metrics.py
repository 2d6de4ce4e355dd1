"""/metrics after real traffic: customers post on mastodon-mock, agents work the card in the fake Slack.

The counters are the process's own, shared by every test a worker runs: each test compares a scrape taken
after what it did with one taken before, never an absolute count. The gauges read from the database are the
test's own database's, so those are compared as they stand.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from mastodon.errors import (
    MastodonInternalServerError,
    MastodonNetworkError,
    MastodonNotFoundError,
    MastodonRatelimitError,
    MastodonUnauthorizedError,
)
from mastodon_mock.testing.server import MockServer
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from mentiondesk.bot import metrics
from mentiondesk.bot.config import Config, HttpSettings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.retry import error_kind
from mentiondesk.bot.sla.alerts import send_due_alerts
from mentiondesk.bot.web.metrics import metrics_routes
from mentiondesk.bot.web.server import WebServer
from mentiondesk.storage.db import create_engine, session_factory
from mentiondesk.storage.models import Mention, SlackOutbox, SlaClock, SlaClockKind
from tests.conftest import eventually, settled
from tests.fakeslack import FakeSlack
from tests.test_agent_flow import AGENT, header
from tests.test_e2e import COMPLAINT, PRAISE, post, rows
from tests.test_slack_actions import click
from tests.test_slack_reply import AGENTS, brand_posts, new_ticket, open_modal, submit

Start = Callable[[Config], Awaitable[Daemon]]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
REPO = Path(__file__).resolve().parent.parent
NOTIFICATIONS = "/api/v1/notifications"
FEED = "notifications:mention"


def http_config(make_config: Callable[..., Config], **sections: Any) -> Config:
    return make_config(http={"port": 0}, **sections)


async def scrape(daemon: Daemon) -> Samples:
    """GET /metrics, parsed by Prometheus' own parser: every sample by name and labels."""
    web = daemon.web
    assert web is not None

    async def listening() -> bool:
        return web.port is not None

    await eventually(listening, timeout_s=20, what="the HTTP server listening")
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(f"http://127.0.0.1:{web.port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 for a labelled counter not yet seen (its child appears on its first increment)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def grows(daemon: Daemon, before: Samples, name: str, *, what: str, **labels: str) -> Samples:
    """Scrape until the sample has moved past its value before; returns that scrape."""
    latest: Samples = {}

    async def moved_on() -> bool:
        nonlocal latest
        latest = await scrape(daemon)
        return moved(before, latest, name, **labels) > 0

    # Generous: the test machines are shared, and a counter moves only after a poll or a retry comes round.
    await eventually(moved_on, timeout_s=30, what=what)
    return latest


async def test_a_complaint_its_reply_resolve_and_reopen_move_the_counters(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(http_config(make_config, slack=AGENTS))
    before = await scrape(daemon)
    assert value(before, "mentiondesk_leader") == 1
    assert value(before, "mentiondesk_build_info", version=metrics.VERSION) == 1
    assert value(before, "mentiondesk_open_tickets", state="open") == 0

    card, ticket = await new_ticket(daemon, mastodon, slack)
    await post(mastodon, "bob", PRAISE)

    async def both_stored() -> bool:
        return len(await rows(daemon, Mention)) == 2

    await eventually(both_stored, timeout_s=20, what="both mentions stored")
    await settled(daemon)
    await eventually(lambda: _stream_up(daemon), timeout_s=30, what="stream connected")
    after = await scrape(daemon)
    assert moved(before, after, "mentiondesk_mentions_ingested_total", source="notification", label="complaint") == 1
    assert moved(before, after, "mentiondesk_mentions_ingested_total", source="notification", label="other") == 1
    assert moved(before, after, "mentiondesk_tickets_opened_total") == 1
    assert moved(before, after, "mentiondesk_ingest_lag_seconds_count") == 2
    # Each lag is a few seconds at most here; the histogram's sum says so.
    assert 0 <= moved(before, after, "mentiondesk_ingest_lag_seconds_sum") < 2 * 30
    assert moved(before, after, "mentiondesk_classification_seconds_count") >= 1
    assert value(after, "mentiondesk_open_tickets", state="open") == 1
    # The card was sent: the configured channel shows an empty outbox, not a missing series.
    assert value(after, "mentiondesk_outbox_messages", channel="C0SUPPORT", state="pending") == 0
    assert value(after, "mentiondesk_outbox_oldest_pending_age_seconds", channel="C0SUPPORT") == 0
    assert value(after, "mentiondesk_scrape_database_ok") == 1
    assert value(after, "mentiondesk_stream_connected", feed=FEED) == 1

    # An agent answers publicly: the customer's wait until then is one first-response observation.
    view = await open_modal(slack, card, AGENT, ticket)
    await submit(slack, AGENT, view, "Sorry about that! A new parcel is on its way.")
    answered = await grows(
        daemon, after, "mentiondesk_first_response_seconds_count", what="the first response observed"
    )
    assert moved(after, answered, "mentiondesk_first_response_seconds_count") == 1
    waited_s = moved(after, answered, "mentiondesk_first_response_seconds_sum")
    assert 0 < waited_s < 60

    await click(slack, card, AGENT, "ticket_resolve", str(ticket.id))
    await slack.wait_for(lambda: "resolved" in header(slack, card), timeout_s=10)
    resolved = await grows(daemon, answered, "mentiondesk_tickets_resolved_total", what="the resolve counted")
    assert moved(answered, resolved, "mentiondesk_tickets_resolved_total") == 1
    assert value(resolved, "mentiondesk_open_tickets", state="open") == 0

    # The customer answers the brand's reply: their resolved ticket reopens, counted as such, not as a new one.
    [reply] = await brand_posts(mastodon)
    await post(mastodon, "alice", "@brand thanks, but I was charged a third time today", in_reply_to_id=reply["id"])
    await slack.wait_for(lambda: "resolved" not in header(slack, card), timeout_s=10)
    reopened = await grows(daemon, resolved, "mentiondesk_tickets_reopened_total", what="the reopen counted")
    assert moved(resolved, reopened, "mentiondesk_tickets_reopened_total") == 1
    assert moved(resolved, reopened, "mentiondesk_tickets_opened_total") == 0
    assert value(reopened, "mentiondesk_open_tickets", state="open") == 1


async def test_the_outbox_gauges_show_what_waits_for_slack_and_the_errors_why(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    daemon = await start_daemon(http_config(make_config))
    before = await scrape(daemon)
    slack.set_down(True)
    await post(mastodon, "alice", COMPLAINT)

    async def card_waits() -> bool:
        return len(await rows(daemon, SlackOutbox)) == 1

    await eventually(card_waits, what="the card queued")
    down = await grows(
        daemon, before, "mentiondesk_api_errors_total", api="slack", kind="server_error", what="Slack's 503s counted"
    )
    assert value(down, "mentiondesk_outbox_messages", channel="C0SUPPORT", state="pending") == 1
    assert value(down, "mentiondesk_outbox_messages", channel="C0SUPPORT", state="parked") == 0

    async def ageing() -> bool:
        samples = await scrape(daemon)
        return value(samples, "mentiondesk_outbox_oldest_pending_age_seconds", channel="C0SUPPORT") >= 0.5

    await eventually(ageing, what="the pending card's age to grow")

    slack.set_down(False)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=15)
    await settled(daemon)
    back = await scrape(daemon)
    assert value(back, "mentiondesk_outbox_messages", channel="C0SUPPORT", state="pending") == 0
    assert value(back, "mentiondesk_outbox_oldest_pending_age_seconds", channel="C0SUPPORT") == 0

    # A 429 is a rate-limit wait as well as an error of its own kind.
    slack.rate_limit_next("chat.postMessage", retry_after_s=1)
    await post(mastodon, "bob", "@brand my parcel is lost and support never answers, this is awful")
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 2, timeout_s=15)
    limited = await scrape(daemon)
    assert moved(back, limited, "mentiondesk_api_errors_total", api="slack", kind="rate_limited") == 1
    assert moved(back, limited, "mentiondesk_rate_limit_waits_total", api="slack") == 1
    assert moved(back, limited, "mentiondesk_rate_limit_wait_seconds_total", api="slack") == pytest.approx(1.0)


async def test_mastodon_errors_reconnects_and_its_budget(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    # The streaming endpoint refuses (502): each refusal is a failed call and a reconnect of that feed.
    with mastodon.fault(path_regex=r"^/api/v1/streaming/.*", status=502, count=None):
        daemon = await start_daemon(http_config(make_config))
        before = await scrape(daemon)
        refused = await grows(daemon, before, "mentiondesk_stream_reconnects_total", feed=FEED, what="a reconnect")
        refused = await grows(
            daemon, before, "mentiondesk_api_errors_total", api="mastodon", kind="server_error", what="the 502s"
        )
    assert value(refused, "mentiondesk_stream_connected", feed=FEED) == 0
    await eventually(lambda: _stream_up(daemon), timeout_s=30, what="stream connected once Mastodon is back")

    # The polls fail too, then are rate-limited.
    up = await scrape(daemon)
    assert value(up, "mentiondesk_stream_connected", feed=FEED) == 1
    with mastodon.fault(path=NOTIFICATIONS, status=503, count=None):
        daemon.watchers[0].kick()
        failing = await grows(
            daemon, up, "mentiondesk_api_errors_total", api="mastodon", kind="server_error", what="the polls' 503s"
        )
    with mastodon.fault(path=NOTIFICATIONS, type="ratelimit", count=None):
        daemon.watchers[0].kick()
        limited = await grows(
            daemon, failing, "mentiondesk_rate_limit_waits_total", api="mastodon", what="the 429 waited out"
        )
    assert moved(failing, limited, "mentiondesk_api_errors_total", api="mastodon", kind="rate_limited") >= 1
    assert moved(failing, limited, "mentiondesk_rate_limit_wait_seconds_total", api="mastodon") > 0
    # What the 429 said is left: nothing, until the window the server announced resets.
    assert value(limited, "mentiondesk_mastodon_rate_limit_remaining") == 0
    assert moved(before, refused, "mentiondesk_api_errors_total", api="slack", kind="server_error") == 0

    # Mastodon is back: posts flow again.
    await post(mastodon, "alice", COMPLAINT)
    await grows(daemon, limited, "mentiondesk_tickets_opened_total", what="a ticket after the outage")


async def test_sla_warnings_and_breaches_are_counted_by_policy_and_clock(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    slack.link_hosts.add("slack.com")  # the alerts link to the card
    daemon = await start_daemon(http_config(make_config))
    _, ticket = await new_ticket(daemon, mastodon, slack)
    assert daemon.context is not None
    async with daemon.context.sessions() as session:
        clock = (
            await session.exec(
                select(SlaClock).where(SlaClock.ticket_id == ticket.id, SlaClock.kind == SlaClockKind.FIRST_RESPONSE)
            )
        ).one()
    assert clock.warn_at is not None and clock.due_at is not None
    labels = {"policy": clock.policy, "kind": clock.kind}
    before = await scrape(daemon)

    # The alerts as the SLA timers send them, at the instants they are due (rather than waiting hours for them).
    await send_due_alerts(daemon.context.sessions, daemon.context.sla, now=clock.warn_at + timedelta(seconds=1))
    warned = await scrape(daemon)
    assert moved(before, warned, "mentiondesk_sla_warnings_total", **labels) == 1
    assert moved(before, warned, "mentiondesk_sla_breaches_total", **labels) == 0

    await send_due_alerts(daemon.context.sessions, daemon.context.sla, now=clock.due_at + timedelta(seconds=1))
    # Sent once, however often the timers look.
    await send_due_alerts(daemon.context.sessions, daemon.context.sla, now=clock.due_at + timedelta(seconds=2))
    breached = await scrape(daemon)
    assert moved(warned, breached, "mentiondesk_sla_breaches_total", **labels) == 1
    assert moved(warned, breached, "mentiondesk_sla_warnings_total", **labels) == 0


async def test_a_scrape_without_the_database_still_answers(tmp_path: Path) -> None:
    # A SQLite file in a folder that does not exist: every connection attempt fails, as with a database down.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'mentiondesk.db'}")
    server = WebServer(HttpSettings(port=0))
    server.add_routes(metrics_routes(session_factory(engine), is_leader=lambda: False, mastodon_remaining=lambda: 7))
    await server.start()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"http://127.0.0.1:{server.port}/metrics") as response,
        ):
            assert response.status == 200
            text = await response.text()
    finally:
        await server.stop()
        await engine.dispose()
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples["mentiondesk_scrape_database_ok"] == 0
    assert samples["mentiondesk_leader"] == 0
    assert samples["mentiondesk_mastodon_rate_limit_remaining"] == 7
    # No figure is better than a wrong one: the database's gauges are left out of this scrape.
    assert "mentiondesk_outbox_messages" not in samples and "mentiondesk_open_tickets" not in samples


async def test_a_process_that_stopped_leading_reports_no_stream_of_its_own(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'mentiondesk.db'}")
    leading = {"value": True}
    server = WebServer(HttpSettings(port=0))
    server.add_routes(
        metrics_routes(
            session_factory(engine),
            is_leader=lambda: leading["value"],
            mastodon_remaining=lambda: None,
            # The leader's feeds while it leads; none once it stepped down (its watchers are gone).
            streams=lambda: {"notifications:mention": True} if leading["value"] else {},
        )
    )
    await server.start()

    async def scrape_once() -> Samples:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"http://127.0.0.1:{server.port}/metrics") as response,
        ):
            assert response.status == 200
            text = await response.text()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    try:
        as_leader = await scrape_once()
        leading["value"] = False
        as_follower = await scrape_once()
    finally:
        await server.stop()
        await engine.dispose()
    assert value(as_leader, "mentiondesk_stream_connected", feed="notifications:mention") == 1
    assert value(as_follower, "mentiondesk_leader") == 0
    # A stale 1 here would hide the new leader's stream going down behind `max by (feed)` in the alert rules.
    assert not [name for name, _ in as_follower if name == "mentiondesk_stream_connected"]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (MastodonRatelimitError("Hit rate limit."), "rate_limited"),
        (MastodonUnauthorizedError("Mastodon API returned error", 401, "Unauthorized", "bad token"), "refused"),
        (MastodonInternalServerError("Mastodon API returned error", 500, "", None), "server_error"),
        (MastodonNotFoundError("Mastodon API returned error", 404, "", None), "client_error"),
        (MastodonNetworkError("Could not complete request"), "network"),
        (TimeoutError(), "timeout"),
        (ValueError("a bug"), "other"),
    ],
)
def test_error_kinds(exc: BaseException, kind: str) -> None:
    assert error_kind(exc) == kind


def test_a_bounded_call_that_timed_out_is_a_timeout() -> None:
    try:
        try:
            raise TimeoutError
        except TimeoutError as cause:
            raise MastodonNetworkError("Mastodon call status timed out after 5s") from cause
    except MastodonNetworkError as exc:
        assert error_kind(exc) == "timeout"


def readme_metrics_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Metrics\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def test_the_readme_lists_every_metric_and_only_those() -> None:
    section = readme_metrics_section()
    listed = set(re.findall(r"^\| `([a-z_:]+)`", section, flags=re.MULTILINE))
    exposed = metrics.metric_names()
    assert exposed - listed == set(), "metrics the README's Metrics table does not list"
    assert listed - exposed == set(), "the README lists metrics that do not exist"


def test_the_alert_rules_parse_and_name_only_real_metrics() -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus-alerts.yml").read_text(encoding="utf-8"))
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {"OutboxStuck", "MastodonStreamDown", "SlaBreachesRising", "NoLeader"} <= {a["alert"] for a in alerts}
    exposed = metrics.metric_names()
    # A histogram is queried through its series.
    series = exposed | {f"{n}{suffix}" for n in exposed for suffix in ("_bucket", "_count", "_sum")}
    for alert in alerts:
        named = set(re.findall(r"\b(?:mentiondesk|process|python)_[a-z_]+\b", alert["expr"]))
        assert named, f"{alert['alert']} names no metric"
        assert named <= series, f"{alert['alert']} names unknown metrics: {named - series}"
        assert alert["annotations"]["summary"]
    # The README names every rule, and the ones it shows are the file's.
    section = readme_metrics_section()
    assert all(alert["alert"] in section for alert in alerts)
    by_name = {alert["alert"]: alert for alert in alerts}
    shown = [rule for block in re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL) for rule in _rules(block)]
    assert shown, "the README shows no rule"
    for rule in shown:
        assert rule["expr"].strip() == by_name[rule["alert"]]["expr"].strip()
        assert rule.get("for") == by_name[rule["alert"]].get("for")


def _rules(block: str) -> list[dict[str, Any]]:
    loaded = yaml.safe_load(block)
    return [r for r in loaded if isinstance(r, dict) and "alert" in r] if isinstance(loaded, list) else []


def test_the_budget_gauge_is_nan_until_mastodon_said() -> None:
    name = "mentiondesk_mastodon_rate_limit_remaining"
    metrics.set_mastodon_budget(None)
    unknown = metrics.REGISTRY.get_sample_value(name)
    assert unknown is not None and math.isnan(unknown)
    metrics.set_mastodon_budget(42)
    assert metrics.REGISTRY.get_sample_value(name) == 42


async def _stream_up(daemon: Daemon) -> bool:
    return all(w.stream_connected.is_set() for w in daemon.watchers)
