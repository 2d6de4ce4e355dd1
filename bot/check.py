"""`mentiondesk check`: validate the configuration and every connection it names."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from slack_sdk.web.async_client import AsyncWebClient

from mentiondesk.bot.config import Config
from mentiondesk.bot.dead_letter_check import check_dead_letters
from mentiondesk.bot.mastodon.client import MastodonClient
from mentiondesk.bot.slack.preflight import check_channels, configured_channels, verify_app_token, verify_bot_token
from mentiondesk.bot.slack.problems import SlackSetupError, SlackUnavailable
from mentiondesk.storage.db import (
    DatabaseError,
    NoDatabaseError,
    current_revision,
    head_revision,
    open_engine,
    session_factory,
)
from mentiondesk.storage.outbox import parked_messages, pending_count
from mentiondesk.storage.urls import describe_database


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


async def _check_mastodon(config: Config) -> str:
    token = config.secrets.mastodon_token
    if not token:
        raise RuntimeError("MENTIONDESK_MASTODON_TOKEN is not set")
    client = MastodonClient(
        config.settings.mastodon.base_url, token, timeout_s=config.settings.mastodon.request_timeout_s
    )
    account = await client.verify_credentials()
    return f"signed in as @{account.acct} on {config.settings.mastodon.base_url}"


def _slack_client(config: Config) -> AsyncWebClient:
    slack = config.settings.slack
    return AsyncWebClient(
        token=config.secrets.slack_bot_token, base_url=slack.base_url, timeout=int(slack.request_timeout_s)
    )


async def _check_slack(config: Config) -> str:
    slack = config.settings.slack
    if slack.dry_run:
        return "dry run: cards are printed, Slack is not contacted"
    client = _slack_client(config)
    bot = await verify_bot_token(client, config.secrets.slack_bot_token, slack)
    return f"bot {bot.name} in workspace {bot.team}; {await _check_intake(config, client)}"


async def _check_intake(config: Config, client: AsyncWebClient) -> str:
    """Whether Slack will be able to reach the daemon in the configured mode."""
    slack = config.settings.slack
    if slack.mode == "http":
        if not config.secrets.slack_signing_secret:
            raise RuntimeError("HTTP mode needs MENTIONDESK_SLACK_SIGNING_SECRET")
        http = config.settings.http_server()
        assert http is not None  # HTTP mode always has a server
        return f"HTTP mode on {http.host}:{http.port}, signing secret set"
    if not config.secrets.slack_app_token:
        raise RuntimeError("Socket Mode needs MENTIONDESK_SLACK_APP_TOKEN (an xapp- app-level token)")
    await verify_app_token(client, config.secrets.slack_app_token, slack)
    return "Socket Mode app token accepted"


async def _check_slack_channels(config: Config) -> str:
    """Every configured channel exists and has the bot in it; each that fails is named by its config key."""
    settings = config.settings
    if settings.slack.dry_run:
        return "dry run: not checked"
    client = _slack_client(config)
    channels = configured_channels(settings)
    try:
        bot = await verify_bot_token(client, config.secrets.slack_bot_token, settings.slack)
        problems = await check_channels(client, channels, settings.slack, bot_name=bot.name)
    except SlackSetupError as exc:
        if exc.token_variable is None:
            raise
        raise RuntimeError(f"not checked: {exc.token_variable} is not usable (see slack)") from None
    except SlackUnavailable:
        raise RuntimeError("not checked: Slack cannot be reached (see slack)") from None
    if problems:
        raise RuntimeError("\n".join(problems))
    count = len({c.channel for c in channels})
    listed = ", ".join(f"{c.channel} ({c.key})" for c in channels)
    exist = f"{count} channels exist and the bot is in each" if count > 1 else "the channel exists and the bot is in it"
    return f"{exist}: {listed}"


async def _check_database(config: Config) -> str:
    url, auto_migrate = config.settings.database.url, config.settings.database.auto_migrate
    name = describe_database(url)
    try:
        engine = await open_engine(url, create=False)
    except NoDatabaseError:
        if not auto_migrate:
            raise
        return f"no database at {name} yet: `mentiondesk run` creates it at start (or `mentiondesk db upgrade`)"
    try:
        current = await current_revision(engine)
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        if auto_migrate:
            return f"{name} reachable; schema {current or 'empty'} will be upgraded to {head} at start"
        raise DatabaseError(f"{name}: schema is at {current or 'nothing'}, needs {head}: run `mentiondesk db upgrade`")
    return f"{name} reachable, schema current ({head})"


async def _check_outbox(config: Config) -> str:
    """Slack messages parked because Slack refused them, grouped by why, with what to do."""
    try:
        engine = await open_engine(config.settings.database.url, create=False)
    except NoDatabaseError:
        return "no database yet, so nothing waiting"
    try:
        if await current_revision(engine) is None:
            return "no schema yet, so nothing waiting"
        async with session_factory(engine)() as session:
            parked = await parked_messages(session)
            waiting = await pending_count(session)
    except DatabaseError:
        raise RuntimeError("not checked: the database cannot be read (see database)") from None
    finally:
        await engine.dispose()
    if not parked:
        return f"{waiting} message{'s' if waiting != 1 else ''} waiting to be sent, none parked"
    retry = f"retried every {config.settings.slack.parked_retry_s:g}s and at each start"
    lines = [f"{len(parked)} message{'s' if len(parked) != 1 else ''} parked ({retry}):"]
    for reason, tickets in _by_reason(parked).items():
        shown = ", ".join(f"#{t}" for t in tickets[:5]) + (", ..." if len(tickets) > 5 else "")
        lines.append(f"{len(tickets)} (ticket{'s' if len(tickets) > 1 else ''} {shown}): {reason}")
    raise RuntimeError("\n".join(lines))


def _by_reason(parked: list[tuple[int, str]]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for ticket_id, reason in parked:
        grouped.setdefault(reason, []).append(ticket_id)
    return grouped


CHECKS: list[tuple[str, Callable[[Config], Awaitable[str]]]] = [
    ("mastodon", _check_mastodon),
    ("slack", _check_slack),
    ("slack channels", _check_slack_channels),
    ("database", _check_database),
    ("slack outbox", _check_outbox),
    ("dead letters", lambda config: check_dead_letters(config.settings.database.url)),
]


async def run_checks(config: Config) -> list[CheckResult]:
    results = []
    for name, check in CHECKS:
        try:
            results.append(CheckResult(name, True, await check(config)))
        except Exception as exc:
            results.append(CheckResult(name, False, str(exc) or type(exc).__name__))
    return results


def report(results: list[CheckResult], out: TextIO) -> bool:
    for result in results:
        mark = "ok  " if result.ok else "FAIL"
        # A detail of several lines (one per channel or cause) is indented under its check.
        detail = result.detail.replace("\n", "\n     ")
        out.write(f"{mark} {result.name}: {detail}\n")
    return all(r.ok for r in results)
