"""The summaries' chart: first-response median and 90th percentile per day, and the share within SLA.

Drawn on a matplotlib ``Figure`` with the Agg canvas, never pyplot: pyplot keeps global state (a current figure,
a GUI backend chosen at import) that a long-running daemon drawing from worker threads must not share.
render_chart_png is CPU work of a few hundred milliseconds, so the daemon calls it through asyncio.to_thread
(chart_png).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from mentiondesk.bot.reports.figures import DayPoint

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.0, 100
MEDIAN_COLOUR, P90_COLOUR, SLA_COLOUR = "#1f77b4", "#ff7f0e", "#2ca02c"


def _minutes(seconds: float | None) -> float:
    # NaN leaves a gap in the line: a day without a measured first response draws nothing, not zero.
    return float("nan") if seconds is None else seconds / 60.0


def render_chart_png(days: Sequence[DayPoint], *, title: str) -> bytes:
    """The chart as PNG bytes; days in order. Days without figures leave gaps; no days at all still draws axes."""
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    labels = [d.day.strftime("%d %b") for d in days]
    positions = list(range(len(days)))
    axes.plot(
        positions, [_minutes(d.first_response_median_s) for d in days], marker="o", color=MEDIAN_COLOUR, label="median"
    )
    axes.plot(
        positions, [_minutes(d.first_response_p90_s) for d in days], marker="o", color=P90_COLOUR, label="90th pct"
    )
    axes.set_ylabel("first response (minutes, business time)")
    axes.set_ylim(bottom=0)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axes.set_xticks(positions, labels, rotation=45, ha="right", fontsize=8)
    share = axes.twinx()
    share.bar(
        positions,
        [float("nan") if d.within_sla is None else d.within_sla for d in days],
        color=SLA_COLOUR,
        alpha=0.25,
        label="within SLA",
    )
    share.set_ylim(0, 1)
    share.yaxis.set_major_formatter(PercentFormatter(1.0))
    share.set_ylabel("first responses within SLA")
    # The bars behind the lines, whichever axes matplotlib draws first.
    axes.set_zorder(share.get_zorder() + 1)
    axes.patch.set_visible(False)
    handles = axes.get_legend_handles_labels()[0] + share.get_legend_handles_labels()[0]
    axes.legend(handles=handles, loc="upper left", fontsize=8)
    axes.set_title(title)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


async def chart_png(days: Sequence[DayPoint], *, title: str) -> bytes:
    """render_chart_png in a worker thread, so the event loop keeps serving Slack and Mastodon meanwhile."""
    return await asyncio.to_thread(render_chart_png, list(days), title=title)
