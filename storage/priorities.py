"""A ticket's priorities, most pressing first: the one list the classifier, the card, the SLA policies and the
reports share. Here, at the bottom of the layers, because storage may not import the bot and everything else may
import storage."""

from __future__ import annotations

__all__ = ["PRIORITIES", "priority_rank"]

PRIORITIES = ("urgent", "high", "normal", "low")
_RANK = {p: i for i, p in enumerate(PRIORITIES)}


def priority_rank(priority: str) -> int:
    """0 for urgent, 3 for low; a value from before this list (or a typo in old data) sorts after low."""
    return _RANK.get(priority, len(PRIORITIES))
