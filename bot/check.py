"""`mentiondesk check`: validate the configuration and every connection it names."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from mentiondesk.bot.config import Config
from mentiondesk.bot.dead_letter_check import check_dead_letters
from mentiondesk.bot.mastodon.client import MastodonClient
from mentiondesk.storage.db import DatabaseError, NoDatabaseError, current_revision, head_revision, open_engine
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


async def _check_slack(config: Config) -> str:
    slack = config.settings.slack
    if slack.dry_run:
        return "dry run: cards are printed, Slack is not contacted"
    if not config.secrets.slack_bot_token:
        raise RuntimeError("MENTIONDESK_SLACK_BOT_TOKEN is not set")
    client = AsyncWebClient(
        token=config.secrets.slack_bot_token, base_url=slack.base_url, timeout=int(slack.request_timeout_s)
    )
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        raise RuntimeError(f"auth.test failed: {exc.response.get('error') or exc.response.status_code}") from None
    return f"bot {response.get('user')} in workspace {response.get('team')}; {await _check_intake(config, client)}"


async def _check_intake(config: Config, client: AsyncWebClient) -> str:
    """Whether Slack will be able to reach the daemon in the configured mode."""
    slack = config.settings.slack
    if slack.mode == "http":
        if not config.secrets.slack_signing_secret:
            raise RuntimeError("HTTP mode needs MENTIONDESK_SLACK_SIGNING_SECRET")
        return f"HTTP mode on {slack.http_host}:{slack.http_port}, signing secret set"
    if not config.secrets.slack_app_token:
        raise RuntimeError("Socket Mode needs MENTIONDESK_SLACK_APP_TOKEN (an xapp- app-level token)")
    try:
        await client.apps_connections_open(app_token=config.secrets.slack_app_token)
    except SlackApiError as exc:
        error = exc.response.get("error") or exc.response.status_code
        raise RuntimeError(f"Socket Mode: the app token was refused ({error})") from None
    return "Socket Mode app token accepted"


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


CHECKS: list[tuple[str, Callable[[Config], Awaitable[str]]]] = [
    ("mastodon", _check_mastodon),
    ("slack", _check_slack),
    ("database", _check_database),
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
        out.write(f"{mark} {result.name}: {result.detail}\n")
    return all(r.ok for r in results)
