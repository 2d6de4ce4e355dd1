"""(being written)"""

from __future__ import annotations

from bot.dispatch import Router

router = Router()
