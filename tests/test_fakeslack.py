"""Tests for the fake Slack server, driven through the real slack-sdk clients.

Using slack-sdk (not raw HTTP) proves the fake understands exactly what the
product will send, and that its answers parse the way real Slack's do.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from mentiondesk.bot.slack.cards import TicketCard, ticket_card
from tests.fakeslack import FakeSlack
from tests.fakeslack.server import DEFAULT_SCOPES

pytestmark = pytest.mark.timeout(10)

METADATA = {"event_type": "ticket_created", "event_payload": {"ticket_id": 42, "status": "open"}}


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def modal(title: str = "Close ticket", **extra: Any) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "close_ticket",
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": "Close"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "reason_input"},
            }
        ],
        **extra,
    }


async def api_error(call: Awaitable[object]) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    # These tests post several messages to a channel at once to test something else; the rate limits have
    # tests of their own, on a FakeSlack with its defaults.
    async with FakeSlack(enforce_rate_limit=False) as server:
        yield server


@pytest.fixture
def web(fake: FakeSlack) -> AsyncWebClient:
    # No shared session: slack-sdk then opens and closes one per call, so nothing can leak.
    return AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)


# ---------------------------------------------------------------- auth


async def test_auth_test_identifies_the_bot(web: AsyncWebClient) -> None:
    resp = await web.auth_test()
    assert (resp["user_id"], resp["team_id"], resp["bot_id"]) == ("U0BOT", "T0TEST", "B0BOT")


@pytest.mark.parametrize(
    ("token", "error"),
    [(None, "not_authed"), ("xoxb-wrong", "invalid_auth"), ("xapp-test-app", "not_allowed_token_type")],
)
async def test_bad_tokens_are_rejected(fake: FakeSlack, token: str | None, error: str) -> None:
    client = AsyncWebClient(token=token, base_url=fake.base_url)
    err = await api_error(client.chat_postMessage(channel="C0SUPPORT", text="hi"))
    assert err.response.status_code == 200  # Slack reports API errors with HTTP 200
    assert err.response["error"] == error
    assert fake.messages() == []
    assert fake.call_count("chat.postMessage") == 1  # rejected calls are still recorded


async def test_token_as_form_field_is_accepted(fake: FakeSlack) -> None:
    client = AsyncWebClient(base_url=fake.base_url)
    resp = await client.api_call("auth.test", data={"token": fake.bot_token})
    assert resp["user_id"] == "U0BOT"


async def test_connections_open_wants_the_app_token(fake: FakeSlack, web: AsyncWebClient) -> None:
    err = await api_error(web.apps_connections_open(app_token=fake.bot_token))
    assert err.response["error"] == "not_allowed_token_type"
    resp = await web.apps_connections_open(app_token=fake.app_token)
    assert resp["url"].startswith(f"ws://127.0.0.1:{fake.port}/socket?ticket=")


async def test_unknown_method(web: AsyncWebClient) -> None:
    err = await api_error(web.api_call("chat.frobnicate", json={"channel": "C0SUPPORT"}))
    assert err.response["error"] == "unknown_method"


# ---------------------------------------------------------------- posting and reading


async def test_unknown_channel_is_channel_not_found(web: AsyncWebClient) -> None:
    err = await api_error(web.chat_postMessage(channel="C0NOPE", text="hi"))
    assert err.response["error"] == "channel_not_found"


async def test_post_accepts_channel_name_but_history_wants_an_id(web: AsyncWebClient) -> None:
    resp = await web.chat_postMessage(channel="#billing", text="hi")
    assert resp["channel"] == "C0BILLING"
    err = await api_error(web.conversations_history(channel="billing"))
    assert err.response["error"] == "channel_not_found"


async def test_post_then_history_with_metadata(fake: FakeSlack, web: AsyncWebClient) -> None:
    first = await web.chat_postMessage(channel="C0SUPPORT", text="New ticket", metadata=METADATA)
    await web.chat_postMessage(channel="C0SUPPORT", text="second")
    await web.chat_postMessage(channel="C0BILLING", text="elsewhere")
    assert first["message"]["metadata"] == METADATA

    with_meta = await web.conversations_history(channel="C0SUPPORT", include_all_metadata=True)
    assert [m["text"] for m in with_meta["messages"]] == ["second", "New ticket"]  # newest first
    assert with_meta["messages"][1]["metadata"] == METADATA

    without = await web.conversations_history(channel="C0SUPPORT")
    assert all("metadata" not in m for m in without["messages"])

    newer = await web.conversations_history(channel="C0SUPPORT", oldest=first["ts"])
    assert [m["text"] for m in newer["messages"]] == ["second"]
    assert fake.messages("support")[0]["metadata"] == METADATA


async def test_history_paginates_with_cursor(web: AsyncWebClient) -> None:
    for text in ("one", "two", "three"):
        await web.chat_postMessage(channel="C0SUPPORT", text=text)
    page1 = await web.conversations_history(channel="C0SUPPORT", limit=2)
    assert [m["text"] for m in page1["messages"]] == ["three", "two"] and page1["has_more"]
    cursor = page1["response_metadata"]["next_cursor"]
    page2 = await web.conversations_history(channel="C0SUPPORT", limit=2, cursor=cursor)
    assert [m["text"] for m in page2["messages"]] == ["one"] and not page2["has_more"]


async def test_form_encoded_and_query_string_posts(fake: FakeSlack, web: AsyncWebClient) -> None:
    blocks = [section("*form* post", block_id="b1")]
    form = {
        "channel": "C0SUPPORT",
        "text": "form",
        "blocks": json.dumps(blocks),
        "metadata": json.dumps(METADATA),
    }
    await web.api_call("chat.postMessage", data=form)
    await web.api_call("chat.postMessage", params={"channel": "C0SUPPORT", "text": "query"})
    posted = fake.messages()
    assert posted[0]["blocks"] == blocks and posted[0]["metadata"] == METADATA
    assert posted[1]["text"] == "query"

    bad = {"channel": "C0SUPPORT", "text": "x", "blocks": "[not json"}
    err = await api_error(web.api_call("chat.postMessage", data=bad))
    assert err.response["error"] == "invalid_blocks_format"


async def test_thread_replies(fake: FakeSlack, web: AsyncWebClient) -> None:
    parent = await web.chat_postMessage(channel="C0SUPPORT", text="parent")
    reply = await web.chat_postMessage(channel="C0SUPPORT", text="reply", thread_ts=parent["ts"])
    assert reply["message"]["thread_ts"] == parent["ts"]

    thread = await web.conversations_replies(channel="C0SUPPORT", ts=parent["ts"])
    assert [m["text"] for m in thread["messages"]] == ["parent", "reply"]
    assert thread["messages"][0]["reply_count"] == 1
    history = await web.conversations_history(channel="C0SUPPORT")
    assert [m["text"] for m in history["messages"]] == ["parent"]  # replies stay in the thread
    assert [m["text"] for m in fake.thread("C0SUPPORT", parent["ts"])] == ["reply"]
    assert [m["text"] for m in fake.messages()] == ["parent"]


@pytest.mark.parametrize("where", ["unknown_ts", "reply_ts", "other_channel"])
async def test_bad_thread_ts_is_thread_not_found(web: AsyncWebClient, where: str) -> None:
    parent = await web.chat_postMessage(channel="C0SUPPORT", text="parent")
    reply = await web.chat_postMessage(channel="C0SUPPORT", text="reply", thread_ts=parent["ts"])
    channel, thread_ts = {
        "unknown_ts": ("C0SUPPORT", "1600000000.000100"),
        "reply_ts": ("C0SUPPORT", reply["ts"]),
        "other_channel": ("C0BILLING", parent["ts"]),
    }[where]
    err = await api_error(web.chat_postMessage(channel=channel, text="x", thread_ts=thread_ts))
    assert err.response["error"] == "thread_not_found"


async def test_chat_update_keeps_edit_history(fake: FakeSlack, web: AsyncWebClient) -> None:
    blocks = [section("ticket #1: *open*")]
    posted = await web.chat_postMessage(channel="C0SUPPORT", text="v1", blocks=blocks)
    updated = await web.chat_update(channel="C0SUPPORT", ts=posted["ts"], text="v2")
    assert updated["message"]["text"] == "v2"
    stored = fake.messages()[0]
    assert stored["text"] == "v2" and stored["blocks"] == blocks  # omitted blocks are kept
    assert fake.updates[0]["previous"]["text"] == "v1"

    err = await api_error(web.chat_update(channel="C0SUPPORT", ts="1600000000.000100", text="x"))
    assert err.response["error"] == "message_not_found"


async def test_cannot_update_a_human_message(fake: FakeSlack, web: AsyncWebClient) -> None:
    human = fake.inject_message("C0SUPPORT", "U0CUST", "hello")
    err = await api_error(web.chat_update(channel="C0SUPPORT", ts=human["ts"], text="edited"))
    assert err.response["error"] == "cant_update_message"


async def test_ephemeral_and_channel_info(fake: FakeSlack, web: AsyncWebClient) -> None:
    resp = await web.chat_postEphemeral(channel="C0SUPPORT", user="U0AGENT", text="only you")
    assert resp["message_ts"]
    assert fake.ephemerals[0]["user"] == "U0AGENT" and fake.messages() == []
    info = await web.conversations_info(channel="C0APPROVE")
    assert info["channel"]["name"] == "approvals" and info["channel"]["is_member"]


# ---------------------------------------------------------------- channels, membership and scopes


async def test_conversations_list_pages_with_a_cursor(fake: FakeSlack, web: AsyncWebClient) -> None:
    for n in range(4):
        fake.add_channel(f"extra-{n}", bot_member=n % 2 == 0)
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await web.conversations_list(limit=2, cursor=cursor)
        assert len(page["channels"]) <= 2
        names += [c["name"] for c in page["channels"]]
        pages += 1
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:  # Slack ends the walk with an empty next_cursor
            break
    assert names == ["support", "billing", "approvals", "extra-0", "extra-1", "extra-2", "extra-3"]
    assert pages == 4
    listed = {c["name"]: c["is_member"] for c in (await web.conversations_list(limit=1000))["channels"]}
    assert listed["extra-0"] is True and listed["extra-1"] is False


async def test_conversations_list_types_and_archived(fake: FakeSlack, web: AsyncWebClient) -> None:
    fake.add_channel("secret", private=True)
    fake.add_channel("secret-elsewhere", private=True, bot_member=False)
    fake.add_channel("old", archived=True)

    async def names(**kwargs: Any) -> list[str]:
        return [c["name"] for c in (await web.conversations_list(**kwargs))["channels"]]

    assert await names() == ["support", "billing", "approvals", "old"]  # public_channel is the default type
    assert await names(types="private_channel") == ["secret"]  # a private channel the bot is not in is unseen
    assert "secret" in await names(types="public_channel,private_channel")
    assert "old" not in await names(exclude_archived=True)
    [secret] = [c for c in (await web.conversations_list(types="private_channel"))["channels"]]
    assert secret["is_private"] and secret["is_group"] and not secret["is_channel"]


async def test_conversations_list_rejects_bad_arguments(web: AsyncWebClient) -> None:
    assert (await api_error(web.conversations_list(limit=1001))).response["error"] == "invalid_limit"
    assert (await api_error(web.conversations_list(types="channels"))).response["error"] == "invalid_types"
    assert (await api_error(web.conversations_list(cursor="bogus"))).response["error"] == "invalid_cursor"


async def test_reading_channels_needs_the_read_scopes() -> None:
    async with FakeSlack(scopes=DEFAULT_SCOPES - {"groups:read"}) as fake:
        web = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
        err = await api_error(web.conversations_list(types="public_channel,private_channel"))
        assert (err.response["error"], err.response["needed"]) == ("missing_scope", "groups:read")
        assert "channels:read" in err.response["provided"].split(",")
        assert len((await web.conversations_list(types="public_channel"))["channels"]) == 3
        private = fake.add_channel("secret", private=True)
        err = await api_error(web.conversations_info(channel=private))
        assert err.response["needed"] == "groups:read"


async def test_conversations_info_reports_membership(fake: FakeSlack, web: AsyncWebClient) -> None:
    fake.remove_bot("C0BILLING")
    info = (await web.conversations_info(channel="C0BILLING"))["channel"]
    assert info["name"] == "billing" and info["is_member"] is False and info["is_archived"] is False
    hidden = fake.add_channel("secret", private=True, bot_member=False)
    assert (await api_error(web.conversations_info(channel=hidden))).response["error"] == "channel_not_found"
    fake.invite_bot(hidden)
    assert (await web.conversations_info(channel=hidden))["channel"]["is_private"] is True
    # conversations.* take IDs; only chat.postMessage resolves a #name.
    assert (await api_error(web.conversations_info(channel="#billing"))).response["error"] == "channel_not_found"


async def test_posting_needs_a_member_in_a_live_channel(fake: FakeSlack, web: AsyncWebClient) -> None:
    fake.remove_bot("C0BILLING")
    assert (await api_error(web.chat_postMessage(channel="#billing", text="hi"))).response["error"] == "not_in_channel"
    assert (await api_error(web.conversations_history(channel="C0BILLING"))).response["error"] == "not_in_channel"
    hidden = fake.add_channel("secret", private=True, bot_member=False)
    err = await api_error(web.chat_postMessage(channel=hidden, text="hi"))
    assert err.response["error"] == "channel_not_found"
    fake.archive("C0SUPPORT")
    assert (await api_error(web.chat_postMessage(channel="C0SUPPORT", text="hi"))).response["error"] == "is_archived"
    assert fake.messages() == []

    fake.invite_bot("#billing")
    await web.chat_postMessage(channel="#billing", text="after the invite")
    assert [m["text"] for m in fake.messages("C0BILLING")] == ["after the invite"]


async def test_chat_write_public_posts_without_an_invite() -> None:
    async with FakeSlack(scopes=DEFAULT_SCOPES | {"chat:write.public"}) as fake:
        fake.remove_bot("C0BILLING")
        web = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
        await web.chat_postMessage(channel="C0BILLING", text="hi")
        assert len(fake.messages("C0BILLING")) == 1


async def test_missing_chat_write_is_missing_scope() -> None:
    async with FakeSlack(scopes=DEFAULT_SCOPES - {"chat:write"}) as fake:
        web = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
        err = await api_error(web.chat_postMessage(channel="C0SUPPORT", text="hi"))
        assert (err.response["error"], err.response["needed"]) == ("missing_scope", "chat:write")


async def test_revoked_token_is_token_revoked(fake: FakeSlack, web: AsyncWebClient) -> None:
    fake.revoke_token(fake.bot_token)
    assert (await api_error(web.auth_test())).response["error"] == "token_revoked"


def test_default_scopes_are_the_manifests() -> None:
    manifest = Path(__file__).resolve().parent.parent / "deploy" / "slack-app-manifest.yaml"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    start = lines.index("    bot:") + 1
    scopes = set()
    for line in lines[start:]:
        if not line.startswith("      "):
            break
        if line.strip().startswith("- "):
            scopes.add(line.strip().removeprefix("- "))
    assert scopes == DEFAULT_SCOPES


# ---------------------------------------------------------------- validation


async def test_message_without_content_is_no_text(web: AsyncWebClient) -> None:
    # Raw api_call: chat_postMessage() itself warns (an error under our filterwarnings) without text.
    err = await api_error(web.api_call("chat.postMessage", json={"channel": "C0SUPPORT"}))
    assert err.response["error"] == "no_text"


async def test_overlong_text_is_msg_too_long(web: AsyncWebClient) -> None:
    err = await api_error(web.chat_postMessage(channel="C0SUPPORT", text="x" * 40_001))
    assert err.response["error"] == "msg_too_long"


@pytest.mark.parametrize(
    ("blocks", "pointer"),
    [
        pytest.param([section("x" * 3001)], "/blocks/0/text/text", id="section-text-3001"),
        pytest.param([{"type": "divider"}] * 51, "/blocks", id="51-blocks"),
        pytest.param([section("a", block_id="b"), section("b", block_id="b")], "/blocks/1/block_id", id="dup-id"),
        pytest.param(
            [{"type": "header", "text": {"type": "mrkdwn", "text": "hi"}}],
            "/blocks/0/text/type",
            id="mrkdwn-header",
        ),
        pytest.param(
            [
                {
                    "type": "actions",
                    "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Go"}, "style": "green"}],
                }
            ],
            "/blocks/0/elements/0/style",
            id="button-style",
        ),
        pytest.param([{"type": "carousel"}], "/blocks/0/type", id="unknown-type"),
        pytest.param([{"type": "section"}], "/blocks/0", id="empty-section"),
    ],
)
async def test_block_kit_violations_are_invalid_blocks(
    fake: FakeSlack, web: AsyncWebClient, blocks: list[dict[str, Any]], pointer: str
) -> None:
    err = await api_error(web.chat_postMessage(channel="C0SUPPORT", text="fallback", blocks=blocks))
    assert err.response["error"] == "invalid_blocks"
    assert any(e.startswith(f"{pointer}:") for e in err.response["errors"]), err.response["errors"]
    assert fake.messages() == []


async def test_block_kit_limits_are_inclusive(web: AsyncWebClient) -> None:
    blocks = [section("x" * 3000), *([{"type": "divider"}] * 49)]
    resp = await web.chat_postMessage(channel="C0SUPPORT", text="fallback", blocks=blocks)
    assert len(resp["message"]["blocks"]) == 50


# ---------------------------------------------------------------- faults and rate limits


async def test_rate_limit_next_answers_429_with_retry_after(fake: FakeSlack, web: AsyncWebClient) -> None:
    fake.rate_limit_next("chat.postMessage", retry_after_s=7)
    err = await api_error(web.chat_postMessage(channel="C0SUPPORT", text="hi"))
    assert err.response.status_code == 429
    assert err.response.headers["Retry-After"] == "7"
    assert err.response["error"] == "ratelimited"
    assert fake.messages() == []
    await web.chat_postMessage(channel="C0SUPPORT", text="hi")
    assert len(fake.messages()) == 1


async def test_fail_next_503_surfaces_as_an_error(fake: FakeSlack, web: AsyncWebClient) -> None:
    fake.fail_next("chat.postMessage", status=503)
    err = await api_error(web.chat_postMessage(channel="C0SUPPORT", text="hi"))
    assert err.response.status_code == 503
    assert err.response["error"] is None  # an HTML body: slack-sdk has no "error" to show
    await web.chat_postMessage(channel="C0SUPPORT", text="hi")
    assert len(fake.messages()) == 1 and fake.call_count("chat.postMessage") == 2


async def test_set_down_fails_every_call_until_up(fake: FakeSlack, web: AsyncWebClient) -> None:
    fake.set_down(True)
    err = await api_error(web.auth_test())
    assert err.response.status_code == 503
    fake.set_down(False)
    assert (await web.auth_test())["ok"]


async def test_enforced_rate_limit_is_per_channel_and_recovers() -> None:
    async with FakeSlack() as fake:  # Slack's limits are on by default
        web = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
        await web.chat_postMessage(channel="C0SUPPORT", text="1")
        err = await api_error(web.chat_postMessage(channel="C0SUPPORT", text="2"))
        assert err.response.status_code == 429 and err.response.headers["Retry-After"] == "1"
        # A rejected post does not start an interval, and channels are limited separately.
        await api_error(web.chat_postMessage(channel="C0BILLING", text="x" * 40_001))
        await web.chat_postMessage(channel="C0BILLING", text="other channel is fine")
        assert fake.rate_limited_count == 1
        await asyncio.sleep(1.1)
        await web.chat_postMessage(channel="C0SUPPORT", text="3")
        assert [m["text"] for m in fake.messages("C0SUPPORT")] == ["1", "3"]


async def update_until_accepted(web: AsyncWebClient, channel: str, ts: str, timeout_s: float) -> None:
    """Send the same chat.update until Slack takes it (a client honouring the limit would wait instead)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await web.chat_update(channel=channel, ts=ts, text="edit")
            return
        except SlackApiError as err:
            if err.response.status_code != 429 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


async def test_chat_update_is_limited_to_fifty_a_minute_for_the_workspace() -> None:
    async with FakeSlack() as fake:
        web = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
        support = (await web.chat_postMessage(channel="C0SUPPORT", text="card"))["ts"]
        billing = (await web.chat_postMessage(channel="C0BILLING", text="card"))["ts"]
        # Tier 3 counts every channel together: 25 edits in each use up the minute.
        for i in range(25):
            await web.chat_update(channel="C0SUPPORT", ts=support, text=f"edit {i}")
            await web.chat_update(channel="C0BILLING", ts=billing, text=f"edit {i}")
        err = await api_error(web.chat_update(channel="C0APPROVE", ts=support, text="one too many"))
        assert (err.response.status_code, err.response["error"]) == (429, "ratelimited")
        assert 59 <= int(err.response.headers["Retry-After"]) <= 60  # until the first edit leaves the minute
        assert len(fake.updates) == 50 and fake.rate_limited_count == 1
        # Posting is limited apart from editing.
        await web.chat_postMessage(channel="C0APPROVE", text="still postable")


async def test_chat_update_limit_is_a_sliding_window() -> None:
    async with FakeSlack() as fake:
        fake.update_limit, fake.update_window_s = 2, 0.5  # Slack's minute, shortened so the test can wait it out
        web = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
        ts = (await web.chat_postMessage(channel="C0SUPPORT", text="card"))["ts"]
        first = time.monotonic()
        await web.chat_update(channel="C0SUPPORT", ts=ts, text="edit 1")
        await web.chat_update(channel="C0SUPPORT", ts=ts, text="edit 2")
        err = await api_error(web.chat_update(channel="C0SUPPORT", ts=ts, text="edit 3"))
        assert err.response.headers["Retry-After"] == "1"
        # Refused calls do not hold the window open: the third goes through once the first edit is out of it.
        await update_until_accepted(web, "C0SUPPORT", ts, timeout_s=3)
        assert time.monotonic() - first >= 0.5
        assert len(fake.updates) == 3


async def test_rate_limits_can_be_turned_off_for_a_test_that_must_go_faster(fake: FakeSlack) -> None:
    web = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
    ts = (await web.chat_postMessage(channel="C0SUPPORT", text="1"))["ts"]
    await web.chat_postMessage(channel="C0SUPPORT", text="2")
    for i in range(51):
        await web.chat_update(channel="C0SUPPORT", ts=ts, text=f"edit {i}")
    assert fake.rate_limited_count == 0 and len(fake.updates) == 51


async def test_wait_for_reports_what_it_waited_for(fake: FakeSlack, web: AsyncWebClient) -> None:
    await web.chat_postMessage(channel="C0SUPPORT", text="hi")
    found = await fake.wait_for(lambda: fake.messages("C0SUPPORT"), timeout_s=0.5)
    assert found[0]["text"] == "hi"
    with pytest.raises(AssertionError, match=r"(?s)timed out after 0.05s.*C0BILLING.*chat.postMessage"):
        await fake.wait_for(lambda: fake.messages("C0BILLING"), timeout_s=0.05)


# ---------------------------------------------------------------- modals and payloads


async def test_views_open_update_and_submission(fake: FakeSlack, web: AsyncWebClient) -> None:
    trigger = fake.slash_command_payload("U0AGENT", "/ticket", "close 7", "C0SUPPORT")["trigger_id"]
    opened = await web.views_open(trigger_id=trigger, view=modal(private_metadata="ticket-7"))
    view_id = opened["view"]["id"]
    err = await api_error(web.views_open(trigger_id=trigger, view=modal()))
    assert err.response["error"] == "exchanged_trigger_id"

    await web.views_update(view_id=view_id, view=modal(title="Closing…"))
    assert [v["method"] for v in fake.views] == ["views.open", "views.update"]

    values = {"reason": {"reason_input": {"type": "plain_text_input", "value": "resolved"}}}
    payload = fake.view_submission_payload("U0AGENT", "close_ticket", "ticket-7", values)
    assert payload["view"]["id"] == view_id and payload["view"]["state"]["values"] == values


async def test_invalid_modal_is_invalid_arguments(fake: FakeSlack, web: AsyncWebClient) -> None:
    err = await api_error(web.views_open(trigger_id=fake.new_trigger_id(), view=modal(title="x" * 25)))
    assert err.response["error"] == "invalid_arguments"
    assert any("/view/title/text" in m for m in err.response["response_metadata"]["messages"])
    err = await api_error(web.views_open(trigger_id="123.456.made-up", view=modal()))
    assert err.response["error"] == "invalid_trigger_id"


def claim_blocks() -> list[dict[str, Any]]:
    """A message with a Claim button (action_id "claim")."""
    button = {
        "type": "button",
        "action_id": "claim",
        "value": "t1",
        "text": {"type": "plain_text", "text": "Claim"},
    }
    return [section("ticket"), {"type": "actions", "block_id": "ticket_actions", "elements": [button]}]


async def test_payload_builders_reflect_posted_messages(fake: FakeSlack, web: AsyncWebClient) -> None:
    blocks = claim_blocks()
    posted = await web.chat_postMessage(channel="C0SUPPORT", text="ticket", blocks=blocks)

    click = fake.block_actions_payload("U0AGENT", "claim", "t1", "C0SUPPORT", posted["ts"])
    assert click["actions"][0]["block_id"] == "ticket_actions"
    assert click["message"]["blocks"] == blocks and click["container"]["message_ts"] == posted["ts"]

    event = fake.message_event_payload("U0CUST", "support", "my order is late")
    assert event["type"] == "event_callback" and event["event"]["channel"] == "C0SUPPORT"
    # The event's message exists in the channel, so the bot can answer in its thread.
    await web.chat_postMessage(channel="C0SUPPORT", text="on it", thread_ts=event["event"]["ts"])

    slash = fake.slash_command_payload("U0AGENT", "/ticket", "list", "C0SUPPORT")
    assert all(isinstance(v, str) for v in slash.values())


async def test_block_actions_only_for_an_element_on_the_message(fake: FakeSlack, web: AsyncWebClient) -> None:
    posted = await web.chat_postMessage(channel="C0SUPPORT", text="ticket", blocks=claim_blocks())
    with pytest.raises(ValueError, match=r"no element with action_id 'resolve' \(it has \['claim'\]\)"):
        fake.block_actions_payload("U0AGENT", "resolve", "t1", "C0SUPPORT", posted["ts"])
    with pytest.raises(ValueError, match=r"no message 1700000000\.000100 in C0SUPPORT"):
        fake.block_actions_payload("U0AGENT", "claim", "t1", "C0SUPPORT", "1700000000.000100")
    # A test of what the product does with a click only a forger sends says so.
    forged = fake.block_actions_payload("U0AGENT", "resolve", "t1", "C0SUPPORT", posted["ts"], forged=True)
    assert forged["actions"][0]["action_id"] == "resolve"

    # Until an edit reaches everyone's client, the buttons it took away can still be clicked.
    await web.chat_update(channel="C0SUPPORT", ts=posted["ts"], text="claimed", blocks=[section("claimed")])
    late = fake.block_actions_payload("U0AGENT", "claim", "t1", "C0SUPPORT", posted["ts"])
    assert late["actions"][0]["block_id"] == "ticket_actions" and late["message"]["blocks"] == [section("claimed")]

    # A button on an ephemeral message is clicked where it was shown.
    await web.chat_postEphemeral(channel="C0SUPPORT", user="U0AGENT", text="claim it?", blocks=claim_blocks())
    shown = fake.ephemerals[-1]
    click = fake.block_actions_payload("U0AGENT", "claim", "t1", "C0SUPPORT", shown["ts"])
    assert click["container"]["is_ephemeral"] is True and click["actions"][0]["block_id"] == "ticket_actions"
    with pytest.raises(ValueError, match="no element with action_id 'resolve'"):
        fake.block_actions_payload("U0AGENT", "resolve", "t1", "C0SUPPORT", shown["ts"])


# ---------------------------------------------------------------- Socket Mode


class Listener:
    """Records requests and acks them as a Bolt-style app would."""

    def __init__(self) -> None:
        self.requests: list[SocketModeRequest] = []
        self.command_answer: dict[str, Any] = {"text": "ticket created"}

    async def __call__(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        self.requests.append(req)
        payload = self.command_answer if req.type == "slash_commands" else None
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id, payload=payload))


@pytest.fixture
async def listener(fake: FakeSlack) -> AsyncIterator[Listener]:
    web_client = AsyncWebClient(base_url=fake.base_url, token=fake.app_token)
    client = SocketModeClient(app_token=fake.app_token, web_client=web_client)
    listener = Listener()
    client.socket_mode_request_listeners.append(listener)
    await client.connect()
    try:
        yield listener
    finally:
        await client.close()


async def test_socket_mode_delivers_and_gets_acks(fake: FakeSlack, listener: Listener) -> None:
    await fake.wait_connected(timeout_s=2)
    event = fake.message_event_payload("U0CUST", "C0SUPPORT", "hello bot")
    ack = await fake.send_envelope("events_api", event, timeout_s=2)
    assert ack == {"envelope_id": fake.envelopes[-1]["envelope_id"]}
    assert listener.requests[0].payload["event"]["text"] == "hello bot"

    slash = fake.slash_command_payload("U0AGENT", "/ticket", "new", "C0SUPPORT")
    ack = await fake.send_envelope("slash_commands", slash, timeout_s=2)
    assert fake.envelopes[-1]["accepts_response_payload"] is True
    assert ack["payload"] == {"text": "ticket created"}


async def test_socket_mode_client_reconnects_after_disconnect(
    fake: FakeSlack, web: AsyncWebClient, listener: Listener
) -> None:
    await fake.wait_connected(timeout_s=2)
    await fake.disconnect_clients()
    await fake.wait_for(lambda: fake.connections_total == 2 and fake.connected_count == 1, timeout_s=3)
    assert fake.call_count("apps.connections.open") == 2
    posted = await web.chat_postMessage(channel="C0SUPPORT", text="ticket", blocks=claim_blocks())
    click = fake.block_actions_payload("U0AGENT", "claim", "t1", "C0SUPPORT", posted["ts"])
    await fake.send_envelope("interactive", click, timeout_s=2)
    assert listener.requests[-1].payload["type"] == "block_actions"


async def test_socket_mode_survives_failed_connections_open(fake: FakeSlack, listener: Listener) -> None:
    await fake.wait_connected(timeout_s=2)
    # slack-sdk's refresh fails on the 503; it reconnects once the fake drops the old socket.
    fake.fail_next("apps.connections.open", status=503)
    await fake.disconnect_clients(grace_s=0.2)
    await fake.wait_for(lambda: fake.connected_count == 1 and fake.connections_total == 2, timeout_s=3)
    assert fake.call_count("apps.connections.open") == 3


async def test_send_envelope_needs_a_client(fake: FakeSlack) -> None:
    with pytest.raises(RuntimeError, match="no Socket Mode client"):
        await fake.send_envelope("events_api", fake.message_event_payload("U0CUST", "C0SUPPORT", "hi"))


async def test_send_envelope_times_out_without_ack_and_tickets_are_single_use(
    fake: FakeSlack, web: AsyncWebClient
) -> None:
    app_web = AsyncWebClient(base_url=fake.base_url, token=fake.app_token)
    url = (await app_web.apps_connections_open(app_token=fake.app_token))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json()
            assert hello["type"] == "hello" and hello["connection_info"]["app_id"] == "A0TEST"
            with pytest.raises(TimeoutError, match="no ack"):
                await fake.send_envelope("events_api", {"type": "event_callback"}, timeout_s=0.1)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url)


# ---------------------------------------------------------------- markup the product did not add on purpose

MASTODON_HOST = "mastodon.example"


@pytest.mark.parametrize(
    ("fragment", "reason"),
    [
        pytest.param("<!channel>", "special mention", id="channel"),
        pytest.param("<!here>", "special mention", id="here"),
        pytest.param("<!everyone>", "special mention", id="everyone"),
        pytest.param("<!here|here>", "special mention", id="here-labelled"),
        pytest.param("<@U0NOBODY>", "'U0NOBODY', not a user of the workspace", id="user"),
        pytest.param("<@W0NOBODY|the boss>", "'W0NOBODY', not a user of the workspace", id="user-labelled"),
        pytest.param("<#C0NOWHERE>", "'C0NOWHERE', not a channel of the workspace", id="channel-link"),
        pytest.param("<!subteam^S0NOPE>", "user group 'S0NOPE'", id="usergroup"),
        pytest.param("<https://evil.example|click>", "'evil.example', not a host the test declared", id="link"),
        pytest.param("<http://evil.example/x>", "'evil.example', not a host", id="bare-link"),
        pytest.param("<mailto:ceo@evil.example|mail us>", "'mailto:ceo@evil.example'", id="mailto"),
        pytest.param("<!date^1700000000^{date}^https://evil.example|today>", "'evil.example'", id="date-link"),
    ],
)
async def test_fake_flags_each_kind_of_markup(fake: FakeSlack, web: AsyncWebClient, fragment: str, reason: str) -> None:
    fake.link_hosts.add(MASTODON_HOST)
    await web.chat_postMessage(channel="C0SUPPORT", text=f"Look {fragment} here")
    assert [(v.method, v.where, v.pointer, v.fragment) for v in fake.markup_violations] == [
        ("chat.postMessage", "C0SUPPORT", "", fragment)
    ]
    assert reason in fake.markup_violations[0].reason
    assert fragment in str(fake.markup_violations[0])  # what the slack fixture's failure shows


async def test_fake_flags_markup_wherever_slack_shows_it(fake: FakeSlack, web: AsyncWebClient) -> None:
    bad = "<!channel>"
    button = {
        "type": "button",
        "action_id": "go",
        "text": {"type": "plain_text", "text": "Go"},
        "confirm": {
            "title": {"type": "plain_text", "text": "Sure?"},
            "text": {"type": "mrkdwn", "text": f"really {bad}"},
            "confirm": {"type": "plain_text", "text": "Yes"},
            "deny": {"type": "plain_text", "text": "No"},
        },
    }
    rich = {
        "type": "rich_text",
        "elements": [
            {
                "type": "rich_text_section",
                "elements": [
                    {"type": "text", "text": "hello "},
                    {"type": "broadcast", "range": "here"},
                    {"type": "link", "url": "https://evil.example/", "text": "docs"},
                ],
            }
        ],
    }
    blocks = [
        section(f"text {bad}", fields=[{"type": "plain_text", "text": "ok"}, {"type": "mrkdwn", "text": bad}]),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": bad}]},
        {"type": "actions", "elements": [button]},
        rich,
    ]
    posted = await web.chat_postMessage(
        channel="C0SUPPORT", text=bad, blocks=blocks, attachments=[{"text": bad, "fallback": "x"}]
    )
    await web.chat_update(channel="C0SUPPORT", ts=posted["ts"], text="edited", blocks=[section(bad)])
    await web.chat_postEphemeral(channel="C0SUPPORT", user="U0AGENT", text=bad)
    trigger = fake.slash_command_payload("U0AGENT", "/ticket", "x", "C0SUPPORT")["trigger_id"]
    view = {**modal(), "blocks": [section(bad)]}
    opened = await web.views_open(trigger_id=trigger, view=view)
    await web.views_update(view_id=opened["view"]["id"], view=view)
    response_url = fake.slash_command_payload("U0AGENT", "/ticket", "x", "C0SUPPORT")["response_url"]
    async with aiohttp.ClientSession() as session, session.post(response_url, json={"text": bad}) as answer:
        assert answer.status == 200

    assert [(v.method, v.pointer) for v in fake.markup_violations] == [
        ("chat.postMessage", ""),
        ("chat.postMessage", "/blocks/0/text/text"),
        ("chat.postMessage", "/blocks/0/fields/1/text"),
        ("chat.postMessage", "/blocks/1/elements/0/text"),
        ("chat.postMessage", "/blocks/2/elements/0/confirm/text/text"),
        ("chat.postMessage", "/blocks/3/elements/0/elements/1"),
        ("chat.postMessage", "/blocks/3/elements/0/elements/2/url"),
        ("chat.postMessage", "/attachments/0/text"),
        ("chat.update", "/blocks/0/text/text"),
        ("chat.postEphemeral", ""),
        ("views.open", "/blocks/0/text/text"),
        ("views.update", "/blocks/0/text/text"),
        ("response_url", ""),
    ]


async def test_fake_flags_markup_in_an_ack(fake: FakeSlack, listener: Listener) -> None:
    await fake.wait_connected(timeout_s=2)
    listener.command_answer = {"text": "done", "blocks": [section("ping <!here>")]}
    await fake.send_envelope("slash_commands", fake.slash_command_payload("U0AGENT", "/ticket", "x", "C0SUPPORT"))
    assert [(v.method, v.pointer, v.fragment) for v in fake.markup_violations] == [
        ("ack", "/blocks/0/text/text", "<!here>")
    ]


async def test_bare_special_mentions_count_only_with_link_names(fake: FakeSlack, web: AsyncWebClient) -> None:
    await web.chat_postMessage(channel="C0SUPPORT", text="hello @channel")
    assert fake.markup_violations == []
    await web.chat_postMessage(channel="C0BILLING", text="hello @channel and @\u2060here", link_names=True)
    assert [v.fragment for v in fake.markup_violations] == ["@channel"]


async def test_fake_accepts_the_products_own_markup(fake: FakeSlack, web: AsyncWebClient) -> None:
    fake.link_hosts.add(MASTODON_HOST)
    fake.usergroups["S0AGENTS"] = ["U0MEMBER"]
    # A user is the workspace's once they have done something in a test (here: a click) or are in a group.
    await web.chat_postMessage(channel="C0SUPPORT", text="for <@U0AGENT>")
    assert [v.fragment for v in fake.markup_violations] == ["<@U0AGENT>"]
    fake.markup_violations.clear()
    fake.slash_command_payload("U0AGENT", "/ticket", "x", "C0SUPPORT")

    ours = (
        "Assigned to <@U0AGENT> by <@U0BOT>, seen by <@U0MEMBER> of <!subteam^S0AGENTS> in <#C0SUPPORT>: "
        f"<https://{MASTODON_HOST}/@bob/1|View post> <https://{MASTODON_HOST}/@bob> "
        "<!date^1700000000^{date_short_pretty} {time}|2023-11-14 22:13 UTC> "
        "and what a customer typed, escaped: &lt;!channel&gt; &lt;https://evil.example|click&gt; &amp;lt;"
    )
    header = {"type": "header", "text": {"type": "plain_text", "text": "shown as typed: <!channel>"}}
    await web.chat_postMessage(channel="C0SUPPORT", text=ours, blocks=[header, section(ours)])

    # A real card, built from a hostile display name and post.
    hostile = "<!channel> <!here> <@U0AGENT> <#C0SUPPORT> <https://evil.example|click> &lt;"
    card = TicketCard(
        number=7,
        state="open",
        priority="high",
        score=0.9,
        label="complaint",
        author_acct="bob",
        author_display_name=f"Bob {hostile}",
        author_url=f"https://{MASTODON_HOST}/@bob",
        text=hostile,
        post_url=f"https://{MASTODON_HOST}/@bob/1",
        posted_at=datetime.now(UTC),
        sla_due_at=None,
        language="en",
        visibility="public",
        assignee_slack_id="U0AGENT",
    )
    text, blocks = ticket_card(card)
    await web.chat_postMessage(channel="C0BILLING", text=text, blocks=blocks)
    assert fake.markup_violations == []
