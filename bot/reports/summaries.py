"""A scheduled summary as Slack Block Kit: the period's figures with their change against the previous period,
the breaches with links to their cards, the backlog and the agents who answered most.

Built from ``Figures`` alone (no database, no Slack), and kept inside Slack's limits whatever the figures hold:
at most 50 blocks, 3000 characters a section, 10 fields of 2000, a 150-character header. Agents are named by
their Slack ID in code style rather than mentioned: a daily summary must not notify the people it lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mentiondesk.bot.reports.figures import Figures, change
from mentiondesk.bot.slack.cards import escape_mrkdwn

SECTION_MAX = 3000
HEADER_MAX = 150
BREACHES_LISTED = 10
AGENTS_LISTED = 5
CLOCK_NAMES = {"first_response": "First response", "next_response": "Next response", "resolution": "Resolution"}

Block = dict[str, Any]


@dataclass(frozen=True)
class SummaryMessage:
    text: str  # the notification and fallback text
    blocks: list[Block]


def duration(seconds: float | None) -> str:
    """42s, 12m, 3h 05m, 2d 4h; an em dash when there is nothing to show."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def _relative(current: float | int | None, previous: float | int | None) -> str:
    moved = change(current, previous)
    if moved is None:
        return ""
    return " (no change)" if round(moved * 100) == 0 else f" ({moved * 100:+.0f}%)"


def _points(current: float | None, previous: float | None) -> str:
    # A share's change is said in percentage points: 90% to 95% is +5 pts, not +6%.
    if current is None or previous is None:
        return ""
    moved = round((current - previous) * 100)
    return " (no change)" if moved == 0 else f" ({moved:+d} pts)"


def period_label(kind: str, start: datetime, end: datetime, zone: ZoneInfo) -> str:
    """ "Tue 25 Nov 2026" for a daily summary's day, "17 Nov – 23 Nov 2026" for a span of days."""
    first = start.astimezone(zone)
    if kind == "daily":
        return first.strftime("%a %d %b %Y")
    # The period ends at a midnight, which belongs to the next period: the last day shown is the one before.
    last = (end.astimezone(zone) - timedelta(microseconds=1)).date()
    return f"{first.strftime('%d %b')} – {last.strftime('%d %b %Y')}"


def _section(text: str) -> Block:
    if len(text) > SECTION_MAX:
        text = text[: SECTION_MAX - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _fields(pairs: list[tuple[str, str]]) -> Block:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in pairs[:10]]}


def build_summary(
    kind: str, figures: Figures, *, zone: ZoneInfo, late_due_at: datetime | None = None, chart: bool = True
) -> SummaryMessage:
    """The summary message. ``late_due_at``: when it was due, for one posted late; ``chart``: one follows in the
    thread."""
    before = figures.previous
    label = period_label(kind, figures.period.start, figures.period.end, zone)
    title = f"{'Daily' if kind == 'daily' else 'Weekly'} summary: {label}"
    blocks: list[Block] = [{"type": "header", "text": {"type": "plain_text", "text": title[:HEADER_MAX]}}]
    notes = [f"Times in {zone.key}; changes against the {'day' if kind == 'daily' else 'week'} before."]
    if late_due_at is not None:
        due = late_due_at.astimezone(zone).strftime("%H:%M %a %d %b")
        notes.insert(0, f":warning: late: this summary was due at {due} ({zone.key})")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": n} for n in notes]})

    def counted(name: str) -> tuple[str, str]:
        value = getattr(figures, name)
        return name.replace("_", " ").capitalize(), f"{value}{_relative(value, getattr(before, name, None))}"

    blocks.append(_fields([counted("opened"), counted("answered"), counted("resolved"), counted("still_open")]))

    times: list[tuple[str, str]] = []
    for clock, clock_figures in figures.clocks.items():
        name = CLOCK_NAMES.get(clock, clock)
        was = before.clocks.get(clock) if before is not None else None
        median, p90 = clock_figures.business.median_s, clock_figures.business.p90_s
        within = clock_figures.within_sla
        times.append(
            (
                f"{name}",
                f"median {duration(median)}{_relative(median, was.business.median_s if was else None)}, "
                f"p90 {duration(p90)}{_relative(p90, was.business.p90_s if was else None)}\n"
                f"within SLA {share(within)}{_points(within, was.within_sla if was else None)}"
                f" of {clock_figures.measured}",
            )
        )
    if times:
        blocks.append(_fields(times))

    blocks.append({"type": "divider"})
    blocks.append(_section(_breaches_text(figures)))
    backlog = ", ".join(f"{escape_mrkdwn(bucket)}: {count}" for bucket, count in figures.backlog) or "nothing waiting"
    blocks.append(_section(f"*Backlog now* (open and waiting, by age)\n{backlog}"))
    agents = sorted(figures.by_agent, key=lambda row: (-row.answered, row.key))[:AGENTS_LISTED]
    if agents:
        lines = [
            f"`{escape_mrkdwn(row.key)}`: {row.answered} answered, median first response "
            f"{duration(row.first_response_median_s)}, within SLA {share(row.within_sla)}"
            for row in agents
        ]
        blocks.append(_section("*Top agents* (by tickets answered)\n" + "\n".join(lines)))
    if chart:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "Chart of the first response per day: in the thread."}],
            }
        )

    first = figures.clocks.get("first_response")
    text = (
        f"{title}: {figures.opened} opened, {figures.answered} answered"
        + (
            f", median first response {duration(first.business.median_s)}, {share(first.within_sla)} within SLA"
            if first
            else ""
        )
        + (
            f" (late: this summary was due at {late_due_at.astimezone(zone).strftime('%H:%M %a %d %b')})"
            if late_due_at
            else ""
        )
    )
    return SummaryMessage(text=text, blocks=blocks)


def _breaches_text(figures: Figures) -> str:
    total = sum(c.breaches for c in figures.clocks.values()) if figures.clocks else len(figures.breaches)
    if not figures.breaches:
        return "*Breaches*: none :tada:"
    lines = [f"*Breaches*: {total}"]
    for breach in figures.breaches[:BREACHES_LISTED]:
        name = CLOCK_NAMES.get(breach.clock, breach.clock).lower()
        ticket = f"<{breach.card_url}|#{breach.ticket_id}>" if breach.card_url else f"#{breach.ticket_id}"
        who = f", `{escape_mrkdwn(breach.assignee)}`" if breach.assignee else ""
        lines.append(f"• {ticket} {name}{who}")
    more = len(figures.breaches) - BREACHES_LISTED
    if more > 0 or total > len(figures.breaches):
        lines.append(
            f"…and {max(more, 0) + max(total - len(figures.breaches), 0)} more (`mentiondesk report` lists them)"
        )
    return "\n".join(lines)
