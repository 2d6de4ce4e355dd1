"""Slack Block Kit payloads for ticket cards, built from untrusted customer text.

Everything a customer controls (post text, display name, acct, URLs) goes
through ``escape_mrkdwn`` or ``_safe_url`` before it reaches a mrkdwn field, so
nobody can ping ``@channel``, mention users or forge links from a Mastodon
post, nor reorder or hide text with bidi or invisible controls. Every builder
clamps its output to Block Kit limits for *any* input, so a hostile post can
never make ``chat.postMessage`` fail with ``invalid_blocks``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mentiondesk.bot.mastodon.text import clean_text

__all__ = ["TicketCard", "escape_mrkdwn", "followup_message", "link_if_safe", "render_plain", "ticket_card"]

# Block Kit limits (https://api.slack.com/reference/block-kit).
HEADER_MAX = 150
SECTION_MAX = 3000
CONTEXT_TEXT_MAX = 2000
CONTEXT_ELEMENTS_MAX = 10
FALLBACK_MAX = 40000
ACTIONS_ELEMENTS_MAX = 25
# Our own caps: long enough for any real value, short enough that the fixed
# parts of a block can never push it over SECTION_MAX.
_URL_MAX = 1000
_NAME_MAX = 100
_ACCT_MAX = 200
_META_MAX = 100
_SNIPPET_CHARS = 150
_BADGE_MAX = 400
# A category name, and the whole list of categories or of priority reasons (word lists can be long); escaping
# grows text at most five-fold, so an escaped list stays within CONTEXT_TEXT_MAX.
_TAG_MAX = 40
_WHY_MAX = 350

TRUNCATED_MARKER = "_… (truncated)_"
_WORD_JOINER = "\u2060"
_BROADCAST_RE = re.compile(r"(?i)@(?=channel|here|everyone)")
_URL_OK_RE = re.compile(r"(?i)^https?://[^/?#\s]+")
_SLACK_TOKEN_RE = re.compile(r"<([^<>]*)>")
_ENTITY_RE = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}


def escape_mrkdwn(text: str) -> str:
    """Make untrusted text inert inside a Slack mrkdwn field.

    ``&``, ``<`` and ``>`` are Slack's only control characters; escaping them
    defuses ``<!channel>``, ``<@U123>`` and forged ``<url|label>`` links. The
    bare words ``@channel``/``@here``/``@everyone`` get an invisible word
    joiner because some clients and workspace settings still expand them.
    Formatting like ``*bold*`` is left alone: it is cosmetic and Slack has no
    escape for it. Bidi and invisible controls are dropped (``clean_text``), so
    text cannot be shown reordered or disguised, wherever it was stored from.
    """
    text = clean_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST_RE.sub("@" + _WORD_JOINER, text)


def _clamp(text: str, limit: int, marker: str = "…") -> str:
    return text if len(text) <= limit else text[: limit - len(marker)].rstrip() + marker


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _safe_url(url: str) -> str | None:
    """Return an http(s) URL that cannot break out of ``<url|label>``, or None."""
    url = url.strip()
    if len(url) > _URL_MAX or not _URL_OK_RE.match(url) or any(c.isspace() or ord(c) < 32 for c in url):
        return None
    if clean_text(url) != url:
        return None  # a bidi control would show the link's target reordered
    url = url.replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    # Checked again after encoding so a link can never be cut by a field limit.
    return url if len(url) <= _URL_MAX else None


def _link(url: str, label: str) -> str:
    """``<url|label>`` with an escaped label, or just the escaped label if the URL is unsafe."""
    safe = _safe_url(url)
    if safe is None:
        return escape_mrkdwn(_one_line(label))
    # Escaping already covers "<" and ">"; dropping "|" and ">" too keeps the label
    # unambiguous even for clients that split links naively.
    label = escape_mrkdwn(_one_line(label.replace("|", "").replace(">", "")))
    return f"<{safe}|{label}>" if label else f"<{safe}>"


def link_if_safe(url: str, label: str) -> str:
    """``<url|label>`` for a URL that is safe to link; "" otherwise, for links that are nothing without it."""
    return _link(url, label) if _safe_url(url) else ""


def _slack_date(when: datetime) -> str:
    """Slack renders this in each reader's timezone; the UTC text is the fallback."""
    if when.tzinfo is None:  # the contract says aware; treat naive as UTC rather than crash
        when = when.replace(tzinfo=UTC)
    fallback = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _posted(at: datetime, *, known: bool) -> str:
    # A server that sent no readable time: say so, rather than pass the time we read the post off as its own.
    return f"Posted {_slack_date(at)}" if known else f"Posted: unknown (received {_slack_date(at)})"


def _acct(acct: str) -> str:
    return _clamp(_one_line(acct).lstrip("@"), _ACCT_MAX)


def _quote_lines(text: str) -> str:
    return "\n".join("&gt; " + escape_mrkdwn(line) for line in text.split("\n"))


def _quote(text: str, budget: int) -> str:
    """Escaped mrkdwn quote of ``text`` that fits in ``budget`` characters."""
    text = text.strip()
    if not text:
        return "_(no text)_"
    rendered = _quote_lines(text)
    if len(rendered) <= budget:
        return rendered
    room = budget - len(TRUNCATED_MARKER) - 1
    # Escaping makes the rendered length hard to predict (& -> 5 chars, a newline
    # adds a prefix), but it only ever grows with the input, so binary-search the
    # longest prefix that fits. Rendered length >= raw length bounds the search.
    lo, hi = 0, min(len(text), room)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_quote_lines(text[:mid])) <= room:
            lo = mid
        else:
            hi = mid - 1
    return _quote_lines(text[:lo].rstrip()) + "\n" + TRUNCATED_MARKER


def _snippet(text: str) -> str:
    return escape_mrkdwn(_clamp(_one_line(text), _SNIPPET_CHARS))


def _mrkdwn(text: str, limit: int) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text[:limit]}


def _context(block_id: str, parts: list[str]) -> dict[str, Any]:
    elements = [_mrkdwn(p, CONTEXT_TEXT_MAX) for p in parts if p][:CONTEXT_ELEMENTS_MAX]
    return {"type": "context", "block_id": block_id, "elements": elements}


@dataclass(frozen=True)
class TicketCard:
    """What a ticket card shows. Author fields and ``text`` are untrusted."""

    number: int
    state: str  # "open" / "waiting" (on the customer) / "resolved" / "closed"
    priority: str  # "urgent" / "high" / "normal" / "low"
    score: float
    label: str
    author_acct: str
    author_display_name: str
    author_url: str
    text: str
    post_url: str
    posted_at: datetime  # when the post was received, when its own time is not known
    sla_due_at: datetime | None
    language: str | None
    visibility: str
    # How the ticket is being worked; the defaults describe a ticket nobody has touched yet.
    assignee_slack_id: str | None = None
    first_response_at: datetime | None = None
    last_customer_activity_at: datetime | None = None
    edited_at: datetime | None = None
    deleted: bool = False
    closed_reason: str | None = None
    previous_ticket: int | None = None
    posted_at_known: bool = True
    # The SLA badge of the clock the ticket shows (bot/sla/badge.py), our own mrkdwn; None: the first-response
    # due time alone, as before SLA clocks were kept.
    sla_badge: str | None = None
    # Tags from the keyword rules and why the ticket has its priority (bot/classify/cues.py). Our own words, but
    # they quote the config's words and names, so they are escaped like anything else.
    categories: tuple[str, ...] = ()
    priority_reasons: tuple[str, ...] = ()


_SLACK_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,30}$")


def _status_parts(card: TicketCard, now: datetime) -> list[str]:
    """The working state: who has it, the SLA clock, the customer's latest activity."""
    assignee = card.assignee_slack_id
    parts = [f"Assigned to <@{assignee}>" if assignee and _SLACK_USER_RE.match(assignee) else "Unassigned"]
    if card.sla_badge is not None:
        parts.append(card.sla_badge[:_BADGE_MAX])
        if card.first_response_at is not None:
            parts.append(f"Responded {_slack_date(card.first_response_at)}")
    elif card.first_response_at is not None:
        parts.append(f"Responded {_slack_date(card.first_response_at)}")
    elif card.sla_due_at is not None and card.state == "open":
        overdue = " (overdue)" if card.sla_due_at <= now else ""
        parts.append(f"First response due {_slack_date(card.sla_due_at)}{overdue}")
    if card.last_customer_activity_at is not None and card.last_customer_activity_at > card.posted_at:
        parts.append(f"Customer active {_slack_date(card.last_customer_activity_at)}")
    if card.edited_at is not None:
        parts.append(f"Post edited {_slack_date(card.edited_at)}")
    if card.deleted:
        parts.append("Post deleted by the customer")
    if card.closed_reason:
        parts.append(f"Closed: {escape_mrkdwn(_clamp(_one_line(card.closed_reason), _META_MAX))}")
    if card.previous_ticket is not None:
        parts.append(f"Follows ticket #{card.previous_ticket}")
    return parts


def _why_parts(card: TicketCard) -> list[str]:
    """The categories and the priority's reasons, each list clamped so that many long words still fit."""
    parts = []
    if card.categories:
        names = ", ".join(_clamp(_one_line(c), _TAG_MAX) for c in card.categories)
        parts.append(f"Categories: {escape_mrkdwn(_clamp(names, _WHY_MAX))}")
    if card.priority_reasons:
        reasons = "; ".join(_one_line(r) for r in card.priority_reasons)
        parts.append(
            f"{escape_mrkdwn(_clamp(_one_line(card.priority), _TAG_MAX)).capitalize()} because: "
            f"{escape_mrkdwn(_clamp(reasons, _WHY_MAX))}"
        )
    return parts


def ticket_card(
    card: TicketCard, *, actions: list[dict[str, Any]] | None = None, now: datetime | None = None
) -> tuple[str, list[dict]]:
    """Build ``(fallback_text, blocks)`` for a ticket's main Slack message.

    ``actions`` are Block Kit interactive elements (e.g. Claim/Reply/Resolve
    buttons); when given they are wrapped in a trailing ``actions`` block.
    """
    prefix = f"ticket-{card.number}"
    acct = _acct(card.author_acct)
    header = f"Ticket #{card.number} · {_one_line(card.priority)} priority"
    if card.state != "open":
        header += " · waiting on customer" if card.state == "waiting" else f" · {_one_line(card.state)}"

    name = _clamp(_one_line(card.author_display_name), _NAME_MAX)
    label = f"{name} (@{acct})" if name else f"@{acct}"
    author = f"*{_link(card.author_url, label)}* wrote:"

    meta = [
        link_if_safe(card.post_url, "View post"),
        f"score {card.score:.2f}",
        f"Label: {escape_mrkdwn(_clamp(_one_line(card.label), _META_MAX))}" if card.label.strip() else "",
        _posted(card.posted_at, known=card.posted_at_known),
        f"Visibility: {escape_mrkdwn(_clamp(_one_line(card.visibility), _META_MAX))}",
        f"Language: {escape_mrkdwn(_clamp(_one_line(card.language), _META_MAX))}" if card.language else "",
    ]
    blocks: list[dict] = [
        {
            "type": "header",
            "block_id": f"{prefix}-header",
            "text": {"type": "plain_text", "text": _clamp(clean_text(header), HEADER_MAX), "emoji": True},
        },
        {"type": "section", "block_id": f"{prefix}-author", "text": _mrkdwn(author, SECTION_MAX)},
        {
            "type": "section",
            "block_id": f"{prefix}-text",
            "text": _mrkdwn(_quote(card.text, SECTION_MAX), SECTION_MAX),
        },
        _context(f"{prefix}-meta", meta),
        _context(f"{prefix}-status", _status_parts(card, now or datetime.now(UTC))),
    ]
    why = _why_parts(card)
    if why:
        # Last before the controls: agents read it when they look at the priority select.
        blocks.append(_context(f"{prefix}-why", why))
    if actions:
        blocks.append({"type": "actions", "block_id": f"{prefix}-actions", "elements": actions[:ACTIONS_ELEMENTS_MAX]})
    # Escape "@" + acct as a whole: an acct of "here@x" must not become "@here".
    fallback = f"Ticket #{card.number} from {escape_mrkdwn('@' + acct)}: {_snippet(card.text)}"
    return _clamp(fallback, FALLBACK_MAX), blocks


def followup_message(
    *,
    number: int,
    author_acct: str,
    author_url: str,
    text: str,
    post_url: str,
    posted_at: datetime,
    posted_at_known: bool = True,
) -> tuple[str, list[dict]]:
    """Build ``(fallback_text, blocks)`` for a customer follow-up posted in the ticket thread."""
    prefix = f"ticket-{number}-followup"
    acct = _acct(author_acct)
    intro = f"*{_link(author_url, '@' + acct)}* followed up:"
    body = intro + "\n" + _quote(text, SECTION_MAX - len(intro) - 1)
    meta = [
        link_if_safe(post_url, "View post"),
        _posted(posted_at, known=posted_at_known),
    ]
    blocks: list[dict] = [
        {"type": "section", "block_id": f"{prefix}-text", "text": _mrkdwn(body, SECTION_MAX)},
        _context(f"{prefix}-meta", meta),
    ]
    fallback = f"Follow-up on ticket #{number} from {escape_mrkdwn('@' + acct)}: {_snippet(text)}"
    return _clamp(fallback, FALLBACK_MAX), blocks


# -- dry-run rendering ---------------------------------------------------


def _readable_token(match: re.Match[str]) -> str:
    body = match.group(1)
    target, _, label = body.partition("|")
    if target.startswith("!date^"):
        return label or target
    if target.startswith(("!", "@", "#")):
        return label or ("@" + target[1:] if target.startswith("!") else target)
    if label and label != target:
        return f"{label} ({target})"
    return target


def _readable(mrkdwn: str) -> str:
    """Slack mrkdwn -> terminal text: links as ``label (url)``, dates via fallback."""
    text = _SLACK_TOKEN_RE.sub(_readable_token, mrkdwn)
    # One pass, so "&amp;lt;" reads as the "&lt;" the customer actually typed.
    return _ENTITY_RE.sub(lambda m: _ENTITIES[m.group(1)], text)


def _text_of(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    if obj.get("type") == "mrkdwn":
        return _readable(str(obj.get("text", "")))
    if obj.get("type") == "image":
        return str(obj.get("alt_text", ""))
    return str(obj.get("text", ""))  # plain_text is shown verbatim by Slack too


def _control_label(element: dict[str, Any]) -> str:
    """A button's text, or a select's current choice (else its placeholder)."""
    if element.get("text"):
        return _text_of(element["text"])
    chosen = element.get("initial_option") or {}
    return _text_of(chosen.get("text") or element.get("placeholder"))


def render_plain(text: str, blocks: list[dict]) -> str:
    """Render a message for a terminal (dry-run mode prints this instead of posting)."""
    if not blocks:
        return _readable(text)
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            title = _text_of(block.get("text"))
            lines += [title, "=" * len(title)]
        elif kind == "section":
            if "text" in block:
                lines.append(_text_of(block["text"]))
            lines += [_text_of(field) for field in block.get("fields", [])]
        elif kind == "context":
            lines.append(" · ".join(_text_of(el) for el in block.get("elements", [])))
        elif kind == "actions":
            lines.append(" ".join(f"[{_control_label(el)}]" for el in block.get("elements", [])))
        elif kind == "divider":
            lines.append("---")
    return "\n".join(lines)
