"""Composing a status as Mastodon sees it: who it mentions, how many characters it counts, how far it is seen.

Pure text rules, shared by the Reply modal (a live count while the agent types) and the publishing path.
"""

from __future__ import annotations

import re

# Narrowest first: a reply may be as private as the customer's post, never more public.
VISIBILITIES = ("direct", "private", "unlisted", "public")
_URL_RE = re.compile(r"https?://\S+")
_MENTION_RE = re.compile(r"(?<![\w@])@(\w+)@[\w.-]+\w")


def allowed_visibilities(customer_visibility: str) -> list[str]:
    """Visibilities no wider than the customer's post, widest first."""
    limit = VISIBILITIES.index(customer_visibility) if customer_visibility in VISIBILITIES else 0
    return list(reversed(VISIBILITIES[: limit + 1]))


def with_mention(text: str, acct: str) -> str:
    """The reply as posted: it starts by mentioning the customer, so they are notified and it threads."""
    text = text.strip()
    handle = f"@{acct}"
    if re.match(re.escape(handle) + r"(?!\S)", text, flags=re.IGNORECASE):
        return text
    return f"{handle} {text}"


def mastodon_length(text: str, *, url_chars: int = 23) -> int:
    """Characters as Mastodon counts them: any link as url_chars, a remote @user@domain as @user."""
    counted = _URL_RE.sub("x" * url_chars, text)
    counted = _MENTION_RE.sub(lambda m: "@" + m.group(1), counted)
    return len(counted)
