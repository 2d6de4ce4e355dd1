"""What a Slack failure means to the person running mentiondesk: what failed, the likely cause, what to fix.

One table, used by `check`, by the token check at start and by the outbox when it parks a message, so a
refusal reads the same wherever it shows up. Each refusal also says how far it reaches (``Reach``): the
outbox holds back only what the same cause would refuse too.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from enum import Enum

import aiohttp
from slack_sdk.errors import SlackApiError

from mentiondesk.bot.retry import Verdict, sort_slack_error

MANIFEST = "deploy/slack-app-manifest.yaml"
# The bot's name in the app manifest; what `/invite @...` takes until auth.test has told us the real one.
DEFAULT_BOT_NAME = "mentiondesk"


class Reach(Enum):
    EVERYTHING = "everything"  # the token or the app: no call succeeds until it is fixed
    CHANNEL = "channel"  # one channel; the others keep working
    MESSAGE = "message"  # this message only


@dataclass(frozen=True)
class Refusal:
    code: str
    reach: Reach
    explanation: str


class SlackProblem(Exception):
    """Slack cannot be used as configured; the message says what to fix."""


class SlackSetupError(SlackProblem):
    """Slack refused mentiondesk's credentials or setup: nothing will work until a person fixes it."""

    def __init__(self, message: str, *, token_variable: str | None = None) -> None:
        super().__init__(message)
        self.token_variable = token_variable  # set when the token itself is what Slack refused


class SlackUnavailable(SlackProblem):
    """Slack could not be reached or did not answer: this may pass by itself."""


@dataclass(frozen=True)
class Token:
    variable: str
    prefix: str
    kind: str
    remedy: str


BOT_TOKEN = Token(
    "MENTIONDESK_SLACK_BOT_TOKEN",
    "xoxb-",
    "a bot token",
    "reinstall the app and copy the Bot User OAuth Token (OAuth & Permissions) into MENTIONDESK_SLACK_BOT_TOKEN",
)
APP_TOKEN = Token(
    "MENTIONDESK_SLACK_APP_TOKEN",
    "xapp-",
    "an app-level token",
    "generate an app-level token with the connections:write scope (Basic Information → App-Level Tokens) "
    "for MENTIONDESK_SLACK_APP_TOKEN",
)
# What a token is, by its prefix; the prefixes are Slack's public token types, never part of the secret.
_TOKEN_KINDS = {
    "xoxb-": "a bot token",
    "xoxe.xoxb-": "a bot token",  # a rotating bot token
    "xapp-": "an app-level token",
    "xoxp-": "a user token, which would post as that person",
    "xoxe.xoxp-": "a user token, which would post as that person",
    "xoxe-": "a refresh token",
}
# Where a token of each kind mentiondesk uses belongs, to point out two swapped tokens.
_TOKEN_HOMES = {
    "xoxb-": "MENTIONDESK_SLACK_BOT_TOKEN",
    "xoxe.xoxb-": "MENTIONDESK_SLACK_BOT_TOKEN",
    "xapp-": "MENTIONDESK_SLACK_APP_TOKEN",
}

_TOKEN_CAUSES = {
    "invalid_auth": "the token is wrong or was revoked",
    "not_authed": "no token reached Slack",
    "token_revoked": "the token was revoked (the app was uninstalled or its tokens regenerated)",
    "token_expired": "the token expired (token rotation is on; mentiondesk needs a token that does not expire)",
    "account_inactive": "the bot user or the workspace was deactivated",
}
# Codes that mean the token itself is refused (as opposed to the app's scopes or a workspace policy).
TOKEN_CODES = frozenset({*_TOKEN_CAUSES, "not_allowed_token_type"})
_ADMIN_CODES = {
    "access_denied",
    "accesslimited",
    "ekm_access_denied",
    "enterprise_is_restricted",
    "no_permission",
    "org_login_required",
    "team_access_not_granted",
    "two_factor_setup_required",
}
_CHANNEL_CODES = {
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "is_inactive",
    "restricted_action",
    "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel",
    "restricted_action_non_threadable_channel",
}
_MESSAGE_CAUSES = {
    "msg_too_long": "the message is longer than Slack allows",
    "no_text": "the message is empty",
    "invalid_blocks": "Slack does not accept the message's blocks",
    "invalid_blocks_format": "the message's blocks are malformed",
    "too_many_attachments": "the message has too many attachments",
    "invalid_metadata_format": "the message's metadata is malformed",
    "invalid_metadata_schema": "the message's metadata is malformed",
    "metadata_too_large": "the message's metadata is too large",
    "message_not_found": "the card is no longer in Slack (deleted?), so it cannot be changed",
    "cant_update_message": "the card is not the bot's own message, so it cannot be changed",
    "edit_window_closed": "the workspace no longer allows the card to be edited",
    "thread_not_found": "the card it belongs under is no longer in Slack",
    "cannot_reply_to_message": "Slack does not allow a reply under this card",
}


def token_format_problem(token: Token, value: str) -> str | None:
    """Why ``value`` cannot be the ``token`` asked for, judged by its prefix alone; None when it may be."""
    if value.startswith(token.prefix) or value.startswith("xoxe." + token.prefix):
        return None
    prefix = next((p for p in _TOKEN_KINDS if value.startswith(p)), None)
    what = f" (this is {_TOKEN_KINDS[prefix]})" if prefix else ""
    if prefix in _TOKEN_HOMES and _TOKEN_HOMES[prefix] != token.variable:
        what = f" (this is {_TOKEN_KINDS[prefix]}, which belongs in {_TOKEN_HOMES[prefix]})"
    return f"{token.variable} must be {token.kind} starting {token.prefix}{what}; {token.remedy}"


@dataclass(frozen=True)
class ChannelRef:
    """A channel as the config or a row names it, with the config key and the #name when they are known."""

    channel: str
    key: str | None = None
    name: str | None = None

    def where(self) -> str:
        return f'{self.key} = "{self.channel}"' if self.key else f"channel {self.channel}"

    def display(self) -> str:
        if self.name:
            return "#" + self.name.removeprefix("#")
        return self.channel if self.channel.startswith("#") else f"channel {self.channel}"


def explain_channel(code: str, ref: ChannelRef, *, bot_name: str = DEFAULT_BOT_NAME) -> str:
    """One line on why the bot cannot post in a channel, and what to do about it."""
    fix = f"set {ref.key} to another channel" if ref.key else "route its tickets elsewhere"
    if code == "channel_not_found":
        return (
            f"{ref.where()}: no such channel (a private channel stays invisible to the bot until it is "
            f"invited: /invite @{bot_name} there)"
        )
    if code == "not_in_channel":
        return f"{ref.where()}: the bot is not a member: /invite @{bot_name} in {ref.display()}"
    if code in ("is_archived", "is_inactive"):
        return f"{ref.where()}: {ref.display()} is archived: unarchive it, or {fix}"
    return (
        f"{ref.where()}: the workspace does not let the bot post in {ref.display()} ({code}): "
        f"ask a Slack admin, or {fix}"
    )


def explain_token(token: Token, code: str) -> str:
    if code == "not_allowed_token_type":
        return f"{token.variable} must be {token.kind} starting {token.prefix} (Slack says {code}); {token.remedy}"
    cause = _TOKEN_CAUSES.get(code, "Slack does not accept it")
    return f"Slack rejected {token.variable} ({code}): {cause}; {token.remedy}"


def error_code(exc: SlackApiError) -> str | None:
    data = exc.response.data
    return str(data["error"]) if isinstance(data, dict) and data.get("error") else None


def refusal(
    exc: BaseException,
    *,
    token: Token = BOT_TOKEN,
    channel: ChannelRef | None = None,
    bot_name: str = DEFAULT_BOT_NAME,
    base_url: str | None = None,
) -> Refusal | None:
    """What a Slack error means, when Slack refused for good; None when trying again later may work."""
    if not isinstance(exc, SlackApiError) or sort_slack_error(exc).verdict is not Verdict.FATAL:
        return None
    code = error_code(exc)
    if code is None:
        # No Slack error code at all: whatever answered is not Slack's Web API (a wrong URL, a proxy).
        status = exc.response.status_code
        where = f"slack.base_url = {base_url}" if base_url else "slack.base_url"
        return Refusal(f"http_{status}", Reach.EVERYTHING, f"{where} answered HTTP {status}: is slack.base_url right?")
    if code in TOKEN_CODES:
        return Refusal(code, Reach.EVERYTHING, explain_token(token, code))
    if code == "missing_scope":
        needed = exc.response.get("needed") or "a"
        return Refusal(
            code,
            Reach.EVERYTHING,
            f"the Slack app lacks the {needed} scope: add it as {MANIFEST} does, and reinstall the app",
        )
    if code in _ADMIN_CODES:
        return Refusal(
            code, Reach.EVERYTHING, f"Slack refused the call ({code}): a workspace admin has restricted the app"
        )
    if code in _CHANNEL_CODES and channel is not None:
        return Refusal(code, Reach.CHANNEL, explain_channel(code, channel, bot_name=bot_name))
    return Refusal(code, Reach.MESSAGE, _explain_message(exc, code))


def _explain_message(exc: SlackApiError, code: str) -> str:
    cause = _MESSAGE_CAUSES.get(code, "Slack will not take this message")
    details = (exc.response.get("response_metadata") or {}).get("messages") or []
    said = f" ({details[0]})" if details else ""
    # Every message is mentiondesk's own making, so one Slack refuses is a bug to report, not a setting to fix.
    return f"Slack refused the message ({code}): {cause}{said}; please report this as a mentiondesk bug"


def describe_unreachable(exc: BaseException, *, base_url: str, timeout_s: float) -> str:
    """Why Slack did not answer at all, naming the key that points at it."""
    where = f"cannot reach Slack at slack.base_url = {base_url}"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"{where}: no answer within {timeout_s:g}s (slack.request_timeout_s)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, socket.gaierror):
            return f"{where}: cannot resolve the host ({error.strerror})"
        if error.errno:
            return f"{where}: {os.strerror(error.errno).lower()}"
        return f"{where}: {error}"
    if isinstance(exc, SlackApiError):
        return f"{where}: Slack answered HTTP {exc.response.status_code}; it may be having trouble, try again later"
    return f"{where}: {type(exc).__name__}: {exc}"
