"""(being written)"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp


def register(app: AsyncApp) -> None:
    """Register this module's Slack listeners."""
