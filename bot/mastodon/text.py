"""Turn Mastodon status HTML into clean plain text for tickets.

We deliberately do not use ``html.parser.HTMLParser``: on CPython 3.11 it is
quadratic on inputs such as ``"<a" * 500_000`` or ``"</" * 500_000`` (every
unterminated tag rescans to the end of the buffer) and raises AssertionError on
``"<!["``. Status HTML is attacker-controlled, so this module uses a tiny
tokenizer that only ever moves forward through the input (linear time) and can
not raise on any string.

The tokenizer relies on ``>`` ending a tag. Both Mastodon (Rails/Nokogiri) and
mastodon-mock entity-escape ``>`` inside attribute values, so that holds for
every server we talk to; for anything else the worst case is a slightly odd
text rendering, never a crash.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["MentionRef", "clean_fields", "clean_text", "status_to_text"]

ELLIPSIS = "…"

# Hard ceiling on how much HTML we look at. Mastodon statuses are a few KB;
# anything above this is abuse, and the tokenizer stops early anyway once the
# visible text alone would overflow ``max_chars``.
_MAX_HTML_CHARS = 2_000_000

# C0/C1 controls except \t and \n, plus bidi embeddings/overrides/isolates/marks that
# can make a ticket display text in a misleading order ("Trojan Source").
_STRIP_CHARS = {c: None for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if c not in (0x09, 0x0A)}
_STRIP_CHARS.update({c: None for c in [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]})
# Invisible characters that only serve to hide or disguise text ("Acme\u200bSupport" is not "Acme Support"):
# zero-width space, word joiner, invisible math operators, deprecated shaping controls, the BOM, and
# interlinear annotations (whose annotation text is not shown). ZWJ and ZWNJ stay: emoji sequences and
# several scripts are spelt with them, and they cannot reorder anything.
_STRIP_CHARS.update({c: None for c in [0x200B, *range(0x2060, 0x2065), *range(0x206A, 0x2070), 0xFEFF]})
_STRIP_CHARS.update({c: None for c in range(0xFFF9, 0xFFFC)})
# Tag characters are invisible ASCII look-alikes; the only use Slack shows is a subdivision flag
# (black flag, tag letters, cancel tag), so every other tag character is dropped.
_TAG_CHARS_RE = re.compile("(\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f)|[\U000e0000-\U000e007f]")

# Tags whose boundaries mean "new paragraph" / "new line" in plain text.
_PARA_TAGS = frozenset({"p", "blockquote", "pre", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6"})
_LINE_TAGS = frozenset({"div", "li", "tr", "br", "hr"})
# Raw-text elements: their content is never user-visible text.
_DROP_CONTENT_TAGS = frozenset({"script", "style", "template", "noscript"})

_TAG_NAME_RE = re.compile(r"/?([A-Za-z][^\s/>]*)")
_ATTR_RE = re.compile(r"""([^\s=/>"']+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]*))?""")
_HTTP_RE = re.compile(r"(?i)https?://")
_WS_NO_NL_RE = re.compile(r"[^\S\n]+")
_SPACE_AROUND_NL_RE = re.compile(r" ?\n ?")
_MANY_NL_RE = re.compile(r"\n{3,}")
# "Looks like a URL": scheme://..., or bare host.tld/... (ellipsised display
# text, "example.com/path"). Used to decide whether link text adds information.
_URLISH_RE = re.compile(r"(?i)^(?:[a-z][a-z0-9+.-]*://)?[^\s/.]+(?:\.[^\s/.]+)+(?:/\S*)?…?$")


@dataclass(frozen=True)
class MentionRef:
    """A mention from the status' ``mentions`` array (``url`` is the profile link)."""

    url: str
    acct: str


def clean_text(text: str) -> str:
    """Text a customer controls, without the characters that can reorder or hide it.

    Control characters (except tab and newline), bidi controls and invisible formatting characters go;
    emoji sequences (ZWJ, variation selectors, flag tags) and every script's own letters stay.
    """
    return _TAG_CHARS_RE.sub(lambda m: m.group(1) or "", text.translate(_STRIP_CHARS))


_Fields = TypeVar("_Fields", bound="DataclassInstance")


def clean_fields(value: _Fields) -> _Fields:
    """A copy of a dataclass with clean_text applied to every string in it, nested dataclasses included.

    For the edge where a server's JSON becomes our dataclasses: every string a customer controls
    (names, handles, URLs, tags) is cleaned there, including fields added later.
    """
    changes = {f.name: _cleaned(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return dataclasses.replace(value, **changes)


def _cleaned(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, tuple):
        return tuple(_cleaned(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return clean_fields(value)
    return value


class _Extractor:
    """Single forward pass over the HTML, collecting plain-text pieces."""

    def __init__(self, mentions: Sequence[MentionRef], budget: int) -> None:
        self.out: list[str] = []
        self.mentions = {m.url: m.acct for m in mentions}
        self.budget = budget  # stop once this many visible chars are collected
        self.visible = 0
        self.link: dict[str, str] | None = None  # attrs of the open <a>
        self.link_text: list[str] = []
        self.pre_depth = 0
        self.newlines = 0  # newlines emitted since the last visible text

    # -- output helpers -------------------------------------------------
    def _emit(self, text: str) -> None:
        if not text:
            return
        if self.link is not None:
            self.link_text.append(text)
            return
        self.out.append(text)
        visible = len("".join(text.split()))
        if visible:
            self.newlines = 0
            self.visible += visible

    def _block_break(self, count: int) -> None:
        """Ensure ``count`` newlines end the output, so "</li><li>" is one break, not two."""
        if self.link is not None:
            self.link_text.append(" ")
        elif count > self.newlines:
            self.out.append("\n" * (count - self.newlines))
            self.newlines = count

    def _text(self, raw: str) -> None:
        text = clean_text(html.unescape(raw))
        if not self.pre_depth:
            # In HTML a raw newline in text is just whitespace; line breaks come from tags.
            text = text.replace("\n", " ")
        self._emit(text)

    def _close_link(self) -> None:
        attrs, self.link = self.link, None
        if attrs is None:
            return
        text = " ".join("".join(self.link_text).split())
        self.link_text = []
        self._emit(self._render_link(attrs, text))

    def _render_link(self, attrs: dict[str, str], text: str) -> str:
        href = clean_text(attrs.get("href", "")).strip()
        classes = attrs.get("class", "").split()
        if "hashtag" in classes or "tag" in attrs.get("rel", "").split():
            return "#" + text.lstrip("#") if text else ""
        if href in self.mentions:
            return "@" + self.mentions[href]
        if "mention" in classes:
            return "@" + text.lstrip("@") if text else href
        if not _HTTP_RE.match(href):
            # javascript:, data:, relative links... showing the target helps nobody.
            return text
        if not text or text == href or _URLISH_RE.match(text):
            # Mastodon shortens long URLs visually (span.ellipsis); the href is the truth.
            return href
        return f"{text} ({href})"

    # -- tokenizer ------------------------------------------------------
    def run(self, src: str) -> None:
        self._scan(src)
        self._close_link()  # an <a> left open at EOF still renders

    def _scan(self, src: str) -> None:
        pos, n = 0, len(src)
        next_gt = -1  # cached position of the next ">" at or after pos (or n if none)
        while pos < n and self.visible <= self.budget:
            lt = src.find("<", pos)
            if lt < 0:
                self._text(src[pos:])
                return
            if lt > pos:
                self._text(src[pos:lt])
            pos = lt
            if src.startswith("<!--", pos):
                end = src.find("-->", pos + 4)
                pos = n if end < 0 else end + 3
                continue
            nxt = src[pos + 1 : pos + 2]
            is_tag = nxt.isascii() and nxt.isalpha()
            is_end = nxt == "/" and src[pos + 2 : pos + 3].isascii() and src[pos + 2 : pos + 3].isalpha()
            if not (is_tag or is_end or nxt in ("!", "?")):
                self._text("<")  # a stray "<", e.g. "i <3 you"
                pos += 1
                continue
            if next_gt < pos:
                next_gt = src.find(">", pos)
                if next_gt < 0:
                    next_gt = n
            if next_gt >= n:
                # Unterminated tag at EOF: keep it as text rather than lose content.
                self._text(src[pos:])
                return
            inner, pos = src[pos + 1 : next_gt], next_gt + 1
            if nxt in ("!", "?"):
                continue  # doctype / CDATA / processing instruction: invisible
            pos = self._tag(inner, is_end, src, pos)

    def _tag(self, inner: str, is_end: bool, src: str, pos: int) -> int:
        m = _TAG_NAME_RE.match(inner)
        name = m.group(1).lower() if m else ""
        if is_end:
            if name == "a":
                self._close_link()
            elif name == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)
            if name in _PARA_TAGS:
                self._block_break(2)
            elif name in _LINE_TAGS:
                self._block_break(1)
            return pos
        if name in _DROP_CONTENT_TAGS:
            if inner.rstrip().endswith("/"):
                return pos
            # One search for the closer, then one find for its ">": a regex that
            # matched the whole "</script ...>" could rescan to EOF at every candidate.
            close = re.compile(rf"</{name}[\s/>]", re.IGNORECASE).search(src, pos)
            end = -1 if close is None else src.find(">", close.start())
            return len(src) if end < 0 else end + 1
        if name == "br":
            # Unlike block boundaries, consecutive <br>s are deliberate blank lines.
            self._emit("\n")
            self.newlines += 1
        elif name in _PARA_TAGS:
            self._block_break(2)
            if name == "pre":
                self.pre_depth += 1
        elif name in _LINE_TAGS:
            self._block_break(1)
            if name == "li":
                self._emit("- ")
        elif name == "a":
            self._close_link()  # <a> cannot nest; a new one implicitly ends the last
            self.link = _attrs(inner[m.end() :] if m else "")
        elif name == "img":
            alt = _attrs(inner[m.end() :] if m else "").get("alt", "")
            if alt:
                self._emit(clean_text(alt))
        return pos


def _attrs(raw: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for m in _ATTR_RE.finditer(raw):
        value = m.group(2) or ""
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        attrs.setdefault(m.group(1).lower(), html.unescape(value))
    return attrs


def _normalize(text: str) -> str:
    text = _WS_NO_NL_RE.sub(" ", text)
    text = _SPACE_AROUND_NL_RE.sub("\n", text)
    return _MANY_NL_RE.sub("\n\n", text).strip()


def status_to_text(
    content_html: str,
    *,
    mentions: Sequence[MentionRef] = (),
    spoiler_text: str = "",
    max_chars: int = 5000,
) -> str:
    """Render a status' ``content`` HTML as readable plain text.

    Mentions become ``@acct`` (remote users keep their domain), hashtags
    ``#tag``, links their full URL, ``<br>`` a newline and paragraphs a blank
    line. A content warning is prefixed as ``CW: ...``. The result is at most
    ``max_chars`` long (ending in "…" when cut). Never raises on bad HTML.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    extractor = _Extractor(mentions, budget=max_chars)
    extractor.run(content_html[:_MAX_HTML_CHARS])
    body = _normalize("".join(extractor.out))
    # The CW is plain text from the API (not HTML), so it is not unescaped.
    spoiler = " ".join(clean_text(spoiler_text).split())
    if spoiler:
        body = f"CW: {spoiler}\n\n{body}".rstrip()
    if len(body) > max_chars:
        body = body[: max_chars - 1].rstrip() + ELLIPSIS
    return body
