"""The SLA badge: where a ticket's shown clock stands, as agents read it at a glance on the card and in answers.

Pure: a stored clock (storage/sla.py ClockState) and the instant of rendering in, a Badge out. Its text is Slack
mrkdwn made only of our own words, numbers and date tokens, so it is safe in any mrkdwn field.

The stages follow the clock: on track until its warning instant, at risk from there to its due time, breached
after it; met or breached once stopped; paused while the ticket waits on the customer or is resolved. A card is
rendered at send time, so its badge changes when the card is refreshed, which the timers queue at the warning and
the breach (bot/sla/alerts.py). Time left is counted at render time; the due time beside it is a Slack date each
reader sees in their own zone, and an overdue clock says since when with a date token Slack keeps current.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mentiondesk.bot.sla.calendar import format_duration
from mentiondesk.storage.models import SlaClockKind, SlaPauseReason
from mentiondesk.storage.sla import ClockState


class Stage:
    ON_TRACK = "on track"
    AT_RISK = "at risk"
    BREACHED = "breached"
    MET = "met"
    PAUSED = "paused"


EMOJI = {
    Stage.ON_TRACK: "\N{LARGE GREEN CIRCLE}",
    Stage.AT_RISK: "\N{LARGE ORANGE CIRCLE}",
    Stage.BREACHED: "\N{LARGE RED CIRCLE}",
    Stage.MET: "\N{WHITE HEAVY CHECK MARK}",
    Stage.PAUSED: "\N{DOUBLE VERTICAL BAR}",
}

CLOCK_NAMES = {
    SlaClockKind.FIRST_RESPONSE: "First response",
    SlaClockKind.NEXT_RESPONSE: "Next response",
    SlaClockKind.RESOLUTION: "Resolution",
}

_PAUSED_WHILE = {SlaPauseReason.WAITING: "waiting on the customer", SlaPauseReason.RESOLVED: "resolved"}


@dataclass(frozen=True)
class Badge:
    stage: str  # Stage
    text: str  # mrkdwn, emoji first

    @property
    def emoji(self) -> str:
        return EMOJI[self.stage]


def slack_date(when: datetime, format_: str = "{date_short_pretty} {time}") -> str:
    """A Slack date token: shown in each reader's time zone; the UTC text is the fallback."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    fallback = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{format_}|{fallback}>"


def short(value: timedelta) -> str:
    """A duration to the minute ("1h5m", "45m"), "under a minute" below one."""
    minutes = int(value.total_seconds() // 60)
    return format_duration(timedelta(minutes=minutes)) if minutes > 0 else "under a minute"


def stage_of(clock: ClockState, now: datetime) -> str:
    if not clock.running:
        return Stage.BREACHED if clock.breached else Stage.MET
    if clock.paused is not None:
        return Stage.PAUSED
    if clock.breached or (clock.due_at is not None and clock.due_at <= now):
        return Stage.BREACHED
    if clock.warn_at is not None and clock.warn_at <= now:
        return Stage.AT_RISK
    return Stage.ON_TRACK


def badge(clock: ClockState, now: datetime) -> Badge:
    """The badge of the clock a ticket shows, as of `now`."""
    stage = stage_of(clock, now)
    name = CLOCK_NAMES.get(clock.kind, clock.kind)
    target = format_duration(clock.target)
    if stage == Stage.PAUSED:
        assert clock.paused is not None
        text = f"SLA paused: {name.lower()} clock stopped while {_PAUSED_WHILE.get(clock.paused, clock.paused)}"
    elif not clock.running:
        took = timedelta(seconds=clock.business_s or 0)
        if stage == Stage.BREACHED:
            text = f"SLA breached by {short(took - clock.target)}: {name.lower()} took {short(took)} of {target}"
        else:
            text = f"SLA met: {name.lower()} in {short(took)} of {target}"
    elif clock.due_at is None:  # cannot happen for a running clock that is not paused; said plainly if it does
        text = f"SLA: {name.lower()} due time unknown"
    elif stage == Stage.BREACHED:
        # "(overdue)" as the card said before badges; the {ago} token stays current without a refresh.
        text = (
            f"SLA breached: {name} due {slack_date(clock.due_at)} (overdue) · "
            f"breached {slack_date(clock.due_at, '{ago}')}"
        )
    else:
        left = short(clock.due_at - now)
        label = "SLA at risk" if stage == Stage.AT_RISK else "SLA on track"
        text = f"{label}: {name} due {slack_date(clock.due_at)} · {left} left of {target}"
    return Badge(stage, f"{EMOJI[stage]} {text}")
