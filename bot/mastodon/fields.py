"""Reading Mastodon's JSON field by field, whatever a server put there.

A post that cannot be stored stops nothing any more (the feed sets it aside), but most bad payloads are
fixable at the edge: a value of the wrong type is read as absent, text loses the characters the database
refuses (NUL, lone surrogates) and is cut to the column it is stored in, with a marker, and a time that is
missing or unbelievable is replaced by the time the post was received. Only a post without what identifies it
(its id, its author) is unreadable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mentiondesk.bot.mastodon.text import ELLIPSIS, clean_text

# Remote servers' clocks run a little ahead at times; a post dated later than this after it was read is broken.
MAX_CLOCK_SKEW = timedelta(hours=1)

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_DIGITS_RE = re.compile(r"[0-9]+")
# Past a trillion a count is not a real one (and would not fit a database integer comfortably).
_COUNT_DIGITS_MAX = 12


class UnreadablePost(ValueError):
    """A status without what identifies it (its id, its author): it cannot be stored, only set aside."""


def plain_string(value: Any) -> str:
    """A JSON string or number as text ("" for null, objects, lists, booleans), encodable as UTF-8."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    # JSON can spell half a surrogate pair ("\ud800"); no database driver can encode one.
    return _SURROGATE_RE.sub("\ufffd", str(value))


def text_field(value: Any, *, limit: int | None = None) -> str:
    """Text a customer or their server controls, cleaned (NUL and other controls too) and cut to limit."""
    text = clean_text(plain_string(value))
    return cut(text, limit) if limit is not None else text


def cut(text: str, limit: int) -> str:
    """text, or its start and a marker when it is longer than limit."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def required_id(value: Any, *, what: str, limit: int) -> str:
    """An id the post cannot do without; UnreadablePost when it is missing or will not fit where it is stored.

    Ids are never cut: a cut id would name another status or nobody.
    """
    found = optional_id(value, limit=None)
    if found is None:
        raise UnreadablePost(f"{what} is missing")
    if len(found) > limit:
        raise UnreadablePost(f"{what} is {len(found)} characters long, more than the {limit} stored")
    return found


def optional_id(value: Any, *, limit: int | None) -> str | None:
    """An id that may be absent: None when missing, empty, or too long to be one."""
    found = text_field(value).strip()
    if not found or (limit is not None and len(found) > limit):
        return None
    return found


def feed_id(value: Any, *, limit: int) -> str | None:
    """A feed entry's id, usable as the feed's cursor (Mastodon's are numbers), or None."""
    found = plain_string(value)
    return found if _DIGITS_RE.fullmatch(found) and len(found) <= limit else None


def count_field(value: Any) -> int | None:
    """A non-negative count (followers, reblogs), or None when missing or not a count.

    JSON numbers only, or digits in a string (some servers quote them); a bool, a fraction, a negative number or
    one too large to be real reads as unknown rather than as a number it is not.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        found = value
    elif isinstance(value, str) and _DIGITS_RE.fullmatch(value.strip()) and len(value.strip()) <= _COUNT_DIGITS_MAX:
        found = int(value.strip())
    else:
        return None
    return found if 0 <= found < 10**_COUNT_DIGITS_MAX else None


def time_field(value: Any, *, latest: datetime | None = None) -> datetime | None:
    """An aware UTC time, or None when it is missing, unreadable or later than latest."""
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(plain_string(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # a time zone that pushes a date past year 9999 or before year 1
        return None
    return None if latest is not None and parsed > latest else parsed


def objects(value: Any) -> list[Mapping[str, Any]]:
    """The JSON objects in a list (other entries, or anything but a list, give nothing)."""
    if not isinstance(value, list | tuple):
        return []
    return [entry for entry in value if isinstance(entry, Mapping)]
