"""SLA configuration: policies and calendars from config.toml, every mistake named by its key, old keys kept."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mentiondesk.bot.cli import EXIT_CONFIG, main
from mentiondesk.bot.config import CalendarSettings, ConfigError, PolicySettings, Settings, parse_settings
from mentiondesk.bot.sla.calendar import ALWAYS_OPEN
from mentiondesk.bot.sla.policy import PRIORITIES as POLICY_PRIORITIES
from mentiondesk.bot.sla.policy import SlaBook, sla_book
from mentiondesk.storage.ticket_actions import PRIORITIES as TICKET_PRIORITIES

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = (ROOT / "config.example.toml").read_text(encoding="utf-8")
BERLIN = ZoneInfo("Europe/Berlin")
MINIMAL = """
[mastodon]
base_url = "https://social.example"
[slack]
default_channel = "#support"
"""
CALENDAR = {"name": '"berlin"', "timezone": '"Europe/Berlin"', "hours": '{ mon = ["09:00-17:00"] }'}
POLICY = {"name": '"standard"', "first_response": '"4h"', "calendar": '"berlin"'}


def table(header: str, keys: Mapping[str, str | None]) -> str:
    return f"[[{header}]]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None)


def settings(text: str) -> Settings:
    return parse_settings(tomllib.loads(MINIMAL + text), source="config.toml")


def mistake(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        settings(text)
    message = str(info.value)
    assert message.startswith("config.toml: ")
    return message.removeprefix("config.toml: ")


def book(text: str) -> SlaBook:
    return sla_book(settings(text).sla)


# --- calendars ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"hours": '{ mon = ["09:00-12:30", "12:00-17:00"] }'},
            "sla.calendars.hours.mon (item 1): windows 09:00-12:30 and 12:00-17:00 overlap",
            id="overlapping-windows",
        ),
        pytest.param(
            {"hours": '{ tue = ["17:00-09:00"] }'},
            "sla.calendars.hours.tue (item 1): '17:00-09:00' ends before it starts (windows cannot run past midnight)",
            id="reversed-window",
        ),
        pytest.param(
            {"hours": '{ wed = ["09:00-00:00"] }'},
            "sla.calendars.hours.wed (item 1): '09:00-00:00' ends before it starts (windows cannot run past midnight,"
            " for a window until midnight write 24:00)",
            id="until-midnight-as-00:00",
        ),
        pytest.param(
            {"hours": '{ thu = ["09:00-09:00"] }'},
            "sla.calendars.hours.thu (item 1): '09:00-09:00' is empty: it ends when it starts",
            id="empty-window",
        ),
        pytest.param(
            {"hours": '{ fri = ["9-5"] }'},
            "sla.calendars.hours.fri (item 1): '9-5' is not a window of opening hours: write HH:MM-HH:MM, like"
            ' "09:00-17:00"',
            id="window-not-hh:mm",
        ),
        pytest.param(
            {"hours": '{ sat = ["22:00-24:30"] }'},
            "sla.calendars.hours.sat (item 1): '22:00-24:30': times run from 00:00 to 23:59, and 24:00 as an end",
            id="past-24:00",
        ),
        pytest.param(
            {"hours": '{ sun = "09:00-17:00" }'},
            'sla.calendars.hours.sun (item 1): must be a list, like ["a", "b"]',
            id="window-not-in-a-list",
        ),
        pytest.param(
            {"hours": '{ monday = ["09:00-17:00"] }'},
            "sla.calendars.hours.monday (item 1): unknown key (check the spelling against config.example.toml)",
            id="unknown-day",
        ),
        pytest.param(
            {"hours": "{ sat = [], sun = [] }"},
            "sla.calendars.hours (item 1): no open time on any day of the week (a calendar that never opens has no"
            " due times)",
            id="no-open-time-at-all",
        ),
        pytest.param(
            {"timezone": '"Europe/Berln"'},
            "sla.calendars.timezone (item 1): unknown time zone 'Europe/Berln': use an IANA name, like Europe/Berlin"
            " or UTC",
            id="unknown-zone",
        ),
        pytest.param(
            {"timezone": '"+02:00"'},
            "sla.calendars.timezone (item 1): unknown time zone '+02:00': use an IANA name, like Europe/Berlin or UTC",
            id="offset-instead-of-zone",
        ),
        pytest.param(
            {"timezone": None},
            'sla.calendars (item 1): needs timezone (like timezone = "Europe/Berlin", hours = { mon = ["09:00-17:00"]'
            " }), or always_open = true",
            id="no-zone",
        ),
        pytest.param(
            {"hours": None},
            'sla.calendars (item 1): needs hours (like timezone = "Europe/Berlin", hours = { mon = ["09:00-17:00"] }),'
            " or always_open = true",
            id="no-hours",
        ),
        pytest.param(
            {"always_open": "true"},
            "sla.calendars (item 1): always_open = true is open every minute, so it takes no hours, timezone",
            id="always-open-with-hours",
        ),
        pytest.param(
            {"holidays_country": '"XX"'},
            "sla.calendars.holidays_country (item 1): unknown country 'XX' for holidays: use an ISO 3166 code the"
            " holidays package knows, like DE",
            id="unknown-country",
        ),
        pytest.param(
            {"holidays_subdivision": '"BE"'},
            "sla.calendars.holidays_subdivision (item 1): needs holidays_country, the country the subdivision belongs"
            " to",
            id="subdivision-without-country",
        ),
        pytest.param(
            {"holidays": '["2026-02-30"]'},
            "sla.calendars.holidays (item 1): '2026-02-30' is not a date: write YYYY-MM-DD, like 2026-12-24",
            id="no-such-date",
        ),
        pytest.param(
            {"overrides": '{ "23.12.2026" = ["09:00-13:00"] }'},
            "sla.calendars.overrides (item 1): '23.12.2026' is not a date: write YYYY-MM-DD, like 2026-12-24",
            id="override-date-not-iso",
        ),
        pytest.param(
            {"overrides": '{ "2026-12-23" = ["13:00-09:00"] }'},
            "sla.calendars.overrides (item 1): 2026-12-23: '13:00-09:00' ends before it starts (windows cannot run"
            " past midnight)",
            id="override-window-reversed",
        ),
        pytest.param(
            {"name": '" "'},
            "sla.calendars.name (item 1): must name the calendar, for policies to refer to",
            id="blank-name",
        ),
        pytest.param(
            {"name": '"24/7"'},
            "sla.calendars: item 1: '24/7' is the built-in always-open calendar; use another name",
            id="built-in-name",
        ),
    ],
)
def test_each_bad_calendar_is_named_by_its_key(changes: dict[str, str | None], expected: str) -> None:
    text = table("sla.calendars", {**CALENDAR, **changes}) + table("sla.policies", POLICY)
    assert mistake(text) == expected


def test_an_unknown_subdivision_lists_the_known_ones() -> None:
    text = table("sla.calendars", {**CALENDAR, "holidays_country": '"DE"', "holidays_subdivision": '"Bavaria"'})
    message = mistake(text + table("sla.policies", POLICY))
    assert message.startswith("sla.calendars.holidays_subdivision (item 1): unknown subdivision 'Bavaria' of DE")
    assert re.search(r"\(known: .*\bBE\b.*\bBY\b", message)


def test_two_calendars_of_one_name() -> None:
    text = table("sla.calendars", CALENDAR) + table("sla.calendars", CALENDAR) + table("sla.policies", POLICY)
    assert mistake(text) == "sla.calendars: items 1 and 2 are both named 'berlin'"


def test_calendars_without_policies_are_not_silently_unused() -> None:
    assert mistake(table("sla.calendars", CALENDAR)) == (
        'sla: [[sla.calendars]] are used only by [[sla.policies]] (calendar = "<name>"), and none are given'
    )


def test_a_calendar_as_configured() -> None:
    text = table(
        "sla.calendars",
        {
            **CALENDAR,
            "hours": '{ mon = ["13:30-17:00", "09:00-12:30"], sat = ["18:00-24:00"], sun = ["00:00-02:00"] }',
            "holidays_country": '"de"',
            "holidays_subdivision": '"Berlin"',  # the state's name, any case, for its code
            "holidays": '[2026-12-24, "2026-12-31"]',  # a TOML date or a quoted one
            "overrides": '{ 2026-12-23 = ["09:00-13:00"], "2026-12-28" = [] }',
        },
    )
    calendar = book(text + table("sla.policies", POLICY)).default.calendar
    assert calendar.name == "berlin" and calendar.timezone == "Europe/Berlin"

    def open_at(text: str) -> bool:
        return calendar.is_open(datetime.fromisoformat(text).replace(tzinfo=BERLIN))

    assert open_at("2026-06-01T12:00") and not open_at("2026-06-01T13:00")  # split shift, windows in any order
    assert open_at("2026-06-06T23:59") and open_at("2026-06-07T00:00")  # through 24:00 into Sunday
    assert not open_at("2026-04-06T10:00") and open_at("2026-04-13T10:00")  # Easter Monday, from the holidays package
    assert not open_at("2027-03-08T10:00") and open_at("2027-03-15T10:00")  # Women's Day, a holiday in Berlin only
    assert not open_at("2026-12-28T10:00") and open_at("2026-12-23T12:00") and not open_at("2026-12-23T14:00")
    assert not open_at("2026-12-24T12:00")  # not a Monday anyway, but listed
    assert date(2026, 12, 24) in settings(text + table("sla.policies", POLICY)).sla.calendars[0].holidays


# --- policies -------------------------------------------------------------------------------------------------------

BERLIN_CALENDAR = table("sla.calendars", CALENDAR)


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        pytest.param(
            [{**POLICY, "calendar": '"office"'}],
            "sla.policies: item 1 ('standard') counts in calendar 'office', which no [[sla.calendars]] defines"
            " (defined: '24/7', 'berlin')",
            id="unknown-calendar",
        ),
        pytest.param(
            [{**POLICY, "first_response": '"1 hour"'}],
            "sla.policies.first_response (item 1): '1 hour' is not a duration: write a number and a unit (d, h, m,"
            ' s), like "90m" or "1h30m"',
            id="duration-in-words",
        ),
        pytest.param(
            [{**POLICY, "next_response": "60"}],
            'sla.policies.next_response (item 1): must be a duration in quotes, like "1h", "90m" or "2d"',
            id="duration-as-a-number",
        ),
        pytest.param(
            [{**POLICY, "resolution": '"0m"'}],
            "sla.policies.resolution (item 1): '0m' is no time at all: a target must be longer than 0",
            id="zero-duration",
        ),
        pytest.param(
            [{**POLICY, "resolution": '"400d"'}],
            "sla.policies.resolution (item 1): '400d' is longer than 365d, the longest target allowed",
            id="too-long",
        ),
        pytest.param(
            [{**POLICY, "priorities": '["critical"]'}],
            "sla.policies.priorities (item 1): a ticket's priority is one of 'urgent', 'high', 'normal', 'low', got"
            " ['critical']",
            id="unknown-priority",
        ),
        pytest.param(
            [{**POLICY, "priorities": '["high"]'}],
            "sla.policies: no default policy: give one policy neither priorities nor channels, for the tickets no"
            " other matches",
            id="no-default",
        ),
        pytest.param(
            [POLICY, {**POLICY, "name": '"other"'}],
            "sla.policies: one default policy (without priorities and channels) only, got item 1 ('standard') and"
            " item 2 ('other')",
            id="two-defaults",
        ),
        pytest.param(
            [POLICY, POLICY],
            "sla.policies: items 1 and 2 are both named 'standard'",
            id="two-of-one-name",
        ),
        pytest.param(
            [
                {**POLICY, "name": '"high"', "priorities": '["high"]'},
                {**POLICY, "name": '"high on support"', "priorities": '["high"]', "channels": '["#support"]'},
                POLICY,
            ],
            "sla.policies: item 2 ('high on support') never applies: item 1 ('high') comes first and matches every"
            " ticket it would (the first match wins)",
            id="shadowed",
        ),
        pytest.param(
            [{**POLICY, "name": '"vip"', "channels": '["#vip"]'}, POLICY],
            "sla.policies.channels (item 1): no ticket goes to '#vip'; write channels as slack.default_channel and"
            " routing.rules name them ('#support')",
            id="channel-no-ticket-goes-to",
        ),
        pytest.param(
            [{**POLICY, "calender": '"berlin"'}],
            "sla.policies.calender (item 1): unknown key (check the spelling against config.example.toml)",
            id="misspelt-key",
        ),
    ],
)
def test_each_bad_policy_is_named_by_its_key(policies: list[dict[str, str]], expected: str) -> None:
    assert mistake(BERLIN_CALENDAR + "".join(table("sla.policies", p) for p in policies)) == expected


def test_policies_apply_in_the_order_written_and_the_default_last() -> None:
    text = (
        '[[routing.rules]]\nchannel = "#vip"\nkeywords = ["vip"]\n'
        + BERLIN_CALENDAR
        # The default first: it still applies only when nothing else does.
        + table("sla.policies", {"name": '"standard"', "first_response": '"4h"', "resolution": '"35h"'})
        + table("sla.policies", {"name": '"vip"', "channels": '["#vip"]', "first_response": '"15m"'})
        + table(
            "sla.policies",
            {"name": '"high"', "priorities": '["high"]', "first_response": '"1h"', "calendar": '"berlin"'},
        )
    )
    sla = book(text)
    assert [p.name for p in sla.policies] == ["vip", "high", "standard"]
    assert sla.policy_for(priority="high", channel="#vip").name == "vip"
    assert sla.policy_for(priority="high", channel="#support").name == "high"
    assert sla.policy_for(priority="normal", channel="#support").name == "standard"
    high = sla.policy_for(priority="high", channel="#support")
    assert high.calendar.name == "berlin" and high.target("first_response") == timedelta(hours=1)
    standard = sla.default
    assert standard.calendar is ALWAYS_OPEN  # "24/7" unless a policy names another
    assert (standard.first_response, standard.next_response, standard.resolution) == (
        timedelta(hours=4),
        None,
        timedelta(hours=35),
    )


def test_a_changed_calendar_makes_a_different_policy() -> None:
    # What the clocks compare to know that open tickets' due times must be recomputed.
    before = book(BERLIN_CALENDAR + table("sla.policies", POLICY))
    same = book(BERLIN_CALENDAR + table("sla.policies", POLICY))
    later = book(
        table("sla.calendars", {**CALENDAR, "hours": '{ mon = ["08:00-17:00"] }'}) + table("sla.policies", POLICY)
    )
    assert before.default == same.default
    assert before.default != later.default


# --- the keys from before policies ---------------------------------------------------------------------------------


def test_no_sla_section_keeps_the_old_targets() -> None:
    sla = book("")
    assert [(p.name, p.priorities, p.first_response, p.calendar) for p in sla.policies] == [
        ("high", frozenset({"urgent", "high"}), timedelta(minutes=30), ALWAYS_OPEN),
        ("default", frozenset(), timedelta(minutes=60), ALWAYS_OPEN),
    ]
    assert all(p.next_response is None and p.resolution is None for p in sla.policies)


def test_the_old_keys_become_two_policies_on_the_24_7_calendar() -> None:
    sla = book("[sla]\nfirst_response_minutes = 45\nhigh_priority_first_response_minutes = 10\n")
    assert sla.policy_for(priority="high", channel="#support").first_response == timedelta(minutes=10)
    assert sla.policy_for(priority="normal", channel="#support").first_response == timedelta(minutes=45)
    # Urgent is newer than these keys; it gets the faster of the two targets, never the default's.
    assert sla.policy_for(priority="urgent", channel="#support").first_response == timedelta(minutes=10)
    posted = datetime(2026, 6, 6, 23, 55, tzinfo=BERLIN)  # a Saturday night: always open, so due 10 minutes on
    assert sla.default.calendar.add(posted, timedelta(minutes=10)) == datetime(2026, 6, 7, 0, 5, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("old", "expected"),
    [
        pytest.param(
            "first_response_minutes = 45",
            "sla: first_response_minutes cannot be used together with [[sla.policies]], which would override it;"
            ' write first_response = "45m" in the default policy instead',
            id="one-old-key",
        ),
        pytest.param(
            "first_response_minutes = 45\nhigh_priority_first_response_minutes = 10",
            "sla: first_response_minutes and high_priority_first_response_minutes cannot be used together with"
            ' [[sla.policies]], which would override them; write first_response = "45m" in the default policy and'
            ' first_response = "10m" in a policy with priorities = ["high"] instead',
            id="both-old-keys",
        ),
    ],
)
def test_old_keys_with_policies_stop_the_start_saying_what_to_write(old: str, expected: str) -> None:
    assert mistake(f"[sla]\n{old}\n" + BERLIN_CALENDAR + table("sla.policies", POLICY)) == expected


# --- warnings and escalation ----------------------------------------------------------------------------------------


def test_warning_and_escalation_settings() -> None:
    defaults = book("")
    assert (defaults.warn_at, defaults.oncall_group, defaults.escalation_channel) == (0.75, None, None)
    assert (defaults.manager_group, defaults.manager_at) == (None, 2.0)
    text = (
        '[sla]\nwarn_at = 0.5\noncall_group = "S0123ONCALL"\nescalation_channel = "#escalations"\n'
        'manager_group = "S0456MGRS"\nmanager_at = 3.0\n'
    )
    sla = book(text)
    assert (sla.warn_at, sla.oncall_group, sla.escalation_channel) == (0.5, "S0123ONCALL", "#escalations")
    assert (sla.manager_group, sla.manager_at) == ("S0456MGRS", 3.0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("warn_at = 1.0", "sla.warn_at: must be less than 1"),
        ("warn_at = 0", "sla.warn_at: must be greater than 0"),
        ('oncall_group = "U0123ABCD"', "sla.oncall_group: must be a Slack user group ID (S...), got 'U0123ABCD'"),
        ('manager_group = "#managers"', "sla.manager_group: must be a Slack user group ID (S...), got '#managers'"),
        ("manager_at = 1.0", "sla.manager_at: must be greater than 1"),
        ('escalation_channel = " "', "sla.escalation_channel: must name a channel (ID like C0123 or #name)"),
        (
            'manager_group = "S0456MGRS"',
            "sla: manager_group is set, so escalation_channel must name the channel its alerts go to",
        ),
    ],
)
def test_bad_escalation_settings(line: str, expected: str) -> None:
    assert mistake(f"[sla]\n{line}\n") == expected


# --- check and run stop; the docs agree ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_stop_on_a_bad_calendar(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = table("sla.calendars", {**CALENDAR, "timezone": '"Mars/Olympus"'}) + table("sla.policies", POLICY)
    (tmp_path / "config.toml").write_text(MINIMAL + bad, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main([command, "--config", "config.toml"]) == EXIT_CONFIG
    assert capsys.readouterr().err == (
        "mentiondesk: configuration error: config.toml: sla.calendars.timezone (item 1): unknown time zone"
        " 'Mars/Olympus': use an IANA name, like Europe/Berlin or UTC\n"
    )


def readme_sla_section() -> str:
    start = README.index("## SLA policies and calendars")
    return README[start : README.index("\n## ", start)]


def test_readme_sample_error_is_what_check_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = re.search(r"```\n\$ (mentiondesk check --config config\.toml)\n(.+?)\n```", readme_sla_section())
    assert sample is not None, "the SLA section's sample configuration error is gone"
    # The sample's mistake, as the README says: the lunch break's windows overlapping.
    overlapping = table("sla.calendars", {**CALENDAR, "hours": '{ mon = ["09:00-12:30", "12:00-17:00"] }'})
    (tmp_path / "config.toml").write_text(MINIMAL + overlapping + table("sla.policies", POLICY), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(sample.group(1).split()[1:]) == EXIT_CONFIG
    assert capsys.readouterr().err.rstrip("\n") == sample.group(2)


def test_readme_worked_example_is_valid_and_its_due_times_hold() -> None:
    section = readme_sla_section()
    example = re.search(r"```toml\n(.+?)```", section, re.DOTALL)
    assert example is not None
    sla = book(example.group(1))
    high = sla.policy_for(priority="high", channel="#support")
    assert high.first_response == timedelta(hours=1) and high.calendar.timezone == "Europe/Berlin"
    rows = re.findall(r"^\| (\w{3}) (\S+ \S+) \| (\w{3}) (\S+ \S+) \|", section, re.MULTILINE)
    assert len(rows) == 5
    for posted_day, posted, due_day, due in rows:
        posted_at = datetime.fromisoformat(posted).replace(tzinfo=BERLIN)
        due_at = datetime.fromisoformat(due).replace(tzinfo=BERLIN)
        assert (posted_at.strftime("%a"), due_at.strftime("%a")) == (posted_day, due_day)
        assert high.calendar.add(posted_at, high.first_response or timedelta(0)) == due_at, posted
    # "with the warning at 45 minutes of open time"
    assert sla.warn_at * timedelta(hours=1) == timedelta(minutes=45)


def test_example_config_documents_every_calendar_and_policy_key() -> None:
    sla = EXAMPLE[EXAMPLE.index("\n[sla]\n") : EXAMPLE.index("\n[ingest]\n")]
    for model in (CalendarSettings, PolicySettings):
        for key in model.model_fields:
            assert f"# {key} =" in sla, f"{model.__name__}.{key} is not in config.example.toml's [sla] section"
    assert "[[sla.calendars]]" in sla and "[[sla.policies]]" in sla


def test_example_config_sla_tables_are_valid_when_uncommented() -> None:
    # Every "# key = value" line of the [sla] section, uncommented, is a configuration that works.
    start = EXAMPLE.index("\n[sla]\n")
    # Up to the next top-level table, whichever it is.
    following = re.search(r"\n\[\w+\]\n", EXAMPLE[start + 1 :])
    assert following is not None, "[sla] is followed by another section in config.example.toml"
    section = EXAMPLE[start : start + 1 + following.start()]
    lines = [line[2:] for line in section.splitlines() if re.match(r"# (\[\[sla\.\w+\]\]|\w+ = )", line)]
    uncommented = (
        "\n".join(lines)
        .replace("first_response_minutes = 60\n", "")
        .replace("high_priority_first_response_minutes = 30\n", "")
    )
    sla = book("[sla]\n" + uncommented + "\n")
    assert [p.name for p in sla.policies] == ["high priority", "standard"]
    assert sla.policies[0].calendar.name == "berlin"


def test_a_policy_can_target_every_priority_an_agent_can_set() -> None:
    # Agents can set a ticket's priority to low from its card; a policy must be able to name it.
    text = table("sla.policies", {"name": '"standard"', "first_response": '"4h"'}) + table(
        "sla.policies", {"name": '"relaxed"', "priorities": '["low"]', "first_response": '"2d"'}
    )
    sla = book(text)
    assert sla.policy_for(priority="low", channel="C0SUPPORT").name == "relaxed"
    assert set(TICKET_PRIORITIES) <= set(POLICY_PRIORITIES)


def test_urgent_picks_its_own_policy_and_is_refused_nowhere() -> None:
    text = (
        table("sla.policies", {"name": '"urgent"', "priorities": '["urgent"]', "first_response": '"15m"'})
        + table("sla.policies", {"name": '"high"', "priorities": '["high"]', "first_response": '"1h"'})
        + table("sla.policies", {"name": '"standard"', "first_response": '"4h"'})
    )
    sla = book(text)
    assert sla.policy_for(priority="urgent", channel="C0SUPPORT").first_response == timedelta(minutes=15)
    assert sla.policy_for(priority="high", channel="C0SUPPORT").name == "high"
    assert TICKET_PRIORITIES == POLICY_PRIORITIES == ("urgent", "high", "normal", "low")
