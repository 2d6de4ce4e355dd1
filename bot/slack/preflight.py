"""What `run` and `check` confirm before relying on Slack: the tokens, and every configured channel.

Each call is bounded by slack.request_timeout_s. A refusal raises ``SlackSetupError`` (a person must fix
something); no answer at all raises ``SlackUnavailable`` (it may pass by itself).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from mentiondesk.bot.config import Settings, SlackSettings
from mentiondesk.bot.retry import Verdict, sort_slack_error
from mentiondesk.bot.slack.problems import (
    APP_TOKEN,
    BOT_TOKEN,
    TOKEN_CODES,
    ChannelRef,
    SlackSetupError,
    SlackUnavailable,
    Token,
    describe_unreachable,
    error_code,
    explain_channel,
    refusal,
    token_format_problem,
)

CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")
# conversations.list is a Tier 2 method (about 20 calls a minute): ask for Slack's largest page.
LIST_PAGE_SIZE = 1000
LIST_MAX_PAGES = 100
RATE_LIMIT_RETRIES = 3
RATE_LIMIT_MAX_WAIT_S = 60.0


@dataclass(frozen=True)
class ConfiguredChannel:
    key: str
    channel: str


def configured_channels(settings: Settings) -> list[ConfiguredChannel]:
    """Every channel the config names, with the key that names it: a new kind of channel is added here."""
    slack = settings.slack
    found = [ConfiguredChannel("slack.default_channel", slack.default_channel)]
    found += [
        ConfiguredChannel(f"routing.rules[{i}].channel", rule.channel) for i, rule in enumerate(settings.routing.rules)
    ]
    if slack.approval_channel:
        found.append(ConfiguredChannel("slack.approval_channel", slack.approval_channel))
    if settings.sla.escalation_channel:
        found.append(ConfiguredChannel("sla.escalation_channel", settings.sla.escalation_channel))
    if settings.reports.channel:
        found.append(ConfiguredChannel("reports.channel", settings.reports.channel))
    if settings.classifier.triage_channel:
        found.append(ConfiguredChannel("classifier.triage_channel", settings.classifier.triage_channel))
    return found


def channel_keys(channels: list[ConfiguredChannel]) -> dict[str, str]:
    """The config key of each channel value (the first one, when several keys name the same channel)."""
    keys: dict[str, str] = {}
    for configured in channels:
        keys.setdefault(configured.channel, configured.key)
    return keys


@dataclass(frozen=True)
class BotIdentity:
    name: str
    team: str


async def _call(
    request: Awaitable[AsyncSlackResponse], settings: SlackSettings, *, token: Token = BOT_TOKEN
) -> AsyncSlackResponse:
    """One Slack call within slack.request_timeout_s; failures become SlackSetupError or SlackUnavailable."""
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            return await request
    except SlackApiError as exc:
        found = refusal(exc, token=token, base_url=settings.base_url)
        if found is None:
            raise SlackUnavailable(
                describe_unreachable(exc, base_url=settings.base_url, timeout_s=settings.request_timeout_s)
            ) from exc
        variable = token.variable if found.code in TOKEN_CODES else None
        raise SlackSetupError(found.explanation, token_variable=variable) from exc
    except (TimeoutError, OSError, aiohttp.ClientError) as exc:
        raise SlackUnavailable(
            describe_unreachable(exc, base_url=settings.base_url, timeout_s=settings.request_timeout_s)
        ) from exc


def _require_format(token: Token, value: str | None) -> str:
    if not value:
        raise SlackSetupError(f"{token.variable} is not set", token_variable=token.variable)
    problem = token_format_problem(token, value)
    if problem is not None:
        raise SlackSetupError(problem, token_variable=token.variable)
    return value


async def verify_bot_token(client: AsyncWebClient, value: str | None, settings: SlackSettings) -> BotIdentity:
    """auth.test with the bot token: who the bot is, or why Slack will not have it."""
    _require_format(BOT_TOKEN, value)
    response = await _call(client.auth_test(), settings)
    return BotIdentity(name=str(response.get("user") or "mentiondesk"), team=str(response.get("team") or "?"))


async def verify_app_token(client: AsyncWebClient, value: str | None, settings: SlackSettings) -> None:
    """apps.connections.open with the app-level token, as Socket Mode will call it."""
    app_token = _require_format(APP_TOKEN, value)
    await _call(client.apps_connections_open(app_token=app_token), settings, token=APP_TOKEN)


async def _with_rate_limit(
    make: Callable[[], Awaitable[AsyncSlackResponse]], settings: SlackSettings
) -> AsyncSlackResponse:
    """A call that waits out Slack's Retry-After a few times rather than fail the check."""
    for _ in range(RATE_LIMIT_RETRIES):
        try:
            return await _call(make(), settings)
        except SlackUnavailable as exc:
            cause = exc.__cause__
            sorted_ = sort_slack_error(cause) if cause is not None else None
            if sorted_ is None or sorted_.verdict is not Verdict.RATE_LIMITED:
                raise
            await asyncio.sleep(min(sorted_.wait_s or 1.0, RATE_LIMIT_MAX_WAIT_S))
    return await _call(make(), settings)


async def _channels_by_name(client: AsyncWebClient, settings: SlackSettings) -> dict[str, dict[str, Any]]:
    """Every public channel, and every private one the bot is in, by name (conversations.list, paged)."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    for _ in range(LIST_MAX_PAGES):
        page = await _with_rate_limit(
            partial(
                client.conversations_list, types="public_channel,private_channel", limit=LIST_PAGE_SIZE, cursor=cursor
            ),
            settings,
        )
        for channel in page.get("channels") or []:
            found[str(channel["name"])] = channel
        cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
        if cursor is None:
            return found
    raise SlackUnavailable(f"more than {LIST_MAX_PAGES * LIST_PAGE_SIZE} channels; give channels as IDs (C0123ABC)")


async def _channel_by_id(client: AsyncWebClient, channel_id: str, settings: SlackSettings) -> dict[str, Any] | None:
    try:
        response = await _with_rate_limit(partial(client.conversations_info, channel=channel_id), settings)
    except SlackSetupError as exc:
        if isinstance(exc.__cause__, SlackApiError) and error_code(exc.__cause__) == "channel_not_found":
            return None
        raise
    return dict(response["channel"])


async def check_channels(
    client: AsyncWebClient, channels: list[ConfiguredChannel], settings: SlackSettings, *, bot_name: str
) -> list[str]:
    """One line per configured channel that is missing, archived or without the bot; empty when all are fine."""
    by_name: Mapping[str, dict[str, Any]] | None = None
    problems = []
    for configured in channels:
        if CHANNEL_ID.fullmatch(configured.channel):
            info = await _channel_by_id(client, configured.channel, settings)
        else:
            if by_name is None:
                by_name = await _channels_by_name(client, settings)
            info = by_name.get(configured.channel.removeprefix("#").lower())
        problem = _channel_problem(configured, info, bot_name=bot_name)
        if problem is not None:
            problems.append(problem)
    return problems


def _channel_problem(configured: ConfiguredChannel, info: dict[str, Any] | None, *, bot_name: str) -> str | None:
    ref = ChannelRef(configured.channel, key=configured.key, name=None if info is None else str(info["name"]))
    if info is None:
        code = "channel_not_found"
    elif info.get("is_archived"):
        code = "is_archived"
    elif not info.get("is_member"):
        code = "not_in_channel"
    else:
        return None
    return explain_channel(code, ref, bot_name=bot_name)
