"""The daemon's configuration: one typed model, loaded from TOML, secrets from the environment."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from mentiondesk.bot.cue_settings import CategoryRule, PrioritySettings, check_categories
from mentiondesk.bot.sla.calendar import (
    ALWAYS_OPEN,
    WEEKDAYS,
    CalendarError,
    check_holidays_country,
    check_holidays_subdivision,
    load_zone,
    parse_duration,
    parse_windows,
)
from mentiondesk.bot.sla.policy import PRIORITIES, build_calendar
from mentiondesk.storage.urls import with_absolute_sqlite_path

SLACK_API_URL = "https://slack.com/api/"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///mentiondesk.db"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the key and the problem."""


class _Section(BaseModel):
    # Unknown keys are almost always typos; silently ignoring them hides misconfiguration.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value


class MastodonSettings(_Section):
    base_url: str
    hashtags: tuple[str, ...] = ()
    accept_bots: bool = False
    streaming: bool = True
    poll_interval_s: float = Field(default=60.0, gt=0)
    stream_down_poll_interval_s: float = Field(default=15.0, gt=0)
    backfill: int = Field(default=40, ge=0, le=80)
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_backoff_s: float = Field(default=300.0, gt=0)
    # Seconds between sweeps that re-read customer posts of open tickets for edits and deletes.
    refresh_interval_s: float = Field(default=120.0, gt=0)
    # The account's request budget (stock Mastodon: 300 per 5 minutes); polls and stream reconnects are
    # spaced so that, whatever the stream does, they use a fixed share of it.
    rate_limit_requests: int = Field(default=300, gt=0)
    rate_limit_window_s: float = Field(default=300.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _http_url(value).rstrip("/")

    @field_validator("hashtags")
    @classmethod
    def _normalise_tags(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(t.lstrip("#").strip().lower() for t in tags)
        bad = [t for t in cleaned if not t or not all(ch.isalnum() or ch == "_" for ch in t)]
        if bad:
            raise ValueError(f"hashtags must be letters, digits or '_', got {bad!r}")
        return cleaned


class SlackSettings(_Section):
    base_url: str = SLACK_API_URL
    default_channel: str
    dry_run: bool = False
    post_interval_s: float = Field(default=1.0, ge=0)
    max_retry_delay_s: float = Field(default=300.0, gt=0)
    # Seconds between attempts at a message Slack refused for good (bot not in the channel, token revoked):
    # parked messages are retried this often, and at each start, until the cause is fixed.
    parked_retry_s: float = Field(default=180.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    # How Slack reaches us: "socket" (Socket Mode, no public URL) or "http" (Events API endpoints, on the
    # [http] server).
    mode: Literal["socket", "http"] = "socket"
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    # What an agent's message in a ticket's thread is: always an internal note, or a note that
    # prompts "send this to the customer?".
    thread_replies: Literal["notes", "confirm"] = "notes"
    # Slack user IDs (U...) and user group IDs (S...) allowed to publish replies to customers.
    repliers: tuple[str, ...] = ()
    # Of those, users and groups whose replies wait for an approver's Approve.
    needs_approval: tuple[str, ...] = ()
    approval_channel: str | None = None
    slash_command: str = "/mentiondesk"
    # Reaction emoji (name without colons) -> the label an agent's reaction on a card or triage message records
    # for the post, as training data for the classifier: {"x" = "other", "rotating_light" = "complaint"}.
    label_reactions: dict[str, Literal["complaint", "question", "other"]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _moved_http_keys(cls, data: Any) -> Any:
        # Before the daemon had one HTTP server for Slack and the dashboard, its address was Slack's; a silent
        # "unknown key" would leave an upgrader guessing where it went.
        if isinstance(data, dict):
            moved = [key for key in ("http_host", "http_port") if key in data]
            if moved:
                # JSON's spelling of a string or a number is TOML's too.
                instead = " and ".join(f"{key.removeprefix('http_')} = {json.dumps(data[key])}" for key in moved)
                raise ValueError(
                    f"{' and '.join('slack.' + k for k in moved)} moved to the [http] section, which serves "
                    f"Slack's HTTP mode and the dashboard: write {instead} under [http] instead"
                )
        return data

    @field_validator("repliers", "needs_approval")
    @classmethod
    def _check_ids(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        bad = [i for i in ids if not re.fullmatch(r"[UWS][A-Z0-9]{2,30}", i)]
        if bad:
            raise ValueError(f"must be Slack user IDs (U...) or user group IDs (S...), got {bad!r}")
        return ids

    @field_validator("label_reactions")
    @classmethod
    def _check_reactions(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not re.fullmatch(r"[a-z0-9_+'-]{1,100}", name)]
        if bad:
            raise ValueError(f'emoji names are written without colons, in lowercase (like "x"), got {bad!r}')
        return value

    @field_validator("slash_command")
    @classmethod
    def _check_command(cls, value: str) -> str:
        if not re.fullmatch(r"/[a-z0-9_-]{1,31}", value):
            raise ValueError(f"must look like /mentiondesk (lowercase, at most 32 characters), got {value!r}")
        return value

    @model_validator(mode="after")
    def _approval_needs_a_channel(self) -> SlackSettings:
        if self.needs_approval and not self.approval_channel:
            raise ValueError("needs_approval is set, so approval_channel must name the approvers' channel")
        return self

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        # slack-sdk joins base_url and the method name, so the slash matters.
        return _http_url(value).rstrip("/") + "/"

    @field_validator("default_channel")
    @classmethod
    def _check_channel(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a channel (ID like C0123 or #name)")
        return value.strip()


class RoutingRule(_Section):
    channel: str
    keywords: tuple[str, ...] = ()
    hashtags: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _needs_a_condition(self) -> RoutingRule:
        if not (self.keywords or self.hashtags or self.languages):
            raise ValueError("a rule needs at least one of keywords, hashtags, languages")
        return self


class RoutingSettings(_Section):
    rules: tuple[RoutingRule, ...] = ()


class ClassifierSettings(_Section):
    threshold: float | None = Field(default=None, ge=0, le=1)
    # "default", "embeddings" (the optional fine-tuned encoder: pip install 'mentiondesk[ml]') or a path to a model
    # artifact; read once at start (bot/classify/loading.py).
    model: str = Field(default="default", min_length=1)
    # The older key for a model path: still accepted so that existing files keep working.
    model_path: Path | None = None
    high_priority_score: float = Field(default=0.9, ge=0, le=1)
    triage_threshold: float | None = Field(default=None, ge=0, le=1)
    triage_channel: str | None = None
    tickets_for: tuple[Literal["complaint", "question"], ...] = ("complaint",)
    # Where `mentiondesk classifier train` writes its versioned models; None: `models` beside a SQLite database.
    models_dir: Path | None = None
    # Priority cues and category tags (bot/cue_settings.py); left out: the built-in lists.
    priority: PrioritySettings = PrioritySettings()
    categories: tuple[CategoryRule, ...] | None = None

    _categories = field_validator("categories")(check_categories)

    @model_validator(mode="after")
    def _bands_in_order(self) -> ClassifierSettings:
        if self.threshold is not None and self.triage_threshold is not None and self.triage_threshold > self.threshold:
            raise ValueError(
                f"triage_threshold ({self.triage_threshold:g}) is above threshold ({self.threshold:g}): the "
                "triage band lies below the ticket threshold"
            )
        return self

    @field_validator("triage_channel")
    @classmethod
    def _check_triage_channel(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name a channel (ID like C0123 or #name), or be left out")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _one_model_key(self) -> ClassifierSettings:
        if self.model_path is not None and "model" in self.model_fields_set:
            raise ValueError(
                "classifier.model and classifier.model_path are both set; keep classifier.model "
                "(model_path is its older name for a path)"
            )
        return self

    def model_choice(self) -> str | Path:
        """What ``load_classifier`` takes: the model_path when the older key is used, else model."""
        return self.model_path if self.model_path is not None else self.model


class TicketSettings(_Section):
    # A customer post on a resolved ticket reopens it within this many days; later, it opens a new
    # ticket linked to the old one.
    reopen_window_days: float = Field(default=7.0, ge=0)


def _slack_group(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"S[A-Z0-9]{2,30}", value):
        raise ValueError(f"must be a Slack user group ID (S...), got {value!r}")
    return value


class WeeklyHours(_Section):
    """Opening windows per weekday, local wall-clock times; a day left out is closed."""

    mon: tuple[str, ...] = ()
    tue: tuple[str, ...] = ()
    wed: tuple[str, ...] = ()
    thu: tuple[str, ...] = ()
    fri: tuple[str, ...] = ()
    sat: tuple[str, ...] = ()
    sun: tuple[str, ...] = ()

    @field_validator(*WEEKDAYS)
    @classmethod
    def _check_windows(cls, windows: tuple[str, ...]) -> tuple[str, ...]:
        parse_windows(windows)
        return windows

    @model_validator(mode="after")
    def _some_open_time(self) -> WeeklyHours:
        if not any(self.by_day().values()):
            raise ValueError("no open time on any day of the week (a calendar that never opens has no due times)")
        return self

    def by_day(self) -> dict[str, tuple[str, ...]]:
        return {day: getattr(self, day) for day in WEEKDAYS}


def _date(value: object) -> date:
    # TOML has dates of its own (2026-12-24); quoted ones are read the same.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a date: write YYYY-MM-DD, like 2026-12-24")


class CalendarSettings(_Section):
    name: str
    always_open: bool = False
    timezone: str | None = None
    hours: WeeklyHours | None = None
    holidays_country: str | None = None
    holidays_subdivision: str | None = None
    holidays: tuple[date, ...] = ()
    overrides: dict[date, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the calendar, for policies to refer to")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str | None) -> str | None:
        return None if value is None else load_zone(value).key

    @field_validator("holidays_country")
    @classmethod
    def _check_country(cls, value: str | None) -> str | None:
        return None if value is None else check_holidays_country(value)

    @field_validator("holidays_subdivision")
    @classmethod
    def _check_subdivision(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if "holidays_country" not in info.data:  # the country itself was wrong, and is reported
            return value
        country = info.data["holidays_country"]
        if country is None:
            raise ValueError("needs holidays_country, the country the subdivision belongs to")
        return check_holidays_subdivision(country, value)

    @field_validator("holidays", mode="before")
    @classmethod
    def _read_dates(cls, value: object) -> object:
        return tuple(_date(v) for v in value) if isinstance(value, list | tuple) else value

    @field_validator("overrides", mode="before")
    @classmethod
    def _read_override_dates(cls, value: object) -> object:
        return {_date(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("overrides")
    @classmethod
    def _check_overrides(cls, value: dict[date, tuple[str, ...]]) -> dict[date, tuple[str, ...]]:
        for day, windows in value.items():
            try:
                parse_windows(windows)
            except CalendarError as exc:
                raise ValueError(f"{day.isoformat()}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> CalendarSettings:
        if self.always_open:
            extra = sorted(self.model_fields_set - {"name", "always_open"})
            if extra:
                raise ValueError(f"always_open = true is open every minute, so it takes no {', '.join(extra)}")
        elif self.timezone is None or self.hours is None:
            missing = " and ".join(k for k in ("timezone", "hours") if getattr(self, k) is None)
            raise ValueError(
                f'needs {missing} (like timezone = "Europe/Berlin", hours = {{ mon = ["09:00-17:00"] }}), '
                "or always_open = true"
            )
        # The calendar's own checks too, so that building it at start cannot fail where the config passed.
        try:
            build_calendar(self)
        except CalendarError as exc:
            raise ValueError(str(exc)) from None
        return self


class PolicySettings(_Section):
    name: str
    # Empty: any priority, any channel. A policy with neither is the default.
    priorities: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    first_response: timedelta | None = None
    next_response: timedelta | None = None
    resolution: timedelta | None = None
    calendar: str = ALWAYS_OPEN.name

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the policy (tickets and reports show it)")
        return value.strip()

    @field_validator("first_response", "next_response", "resolution", mode="before")
    @classmethod
    def _read_duration(cls, value: object) -> object:
        # Only our own notation: pydantic would also take 3600 or "PT1H", which read as something else here.
        if not isinstance(value, str):
            raise ValueError('must be a duration in quotes, like "1h", "90m" or "2d"')
        return parse_duration(value)

    @field_validator("priorities")
    @classmethod
    def _check_priorities(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in values if v not in PRIORITIES]
        if unknown:
            known = ", ".join(repr(p) for p in PRIORITIES)
            raise ValueError(f"a ticket's priority is one of {known}, got {unknown!r}")
        return values

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        if any(not v.strip() for v in values):
            raise ValueError(
                "must name channels (ID like C0123 or #name), as routing.rules and slack.default_channel do"
            )
        return tuple(v.strip() for v in values)


class SlaSettings(_Section):
    # The targets before [[sla.policies]] existed; they stand for two policies on the 24/7 calendar.
    first_response_minutes: int = Field(default=60, gt=0)
    high_priority_first_response_minutes: int = Field(default=30, gt=0)
    # Before policies: their validator checks the calendar each one names.
    calendars: tuple[CalendarSettings, ...] = ()
    policies: tuple[PolicySettings, ...] = ()
    warn_at: float = Field(default=0.75, gt=0, lt=1)
    oncall_group: str | None = None
    escalation_channel: str | None = None
    manager_group: str | None = None
    manager_at: float = Field(default=2.0, gt=1)

    @field_validator("calendars")
    @classmethod
    def _distinct_calendars(cls, calendars: tuple[CalendarSettings, ...]) -> tuple[CalendarSettings, ...]:
        seen: dict[str, int] = {ALWAYS_OPEN.name: 0}
        for number, calendar in enumerate(calendars, start=1):
            if calendar.name == ALWAYS_OPEN.name:
                raise ValueError(
                    f"item {number}: {ALWAYS_OPEN.name!r} is the built-in always-open calendar; use another name"
                )
            if calendar.name in seen:
                raise ValueError(f"items {seen[calendar.name]} and {number} are both named {calendar.name!r}")
            seen[calendar.name] = number
        return calendars

    @field_validator("policies")
    @classmethod
    def _check_policies(cls, policies: tuple[PolicySettings, ...], info: ValidationInfo) -> tuple[PolicySettings, ...]:
        if not policies:
            return policies
        names: dict[str, int] = {}
        for number, policy in enumerate(policies, start=1):
            if policy.name in names:
                raise ValueError(f"items {names[policy.name]} and {number} are both named {policy.name!r}")
            names[policy.name] = number
        defaults = [
            f"item {n} ({p.name!r})" for n, p in enumerate(policies, start=1) if not (p.priorities or p.channels)
        ]
        if not defaults:
            raise ValueError(
                "no default policy: give one policy neither priorities nor channels, for the tickets no other matches"
            )
        if len(defaults) > 1:
            raise ValueError(f"one default policy (without priorities and channels) only, got {' and '.join(defaults)}")
        if "calendars" in info.data:  # else they were wrong, and are reported
            defined = [ALWAYS_OPEN.name, *(c.name for c in info.data["calendars"])]
            for number, policy in enumerate(policies, start=1):
                if policy.calendar not in defined:
                    raise ValueError(
                        f"item {number} ({policy.name!r}) counts in calendar {policy.calendar!r}, which no "
                        f"[[sla.calendars]] defines (defined: {', '.join(map(repr, defined))})"
                    )
        # The default is tried last wherever it is written, so it shadows nothing.
        specific = [(n, p) for n, p in enumerate(policies, start=1) if p.priorities or p.channels]
        for index, (number, policy) in enumerate(specific):
            for earlier_number, earlier in specific[:index]:
                if _covers(earlier, policy):
                    raise ValueError(
                        f"item {number} ({policy.name!r}) never applies: item {earlier_number} ({earlier.name!r}) "
                        "comes first and matches every ticket it would (the first match wins)"
                    )
        return policies

    @field_validator("oncall_group", "manager_group")
    @classmethod
    def _check_group(cls, value: str | None) -> str | None:
        return _slack_group(value)

    @field_validator("escalation_channel")
    @classmethod
    def _check_channel(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name a channel (ID like C0123 or #name)")
        return None if value is None else value.strip()

    @model_validator(mode="after")
    def _one_way_to_set_targets(self) -> SlaSettings:
        legacy = sorted(self.model_fields_set & {"first_response_minutes", "high_priority_first_response_minutes"})
        if legacy and self.policies:
            normal, high = self.first_response_minutes, self.high_priority_first_response_minutes
            instead = {
                "first_response_minutes": f'first_response = "{normal}m" in the default policy',
                "high_priority_first_response_minutes": (
                    f'first_response = "{high}m" in a policy with priorities = ["high"]'
                ),
            }
            raise ValueError(
                f"{' and '.join(legacy)} cannot be used together with [[sla.policies]], which would override "
                f"{'them' if len(legacy) > 1 else 'it'}; write {' and '.join(instead[k] for k in legacy)} instead"
            )
        if self.calendars and not self.policies:
            raise ValueError(
                '[[sla.calendars]] are used only by [[sla.policies]] (calendar = "<name>"), and none are given'
            )
        if self.manager_group and not self.escalation_channel:
            raise ValueError("manager_group is set, so escalation_channel must name the channel its alerts go to")
        return self


def _covers(earlier: PolicySettings, later: PolicySettings) -> bool:
    """Whether every ticket `later` applies to is taken by `earlier` first."""

    def wider(wide: tuple[str, ...], narrow: tuple[str, ...]) -> bool:
        return not wide or (bool(narrow) and set(narrow) <= set(wide))

    return wider(earlier.priorities, later.priorities) and wider(earlier.channels, later.channels)


# Cron's day-of-week numbers (0 and 7 are Sunday); APScheduler's own numbers start at Monday, so numbers in a
# cron string are turned into names before APScheduler reads them.
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CRON_FIELDS = ("minute", "hour", "day", "month", "day_of_week")


def cron_fields(value: str, *, weekly: bool) -> dict[str, str]:
    """The cron fields (minute, hour, day, month, day_of_week) of a [reports] schedule; ValueError saying how to
    write it. Daily: "HH:MM" or a 5-field cron string. Weekly: "mon 08:00" or a 5-field cron string."""
    text = " ".join(value.split()).lower()
    short = re.fullmatch(r"(?:(mon|tue|wed|thu|fri|sat|sun) )?(\d{1,2}):(\d{2})", text)
    if short is not None:
        day, hour, minute = short.groups()
        if weekly and day is None:
            raise ValueError(f'{value!r} names no day: write a day and a time, like "mon 08:00", or a cron string')
        if not weekly and day is not None:
            raise ValueError(f'{value!r}: a daily summary takes a time only, like "08:00", or a cron string')
        if int(hour) > 23 or int(minute) > 59:
            raise ValueError(f"{value!r} is not a time of day (00:00 to 23:59)")
        fields = {"minute": str(int(minute)), "hour": str(int(hour)), "day": "*", "month": "*"}
        fields["day_of_week"] = day or "*"
    else:
        parts = text.split(" ")
        if len(parts) != 5:
            example = '"mon 08:00"' if weekly else '"08:00"'
            raise ValueError(
                f"{value!r} is neither {example} nor a 5-field cron string "
                '(minute hour day month weekday, like "0 8 * * 1")'
            )
        fields = dict(zip(_CRON_FIELDS, parts, strict=True))
        fields["day_of_week"] = re.sub(r"\d+", lambda m: _cron_day(m.group(), value), fields["day_of_week"])
    try:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger(**fields)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a schedule APScheduler can read ({exc})") from None
    return fields


def _cron_day(number: str, value: str) -> str:
    if int(number) > 7:
        raise ValueError(f"{value!r}: a weekday is 0 to 7 (0 and 7 are Sunday) or a name like mon")
    return _CRON_DAYS[int(number)]


class ReportSettings(_Section):
    """Scheduled summaries of the SLA figures, posted to the managers' channel."""

    channel: str | None = None
    timezone: str = "UTC"
    daily: str | None = None
    weekly: str | None = None

    @field_validator("channel")
    @classmethod
    def _check_channel(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name a channel (ID like C0123 or #name)")
        return None if value is None else value.strip()

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        return load_zone(value).key

    @field_validator("daily")
    @classmethod
    def _check_daily(cls, value: str | None) -> str | None:
        if value is not None:
            cron_fields(value, weekly=False)
        return value

    @field_validator("weekly")
    @classmethod
    def _check_weekly(cls, value: str | None) -> str | None:
        if value is not None:
            cron_fields(value, weekly=True)
        return value

    @model_validator(mode="after")
    def _needs_a_channel(self) -> ReportSettings:
        scheduled = [key for key in ("daily", "weekly") if getattr(self, key) is not None]
        if scheduled and self.channel is None:
            raise ValueError(f"{' and '.join(scheduled)} set, so channel must name the managers' channel to post in")
        return self

    def schedules(self) -> dict[str, dict[str, str]]:
        """The cron fields of each summary configured, by kind ("daily", "weekly")."""
        found = {}
        if self.daily is not None:
            found["daily"] = cron_fields(self.daily, weekly=False)
        if self.weekly is not None:
            found["weekly"] = cron_fields(self.weekly, weekly=True)
        return found


class IngestSettings(_Section):
    # Posts stored together in one transaction, at most; a batch is whatever has queued up to this.
    batch_size: int = Field(default=500, ge=1, le=5000)
    # Posts read but not yet stored, at most: past this the feeds wait (a stream is read more slowly, a poll
    # pauses), so a burst costs memory only up to here and nothing is dropped.
    queue_size: int = Field(default=2000, ge=1, le=100_000)


class DatabaseSettings(_Section):
    # validate_default: the default's relative path is resolved like any other.
    url: str = Field(default=DEFAULT_DATABASE_URL, validate_default=True)
    auto_migrate: bool = True
    # Postgres only: how often the leader checks its lock and the others try to take it (also each try's timeout).
    leader_check_s: float = Field(default=5.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _check_driver(cls, value: str) -> str:
        if not (value.startswith("sqlite+aiosqlite://") or value.startswith("postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// (the async drivers mentiondesk uses)"
            )
        try:
            return with_absolute_sqlite_path(value)
        except ValueError as exc:  # e.g. a port that is not a number
            raise ValueError(f"cannot be read as a database URL ({exc})") from None


class HttpSettings(_Section):
    """The daemon's one HTTP server: health probes, Slack's endpoints in HTTP mode and the dashboard."""

    # On by default, on loopback: ops get /healthz and /readyz without writing anything.
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8089, ge=0, le=65535)  # 0: any free port (tests)
    # The name of the environment variable holding the dashboard's bearer token (the token never goes in the file).
    token_env: str | None = None
    # /readyz fails when a message has waited in the outbox (pending, not parked) longer than this.
    outbox_stuck_after_s: float = Field(default=300.0, gt=0)

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('must name an address to listen on, like "127.0.0.1" or "0.0.0.0"')
        return value.strip()

    @field_validator("token_env")
    @classmethod
    def _check_token_env(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                f"must be the name of an environment variable (like MENTIONDESK_DASHBOARD_TOKEN), got {value!r}; "
                "the token itself goes in that variable, never in this file"
            )
        return value


class RetentionSettings(_Section):
    """How long customers' text and handles are kept (storage/retention.py says what is erased and what stays)."""

    # Days after a conversation ended; 0 keeps everything.
    customer_data_days: int = Field(default=0, ge=0)


class DaemonSettings(_Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "json": one object per line with ticket and status ids as fields, for log shippers.
    log_format: Literal["text", "json"] = "text"
    shutdown_timeout_s: float = Field(default=10.0, gt=0)


class Secrets(BaseModel):
    """Credentials read from the environment; never part of the file, never logged."""

    model_config = ConfigDict(frozen=True)
    mastodon_token: str | None = Field(default=None, repr=False)
    slack_bot_token: str | None = Field(default=None, repr=False)
    slack_app_token: str | None = Field(default=None, repr=False)
    slack_signing_secret: str | None = Field(default=None, repr=False)
    # Read from the variable http.token_env names.
    dashboard_token: str | None = Field(default=None, repr=False)


class Settings(_Section):
    mastodon: MastodonSettings
    slack: SlackSettings
    routing: RoutingSettings = RoutingSettings()
    classifier: ClassifierSettings = ClassifierSettings()
    tickets: TicketSettings = TicketSettings()
    sla: SlaSettings = SlaSettings()
    ingest: IngestSettings = IngestSettings()
    reports: ReportSettings = ReportSettings()
    retention: RetentionSettings = RetentionSettings()
    # Built per load, not once at import: its SQLite path is resolved against the working directory then.
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    daemon: DaemonSettings = DaemonSettings()
    http: HttpSettings = HttpSettings()

    def http_server(self) -> HttpSettings | None:
        """Where the daemon's HTTP server listens; None when it is turned off (http.enabled = false)."""
        return self.http if self.http.enabled else None

    @model_validator(mode="after")
    def _http_mode_needs_the_server(self) -> Settings:
        if self.slack.mode == "http" and not self.slack.dry_run and not self.http.enabled:
            raise ValueError(
                'http.enabled = false, but slack.mode = "http" needs the HTTP server (Slack posts to /slack/*): '
                'remove http.enabled, or use slack.mode = "socket"'
            )
        return self

    @model_validator(mode="after")
    def _policies_name_ticket_channels(self) -> Settings:
        # A ticket's channel is its routing rule's or the default one, as written there; a policy naming any
        # other channel would never apply.
        used = {self.slack.default_channel, *(rule.channel for rule in self.routing.rules)}
        for number, policy in enumerate(self.sla.policies, start=1):
            unknown = [c for c in policy.channels if c not in used]
            if unknown:
                raise ValueError(
                    f"sla.policies.channels (item {number}): no ticket goes to {', '.join(map(repr, unknown))}; "
                    "write channels as slack.default_channel and routing.rules name them "
                    f"({', '.join(map(repr, sorted(used)))})"
                )
        return self


class Config(BaseModel):
    """Settings from the file plus secrets from the environment."""

    model_config = ConfigDict(frozen=True)
    settings: Settings
    secrets: Secrets
    source: str = "<memory>"

    def require_secrets(self) -> None:
        """Raise ConfigError unless the credentials the daemon needs to run are present."""
        missing = []
        if not self.secrets.mastodon_token:
            missing.append("MENTIONDESK_MASTODON_TOKEN")
        slack = self.settings.slack
        if not slack.dry_run and not self.secrets.slack_bot_token:
            missing.append("MENTIONDESK_SLACK_BOT_TOKEN")
        if not slack.dry_run and slack.mode == "socket" and not self.secrets.slack_app_token:
            missing.append("MENTIONDESK_SLACK_APP_TOKEN (Socket Mode)")
        if not slack.dry_run and slack.mode == "http" and not self.secrets.slack_signing_secret:
            # Never run HTTP mode unverified: anyone who finds the URL could act as an agent.
            missing.append("MENTIONDESK_SLACK_SIGNING_SECRET (HTTP mode)")
        http = self.settings.http
        if http.token_env is not None and not self.secrets.dashboard_token:
            # Named but empty: serving the dashboard to anyone would not be what was asked for.
            missing.append(f"{http.token_env} (named by http.token_env, the dashboard's token)")
        if missing:
            names = ", ".join(missing)
            raise ConfigError(f"{names} not set (or the matching *_FILE variable naming a file)")


SECRET_VARIABLES = {
    "mastodon_token": "MENTIONDESK_MASTODON_TOKEN",
    "slack_bot_token": "MENTIONDESK_SLACK_BOT_TOKEN",
    "slack_app_token": "MENTIONDESK_SLACK_APP_TOKEN",
    "slack_signing_secret": "MENTIONDESK_SLACK_SIGNING_SECRET",
}


def read_secrets(environ: Mapping[str, str], *, dashboard_token_env: str | None = None) -> Secrets:
    """Read each secret from VAR or from the file named by VAR_FILE (for systemd credentials)."""
    variables = dict(SECRET_VARIABLES)
    if dashboard_token_env is not None:
        variables["dashboard_token"] = dashboard_token_env
    return Secrets(**{field: _read_secret(environ, var) for field, var in variables.items()})


def _read_secret(environ: Mapping[str, str], var: str) -> str | None:
    direct = environ.get(var, "").strip()
    file_name = environ.get(f"{var}_FILE", "").strip()
    if direct and file_name:
        raise ConfigError(f"both {var} and {var}_FILE are set; use one")
    if file_name:
        try:
            direct = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{var}_FILE: cannot read {file_name}: {exc.strerror}") from exc
        if not direct:
            raise ConfigError(f"{var}_FILE: {file_name} is empty")
    return direct or None


# pydantic's error types for our field types, said in TOML's terms (a tuple field is a TOML list).
_PLAIN_MESSAGES = {
    "extra_forbidden": "unknown key (check the spelling against config.example.toml)",
    "missing": "required key is missing",
    "tuple_type": 'must be a list, like ["a", "b"]',
    "list_type": 'must be a list, like ["a", "b"]',
    "string_type": "must be a string in quotes",
    "path_type": "must be a file path in quotes",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_parsing_size": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "model_type": "must be a table of keys and values",
    "dict_type": "must be a table of keys and values",
}


def _describe(error: Mapping[str, Any]) -> str:
    loc = error["loc"]
    key = ".".join(part for part in loc if isinstance(part, str)) or "(top level)"
    # List positions counted from 1, as a person counts [[routing.rules]] tables.
    items = ", ".join(f"item {part + 1}" for part in loc if isinstance(part, int))
    if items:
        key = f"{key} ({items})"
    kind = error["type"]
    if not loc and kind == "value_error":
        return str(error["ctx"]["error"])  # a check across sections, whose message names its keys
    if kind in _PLAIN_MESSAGES:
        message = _PLAIN_MESSAGES[kind]
    elif kind in ("value_error", "assertion_error"):
        message = str(error["ctx"]["error"])  # our validators' own words, without pydantic's "Value error, "
    else:
        # Ranges and choices: "Input should be greater than 0", "Input should be 'socket' or 'http'".
        message = str(error["msg"]).replace("Input should be", "must be", 1)
    return f"{key}: {message}"


def parse_settings(data: Mapping[str, Any], *, source: str) -> Settings:
    """Validate a parsed TOML document; ConfigError lists every bad key."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate the TOML file at path, and read secrets from environ."""
    settings = load_settings(path)
    secrets = read_secrets(os.environ if environ is None else environ, dashboard_token_env=settings.http.token_env)
    return Config(settings=settings, secrets=secrets, source=str(path))


def load_settings(path: Path) -> Settings:
    """Load and validate the TOML file at path, without the secrets (a reload keeps those it started with)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_settings(data, source=str(path))


SYSTEM_CONFIG = Path("/etc/mentiondesk/config.toml")


def find_config(environ: Mapping[str, str], cwd: Path) -> Path:
    """The config file to use when none is given: $MENTIONDESK_CONFIG, else ./config.toml, else SYSTEM_CONFIG."""
    named = environ.get("MENTIONDESK_CONFIG", "").strip()
    if named:
        path = cwd / named
        if not path.exists():
            raise ConfigError(f"{path} (named by $MENTIONDESK_CONFIG): no such config file")
        return path
    candidates = [cwd / "config.toml", SYSTEM_CONFIG]
    for path in candidates:
        if path.exists():
            return path
    looked = ", ".join(["$MENTIONDESK_CONFIG (not set)", *map(str, candidates)])
    raise ConfigError(
        f"no config file found; looked for {looked}. Name one with --config FILE "
        "(config.example.toml documents every key)"
    )
