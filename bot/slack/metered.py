"""The Slack Web API client the daemon uses: slack-sdk's, with every failed call counted for /metrics.

Every method (chat_postMessage, conversations_history, ...) goes through api_call, so this one override sees
each call the cards, the listeners, Socket Mode and the summaries make.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from mentiondesk.bot.retry import errors_counted


class MeteredWebClient(AsyncWebClient):
    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        with errors_counted("slack"):
            return await super().api_call(api_method, **kwargs)
