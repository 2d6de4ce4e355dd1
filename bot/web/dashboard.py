"""The managers' dashboard: one read-only page of the SLA figures, rendered on the server, refreshing itself.

The page is plain HTML with inline SVG charts (bot.web.svg); it runs no script and loads nothing else, which its
Content-Security-Policy enforces. /dashboard.json serves the same figures as `mentiondesk report --format json`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from html import escape

from aiohttp import web
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.reports.figures import Figures, GroupRow, Period, change, compute_figures, figures_json
from mentiondesk.bot.web.svg import Series, bar_chart, line_chart

PAGE_PATH = "/"
JSON_PATH = "/dashboard.json"
REFRESH_S = 60
DEFAULT_DAYS = 7
MAX_DAYS = 366
CLOCK_NAMES = {"first_response": "First response", "next_response": "Next response", "resolution": "Resolution"}
# Nothing but the page itself: no script, no request elsewhere; and a click on a card link tells Slack nothing
# about where the dashboard is.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def dashboard_routes(
    sessions: async_sessionmaker[AsyncSession],
    *,
    token: str | None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[web.RouteDef]:
    """The page and its JSON; with a token, both answer 401 to a request without `Authorization: Bearer <token>`."""

    async def figures_for(request: web.Request) -> Figures:
        now = clock()
        return await compute_figures(sessions, Period.last(timedelta(days=_days(request)), until=now), now=now)

    async def page(request: web.Request) -> web.Response:
        figures = await figures_for(request)
        html = render_page(figures, days=_days(request), generated_at=clock())
        return web.Response(text=html, content_type="text/html", charset="utf-8", headers=HEADERS)

    async def figures_json_view(request: web.Request) -> web.Response:
        return web.json_response(figures_json(await figures_for(request)), headers=HEADERS)

    guard = _bearer_guard(token)
    return [web.get(PAGE_PATH, guard(page)), web.get(JSON_PATH, guard(figures_json_view))]


def _bearer_guard(token: str | None) -> Callable[[Handler], Handler]:
    expected = None if token is None else f"Bearer {token}".encode()

    def guard(handler: Handler) -> Handler:
        if expected is None:
            return handler

        async def checked(request: web.Request) -> web.StreamResponse:
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            # Constant time, so the answer's timing does not reveal how much of a guess was right.
            if not hmac.compare_digest(given, expected):
                return web.Response(
                    status=401,
                    text="unauthorized: send Authorization: Bearer <token>",
                    headers={"WWW-Authenticate": 'Bearer realm="mentiondesk"'},
                )
            return await handler(request)

        return checked

    return guard


def _days(request: web.Request) -> int:
    raw = request.query.get("days", str(DEFAULT_DAYS))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
        raise web.HTTPBadRequest(text=f"days must be a whole number from 1 to {MAX_DAYS}")
    return int(raw)


# ---------------------------------------------------------------- formatting


def duration(seconds: float | None) -> str:
    """A duration as a manager reads it: 45s, 12m, 3h 05m, 2d 4h; a dash for none."""
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


# Tops for a duration axis, so that its half-way line reads as a round time too.
_DURATION_TOPS = [m * 60 for m in (2, 10, 20, 30, 60, 120, 240, 360, 480, 720)] + [d * 86400 for d in (1, 2, 4, 8, 16)]


def _duration_axis(values: Sequence[float]) -> float:
    top = max(values, default=0.0)
    return next((t for t in _DURATION_TOPS if top <= t), float(top))


def share(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _change(current: float | int | None, previous: float | int | None) -> str:
    relative = change(current, previous)
    if relative is None:
        return ""
    arrow = "▲" if relative > 0 else "▼" if relative < 0 else "="
    return f'<span class="change">{arrow} {abs(relative) * 100:.0f}% vs previous</span>'


def _when(moment: datetime | None) -> str:
    return "–" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _tile(name: str, label: str, value: str, changed: str = "") -> str:
    return (
        f'<div class="tile"><div class="label">{escape(label)}</div>'
        f'<div class="figure" data-figure="{name}">{escape(value)}</div>{changed}</div>'
    )


def _group_table(title: str, key: str, rows: Sequence[GroupRow]) -> str:
    if not rows:
        return f'<section><h2>{escape(title)}</h2><p class="empty">No tickets in this period.</p></section>'
    body = "".join(
        f'<tr data-row="{escape(row.key, quote=True)}"><td>{escape(row.key)}</td><td class="n">{row.opened}</td>'
        f'<td class="n">{row.answered}</td><td class="n">{duration(row.first_response_median_s)}</td>'
        f'<td class="n">{share(row.within_sla)}</td></tr>'
        for row in rows
    )
    return (
        f'<section><h2>{escape(title)}</h2><table data-table="{escape(key, quote=True)}"><thead><tr>'
        f'<th>{escape(key.capitalize())}</th><th class="n">Opened</th><th class="n">Answered</th>'
        '<th class="n">First response, median</th><th class="n">Within SLA</th></tr></thead>'
        f"<tbody>{body}</tbody></table></section>"
    )


def _card_link(url: str | None) -> str:
    # Only Slack's own https links are made clickable; anything else is shown as text.
    if url is None or not url.startswith("https://"):
        return "–"
    return f'<a href="{escape(url, quote=True)}" rel="noopener noreferrer">open card</a>'


# ---------------------------------------------------------------- the page


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:16px 24px;color:#1d1d1f;
background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta,.empty,.change{color:#666;font-size:12px}nav a{margin-right:10px}
.tiles{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.tile{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:130px}
.tile .label{color:#555;font-size:12px}.tile .figure{font-size:26px;font-weight:600}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:0 24px}
table{border-collapse:collapse;background:#fff;border:1px solid #ddd;width:100%}
th,td{padding:5px 10px;border-bottom:1px solid #eee;text-align:left}th{background:#f3f3f3;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
svg.chart{background:#fff;border:1px solid #ddd;border-radius:6px;width:100%;max-width:560px;height:auto}
svg .grid{stroke:#e5e5e5}svg .axis,svg .value{font-size:11px;fill:#555}svg .bar{fill:#4a78c2}
svg polyline{stroke-width:2;fill:none}svg .median{stroke:#4a78c2}svg .p90{stroke:#d9822b}svg .within{stroke:#2e8b57}
svg circle.median,svg rect.median{fill:#4a78c2}svg circle.p90,svg rect.p90{fill:#d9822b}
svg circle.within,svg rect.within{fill:#2e8b57}svg circle,svg rect.key{stroke:none}
"""


def render_page(figures: Figures, *, days: int, generated_at: datetime) -> str:
    """The whole dashboard as one HTML document; every value from the database is escaped."""
    previous = figures.previous
    first = figures.clocks.get("first_response")
    before = previous.clocks.get("first_response") if previous is not None else None

    def counted(name: str, label: str) -> str:
        value: int = getattr(figures, name)
        return _tile(name, label, str(value), _change(value, getattr(previous, name) if previous else None))

    first_median = first.business.median_s if first else None
    tiles = "".join(
        [
            counted("opened", "Opened"),
            counted("answered", "Answered"),
            counted("resolved", "Resolved"),
            _tile("still_open", "Still open", str(figures.still_open)),
            _tile(
                "first_response_median",
                "First response, median",
                duration(first_median),
                _change(first_median, before.business.median_s if before else None),
            ),
            _tile("first_response_within_sla", "First response within SLA", share(first.within_sla if first else None)),
            _tile("breaches", "Breaches", str(sum(c.breaches for c in figures.clocks.values()))),
        ]
    )
    clock_rows = "".join(
        f'<tr data-row="{escape(name, quote=True)}"><td>{escape(CLOCK_NAMES.get(name, name))}</td>'
        f'<td class="n">{c.business.count}</td>'
        f'<td class="n">{duration(c.business.median_s)}</td><td class="n">{duration(c.business.p90_s)}</td>'
        f'<td class="n">{duration(c.business.mean_s)}</td>'
        f'<td class="n wall">{duration(c.wall.median_s)} / {duration(c.wall.p90_s)}</td>'
        f'<td class="n">{share(c.within_sla)}</td><td class="n">{c.breaches}</td></tr>'
        for name, c in figures.clocks.items()
    )
    day_labels = [p.day.strftime("%b %d") for p in figures.daily]
    within_chart = line_chart(
        day_labels,
        [Series("within SLA", [p.within_sla for p in figures.daily], "within")],
        title="First responses within SLA, per day",
        y_label=share,
        y_max=1.0,
    )
    response_chart = line_chart(
        day_labels,
        [
            Series("median", [p.first_response_median_s for p in figures.daily], "median"),
            Series("p90", [p.first_response_p90_s for p in figures.daily], "p90"),
        ],
        title="First response time per day (business time)",
        y_label=duration,
        y_max=_duration_axis(
            [v for p in figures.daily for v in (p.first_response_median_s, p.first_response_p90_s) if v is not None]
        ),
    )
    backlog_chart = bar_chart(
        [(bucket, float(count)) for bucket, count in figures.backlog],
        title="Open and waiting tickets by age",
        value_label=lambda v: f"{v:.0f}",
    )
    backlog_rows = "".join(
        f'<tr data-row="{escape(bucket, quote=True)}"><td>{escape(bucket)}</td><td class="n">{count}</td></tr>'
        for bucket, count in figures.backlog
    )
    breach_rows = "".join(
        f"<tr><td>#{b.ticket_id}</td><td>{escape(CLOCK_NAMES.get(b.clock, b.clock))}</td>"
        f"<td>{escape(b.channel)}</td><td>{escape(b.assignee or '–')}</td><td>{_when(b.due_at)}</td>"
        f"<td>{_when(b.breached_at)}</td><td>{_card_link(b.card_url)}</td></tr>"
        for b in figures.breaches
    )
    breaches = (
        '<table data-table="breaches"><thead><tr><th>Ticket</th><th>Clock</th><th>Channel</th><th>Assignee</th>'
        f"<th>Due</th><th>Breached</th><th>Card</th></tr></thead><tbody>{breach_rows}</tbody></table>"
        if figures.breaches
        else '<p class="empty">No breaches in this period.</p>'
    )
    periods = " ".join(
        f'<a href="?days={d}"{" aria-current=page" if d == days else ""}>{label}</a>'
        for d, label in ((1, "24 hours"), (7, "7 days"), (30, "30 days"), (90, "90 days"))
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>mentiondesk · how fast we answer</title><style>{STYLE}</style></head>
<body>
<header><h1>How fast we answer</h1>
<p class="meta">{_when(figures.period.start)} to {_when(figures.period.end)} · times in business time ·
updated {_when(generated_at)}, refreshes every {REFRESH_S} s</p>
<nav>{periods}</nav></header>
<div class="tiles">{tiles}</div>
<section><h2>Response times</h2><table data-table="clocks"><thead><tr><th>Clock</th><th class="n">Stopped</th>
<th class="n">Median</th><th class="n">p90</th><th class="n">Mean</th><th class="n">Wall clock (median / p90)</th>
<th class="n">Within SLA</th><th class="n">Breaches</th></tr></thead><tbody>{clock_rows}</tbody></table></section>
<div class="grid2">
<section><h2>Within SLA over time</h2>{within_chart}</section>
<section><h2>First response per day</h2>{response_chart}</section>
<section><h2>Backlog by age</h2>{backlog_chart}</section>
<section><h2>Backlog now</h2><table data-table="backlog"><thead><tr><th>Age</th><th class="n">Tickets</th></tr>
</thead><tbody>{backlog_rows}</tbody></table></section>
</div>
{_group_table("Per agent", "agent", figures.by_agent)}
<section><h2>Breaches</h2>{breaches}</section>
<div class="grid2">
{_group_table("Per channel", "channel", figures.by_channel)}
{_group_table("Per priority", "priority", figures.by_priority)}
</div>
</body></html>
"""
