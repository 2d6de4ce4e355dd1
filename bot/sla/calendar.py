"""Business time: when a desk is open, and how much open time lies between two instants.

Pure arithmetic on zoneinfo and the `holidays` package: no I/O, no clock, no asyncio. Opening hours are local
wall-clock times in the calendar's zone, so each local day is turned into real (UTC) intervals on its own: a
window whose local times a spring-forward skips is that much shorter that day, one spanning the hour a
fall-back repeats counts the real time that passed, and a holiday is a date in the calendar's zone, wherever
the customer wrote from. Every walk is bounded: a calendar with no open time ahead raises CalendarError.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import holidays as holiday_tables

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Closed this many days in a row: there is no open time ahead, and add() says so instead of walking on.
IDLE_HORIZON_DAYS = 3 * 366
# The longest target a policy may set; it also bounds every walk through a calendar that has open time.
MAX_DURATION = timedelta(days=365)
_MAX_WALK_DAYS = 50 * 366
# Days whose intervals are kept; a walk rarely needs more than a few weeks of them.
_CACHED_DAYS = 4096

Span = tuple[datetime, datetime]


class CalendarError(ValueError):
    """A calendar that makes no sense, or one with no open time ahead of an instant."""


@dataclass(frozen=True, order=True)
class Window:
    """Opening hours on one day, as local wall-clock offsets from midnight; end may be 24:00."""

    start: timedelta
    end: timedelta

    def __str__(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


def _clock(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


_WINDOW = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


def parse_window(text: str) -> Window:
    """ "09:00-12:30" as a Window; "24:00" is allowed as an end (open until midnight)."""
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise CalendarError(f'{text!r} is not a window of opening hours: write HH:MM-HH:MM, like "09:00-17:00"')
    start_h, start_m, end_h, end_m = map(int, match.groups())
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        raise CalendarError(f"{text!r}: times run from 00:00 to 23:59, and 24:00 as an end")
    window = Window(timedelta(hours=start_h, minutes=start_m), timedelta(hours=end_h, minutes=end_m))
    if window.end == window.start:
        raise CalendarError(f"{text!r} is empty: it ends when it starts")
    if window.end < window.start:
        # 09:00-00:00 is the classic: meant as "until midnight", it would otherwise be read as a day backwards.
        hint = ", for a window until midnight write 24:00" if not window.end else ""
        raise CalendarError(f"{text!r} ends before it starts (windows cannot run past midnight{hint})")
    return window


def parse_windows(texts: Iterable[str]) -> tuple[Window, ...]:
    """A day's windows, sorted; overlapping ones are an error, touching ones are fine."""
    windows = sorted(parse_window(text) for text in texts)
    for before, after in pairwise(windows):
        if after.start < before.end:
            raise CalendarError(f"windows {before} and {after} overlap")
    return tuple(windows)


_DURATION = re.compile(r"(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?")


def parse_duration(text: str) -> timedelta:
    """ "90m", "1h", "1h30m", "2d", "45s" as a timedelta; a day is 24 hours. Positive, at most 365d."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        raise ValueError(f'{text!r} is not a duration: write a number and a unit (d, h, m, s), like "90m" or "1h30m"')
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if not value:
        raise ValueError(f"{text!r} is no time at all: a target must be longer than 0")
    if value > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than {format_duration(MAX_DURATION)}, the longest target allowed")
    return value


def format_duration(value: timedelta) -> str:
    """The inverse of parse_duration: "1h30m", "2d", "45s"; "0s" for nothing. Microseconds are dropped."""
    seconds = int(abs(value).total_seconds())
    parts = [
        f"{amount}{unit}"
        for amount, unit in (
            (seconds // 86400, "d"),
            (seconds // 3600 % 24, "h"),
            (seconds // 60 % 60, "m"),
            (seconds % 60, "s"),
        )
        if amount
    ]
    return ("-" if value < timedelta(0) and parts else "") + ("".join(parts) or "0s")


def load_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; CalendarError if there is none by that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if not available_timezones():
            raise CalendarError(
                f"no time zone database found to look up {name!r}: install the tzdata package"
            ) from None
        raise CalendarError(f"unknown time zone {name!r}: use an IANA name, like Europe/Berlin or UTC") from None


def check_holidays_country(code: str) -> str:
    """The `holidays` package's code for a country (ISO 3166, like DE or US); CalendarError if it has none."""
    for candidate in (code, code.upper()):
        try:
            holiday_tables.country_holidays(candidate)
        except NotImplementedError:
            continue
        return candidate
    raise CalendarError(
        f"unknown country {code!r} for holidays: use an ISO 3166 code the holidays package knows, like DE"
    )


def check_holidays_subdivision(country: str, code: str) -> str:
    """The code of a country's subdivision (DE: BE for Berlin); CalendarError listing the known ones if unknown."""
    table = holiday_tables.country_holidays(country)
    known: dict[str, str] = {s.casefold(): s for s in table.subdivisions}
    known.update({alias.casefold(): s for alias, s in getattr(table, "subdivisions_aliases", {}).items()})
    if code.casefold() in known:
        return known[code.casefold()]
    listed = ", ".join(table.subdivisions) or "none"
    raise CalendarError(f"unknown subdivision {code!r} of {country} for holidays (known: {listed})")


def _aware_utc(at: datetime, what: str) -> datetime:
    if at.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime (with a time zone), got {at.isoformat()}")
    return at.astimezone(UTC)


def _merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint spans covering the same time; empty ones dropped, touching ones joined."""
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _overlap(spans: Sequence[Span], others: Sequence[Span]) -> timedelta:
    """Time covered by both lists, each sorted and disjoint."""
    total, i, j = timedelta(0), 0, 0
    while i < len(spans) and j < len(others):
        start, end = max(spans[i][0], others[j][0]), min(spans[i][1], others[j][1])
        if end > start:
            total += end - start
        if spans[i][1] < others[j][1]:
            i += 1
        else:
            j += 1
    return total


class BusinessCalendar:
    """When a desk is open: weekly hours in a time zone, minus holidays, with dated overrides.

    Build one with the constructor (validates, raising CalendarError naming the part that is wrong) or use
    `BusinessCalendar.always_open(name)`. An override's windows replace the day's hours, even on a holiday,
    and an empty list closes the day. Instances compare equal when their definitions are equal.
    """

    name: str

    def __init__(
        self,
        name: str,
        *,
        timezone: str,
        hours: Mapping[str, Sequence[str]],
        holidays_country: str | None = None,
        holidays_subdivision: str | None = None,
        holidays: Iterable[date] = (),
        overrides: Mapping[date, Sequence[str]] | None = None,
    ) -> None:
        self.name = name
        self._zone: ZoneInfo | None = load_zone(timezone)
        unknown = sorted(set(hours) - set(WEEKDAYS))
        if unknown:
            raise CalendarError(f"hours: unknown day {unknown[0]!r} (days are {', '.join(WEEKDAYS)})")
        weekly = []
        for day in WEEKDAYS:
            try:
                weekly.append(parse_windows(hours.get(day, ())))
            except CalendarError as exc:
                raise CalendarError(f"hours.{day}: {exc}") from None
        if not any(weekly):
            raise CalendarError("hours: no open time on any day of the week")
        self._weekly: tuple[tuple[Window, ...], ...] = tuple(weekly)
        if holidays_subdivision is not None and holidays_country is None:
            raise CalendarError("holidays_subdivision needs holidays_country")
        self._country = None if holidays_country is None else check_holidays_country(holidays_country)
        self._subdivision = None
        if self._country is not None and holidays_subdivision is not None:
            self._subdivision = check_holidays_subdivision(self._country, holidays_subdivision)
        self._holidays = frozenset(holidays)
        parsed: dict[date, tuple[Window, ...]] = {}
        for day_, texts in (overrides or {}).items():
            try:
                parsed[day_] = parse_windows(texts)
            except CalendarError as exc:
                raise CalendarError(f"overrides.{day_.isoformat()}: {exc}") from None
        self._overrides = parsed
        self._holiday_years: dict[int, frozenset[date]] = {}
        self._days: dict[date, tuple[Span, ...]] = {}

    @classmethod
    def always_open(cls, name: str = "24/7") -> BusinessCalendar:
        """A calendar that never closes: business time is wall-clock time."""
        calendar = cls.__new__(cls)
        calendar.name = name
        calendar._zone = None
        calendar._weekly = ()
        calendar._country = calendar._subdivision = None
        calendar._holidays = frozenset()
        calendar._overrides = {}
        calendar._holiday_years = {}
        calendar._days = {}
        return calendar

    @property
    def timezone(self) -> str | None:
        """The IANA zone the hours are in; None for an always-open calendar."""
        return None if self._zone is None else self._zone.key

    @property
    def is_always_open(self) -> bool:
        return self._zone is None

    def _definition(self) -> tuple[object, ...]:
        return (
            self.name,
            self.timezone,
            self._weekly,
            self._country,
            self._subdivision,
            tuple(sorted(self._holidays)),
            tuple(sorted(self._overrides.items())),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BusinessCalendar):
            return NotImplemented
        return self._definition() == other._definition()

    def __hash__(self) -> int:
        return hash(self._definition())

    def __repr__(self) -> str:
        if self._zone is None:
            return f"BusinessCalendar.always_open({self.name!r})"
        return f"<BusinessCalendar {self.name!r} in {self._zone.key}>"

    # --- the three questions -------------------------------------------------------------------------------

    def is_open(self, at: datetime) -> bool:
        """Whether `at` lies in open time (windows include their start, not their end)."""
        instant = _aware_utc(at, "at")
        if self._zone is None:
            return True
        local_day = instant.astimezone(self._zone).date()
        # The day before too: its 24:00 may lie in what the clock shows as today, around a DST change.
        return any(
            start <= instant < end
            for day in (local_day - timedelta(days=1), local_day)
            for start, end in self._spans(day)
        )

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The instant (UTC) at which `duration` of open time has passed since `start`.

        A positive duration ends in open time or at the very end of it (17:00 when the desk closes at 17:00,
        not the next morning). A zero duration gives `start` if the desk is open then, else the next opening.
        CalendarError if the calendar has no open time ahead (closed IDLE_HORIZON_DAYS in a row).
        """
        instant = _aware_utc(start, "start")
        if duration < timedelta(0):
            raise ValueError(f"duration must not be negative, got {duration}")
        if self._zone is None:
            return instant + duration
        remaining = duration
        for open_from, open_until in self._open_from(instant):
            if remaining <= open_until - open_from:
                return open_from + remaining
            remaining -= open_until - open_from
        raise AssertionError("unreachable: _open_from ends only by raising")  # pragma: no cover

    def measure(self, start: datetime, end: datetime, *, pauses: Sequence[tuple[datetime, datetime]] = ()) -> timedelta:
        """Open time between `start` and `end`, less the parts of `pauses` inside it (zero if end <= start).

        Pauses may overlap each other and come in any order; time paused twice is taken off once.
        """
        first, last = _aware_utc(start, "start"), _aware_utc(end, "end")
        paused = []
        for pause_start, pause_end in pauses:
            since, until = _aware_utc(pause_start, "a pause's start"), _aware_utc(pause_end, "a pause's end")
            if until < since:
                raise ValueError(f"a pause ends before it starts: {pause_start.isoformat()} to {pause_end.isoformat()}")
            paused.append((max(since, first), min(until, last)))
        if last <= first:
            return timedelta(0)
        if self._zone is None:
            spans = [(first, last)]
        else:
            day, last_day = first.astimezone(self._zone).date(), last.astimezone(self._zone).date()
            pieces = []
            for offset in range(-1, (last_day - day).days + 1):
                for open_from, open_until in self._spans(day + timedelta(days=offset)):
                    pieces.append((max(open_from, first), min(open_until, last)))
            spans = _merge(pieces)
        return sum((end_ - start_ for start_, end_ in spans), timedelta(0)) - _overlap(spans, _merge(paused))

    # --- days ----------------------------------------------------------------------------------------------

    def _open_from(self, instant: datetime) -> Iterator[Span]:
        """Open time from `instant` on, as disjoint spans in order; raises CalendarError rather than end."""
        assert self._zone is not None
        day = instant.astimezone(self._zone).date() - timedelta(days=1)
        cursor, idle = instant, 0
        for _ in range(_MAX_WALK_DAYS):
            found = False
            for open_from, open_until in self._spans(day):
                if open_until > cursor:
                    span = (max(open_from, cursor), open_until)
                    cursor, found = open_until, True
                    yield span
            idle = 0 if found else idle + 1
            if idle > IDLE_HORIZON_DAYS:
                raise CalendarError(
                    f"calendar {self.name!r} has no open time within {IDLE_HORIZON_DAYS} days "
                    f"after {cursor.isoformat()}"
                )
            day += timedelta(days=1)
        raise CalendarError(f"calendar {self.name!r}: no answer within {_MAX_WALK_DAYS} days of {instant.isoformat()}")

    def _spans(self, day: date) -> tuple[Span, ...]:
        """The local day's open time as disjoint UTC spans (cached)."""
        cached = self._days.get(day)
        if cached is None:
            windows = self._windows_on(day)
            cached = tuple(
                _merge((self._instant(day, w.start, last=False), self._instant(day, w.end, last=True)) for w in windows)
            )
            if len(self._days) >= _CACHED_DAYS:
                self._days.clear()
            self._days[day] = cached
        return cached

    def _windows_on(self, day: date) -> tuple[Window, ...]:
        if day in self._overrides:
            return self._overrides[day]
        if day in self._holidays or day in self._holidays_of(day.year):
            return ()
        return self._weekly[day.weekday()]

    def _holidays_of(self, year: int) -> frozenset[date]:
        if self._country is None:
            return frozenset()
        table = self._holiday_years.get(year)
        if table is None:
            found = holiday_tables.country_holidays(self._country, subdiv=self._subdivision, years=year)
            table = self._holiday_years[year] = frozenset(found.keys())
        return table

    def _instant(self, day: date, offset: timedelta, *, last: bool) -> datetime:
        """The real instant of a local wall-clock time on `day` (offset up to 24h, the next midnight).

        A time the clock shows twice (fall-back) is its first showing for a window's start and its last for an
        end, so the window holds all the time that passed. A time the clock skips (spring-forward) is the
        instant of the jump, so the window loses the skipped part.
        """
        assert self._zone is not None
        naive = datetime.combine(day, time()) + offset
        first = naive.replace(tzinfo=self._zone).astimezone(UTC)
        second = naive.replace(tzinfo=self._zone, fold=1).astimezone(UTC)
        if first == second:
            return first
        if first.astimezone(self._zone).replace(tzinfo=None) == naive:
            return second if last else first
        return _jump(self._zone, second, first)


def _jump(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant between `before` and `after` at which `zone` changes its offset (whole seconds)."""
    new_offset = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == new_offset:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


ALWAYS_OPEN = BusinessCalendar.always_open("24/7")
