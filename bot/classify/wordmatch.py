"""Finding a list's words in a post: whole words, any case, with simple endings.

"leak" finds leak, leaks, leaked and leaking; "refund*" finds any word that begins with refund; "not working"
finds the phrase across any spacing. A word never matches inside another ("down" is not in "download", "fire"
not in "@fire_dept"), and a curly apostrophe counts as a straight one, since phones type the curly one.

The post is split into words once and each list looks its words up in a table: a regex alternation of every
entry, tried at every position of the post, cost ten times as much (a quarter of a millisecond per post for the
default lists, which halved `mentiondesk classify`'s throughput).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["WordLists", "words_of"]

_WORD_RE = re.compile(r"\w+(?:'\w+)*")
# Endings a plain entry takes without a *; enough for English plurals and tenses, too few to change the meaning.
_ENDINGS = ("", "s", "es", "d", "ed", "ing")


def words_of(text: str) -> tuple[str, ...]:
    """The words of a text as the lists match them: lower case, apostrophes straight, punctuation gone."""
    return tuple(_WORD_RE.findall(text.casefold().replace("’", "'")))


class WordLists:
    """Several lists of words and phrases, looked up in one pass over a post's words."""

    def __init__(self, lists: Sequence[Sequence[str]]) -> None:
        self.lists = tuple(tuple(entries) for entries in lists)
        # First word of an entry (each form it may take) -> (its list, the entry, the words that must follow it,
        # whether its last word is a prefix).
        self._exact: dict[str, list[tuple[int, str, tuple[str, ...], bool]]] = {}
        self._prefixes: list[tuple[str, int, str]] = []  # single-word entries with a *
        for index, entries in enumerate(self.lists):
            for entry in entries:
                self._add(index, entry)
        self._prefix_starts = tuple(p for p, _, _ in self._prefixes)

    def _add(self, index: int, entry: str) -> None:
        prefix = entry.endswith("*")
        words = words_of(entry.rstrip("*"))
        if not words:
            return  # the config refuses such entries; a list built in code just skips them
        if prefix and len(words) == 1:
            self._prefixes.append((words[0], index, entry))
            return
        first, rest = words[0], words[1:]
        for form in [first] if rest else [first + ending for ending in _ENDINGS]:
            self._exact.setdefault(form, []).append((index, entry, rest, prefix))

    def found(self, words: Sequence[str]) -> list[list[str]]:
        """Per list, its entries among the words (from `words_of`), each once, in the order they first appear."""
        seen: list[dict[str, None]] = [{} for _ in self.lists]
        for i, word in enumerate(words):
            for index, entry, rest, prefix in self._exact.get(word, ()):
                if not rest or _follows(words, i + 1, rest, prefix):
                    seen[index].setdefault(entry, None)
            if self._prefix_starts and word.startswith(self._prefix_starts):
                for start, index, entry in self._prefixes:
                    if word.startswith(start):
                        seen[index].setdefault(entry, None)
        return [list(entries) for entries in seen]


def _follows(words: Sequence[str], at: int, rest: tuple[str, ...], prefix: bool) -> bool:
    """Do the words from `at` on read `rest`, the last of them with an ending (or, for a *, any continuation)?"""
    if at + len(rest) > len(words):
        return False
    *middle, last = rest
    if any(words[at + k] != w for k, w in enumerate(middle)):
        return False
    got = words[at + len(middle)]
    if prefix:
        return got.startswith(last)
    return any(got == last + ending for ending in _ENDINGS)
