"""Which Slack channel a new ticket goes to: the first matching rule, else the default channel."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from mentiondesk.bot.config import RoutingRule
from mentiondesk.bot.events import Post


@lru_cache(maxsize=512)
def _keyword_pattern(keyword: str) -> re.Pattern[str]:
    # Anchored at a word start so "refund" matches "refunded" but "cat" does not match "bobcat".
    return re.compile(r"(?<!\w)" + re.escape(keyword.casefold()))


def rule_matches(rule: RoutingRule, post: Post) -> bool:
    """A rule matches when every kind of condition it sets has at least one hit."""
    if rule.keywords:
        text = post.text.casefold()
        if not any(_keyword_pattern(k).search(text) for k in rule.keywords):
            return False
    if rule.hashtags:
        wanted = {t.lstrip("#").casefold() for t in rule.hashtags}
        if not wanted.intersection(t.casefold() for t in post.tags):
            return False
    if rule.languages:
        language = (post.language or "").casefold()
        if not any(
            language == lang.casefold() or language.startswith(lang.casefold() + "-") for lang in rule.languages
        ):
            return False
    return True


def route(post: Post, rules: Sequence[RoutingRule], default_channel: str) -> str:
    for rule in rules:
        if rule_matches(rule, post):
            return rule.channel
    return default_channel
