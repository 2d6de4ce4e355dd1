"""Small charts drawn on the server as inline SVG: no front-end build, no script, nothing fetched by the browser."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 560, 220
# Room for the axis labels: left for values, bottom for days or buckets.
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 34


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per x label; None leaves a gap
    css_class: str


def _attr(value: str) -> str:
    return escape(value, quote=True)


def _scale(top: float) -> float:
    """A round top for the y axis, at or above the largest value."""
    if top <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(top))) / 10 if top >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if top <= step * magnitude:
            return step * magnitude
    return top


def _frame(title: str, body: list[str], y_max: float, y_label: Callable[[float], str], x_labels: list[str]) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="chart" '
        f'aria-label="{_attr(title)}"><title>{escape(title)}</title>'
    ]
    for share in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - share)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">')
        parts.append(f"{escape(y_label(y_max * share))}</text>")
    # At most about eight labels under the axis, so that a month of days stays readable.
    every = max(1, -(-len(x_labels) // 8))
    for index, label in enumerate(x_labels):
        if index % every == 0:
            x = LEFT + plot_w * (index + 0.5) / len(x_labels)
            parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">')
            parts.append(f"{escape(label)}</text>")
    parts.extend(body)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, value_label: Callable[[float], str] = str) -> str:
    """Vertical bars, each labelled with its value."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    y_max = _scale(max((v for _, v in bars), default=0))
    slot = plot_w / max(1, len(bars))
    body = []
    for index, (label, value) in enumerate(bars):
        h = plot_h * value / y_max
        x = LEFT + slot * index + slot * 0.15
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}">'
            f"<title>{escape(label)}: {escape(value_label(value))}</title></rect>"
        )
        body.append(
            f'<text class="value" x="{x + slot * 0.35:.1f}" y="{TOP + plot_h - h - 4:.1f}" text-anchor="middle">'
            f"{escape(value_label(value))}</text>"
        )
    return _frame(title, body, y_max, value_label, [label for label, _ in bars])


def line_chart(
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    y_label: Callable[[float], str],
    y_max: float | None = None,
) -> str:
    """One line per series over the x labels, with a dot per value; a None breaks the line."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for s in series for v in s.values if v is not None]
    top = y_max if y_max is not None else _scale(max(values, default=0))
    count = max(1, len(x_labels))
    body = []
    for line in series:
        segments: list[list[tuple[float, float]]] = [[]]
        for index, value in enumerate(line.values):
            if value is None:
                segments.append([])
                continue
            point = (LEFT + plot_w * (index + 0.5) / count, TOP + plot_h * (1 - min(value, top) / top))
            segments[-1].append(point)
            body.append(
                f'<circle class="{_attr(line.css_class)}" cx="{point[0]:.1f}" cy="{point[1]:.1f}" r="3">'
                f"<title>{escape(line.name)}, {escape(x_labels[index])}: {escape(y_label(value))}</title></circle>"
            )
        for segment in segments:
            if len(segment) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
                body.append(f'<polyline class="{_attr(line.css_class)}" fill="none" points="{path}"/>')
    legend_x = LEFT + 8
    for line in series:
        body.append(f'<rect class="{_attr(line.css_class)} key" x="{legend_x}" y="{TOP}" width="10" height="10"/>')
        body.append(f'<text class="axis" x="{legend_x + 14}" y="{TOP + 9}">{escape(line.name)}</text>')
        legend_x += 20 + 7 * len(line.name)
    return _frame(title, body, top, y_label, list(x_labels))
