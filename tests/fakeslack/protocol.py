"""Wire-level pieces every Slack surface of the fake shares.

Types (``JSONDict``, ``Handler``), the ``ok: false`` error (``ApiError``) and
programmed faults (``_Fault``), and how a Web API request is read: parameters,
token and the loose encodings Slack accepts (form strings vs. inline JSON).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

JSONDict = dict[str, Any]
Handler = Callable[[JSONDict], JSONDict]

APP_ID = "A0TEST"
BOT_ID = "B0BOT"

_EDGE_ERROR_HTML = "<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"


class ApiError(Exception):
    """An ``ok: false`` answer; raised by method handlers, rendered by the dispatcher."""

    def __init__(
        self,
        error: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> web.Response:
        body = {"ok": False, "error": self.error, **self.extra}
        return web.json_response(body, status=self.status, headers=self.headers)


def _invalid_arguments(*messages: str) -> ApiError:
    return ApiError("invalid_arguments", response_metadata={"messages": [f"[ERROR] {m}" for m in messages]})


def _ratelimited(retry_after_s: int) -> ApiError:
    return ApiError("ratelimited", status=429, headers={"Retry-After": str(retry_after_s)})


@dataclass
class _Fault:
    """One programmed failure (fail_next / rate_limit_next)."""

    status: int
    body: str | None = None
    content_type: str | None = None
    retry_after_s: int | None = None

    def response(self) -> web.Response:
        if self.retry_after_s is not None:
            return _ratelimited(self.retry_after_s).response()
        body = self.body if self.body is not None else _EDGE_ERROR_HTML.format(status=self.status)
        content_type = self.content_type or _guess_type(body)
        return web.Response(status=self.status, text=body, content_type=content_type)


def _guess_type(body: str) -> str:
    # Slack's edge answers outages with HTML; a JSON body is only sent by the API itself.
    try:
        return "application/json" if isinstance(json.loads(body), dict) else "text/html"
    except ValueError:
        return "text/html"


@dataclass
class _Incoming:
    params: JSONDict
    form_token: str | None
    parse_error: str | None


async def _read_request(request: web.Request) -> _Incoming:
    """Merge query string and body the way Slack does (body wins)."""
    params: JSONDict = dict(request.query)
    form_token: str | None = None
    parse_error: str | None = None
    if request.method == "POST" and request.body_exists:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                body, parse_error = {}, "invalid_json"
            if not isinstance(body, dict):
                body, parse_error = {}, "json_not_object"
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            form_token = fields.get("token")
            params.update(fields)
    # Slack ignores tokens in JSON bodies and refuses them in query strings for
    # apps created since 2021, so only the header and a form field authenticate.
    params.pop("token", None)
    return _Incoming(params, form_token, parse_error)


def _request_token(request: web.Request, incoming: _Incoming) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip() or None
    return incoming.form_token or None


def _truthy(value: object) -> bool:
    # Form posts carry "true"/"1"; slack-sdk turns True into "1" in query strings.
    if isinstance(value, str):
        return value.lower() in ("1", "true")
    return bool(value)


def _decode_json(value: object, error: str) -> Any:
    """Form posts carry structured fields as JSON strings; JSON posts carry them inline."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(error) from None
    return value
