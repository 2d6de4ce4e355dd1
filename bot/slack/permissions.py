"""Who may speak for the brand: Slack users and user groups named in slack.repliers / slack.needs_approval."""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from mentiondesk.bot.config import SlackSettings

logger = logging.getLogger(__name__)

GROUP_CACHE_S = 300.0  # group membership changes rarely; five minutes keeps usergroups.users.list calls rare


class Permissions:
    def __init__(self, settings: SlackSettings, client: AsyncWebClient | None) -> None:
        self._settings = settings
        self._client = client
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}

    async def can_reply(self, user: str) -> bool:
        return await self._in_any(user, self._settings.repliers)

    async def needs_approval(self, user: str) -> bool:
        return await self._in_any(user, self._settings.needs_approval)

    async def can_approve(self, user: str) -> bool:
        """Approvers are repliers whose own replies need no approval."""
        return await self.can_reply(user) and not await self.needs_approval(user)

    async def _in_any(self, user: str, ids: tuple[str, ...]) -> bool:
        if user in ids:
            return True
        for group in (i for i in ids if i.startswith("S")):
            if user in await self._members(group):
                return True
        return False

    async def _members(self, group: str) -> frozenset[str]:
        cached = self._groups.get(group)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if self._client is None:
            return frozenset()
        try:
            response = await self._client.usergroups_users_list(usergroup=group)
            members = frozenset(response.get("users") or [])
        except SlackApiError as exc:
            # Fail closed: an unreadable group grants nobody the right to publish.
            logger.error("cannot read Slack user group %s: %s", group, exc.response.get("error"))
            return cached[1] if cached is not None else frozenset()
        self._groups[group] = (time.monotonic() + GROUP_CACHE_S, members)
        return members
