"""Finding a list's words in a post: whole words, any case, with simple endings.

"leak" finds leak, leaks, leaked and leaking; "refund*" finds any word that begins with refund; "not working"
finds the phrase across any spacing. A word never matches inside another ("down" is not in "download", "fire"
not in "@fire_dept"), and a curly apostrophe counts as a straight one, since phones type the curly one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["WordList"]

# Endings a plain entry takes without a *; enough for English plurals and tenses, too few to change the meaning.
_ENDINGS = r"(?:s|es|d|ed|ing)?"


def _entry_pattern(entry: str) -> str:
    prefix = entry.endswith("*")
    words = entry.rstrip("*").replace("’", "'").split()
    body = r"\s+".join(re.escape(w).replace("'", "['’]") for w in words)
    return body + (r"\w*" if prefix else _ENDINGS)


class WordList:
    """One compiled pattern for a list of words, telling which entries a text contains."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.entries = tuple(entries)
        # Longest first, so a phrase wins over a word it begins with ("not working" before "not").
        order = sorted(range(len(self.entries)), key=lambda i: -len(self.entries[i]))
        self._by_group = [self.entries[i] for i in order]
        alternatives = "|".join(f"({_entry_pattern(self.entries[i])})" for i in order)
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if self.entries else None

    def found(self, text: str) -> list[str]:
        """The entries in the text, each once, in the order they first appear."""
        if self._pattern is None:
            return []
        seen: dict[str, None] = {}
        for match in self._pattern.finditer(text):
            assert match.lastindex is not None  # every alternative is one group
            seen.setdefault(self._by_group[match.lastindex - 1], None)
        return list(seen)

    def __bool__(self) -> bool:
        return bool(self.entries)
