"""Slack Block Kit ticket cards built from hostile customer input."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.mastodon.client import StatusLimits
from mentiondesk.bot.slack.card_view import card_actions
from mentiondesk.bot.slack.cards import TicketCard, escape_mrkdwn, followup_message, render_plain, ticket_card
from mentiondesk.bot.slack.reply_modal import ReplyTarget, reply_view
from mentiondesk.handlers.slack_actions import priority_choice
from mentiondesk.storage.models import Ticket
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post
from tests.test_slack_reply import AGENT, Start, new_ticket, open_modal
from tests.test_slash_command import ask

WJ = "\u2060"
POSTED = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
HOSTILE = (
    "Help <!channel> <!here|here> @here @channel @everyone <@U123> <!subteam^S1> "
    "<https://evil.example|Click me> *bold* a & b > c"
)

CARD = TicketCard(
    number=42,
    state="open",
    priority="high",
    score=0.8712,
    label="complaint",
    author_acct="alice@other.example",
    author_display_name="Alice",
    author_url="https://other.example/@alice",
    text="my order is late\nsecond line",
    post_url="https://other.example/@alice/111",
    posted_at=POSTED,
    sla_due_at=POSTED + timedelta(hours=1),
    language="en",
    visibility="public",
)

# The only "<...>" tokens we ever emit ourselves: http(s) links and date formatting.
_ALLOWED_TOKEN = re.compile(r"<(?:https?://[^<>|\s]+\|[^<>|]+|!date\^-?\d+\^[^<>|]+\|[^<>|]+)>")


def walk_strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from walk_strings(key)
            yield from walk_strings(value)
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from walk_strings(item)


def assert_no_injection(fallback: str, blocks: list[dict]) -> None:
    for s in walk_strings([fallback, blocks]):
        leftover = _ALLOWED_TOKEN.sub("", s)
        assert "<" not in leftover and ">" not in leftover, s
        for bad in ("<!channel", "<!here", "<!everyone", "<!subteam", "<@", "<#"):
            assert bad not in s, s
        assert re.search(r"(?i)@(channel|here|everyone)", s) is None, s


def assert_block_kit_limits(fallback: str, blocks: list[dict]) -> None:
    assert 0 < len(fallback) <= 40000
    assert 0 < len(blocks) <= 50
    ids = [b["block_id"] for b in blocks]
    assert len(set(ids)) == len(ids)
    for block in blocks:
        assert 0 < len(block["block_id"]) <= 255
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        elif block["type"] == "section":
            assert 0 < len(block["text"]["text"]) <= 3000
        elif block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            for element in block["elements"]:
                assert 0 < len(element["text"]) <= 2000
        elif block["type"] == "actions":
            assert 0 < len(block["elements"]) <= 25
        else:
            pytest.fail(f"unexpected block type {block['type']}")


def block(blocks: list[dict], block_id: str) -> dict:
    return next(b for b in blocks if b["block_id"] == block_id)


# -- escape_mrkdwn ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("<!here|here>", "&lt;!here|here&gt;"),
        ("<@U123>", "&lt;@U123&gt;"),
        ("<!subteam^S1>", "&lt;!subteam^S1&gt;"),
        ("<https://evil.example|Click me>", "&lt;https://evil.example|Click me&gt;"),
        ("@here and @Channel, @everyone!", f"@{WJ}here and @{WJ}Channel, @{WJ}everyone!"),
        ("*bold* _it_ ~s~", "*bold* _it_ ~s~"),
        ("&amp; stays literal", "&amp;amp; stays literal"),
        ("mail me@here.example", f"mail me@{WJ}here.example"),
        # Bidi and invisible controls go, whoever wrote the text, before the broadcast words are looked for.
        ("\u202eevil\u202c Support\u200f", "evil Support"),
        ("@\u200bhere \u2066@channel\u2069", f"@{WJ}here @{WJ}channel"),
    ],
)
def test_escape_mrkdwn(raw: str, escaped: str) -> None:
    assert escape_mrkdwn(raw) == escaped


# -- ticket_card ------------------------------------------------------------------


def test_ticket_card_layout() -> None:
    fallback, blocks = ticket_card(CARD, now=POSTED)
    assert fallback == "Ticket #42 from @alice@other.example: my order is late second line"
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context", "context"]
    assert block(blocks, "ticket-42-header")["text"]["text"] == "Ticket #42 · high priority"
    assert block(blocks, "ticket-42-author")["text"]["text"] == (
        "*<https://other.example/@alice|Alice (@alice@other.example)>* wrote:"
    )
    assert block(blocks, "ticket-42-text")["text"]["text"] == "&gt; my order is late\n&gt; second line"
    meta = [e["text"] for e in block(blocks, "ticket-42-meta")["elements"]]
    assert meta == [
        "<https://other.example/@alice/111|View post>",
        "score 0.87",
        "Label: complaint",
        "Posted <!date^1714566600^{date_short_pretty} {time}|2024-05-01 12:30 UTC>",
        "Visibility: public",
        "Language: en",
    ]
    status = [e["text"] for e in block(blocks, "ticket-42-status")["elements"]]
    assert status == [
        "Unassigned",
        "First response due <!date^1714570200^{date_short_pretty} {time}|2024-05-01 13:30 UTC>",
    ]
    assert_block_kit_limits(fallback, blocks)
    assert_no_injection(fallback, blocks)


def test_ticket_card_status_follows_the_work() -> None:
    later = datetime(2024, 5, 1, 15, 0, tzinfo=UTC)
    worked = replace(
        CARD, assignee_slack_id="U0ALICE", last_customer_activity_at=later, edited_at=later, previous_ticket=7
    )
    status = [e["text"] for e in block(ticket_card(worked, now=later)[1], "ticket-42-status")["elements"]]
    assert status[0] == "Assigned to <@U0ALICE>"
    assert status[1].startswith("First response due") and status[1].endswith("(overdue)")
    assert status[2].startswith("Customer active <!date^1714575600")
    assert status[3].startswith("Post edited") and status[4] == "Follows ticket #7"

    answered = replace(worked, first_response_at=later, state="resolved", closed_reason=None)
    status = [e["text"] for e in block(ticket_card(answered, now=later)[1], "ticket-42-status")["elements"]]
    assert status[1].startswith("Responded <!date^1714575600")

    # Only a real Slack user id is ever turned into a mention.
    forged = replace(CARD, assignee_slack_id="U1>|<!channel", deleted=True, closed_reason="<!here> spam")
    fallback, blocks = ticket_card(forged, now=later)
    status = [e["text"] for e in block(blocks, "ticket-42-status")["elements"]]
    assert status[0] == "Unassigned" and "Post deleted by the customer" in status
    assert "Closed: &lt;!here&gt; spam" in status
    assert_no_injection(fallback, blocks)


def test_ticket_card_optional_fields_and_state() -> None:
    card = replace(CARD, state="resolved", sla_due_at=None, language=None, label="")
    fallback, blocks = ticket_card(card)
    assert block(blocks, "ticket-42-header")["text"]["text"] == "Ticket #42 · high priority · resolved"
    meta = " ".join(e["text"] for e in block(blocks, "ticket-42-meta")["elements"])
    assert "due" not in meta and "Language" not in meta and "Label" not in meta
    assert_block_kit_limits(fallback, blocks)


def test_dates_are_converted_to_utc() -> None:
    cest = timezone(timedelta(hours=2))
    _, blocks = ticket_card(replace(CARD, posted_at=datetime(2024, 5, 1, 14, 30, tzinfo=cest)))
    meta = [e["text"] for e in block(blocks, "ticket-42-meta")["elements"]]
    assert "Posted <!date^1714566600^{date_short_pretty} {time}|2024-05-01 12:30 UTC>" in meta


def test_hostile_text_is_escaped() -> None:
    fallback, blocks = ticket_card(replace(CARD, text=HOSTILE + "\n> fake quote"))
    assert block(blocks, "ticket-42-text")["text"]["text"] == (
        f"&gt; Help &lt;!channel&gt; &lt;!here|here&gt; @{WJ}here @{WJ}channel @{WJ}everyone "
        "&lt;@U123&gt; &lt;!subteam^S1&gt; &lt;https://evil.example|Click me&gt; *bold* a &amp; b &gt; c\n"
        "&gt; &gt; fake quote"
    )
    assert fallback.startswith("Ticket #42 from @alice@other.example: Help &lt;!channel&gt; &lt;!here|here&gt;")
    assert_no_injection(fallback, blocks)
    assert_block_kit_limits(fallback, blocks)


def test_hostile_author_fields() -> None:
    card = replace(
        CARD,
        author_display_name="<!channel> Evil|<https://x.example|y> @here\n*admin*",
        author_acct="@here@<!everyone>",
        author_url="https://other.example/@a|<!here>",
    )
    fallback, blocks = ticket_card(card)
    author = block(blocks, "ticket-42-author")["text"]["text"]
    assert author == (
        "*<https://other.example/@a%7C%3C!here%3E|&lt;!channel Evil&lt;https://x.exampley "
        f"@{WJ}here *admin* (@{WJ}here@&lt;!everyone)>* wrote:"
    )
    assert fallback.startswith(f"Ticket #42 from @{WJ}here@&lt;!everyone&gt;: ")
    assert_no_injection(fallback, blocks)
    assert_block_kit_limits(fallback, blocks)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt://x",
        "data:text/html,hi",
        "//evil.example",
        "https://a b",
        "ftp://x",
        "",
        "https://evil.example/\u202egpj.exe",
    ],
)
def test_unsafe_urls_are_dropped(url: str) -> None:
    fallback, blocks = ticket_card(replace(CARD, author_url=url, post_url=url))
    assert block(blocks, "ticket-42-author")["text"]["text"] == "*Alice (@alice@other.example)* wrote:"
    meta = [e["text"] for e in block(blocks, "ticket-42-meta")["elements"]]
    assert not any("View post" in m for m in meta)
    assert_no_injection(fallback, blocks)


def test_long_text_is_truncated_within_limits() -> None:
    text = ("<!here> & " * 1000)[:10_000]
    fallback, blocks = ticket_card(replace(CARD, text=text))
    body = block(blocks, "ticket-42-text")["text"]["text"]
    assert body.endswith("\n_… (truncated)_")
    assert 2900 < len(body) <= 3000
    # Cut before escaping, so no entity is ever split.
    assert re.search(r"&[a-z]*$", body.removesuffix("\n_… (truncated)")) is None
    assert len(fallback) < 400 and fallback.endswith("…")
    assert_no_injection(fallback, blocks)
    assert_block_kit_limits(fallback, blocks)


def test_many_short_lines_are_truncated_within_limits() -> None:
    fallback, blocks = ticket_card(replace(CARD, text="a\n" * 5000))
    assert_block_kit_limits(fallback, blocks)


def test_everything_huge_still_fits() -> None:
    big = "<@U1>|&>" * 20_000
    card = replace(
        CARD,
        number=10**200,
        priority=big,
        state=big,
        label=big,
        author_acct=big,
        author_display_name=big,
        author_url="https://x.example/" + "a" * 5000,
        post_url="https://x.example/" + "|" * 900,
        text=big,
        visibility=big,
        language=big,
    )
    fallback, blocks = ticket_card(card)
    assert_block_kit_limits(fallback, blocks)
    assert_no_injection(fallback, blocks)


def test_empty_text_still_valid() -> None:
    fallback, blocks = ticket_card(replace(CARD, text="  \n ", author_display_name=""))
    assert block(blocks, "ticket-42-text")["text"]["text"] == "_(no text)_"
    assert block(blocks, "ticket-42-author")["text"]["text"].startswith("*<https://other.example/@alice|@alice")
    assert_block_kit_limits(fallback, blocks)


def test_actions_block_appended_when_given() -> None:
    button = {"type": "button", "text": {"type": "plain_text", "text": "Claim"}, "action_id": "claim"}
    fallback, blocks = ticket_card(CARD, actions=[button])
    assert blocks[-1] == {"type": "actions", "block_id": "ticket-42-actions", "elements": [button]}
    assert_block_kit_limits(fallback, blocks)
    assert "actions" not in [b["type"] for b in ticket_card(CARD)[1]]


def test_categories_and_priority_reasons_are_shown_escaped() -> None:
    card = replace(
        CARD,
        priority="urgent",
        categories=("delivery", "<!here>"),
        priority_reasons=("2 high cues together", "outage words: is down", "12,400 followers"),
    )
    fallback, blocks = ticket_card(card, now=POSTED)
    assert block(blocks, "ticket-42-header")["text"]["text"] == "Ticket #42 · urgent priority"
    why = [e["text"] for e in block(blocks, "ticket-42-why")["elements"]]
    assert why == [
        "Categories: delivery, &lt;!here&gt;",
        "Urgent because: 2 high cues together; outage words: is down; 12,400 followers",
    ]
    assert render_plain(fallback, blocks).splitlines()[-1] == (
        "Categories: delivery, <!here> · Urgent because: 2 high cues together; outage words: is down; 12,400 followers"
    )
    assert_block_kit_limits(fallback, blocks)
    assert_no_injection(fallback, blocks)
    assert "ticket-42-why" not in [b["block_id"] for b in ticket_card(CARD)[1]]


def test_many_long_categories_and_reasons_still_fit() -> None:
    big = "<@U1>|&>" * 2000
    card = replace(CARD, categories=(big,) * 500, priority_reasons=(big,) * 500)
    fallback, blocks = ticket_card(card)
    why = block(blocks, "ticket-42-why")["elements"]
    # Shortened before escaping, so the cut is ours (with its marker), never Slack's limit halving an entity.
    assert [e["text"][-1] for e in why] == ["…", "…"]
    assert_block_kit_limits(fallback, blocks)
    assert_no_injection(fallback, blocks)


def test_the_priority_select_offers_every_priority_most_pressing_first() -> None:
    ticket = Ticket(
        id=7,
        priority="urgent",
        customer_account_id="1",
        customer_acct="a@x.example",
        root_status_id="1",
        posted_at=POSTED,
        received_at=POSTED,
        score=0.9,
        channel="C0SUPPORT",
    )
    select = card_actions(ticket)[-1]
    assert [o["value"] for o in select["options"]] == ["7:urgent", "7:high", "7:normal", "7:low"]
    assert select["initial_option"]["text"]["text"] == "Urgent priority"
    # Every option the card offers is one the action handler takes.
    assert [priority_choice({"selected_option": o}) for o in select["options"]] == [
        (7, "urgent"),
        (7, "high"),
        (7, "normal"),
        (7, "low"),
    ]


# -- followup_message -------------------------------------------------------------


def test_followup_message() -> None:
    fallback, blocks = followup_message(
        number=42,
        author_acct="alice@other.example",
        author_url="https://other.example/@alice",
        text="any news? <!here>",
        post_url="https://other.example/@alice/112",
        posted_at=POSTED,
    )
    assert fallback == "Follow-up on ticket #42 from @alice@other.example: any news? &lt;!here&gt;"
    assert blocks[0]["text"]["text"] == (
        "*<https://other.example/@alice|@alice@other.example>* followed up:\n&gt; any news? &lt;!here&gt;"
    )
    assert [e["text"] for e in blocks[1]["elements"]] == [
        "<https://other.example/@alice/112|View post>",
        "Posted <!date^1714566600^{date_short_pretty} {time}|2024-05-01 12:30 UTC>",
    ]
    assert_no_injection(fallback, blocks)
    assert_block_kit_limits(fallback, blocks)


def test_followup_message_hostile_and_huge() -> None:
    fallback, blocks = followup_message(
        number=7,
        author_acct="<!channel>" * 500,
        author_url="javascript:alert(1)",
        text=HOSTILE * 200,
        post_url="https://x.example/" + "a" * 2000,
        posted_at=POSTED,
    )
    assert blocks[0]["text"]["text"].startswith("*@&lt;!channel&gt;")
    assert_no_injection(fallback, blocks)
    assert_block_kit_limits(fallback, blocks)


# -- render_plain -----------------------------------------------------------------


def test_render_plain_ticket() -> None:
    fallback, blocks = ticket_card(replace(CARD, text="a < b & <!here>\nok"), now=POSTED)
    assert render_plain(fallback, blocks) == (
        "Ticket #42 · high priority\n"
        "==========================\n"
        "*Alice (@alice@other.example) (https://other.example/@alice)* wrote:\n"
        "> a < b & <!here>\n"
        "> ok\n"
        "View post (https://other.example/@alice/111) · score 0.87 · Label: complaint · "
        "Posted 2024-05-01 12:30 UTC · Visibility: public · Language: en\n"
        "Unassigned · First response due 2024-05-01 13:30 UTC"
    )


def test_render_plain_unescapes_once_and_handles_actions() -> None:
    button = {"type": "button", "text": {"type": "plain_text", "text": "Claim"}, "action_id": "claim"}
    fallback, blocks = ticket_card(replace(CARD, text="&lt; typed literally"), actions=[button])
    out = render_plain(fallback, blocks)
    assert "> &lt; typed literally\n" in out
    assert out.endswith("\n[Claim]")


def test_render_plain_without_blocks_uses_fallback() -> None:
    assert render_plain("hi &lt;there&gt; <https://x.example|link>", []) == "hi <there> link (https://x.example)"


def test_render_plain_shows_a_selects_choice() -> None:
    select = {
        "type": "static_select",
        "action_id": "p",
        "placeholder": {"type": "plain_text", "text": "Priority"},
        "initial_option": {"text": {"type": "plain_text", "text": "High priority"}, "value": "1:high"},
        "options": [],
    }
    _, blocks = ticket_card(CARD, actions=[select], now=POSTED)
    assert render_plain("", blocks).endswith("\n[High priority]")
    del select["initial_option"]
    assert render_plain("", ticket_card(CARD, actions=[select], now=POSTED)[1]).endswith("\n[Priority]")


# -- bidi and invisible controls ---------------------------------------------------

# What can reorder or hide text in Slack; the word joiner is left out, escape_mrkdwn adds it after "@".
CONTROLS = "\u061c\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"


def controls_in(*shown: Any) -> list[str]:
    """Every string Slack would be sent that still holds a bidi or invisible control."""
    return [s for s in walk_strings(list(shown)) if any(c in s for c in CONTROLS)]


def sprinkled(text: str) -> str:
    return "\u202e" + "\u2067".join(text) + "\u202c\u200f"


def test_no_bidi_control_reaches_a_card_or_follow_up() -> None:
    # Tickets stored before the edge cleaned names still carry them; the card must not show them either.
    card = replace(
        CARD,
        author_acct=sprinkled("alice@other.example"),
        author_display_name=sprinkled("Acme Support"),
        author_url="https://other.example/@alice\u202e",
        text=sprinkled("refund me"),
        post_url="https://other.example/@alice/111\u2066",
        label=sprinkled("complaint"),
        language=sprinkled("en"),
        visibility=sprinkled("public"),
        closed_reason=sprinkled("spam"),
        state="closed",
    )
    fallback, blocks = ticket_card(card, now=POSTED)
    assert controls_in(fallback, blocks) == []
    assert "Acme Support (@alice@other.example)" in block(blocks, "ticket-42-author")["text"]["text"]
    follow_up = followup_message(
        number=42,
        author_acct=card.author_acct,
        author_url=card.author_url,
        text=card.text,
        post_url=card.post_url,
        posted_at=POSTED,
    )
    assert controls_in(follow_up) == []


def test_no_bidi_control_reaches_the_reply_modal() -> None:
    target = ReplyTarget(ticket_id=42, acct=sprinkled("alice"), channel="C0SUPPORT")
    limits = StatusLimits(max_characters=500, characters_reserved_per_url=23)
    view = reply_view(
        target, post_text=sprinkled("my order"), post_url=CARD.post_url, post_visibility="public", limits=limits
    )
    assert controls_in(view) == []
    assert "my order" in str(view) and "@alice" in str(view)


def test_reply_modal_links_the_post_only_when_its_url_is_safe() -> None:
    target = ReplyTarget(ticket_id=42, acct="alice")
    limits = StatusLimits(max_characters=500, characters_reserved_per_url=23)

    def header(post_url: str) -> str:
        view = reply_view(target, post_text="hi", post_url=post_url, post_visibility="public|<!here>", limits=limits)
        return str(view["blocks"][0]["text"]["text"]).split("\n")[0]

    forged = header("https://evil.example/x|Verify your account>")
    assert forged == "*@alice* wrote (public|&lt;!here&gt;):"
    encoded = header("https://evil.example/x|Verify>")
    assert encoded == "*@alice* wrote (public|&lt;!here&gt;) (<https://evil.example/x%7CVerify%3E|view post>):"


# -- end to end: a customer whose display name carries bidi controls ----------------------------------


async def test_a_customers_bidi_controls_reach_nothing_in_slack(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    # mallory's display name is "\u202eevil\u202c Support\u200f" (tests/conftest.py).
    daemon = await start_daemon(make_config(slack={"repliers": [AGENT]}))
    card, ticket = await new_ticket(daemon, mastodon, slack, user="mallory", text=COMPLAINT + " \u202eti xif\u202c")
    assert ticket.customer_display_name == "evil Support"
    await post(
        mastodon,
        "mallory",
        "@brand still \u2067waiting\u2069\u200f, \u200bhello?",
        in_reply_to_id=ticket.root_status_id,
    )
    follow_up = await slack.wait_for(lambda: slack.thread("C0SUPPORT", card["ts"]), timeout_s=10)
    view = await open_modal(slack, card, AGENT, ticket)
    shown = await ask(slack, AGENT, f"show {ticket.id}")

    assert "evil Support (@mallory)" in str(card["blocks"])
    assert "still waiting, hello?" in str(follow_up)
    assert "ti xif" in str(card["blocks"]) and "still waiting" in str(view)  # the modal quotes the latest post
    assert "evil Support" in shown
    assert controls_in(slack.messages("C0SUPPORT"), slack.updates, follow_up, slack.views, shown) == []
