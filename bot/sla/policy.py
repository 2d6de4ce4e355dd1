"""SLA policies: which targets a ticket has, and in which business calendar they count.

Pure: the SlaBook is built once from the validated `[sla]` settings (every mistake was reported by the config
already), and answers "which policy applies to this ticket" for the clocks, timers and badges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from mentiondesk.bot.sla.calendar import ALWAYS_OPEN, BusinessCalendar

# The priorities a ticket can have, most pressing first (the classifier's rules give any of them, agents set them
# from the card); a policy naming another could never apply. Re-exported: the config checks policies against it.
from mentiondesk.storage.priorities import PRIORITIES as PRIORITIES

if TYPE_CHECKING:
    from mentiondesk.bot.config import CalendarSettings, SlaSettings

Clock = Literal["first_response", "next_response", "resolution"]
CLOCKS: tuple[Clock, ...] = ("first_response", "next_response", "resolution")


@dataclass(frozen=True)
class SlaPolicy:
    """Targets for the tickets it applies to; empty priorities or channels mean any."""

    name: str
    priorities: frozenset[str]
    channels: frozenset[str]
    first_response: timedelta | None
    next_response: timedelta | None
    resolution: timedelta | None
    calendar: BusinessCalendar

    @property
    def is_default(self) -> bool:
        return not (self.priorities or self.channels)

    def applies_to(self, *, priority: str, channel: str) -> bool:
        return (not self.priorities or priority in self.priorities) and (not self.channels or channel in self.channels)

    def target(self, clock: Clock) -> timedelta | None:
        """The target of one clock; None when this policy sets none (that clock is not kept)."""
        targets: dict[Clock, timedelta | None] = {
            "first_response": self.first_response,
            "next_response": self.next_response,
            "resolution": self.resolution,
        }
        return targets[clock]


@dataclass(frozen=True)
class SlaBook:
    """Every policy, the default last, and the settings of warnings and escalation."""

    policies: tuple[SlaPolicy, ...]
    # Share of each target at which the warning goes into the ticket's thread.
    warn_at: float = 0.75
    # Slack user group (S...) mentioned in a warning when nobody has claimed the ticket.
    oncall_group: str | None = None
    # Channel the breach alert goes to; None: no alerts outside the ticket's thread.
    escalation_channel: str | None = None
    # Slack user group (S...) alerted in the escalation channel at manager_at of a target; None: no such level.
    manager_group: str | None = None
    manager_at: float = 2.0

    def __post_init__(self) -> None:
        defaults = [p.name for p in self.policies if p.is_default]
        if len(defaults) != 1 or not self.policies[-1].is_default:
            raise ValueError(f"an SlaBook needs exactly one default policy, last; got {defaults}")

    @property
    def default(self) -> SlaPolicy:
        return self.policies[-1]

    @property
    def calendars(self) -> tuple[BusinessCalendar, ...]:
        """The calendars the policies count in, each once."""
        return tuple({id(p.calendar): p.calendar for p in self.policies}.values())

    def policy_for(self, *, priority: str, channel: str) -> SlaPolicy:
        """The first policy (in the order written) that applies to the ticket, else the default."""
        return next(p for p in self.policies if p.applies_to(priority=priority, channel=channel))


def legacy_policies(*, first_response_minutes: int, high_priority_first_response_minutes: int) -> tuple[SlaPolicy, ...]:
    """The policies the old `sla.*_minutes` keys stand for: a first response only, in wall-clock time."""

    def policy(name: str, priorities: frozenset[str], minutes: int) -> SlaPolicy:
        return SlaPolicy(
            name=name,
            priorities=priorities,
            channels=frozenset(),
            first_response=timedelta(minutes=minutes),
            next_response=None,
            resolution=None,
            calendar=ALWAYS_OPEN,
        )

    return (
        # Urgent came after these keys: it gets the high target rather than the slower default.
        policy("high", frozenset({"urgent", "high"}), high_priority_first_response_minutes),
        policy("default", frozenset(), first_response_minutes),
    )


def build_calendar(settings: CalendarSettings) -> BusinessCalendar:
    """The calendar a validated `[[sla.calendars]]` table describes."""
    if settings.always_open:
        return BusinessCalendar.always_open(settings.name)
    assert settings.timezone is not None and settings.hours is not None, "validated by CalendarSettings"
    return BusinessCalendar(
        settings.name,
        timezone=settings.timezone,
        hours=settings.hours.by_day(),
        holidays_country=settings.holidays_country,
        holidays_subdivision=settings.holidays_subdivision,
        holidays=settings.holidays,
        overrides=settings.overrides,
    )


def sla_book(settings: SlaSettings) -> SlaBook:
    """The policies and escalation settings of a validated `[sla]` section; build it once, at start."""
    if settings.policies:
        calendars: Mapping[str, BusinessCalendar] = {
            ALWAYS_OPEN.name: ALWAYS_OPEN,
            **{c.name: build_calendar(c) for c in settings.calendars},
        }
        written = [
            SlaPolicy(
                name=p.name,
                priorities=frozenset(p.priorities),
                channels=frozenset(p.channels),
                first_response=p.first_response,
                next_response=p.next_response,
                resolution=p.resolution,
                calendar=calendars[p.calendar],
            )
            for p in settings.policies
        ]
        # The default applies when nothing else does, wherever it was written.
        policies = tuple([p for p in written if not p.is_default] + [p for p in written if p.is_default])
    else:
        policies = legacy_policies(
            first_response_minutes=settings.first_response_minutes,
            high_priority_first_response_minutes=settings.high_priority_first_response_minutes,
        )
    return SlaBook(
        policies=policies,
        warn_at=settings.warn_at,
        oncall_group=settings.oncall_group,
        escalation_channel=settings.escalation_channel,
        manager_group=settings.manager_group,
        manager_at=settings.manager_at,
    )
