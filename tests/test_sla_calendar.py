"""Business-time arithmetic: due times and measured durations in the calendar's own wall-clock time.

Properties (hypothesis) over calendars chosen for their traps: split shifts, 24:00 ends, holidays, dated
overrides, windows that a DST change cuts into, a sparse calendar, 24/7. Start instants are drawn near DST
changes as often as anywhere else. Then hand-picked cases whose answers a person can check on a wall clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mentiondesk.bot.sla.calendar import (
    ALWAYS_OPEN,
    IDLE_HORIZON_DAYS,
    WEEKDAYS,
    BusinessCalendar,
    CalendarError,
    format_duration,
    parse_duration,
    parse_window,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS_ONLY = WEEKDAYS[:5]
µs = timedelta(microseconds=1)

OFFICE = BusinessCalendar(
    "berlin office",
    timezone="Europe/Berlin",
    hours={day: ["09:00-12:30", "13:30-17:00"] for day in WEEKDAYS_ONLY},
    holidays_country="DE",
    holidays_subdivision="BE",
    holidays=[date(2026, 12, 24)],
    overrides={date(2026, 12, 23): ["09:00-13:00"], date(2026, 11, 28): ["10:00-14:00"]},
)
# Nights, open across midnight through 24:00 ends; on Sundays a window straddling New York's 02:00 change.
NIGHTS = BusinessCalendar(
    "new york nights",
    timezone="America/New_York",
    hours={**{day: ["00:00-02:30", "18:00-24:00"] for day in WEEKDAYS_ONLY}, "sun": ["01:30-03:30"]},
    holidays_country="US",
)
# Every local day, all day: 24/7 by the wall clock, so a DST day is 23 or 25 hours long.
ALL_DAY_BERLIN = BusinessCalendar("all day", timezone="Europe/Berlin", hours={d: ["00:00-24:00"] for d in WEEKDAYS})
# Half an hour a week at the hour Lord Howe Island moves its clock by 30 minutes, and a minute on Wednesdays.
SPARSE = BusinessCalendar(
    "sparse", timezone="Australia/Lord_Howe", hours={"sun": ["01:45-02:15"], "wed": ["12:00-12:01"]}
)
# Weekend nights in Sydney, whose changes happen at 02:00 (forward) and 03:00 (back).
SYDNEY = BusinessCalendar(
    "sydney weekends", timezone="Australia/Sydney", hours={"sat": ["01:00-04:00"], "sun": ["02:00-04:00"]}
)

# Each calendar with the longest duration worth drawing for it: enough to cross weeks, few enough to stay fast.
CALENDARS = [
    pytest.param(OFFICE, timedelta(days=3), id="office"),
    pytest.param(NIGHTS, timedelta(days=3), id="nights"),
    pytest.param(ALL_DAY_BERLIN, timedelta(days=4), id="all-day"),
    pytest.param(SPARSE, timedelta(hours=3), id="sparse"),
    pytest.param(SYDNEY, timedelta(days=1), id="sydney"),
    pytest.param(ALWAYS_OPEN, timedelta(days=30), id="24/7"),
]
QUICK = settings(max_examples=200, deadline=None, database=None)


def transitions(zone: ZoneInfo, years: range) -> Iterator[datetime]:
    """The instants at which `zone` changes its UTC offset (to the second)."""
    day = datetime(years.start, 1, 1, 12, tzinfo=UTC)
    while day.year < years.stop:
        following = day + timedelta(days=1)
        if day.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            low, high = int(day.timestamp()), int(following.timestamp())
            after = following.astimezone(zone).utcoffset()
            while high - low > 1:
                middle = (low + high) // 2
                if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == after:
                    high = middle
                else:
                    low = middle
            yield datetime.fromtimestamp(high, UTC)
        day = following


CHANGES = sorted(
    instant
    for zone in ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Australia/Sydney")
    for instant in transitions(ZoneInfo(zone), range(2024, 2028))
)
anywhere = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC))
near_a_change = st.builds(
    lambda change, shift: change + shift,
    st.sampled_from(CHANGES),
    st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=2)),
)
instants = st.one_of(anywhere, near_a_change)


def durations(longest: timedelta) -> st.SearchStrategy[timedelta]:
    # Whole minutes as often as odd microseconds: boundaries sit on whole minutes.
    return st.one_of(
        st.integers(min_value=0, max_value=int(longest / timedelta(minutes=1))).map(lambda m: timedelta(minutes=m)),
        st.timedeltas(min_value=timedelta(0), max_value=longest),
    )


def test_the_drawn_instants_reach_dst_changes() -> None:
    # 4 zones with 2 changes a year for 4 years; if this shrinks, the strategy no longer aims where it should.
    assert len(CHANGES) == 32
    assert datetime(2026, 3, 29, 1, tzinfo=UTC) in CHANGES  # Berlin's spring-forward, 02:00 local


# --- properties ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("calendar", "longest"), CALENDARS)
@QUICK
@given(data=st.data())
def test_adding_then_measuring_gives_the_duration_back(
    calendar: BusinessCalendar, longest: timedelta, data: st.DataObject
) -> None:
    start, duration = data.draw(instants), data.draw(durations(longest))
    due = calendar.add(start, duration)
    assert due >= start
    assert due.tzinfo is UTC
    assert calendar.measure(start, due) == duration


@pytest.mark.parametrize(("calendar", "longest"), CALENDARS)
@QUICK
@given(data=st.data())
def test_due_times_never_fall_in_closed_time(
    calendar: BusinessCalendar, longest: timedelta, data: st.DataObject
) -> None:
    start, duration = data.draw(instants), data.draw(durations(longest))
    due = calendar.add(start, duration)
    if duration:
        # In open time, or at the very end of it: the moment just before is open.
        assert calendar.is_open(due - µs), f"{due} is not in or at the end of open time"
    else:
        assert calendar.is_open(due)
        # ...and the first open moment: nothing open lies between start and it.
        assert due == start or calendar.measure(start, due) == timedelta(0)


@pytest.mark.parametrize(("calendar", "longest"), CALENDARS)
@QUICK
@given(data=st.data())
def test_a_duration_split_in_two_adds_up(calendar: BusinessCalendar, longest: timedelta, data: st.DataObject) -> None:
    start = data.draw(instants)
    first = data.draw(durations(longest / 2))
    second = data.draw(durations(longest / 2).filter(bool))  # a zero second part would jump to the next opening
    assert calendar.add(calendar.add(start, first), second) == calendar.add(start, first + second)


@pytest.mark.parametrize(("calendar", "longest"), CALENDARS)
@QUICK
@given(data=st.data())
def test_measuring_in_two_parts_adds_up(calendar: BusinessCalendar, longest: timedelta, data: st.DataObject) -> None:
    start = data.draw(instants)
    middle = start + data.draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=4)))
    end = middle + data.draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=4)))
    assert calendar.measure(start, middle) + calendar.measure(middle, end) == calendar.measure(start, end)


@pytest.mark.parametrize(("calendar", "longest"), CALENDARS)
@QUICK
@given(data=st.data())
def test_pauses_take_off_their_open_time_once(
    calendar: BusinessCalendar, longest: timedelta, data: st.DataObject
) -> None:
    start = data.draw(near_a_change)
    end = start + data.draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=5)))
    # Pauses near the range, overlapping each other and its ends, in any order.
    pauses = data.draw(
        st.lists(
            st.tuples(
                st.timedeltas(min_value=timedelta(days=-1), max_value=timedelta(days=6)),
                st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=2)),
            ).map(lambda p: (start + p[0], start + p[0] + p[1])),
            max_size=5,
        )
    )
    # Expected, the slow way: merge the pauses, then take each merged one's open time inside the range off.
    merged: list[list[datetime]] = []
    for since, until in sorted(pauses):
        if merged and since <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], until)
        else:
            merged.append([since, until])
    paused = sum((calendar.measure(max(since, start), min(until, end)) for since, until in merged), timedelta(0))
    measured = calendar.measure(start, end, pauses=pauses)
    assert measured == calendar.measure(start, end) - paused
    assert calendar.measure(start, end, pauses=[*reversed(pauses), *pauses]) == measured


BERLIN_HOLIDAYS = holidays.country_holidays("DE", subdiv="BE", years=range(2023, 2029))


def wall_clock_is_open(instant: datetime) -> bool:
    """OFFICE's rule read straight off the local wall clock, minute by minute: the oracle for its arithmetic."""
    local = instant.astimezone(BERLIN)
    day, now = local.date(), local.time()
    windows = {date(2026, 12, 23): [(time(9), time(13))], date(2026, 11, 28): [(time(10), time(14))]}.get(day)
    if windows is None:
        closed = day == date(2026, 12, 24) or day in BERLIN_HOLIDAYS
        windows = [] if closed or day.weekday() > 4 else [(time(9), time(12, 30)), (time(13, 30), time(17))]
    return any(opens <= now < closes for opens, closes in windows)


@settings(max_examples=60, deadline=None, database=None)
@given(
    start=st.one_of(
        st.sampled_from([datetime(2026, 11, 27, 12, tzinfo=UTC), datetime(2026, 12, 22, tzinfo=UTC)]), instants
    ).map(lambda t: t.replace(second=0, microsecond=0)),
    minutes=st.integers(min_value=0, max_value=3 * 24 * 60),
)
def test_office_hours_agree_with_the_wall_clock_minute_by_minute(start: datetime, minutes: int) -> None:
    end = start + timedelta(minutes=minutes)
    open_minutes = [
        start + timedelta(minutes=m) for m in range(minutes) if wall_clock_is_open(start + timedelta(minutes=m))
    ]
    assert OFFICE.measure(start, end) == timedelta(minutes=len(open_minutes))
    assert all(OFFICE.is_open(m) for m in open_minutes[:50])


@QUICK
@given(duration=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=365)))
def test_a_formatted_duration_reads_back(duration: timedelta) -> None:
    whole = timedelta(seconds=int(duration.total_seconds()))
    assert parse_duration(format_duration(whole)) == whole


# --- hand-picked: DST ---------------------------------------------------------------------------------------------


def at(zone: ZoneInfo, text: str, *, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone, fold=fold)


def sundays(zone: str, *windows: str) -> BusinessCalendar:
    return BusinessCalendar(f"sundays {windows}", timezone=zone, hours={"sun": list(windows)})


@pytest.mark.parametrize(
    ("zone", "saturday", "hours"),
    [
        pytest.param(BERLIN, "2026-03-28", 47, id="berlin-spring-forward"),
        pytest.param(BERLIN, "2026-10-24", 49, id="berlin-fall-back"),
        pytest.param(NEW_YORK, "2026-03-07", 47, id="new-york-spring-forward"),
        pytest.param(NEW_YORK, "2026-10-31", 49, id="new-york-fall-back"),
        pytest.param(BERLIN, "2026-05-02", 48, id="berlin-ordinary-weekend"),
    ],
)
def test_an_all_day_calendar_counts_the_real_hours_of_a_dst_weekend(zone: ZoneInfo, saturday: str, hours: int) -> None:
    calendar = BusinessCalendar("all day", timezone=zone.key, hours={d: ["00:00-24:00"] for d in WEEKDAYS})
    start = at(zone, saturday + "T00:00")
    end = at(zone, (date.fromisoformat(saturday) + timedelta(days=2)).isoformat() + "T00:00")
    assert calendar.measure(start, end) == timedelta(hours=hours)
    assert calendar.add(start, timedelta(hours=hours)) == end


@pytest.mark.parametrize(
    ("zone", "sunday", "window", "opens", "closes"),
    [
        # Straddling the change: spring-forward takes the skipped hour out, fall-back adds the repeated one.
        pytest.param(BERLIN, "2026-03-29", "01:30-03:30", "00:30Z", "01:30Z", id="berlin-spring-straddling"),
        pytest.param(BERLIN, "2026-10-25", "01:30-03:30", "23:30Z-1", "02:30Z", id="berlin-fall-straddling"),
        pytest.param(NEW_YORK, "2026-03-08", "01:30-03:30", "06:30Z", "07:30Z", id="new-york-spring-straddling"),
        pytest.param(NEW_YORK, "2026-11-01", "01:30-03:30", "05:30Z", "08:30Z", id="new-york-fall-straddling"),
        # Starting or ending in the skipped hour: the window begins or ends at the jump.
        pytest.param(BERLIN, "2026-03-29", "02:30-05:00", "01:00Z", "03:00Z", id="berlin-starts-in-the-gap"),
        pytest.param(BERLIN, "2026-03-29", "00:00-02:30", "23:00Z-1", "01:00Z", id="berlin-ends-in-the-gap"),
        # Starting or ending in the repeated hour: from its first showing, until its last.
        pytest.param(BERLIN, "2026-10-25", "02:30-05:00", "00:30Z", "04:00Z", id="berlin-starts-in-the-repeat"),
        pytest.param(NEW_YORK, "2026-11-01", "00:00-01:30", "04:00Z", "06:30Z", id="new-york-ends-in-the-repeat"),
    ],
)
def test_a_window_cut_by_a_dst_change_holds_the_real_time(
    zone: ZoneInfo, sunday: str, window: str, opens: str, closes: str
) -> None:
    calendar = sundays(zone.key, window)
    day = date.fromisoformat(sunday)

    def utc(text: str) -> datetime:
        shown, _, back = text.partition("Z")
        return datetime.combine(day - timedelta(days=int(back[1:] or 0)), time.fromisoformat(shown), UTC)

    saturday_noon = at(zone, (day - timedelta(days=1)).isoformat() + "T12:00")
    expected_open, expected_close = utc(opens), utc(closes)
    assert calendar.add(saturday_noon, timedelta(0)) == expected_open
    assert calendar.add(saturday_noon, expected_close - expected_open) == expected_close
    assert calendar.measure(saturday_noon, saturday_noon + timedelta(days=2)) == expected_close - expected_open
    assert not calendar.is_open(expected_open - µs) and calendar.is_open(expected_open)
    assert calendar.is_open(expected_close - µs) and not calendar.is_open(expected_close)


def test_a_window_entirely_in_the_skipped_hour_is_closed_that_day() -> None:
    calendar = sundays("Europe/Berlin", "02:15-02:45")
    # Not that Sunday (02:15 to 02:45 never shows on the clock), but the next one.
    due = calendar.add(at(BERLIN, "2026-03-28T12:00"), timedelta(minutes=1))
    assert due == at(BERLIN, "2026-04-05T02:16")
    assert calendar.measure(at(BERLIN, "2026-03-29T00:00"), at(BERLIN, "2026-03-30T00:00")) == timedelta(0)


def test_a_due_time_is_carried_across_spring_forward_in_local_hours() -> None:
    every_day = BusinessCalendar("every day", timezone="Europe/Berlin", hours={d: ["09:00-17:00"] for d in WEEKDAYS})
    # One hour left on Saturday; the second hour is Sunday 09:00-10:00 by the clock, whatever the offset now is.
    due = every_day.add(at(BERLIN, "2026-03-28T16:00"), timedelta(hours=2))
    assert due == at(BERLIN, "2026-03-29T10:00")
    assert due == datetime(2026, 3, 29, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("subdivision", "open_on_easter_sunday"),
    [pytest.param("BB", False, id="brandenburg-keeps-easter-sunday"), pytest.param("BE", True, id="berlin-does-not")],
)
def test_a_holiday_on_the_day_of_the_change(subdivision: str, open_on_easter_sunday: bool) -> None:
    # Easter Sunday 2024 was also the night Germany moved its clocks forward; Brandenburg keeps it as a holiday.
    calendar = BusinessCalendar(
        "easter",
        timezone="Europe/Berlin",
        hours={d: ["01:00-04:00"] for d in WEEKDAYS},
        holidays_country="DE",
        holidays_subdivision=subdivision,
    )
    easter = at(BERLIN, "2024-03-31T03:30")
    assert calendar.is_open(easter) is open_on_easter_sunday
    weekend = calendar.measure(at(BERLIN, "2024-03-30T00:00"), at(BERLIN, "2024-04-01T00:00"))
    # Saturday's three hours, and Sunday's two (02:00-03:00 never shows) when it is not a holiday.
    assert weekend == timedelta(hours=5 if open_on_easter_sunday else 3)


def test_an_explicit_holiday_on_the_day_of_the_change() -> None:
    calendar = BusinessCalendar(
        "ny", timezone="America/New_York", hours={d: ["00:00-24:00"] for d in WEEKDAYS}, holidays=[date(2026, 3, 8)]
    )
    # Closed for the whole local Sunday, 23 real hours, and not an hour more or less.
    assert calendar.add(at(NEW_YORK, "2026-03-07T23:00"), timedelta(hours=2)) == at(NEW_YORK, "2026-03-09T01:00")
    assert not calendar.is_open(at(NEW_YORK, "2026-03-08T23:59"))
    assert calendar.is_open(at(NEW_YORK, "2026-03-09T00:00"))


def test_holidays_are_dates_in_the_calendars_own_zone() -> None:
    # Thanksgiving 2026 (November 26) in New York, while it is already the 27th in UTC, or still the 25th.
    calendar = BusinessCalendar(
        "ny", timezone="America/New_York", hours={d: ["00:00-24:00"] for d in WEEKDAYS_ONLY}, holidays_country="US"
    )
    assert calendar.is_open(datetime(2026, 11, 26, 4, 30, tzinfo=UTC))  # 23:30 on the 25th in New York
    assert not calendar.is_open(datetime(2026, 11, 26, 5, 0, tzinfo=UTC))
    assert not calendar.is_open(datetime(2026, 11, 27, 4, 30, tzinfo=UTC))  # 23:30 on the 26th in New York
    assert calendar.is_open(datetime(2026, 11, 27, 5, 0, tzinfo=UTC))


# --- hand-picked: midnight, 24:00, split shifts, overrides ----------------------------------------------------------


def test_the_24_7_calendar_runs_across_midnight() -> None:
    before = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert ALWAYS_OPEN.add(before, timedelta(hours=1)) == datetime(2027, 1, 1, 0, 30, tzinfo=UTC)
    assert ALWAYS_OPEN.is_open(datetime(2027, 1, 1, tzinfo=UTC))
    assert ALWAYS_OPEN.measure(before, before + timedelta(hours=1)) == timedelta(hours=1)
    # Any zone in, UTC out.
    assert ALWAYS_OPEN.add(at(BERLIN, "2026-03-29T01:30"), timedelta(hours=1)) == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )


def test_open_all_day_by_the_clock_is_not_closed_for_a_moment_at_midnight() -> None:
    before = at(BERLIN, "2026-06-01T23:30")
    assert ALL_DAY_BERLIN.is_open(at(BERLIN, "2026-06-02T00:00"))
    assert ALL_DAY_BERLIN.measure(before, before + timedelta(hours=1)) == timedelta(hours=1)
    assert ALL_DAY_BERLIN.add(before, timedelta(hours=1)) == at(BERLIN, "2026-06-02T00:30")


def test_a_night_shift_through_24_00_carries_on_after_midnight() -> None:
    calendar = BusinessCalendar(
        "nights", timezone="Europe/Berlin", hours={"fri": ["18:00-24:00"], "sat": ["00:00-06:00"]}
    )
    assert calendar.add(at(BERLIN, "2026-06-05T23:00"), timedelta(hours=2)) == at(BERLIN, "2026-06-06T01:00")
    assert calendar.measure(at(BERLIN, "2026-06-05T00:00"), at(BERLIN, "2026-06-07T00:00")) == timedelta(hours=12)


def test_time_used_up_at_24_00_is_due_at_midnight_not_at_the_next_opening() -> None:
    calendar = BusinessCalendar(
        "evenings", timezone="Europe/Berlin", hours={"fri": ["20:00-24:00"], "mon": ["09:00-10:00"]}
    )
    due = calendar.add(at(BERLIN, "2026-06-05T23:00"), timedelta(hours=1))
    assert due == at(BERLIN, "2026-06-06T00:00")
    assert not calendar.is_open(due)
    assert calendar.add(at(BERLIN, "2026-06-05T23:00"), timedelta(hours=1, minutes=1)) == at(BERLIN, "2026-06-08T09:01")


@pytest.mark.parametrize(
    ("start", "duration", "due"),
    [
        pytest.param("2026-06-01T09:00", "4h", "2026-06-01T14:00", id="over-the-lunch-break"),
        pytest.param("2026-06-01T11:00", "1h30m", "2026-06-01T12:30", id="used-up-at-lunch-is-due-at-lunch"),
        pytest.param("2026-06-01T12:45", "1m", "2026-06-01T13:31", id="from-lunch-counts-from-13-30"),
        pytest.param("2026-06-05T16:00", "2h", "2026-06-08T10:00", id="friday-into-monday"),
        pytest.param("2026-06-06T10:00", "7h", "2026-06-08T17:00", id="a-whole-day-from-saturday"),
        pytest.param("2026-06-01T09:00", "2d", "2026-06-09T16:00", id="two-days-are-48-open-hours"),
        pytest.param("2026-11-27T16:30", "1h", "2026-11-28T10:30", id="saturday-opened-for-a-launch"),
        pytest.param("2026-12-23T12:00", "2h", "2026-12-28T10:00", id="short-day-then-christmas"),
        pytest.param("2026-05-01T10:00", "1h", "2026-05-04T10:00", id="labour-day"),
    ],
)
def test_office_due_times(start: str, duration: str, due: str) -> None:
    assert OFFICE.add(at(BERLIN, start), parse_duration(duration)) == at(BERLIN, due)


def test_office_days_hold_their_hours() -> None:
    def day(text: str) -> timedelta:
        start = at(BERLIN, text + "T00:00")
        return OFFICE.measure(start, start + timedelta(days=1))

    assert day("2026-06-01") == timedelta(hours=7)  # split shift: 3.5 + 3.5
    assert day("2026-06-06") == timedelta(0)  # Saturday
    assert day("2026-11-28") == timedelta(hours=4)  # a Saturday opened by override
    assert day("2026-12-23") == timedelta(hours=4)  # a short day by override
    assert day("2026-12-24") == timedelta(0)  # explicit holiday
    assert day("2026-12-25") == timedelta(0)  # public holiday


def test_an_override_opens_a_public_holiday() -> None:
    calendar = BusinessCalendar(
        "launch",
        timezone="Europe/Berlin",
        hours={d: ["09:00-17:00"] for d in WEEKDAYS_ONLY},
        holidays_country="DE",
        overrides={date(2026, 12, 25): ["10:00-12:00"]},
    )
    assert calendar.is_open(at(BERLIN, "2026-12-25T11:00"))
    assert not calendar.is_open(at(BERLIN, "2026-12-25T09:30"))


def test_a_zero_duration_is_the_start_if_open_else_the_next_opening() -> None:
    assert OFFICE.add(at(BERLIN, "2026-06-01T10:00"), timedelta(0)) == at(BERLIN, "2026-06-01T10:00")
    assert OFFICE.add(at(BERLIN, "2026-06-01T12:30"), timedelta(0)) == at(BERLIN, "2026-06-01T13:30")
    assert OFFICE.add(at(BERLIN, "2026-06-05T17:00"), timedelta(0)) == at(BERLIN, "2026-06-08T09:00")


def test_measuring_with_pauses() -> None:
    monday = at(BERLIN, "2026-06-01T08:00")
    pauses = [
        (at(BERLIN, "2026-06-01T10:00"), at(BERLIN, "2026-06-01T11:00")),
        (at(BERLIN, "2026-06-01T10:30"), at(BERLIN, "2026-06-01T14:00")),  # overlaps the first, spans lunch
        (at(BERLIN, "2026-06-01T19:00"), at(BERLIN, "2026-06-01T20:00")),  # closed time anyway
        (at(BERLIN, "2026-05-01T00:00"), at(BERLIN, "2026-05-02T00:00")),  # before the range
    ]
    # 09:00-17:00 less lunch is 7h; paused 10:00-14:00 less lunch is 3h.
    assert OFFICE.measure(monday, at(BERLIN, "2026-06-01T18:00"), pauses=pauses) == timedelta(hours=4)
    assert OFFICE.measure(monday, monday - timedelta(hours=1)) == timedelta(0)


# --- bounded, and strict about what it is given -------------------------------------------------------------------


def test_a_calendar_with_no_open_time_ahead_is_an_error_not_a_hang() -> None:
    mondays = [date(2026, 1, 5) + timedelta(weeks=w) for w in range(52 * 5)]
    calendar = BusinessCalendar("closed", timezone="Europe/Berlin", hours={"mon": ["09:00-17:00"]}, holidays=mondays)
    with pytest.raises(
        CalendarError, match=r"calendar 'closed' has no open time within \d+ days after 2026-01-01T00:00:00\+00:00"
    ):
        calendar.add(datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=1))
    # The open Mondays after the horizon are still found from nearer by.
    assert mondays[-1] + timedelta(weeks=1) - date(2026, 1, 1) > timedelta(days=IDLE_HORIZON_DAYS)
    later = calendar.add(datetime.combine(mondays[-1], time(), UTC), timedelta(hours=1))
    assert later == at(BERLIN, (mondays[-1] + timedelta(weeks=1)).isoformat() + "T10:00")


def test_the_longest_target_in_office_hours_is_answered() -> None:
    due = OFFICE.add(datetime(2026, 1, 1, tzinfo=UTC), parse_duration("365d"))
    assert OFFICE.measure(datetime(2026, 1, 1, tzinfo=UTC), due) == timedelta(days=365)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: OFFICE.add(datetime(2026, 6, 1, 9), timedelta(hours=1)), id="naive-start"),
        pytest.param(lambda: OFFICE.is_open(datetime(2026, 6, 1, 9)), id="naive-is-open"),
        pytest.param(lambda: OFFICE.add(datetime(2026, 6, 1, tzinfo=UTC), -µs), id="negative-duration"),
        pytest.param(
            lambda: OFFICE.measure(
                datetime(2026, 6, 1, tzinfo=UTC),
                datetime(2026, 6, 2, tzinfo=UTC),
                pauses=[(datetime(2026, 6, 1, 12, tzinfo=UTC), datetime(2026, 6, 1, 11, tzinfo=UTC))],
            ),
            id="reversed-pause",
        ),
    ],
)
def test_misuse_is_a_value_error(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


def test_calendars_compare_by_definition() -> None:
    def office(**changes: object) -> BusinessCalendar:
        definition: dict[str, object] = {
            "timezone": "Europe/Berlin",
            "hours": {d: ["09:00-17:00"] for d in WEEKDAYS_ONLY},
            "holidays_country": "DE",
        }
        return BusinessCalendar("office", **{**definition, **changes})  # type: ignore[arg-type]

    assert office() == office() and hash(office()) == hash(office())
    assert office() != office(timezone="Europe/Paris")
    assert office() != office(holidays=[date(2026, 12, 24)])
    assert office() != ALWAYS_OPEN
    assert BusinessCalendar.always_open("24/7") == ALWAYS_OPEN


# --- parsing --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("45s", timedelta(seconds=45)),
        ("1d 2h", timedelta(hours=26)),
        ("365d", timedelta(days=365)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a duration"),
        ("1 hour", "is not a duration"),
        ("90", "is not a duration"),
        ("30m1h", "is not a duration"),
        ("-5m", "is not a duration"),
        ("0m", "is no time at all"),
        ("366d", "longer than 365d"),
    ],
)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("09:00-00:00", "for a window until midnight write 24:00"),
        ("17:00-09:00", "ends before it starts"),
        ("09:00-09:00", "is empty"),
        ("24:00-24:00", "times run from 00:00 to 23:59"),
        ("09:00-24:30", "times run from 00:00 to 23:59"),
        ("9-17", "write HH:MM-HH:MM"),
    ],
)
def test_bad_windows(text: str, message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        parse_window(text)
