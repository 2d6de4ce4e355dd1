"""Mastodon.py failures said for the person setting mentiondesk up: what failed, why, and which key to fix.

Mastodon.py reports an HTTP error as a bare tuple (``('Mastodon API returned error', 401, 'Unauthorized', ...)``)
and a network error as requests' and urllib3's chained messages; neither names the setting behind it.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

from mastodon.errors import MastodonAPIError, MastodonError, MastodonNetworkError, MastodonRatelimitError

from mentiondesk.bot.config import SECRET_VARIABLES

TOKEN_VARIABLE = SECRET_VARIABLES["mastodon_token"]
SCOPES = "read:accounts read:notifications read:statuses write:statuses"
_API_ERROR = "Mastodon API returned error"  # first element of Mastodon.py's error tuple
_NOT_JSON = "Could not parse response as JSON"  # how Mastodon.py's message for a non-JSON answer starts
_USE_INSTANCE = "set it to the instance's address, like https://mastodon.social"


class MastodonSetupError(MastodonError):
    """Mastodon cannot be used as configured; the message says why and what to change."""


@dataclass(frozen=True)
class _Answer:
    status: int
    status_line: str  # "401 Unauthorized"
    said: str  # with the server's own message, when it gave one


def explain(exc: MastodonError, *, base_url: str, timeout_s: float) -> str:
    """One line naming the failure, its likely cause and the key or variable to fix."""
    server = f"Mastodon at mastodon.base_url = {base_url}"
    if isinstance(exc, MastodonRatelimitError):
        return f"{server} is rate limiting this token: try again in a few minutes"
    if isinstance(exc, MastodonNetworkError):
        return _network(exc, base_url=base_url, timeout_s=timeout_s)
    answer = _http_answer(exc)
    if answer is None:
        if isinstance(exc, MastodonAPIError) and str(exc.args[0]).startswith(_NOT_JSON):
            return _not_mastodon(base_url, "its API did not answer in JSON")
        return f"{server} failed: {exc}"
    if answer.status == 401:
        return (
            f"Mastodon refused {TOKEN_VARIABLE} ({answer.said}): create an access token for the brand account "
            f"under Preferences > Development with the scopes {SCOPES}"
        )
    if answer.status == 403:
        return (
            f"Mastodon refused {TOKEN_VARIABLE} ({answer.said}): the token needs the scopes {SCOPES} "
            "(Preferences > Development, the application's page)"
        )
    if answer.status in (404, 405, 410):
        # No /api/v1/... there: the URL is a website, a sub-path, or another service.
        return _not_mastodon(base_url, f"its API answered {answer.status_line}")
    if answer.status >= 500:
        return f"{server} is failing ({answer.said}): try again later"
    return f"{server} answered {answer.said}"


def _not_mastodon(base_url: str, why: str) -> str:
    return f"mastodon.base_url = {base_url} does not look like a Mastodon server ({why}): {_USE_INSTANCE}"


def _http_answer(exc: MastodonError) -> _Answer | None:
    """The HTTP status and message in Mastodon.py's error tuple, if the error is one."""
    args = exc.args
    if len(args) != 4 or args[0] != _API_ERROR or not isinstance(args[1], int):
        return None
    status_line = f"{args[1]} {args[2]}"
    return _Answer(args[1], status_line, f"{status_line}: {args[3]}" if args[3] else status_line)


def _network(exc: MastodonError, *, base_url: str, timeout_s: float) -> str:
    causes = list(_causes(exc))
    unreachable = f"cannot reach mastodon.base_url = {base_url}"
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return f"{unreachable}: connection refused (is the address right, and the server up?)"
    if any(isinstance(c, socket.gaierror) for c in causes):
        return f"{unreachable}: no such host {urlparse(base_url).hostname} (check the spelling)"
    tls = next((c for c in causes if isinstance(c, ssl.SSLError)), None)
    if tls is not None:
        return f"{unreachable}: TLS failed ({tls.reason or tls}): check http:// versus https:// and the certificate"
    if any(isinstance(c, TimeoutError) for c in causes):
        return (
            f"Mastodon at mastodon.base_url = {base_url} did not answer within mastodon.request_timeout_s = "
            f"{timeout_s:g} s: check the address, or raise the timeout for a slow server"
        )
    # The OS's own words ("Network is unreachable") beat urllib3's pool and retry wrapping.
    reason = next((c.strerror for c in causes if isinstance(c, OSError) and c.strerror), None)
    return f"{unreachable}: {reason or exc}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything behind it: chained exceptions, urllib3's ``reason``, wrapped ``args``."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = (current.__cause__, current.__context__, getattr(current, "reason", None), *current.args)
        todo.extend(x for x in linked if isinstance(x, BaseException))
