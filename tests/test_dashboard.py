"""The managers' dashboard in a real headless Chromium: a seeded database's figures, shown cleanly, behind a token."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mastodon_mock.testing.server import MockServer
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.config import Config, HttpSettings, Secrets, parse_settings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.reports.figures import Period, compute_figures, figures_json
from mentiondesk.bot.web.dashboard import dashboard_routes, duration, share
from mentiondesk.bot.web.server import WebServer
from mentiondesk.storage.models import Reply, ReplyState, SlaClock, SlaClockKind, Ticket, TicketState
from tests.conftest import BRAND_TOKEN, eventually, settings_dict
from tests.fakeslack import FakeSlack

# Debian's chromium package; Playwright drives it as it is, nothing is downloaded.
CHROMIUM = Path("/usr/lib/chromium/chromium")
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TOKEN = "dashboard-test-token"  # guards a local test server, not a credential
CHANNEL = "C0SUPPORT"
ALICE, BOB = "U0ALICE", "U0BOB"
Sessions = async_sessionmaker[AsyncSession]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: apt-get install chromium")


# ---------------------------------------------------------------- a seeded desk


def _ticket(number: int, opened: datetime, **values: Any) -> Ticket:
    return Ticket(
        state=values.pop("state", TicketState.OPEN),
        customer_account_id=f"acc{number}",
        customer_acct=f"customer{number}@social.example",
        root_status_id=str(1000 + number),
        posted_at=opened,
        received_at=opened,
        created_at=opened,
        updated_at=opened,
        score=0.9,
        channel=CHANNEL,
        slack_ts=f"1773000000.{number:06d}",
        **values,
    )


def _first_response(ticket: Ticket, *, answered_after: timedelta | None, target: timedelta) -> SlaClock:
    started = ticket.created_at
    answered = None if answered_after is None else started + answered_after
    late = answered_after is not None and answered_after > target
    assert ticket.id is not None
    # The ticket's own copy, as the SLA engine keeps it.
    ticket.first_response_at, ticket.first_response_due_at = answered, started + target
    return SlaClock(
        ticket_id=ticket.id,
        kind=SlaClockKind.FIRST_RESPONSE,
        policy="default",
        calendar="24/7",
        target_s=int(target.total_seconds()),
        started_at=started,
        due_at=started + target,
        achieved_at=answered,
        wall_s=None if answered_after is None else answered_after.total_seconds(),
        business_s=None if answered_after is None else answered_after.total_seconds(),
        breached=late,
        breached_at=started + target if late else None,
    )


async def seed(sessions: Sessions) -> None:
    """Four tickets: answered in 30 min (by Alice), answered in 2 h against 1 h (by Bob: a breach), one waiting for
    3 h, and one from long before the period."""
    async with sessions() as session:
        tickets = [
            _ticket(1, NOW - timedelta(days=2), assignee_slack_id=ALICE),
            _ticket(2, NOW - timedelta(hours=30), assignee_slack_id=BOB),
            _ticket(3, NOW - timedelta(hours=3)),
            _ticket(4, NOW - timedelta(days=20), state=TicketState.RESOLVED, resolved_at=NOW - timedelta(days=19)),
        ]
        session.add_all(tickets)
        await session.flush()
        hour = timedelta(hours=1)
        session.add_all(
            [
                _first_response(tickets[0], answered_after=timedelta(minutes=30), target=hour),
                _first_response(tickets[1], answered_after=2 * hour, target=hour),
                _first_response(tickets[2], answered_after=None, target=4 * hour),
                _first_response(tickets[3], answered_after=timedelta(minutes=10), target=hour),
                # Who answered is the author of the first reply published to the customer.
                _reply(tickets[0], ALICE),
                _reply(tickets[1], BOB),
            ]
        )
        await session.commit()


def _reply(ticket: Ticket, author: str) -> Reply:
    assert ticket.id is not None and ticket.first_response_at is not None
    return Reply(
        ticket_id=ticket.id,
        author_slack_id=author,
        text="Sorry about that, fixed now.",
        visibility="public",
        in_reply_to_status_id=ticket.root_status_id,
        state=ReplyState.PUBLISHED,
        created_at=ticket.first_response_at,
        published_at=ticket.first_response_at,
    )


# ---------------------------------------------------------------- the dashboard served, and a browser


@pytest.fixture
async def serve(sessions: Sessions) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Serve the dashboard over `sessions` on a free port, as of NOW; returns its base URL."""
    servers: list[WebServer] = []

    async def start(*, token: str | None = None) -> str:
        server = WebServer(HttpSettings(port=0))
        server.add_routes(dashboard_routes(sessions, token=token, clock=lambda: NOW))
        await server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        await chromium.close()


class Console:
    """What the page logged as an error, and scripts' uncaught exceptions: a clean page logs neither."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")


async def tiles(page: Page) -> dict[str, str]:
    cells = page.locator("[data-figure]")
    return {
        str(await cells.nth(i).get_attribute("data-figure")): await cells.nth(i).inner_text()
        for i in range(await cells.count())
    }


async def table(page: Page, name: str) -> dict[str, list[str]]:
    """A table's rows by their first cell."""
    found: dict[str, list[str]] = {}
    rows = page.locator(f"table[data-table={name}] tbody tr")
    for i in range(await rows.count()):
        cells = [c.strip() for c in await rows.nth(i).locator("td").all_inner_texts()]
        found[cells[0]] = cells[1:]
    return found


# ---------------------------------------------------------------- tests


async def test_the_page_shows_the_seeded_figures_without_console_errors(
    sessions: Sessions, serve: Callable[..., Awaitable[str]], browser: Browser
) -> None:
    await seed(sessions)
    base = await serve()
    page = await browser.new_page()
    console = Console(page)
    response = await page.goto(base + "/")
    assert response is not None and response.status == 200
    assert await page.title() == "mentiondesk · how fast we answer"

    # What anyone can count in the seed, whatever the figures module's internals.
    shown = await tiles(page)
    assert shown["opened"] == "3"
    assert shown["still_open"] == "3"
    assert shown["first_response_median"] == "1h 15m"  # the median of 30 min and 2 h
    assert shown["first_response_within_sla"] == "50%"
    backlog = await table(page, "backlog")
    assert (backlog["1-4h"], backlog["1-3d"], backlog[">3d"]) == (["1"], ["2"], ["0"])
    agents = await table(page, "agent")
    assert agents[ALICE][3] == "100%" and agents[BOB][3] == "0%"
    breach_links = page.locator("table[data-table=breaches] a")
    assert await breach_links.count() == 1
    assert await breach_links.get_attribute("href") == f"https://slack.com/archives/{CHANNEL}/p1773000000000002"
    assert "#2" in await page.locator("table[data-table=breaches]").inner_text()

    # And every figure as the figures module computes it, which the report command prints too.
    figures = await compute_figures(sessions, Period.last(timedelta(days=7), until=NOW), now=NOW)
    first = figures.clocks["first_response"]
    assert shown == {
        "opened": str(figures.opened),
        "answered": str(figures.answered),
        "resolved": str(figures.resolved),
        "still_open": str(figures.still_open),
        "first_response_median": duration(first.business.median_s),
        "first_response_within_sla": share(first.within_sla),
        "breaches": str(sum(c.breaches for c in figures.clocks.values())),
    }
    assert {k: v[1] for k, v in agents.items()} == {row.key: str(row.answered) for row in figures.by_agent}

    # The charts are drawn on the server: one point per day with a measured share, one bar per age bucket.
    within = page.locator("svg[aria-label='First responses within SLA, per day'] circle")
    assert await within.count() == sum(1 for day in figures.daily if day.within_sla is not None) == 2
    assert await page.locator("svg[aria-label='Open and waiting tickets by age'] rect.bar").count() == 5
    # It refreshes itself.
    assert await page.locator("meta[http-equiv=refresh]").get_attribute("content") == "60"
    assert console.errors == []


async def test_the_json_has_the_same_figures(
    sessions: Sessions, serve: Callable[..., Awaitable[str]], http: aiohttp.ClientSession
) -> None:
    await seed(sessions)
    base = await serve()
    async with http.get(f"{base}/dashboard.json?days=30") as response:
        assert response.status == 200
        body = await response.json()
    figures = await compute_figures(sessions, Period.last(timedelta(days=30), until=NOW), now=NOW)
    assert body == figures_json(figures)
    async with http.get(f"{base}/dashboard.json?days=0") as response:
        assert response.status == 400


async def test_database_text_is_escaped(
    sessions: Sessions, serve: Callable[..., Awaitable[str]], browser: Browser
) -> None:
    # Assignee and channel come from Slack payloads and config: markup in them must stay text.
    async with sessions() as session:
        hostile = _ticket(7, NOW - timedelta(hours=2), assignee_slack_id="<img src=x onerror=alert(1)>")
        session.add(hostile)
        await session.flush()
        session.add(_first_response(hostile, answered_after=timedelta(hours=2), target=timedelta(hours=1)))
        await session.commit()
    base = await serve()
    page = await browser.new_page()
    console = Console(page)
    await page.goto(base + "/")
    assert await page.locator("img").count() == 0
    assert "<img src=x onerror=alert(1)>" in await page.locator("table[data-table=breaches]").inner_text()
    assert console.errors == []


async def test_with_a_token_the_dashboard_answers_401_without_it(
    sessions: Sessions,
    serve: Callable[..., Awaitable[str]],
    browser: Browser,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await seed(sessions)
    with caplog.at_level(logging.DEBUG):
        base = await serve(token=TOKEN)
        for path in ("/", "/dashboard.json"):
            for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": TOKEN}):
                async with http.get(base + path, headers=headers) as response:
                    assert response.status == 401, (path, headers)
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                    assert TOKEN not in await response.text()

        page = await browser.new_page(extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
        console = Console(page)
        loaded = await page.goto(base + "/")
        assert loaded is not None and loaded.status == 200
        assert (await tiles(page))["opened"] == "3"
        assert console.errors == []
    assert TOKEN not in caplog.text


async def test_the_daemon_serves_the_dashboard_on_its_http_server(
    mastodon: MockServer,
    slack: FakeSlack,
    db_url: str,
    start_daemon: Callable[[Config], Awaitable[Daemon]],
    http: aiohttp.ClientSession,
) -> None:
    data = settings_dict(
        mastodon_url=mastodon.base_url,
        slack_url=slack.base_url,
        db_url=db_url,
        http={"port": 0, "token_env": "DESK_DASHBOARD_TOKEN"},
    )
    secrets = Secrets(
        mastodon_token=BRAND_TOKEN,
        slack_bot_token=slack.bot_token,
        slack_app_token=slack.app_token,
        dashboard_token=TOKEN,
    )
    daemon = await start_daemon(Config(settings=parse_settings(data, source="test"), secrets=secrets))
    server = daemon.web
    assert server is not None

    async def listening() -> bool:
        return server.port is not None

    await eventually(listening, timeout_s=5, what="the HTTP server listening")
    base = f"http://127.0.0.1:{server.port}"
    async with http.get(base + "/") as response:
        assert response.status == 401
    async with http.get(base + "/", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 200
        assert re.search(r'data-figure="opened">0<', await response.text())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
