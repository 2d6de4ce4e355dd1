"""Triage: borderline posts go to a triage channel, where an agent opens them as tickets or dismisses them.

The bands are set around the loaded model's own scores for the texts used, so the tests follow the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.classify.model import ComplaintClassifier
from mentiondesk.bot.config import Config, ConfigError, Settings, parse_settings
from mentiondesk.bot.context import AppContext, Tuning
from mentiondesk.bot.daemon import Daemon
from mentiondesk.bot.events import AccountRef, MentionReceived, MentionsReceived, Post
from mentiondesk.bot.mastodon.client import MastodonClient, post_from_json
from mentiondesk.bot.mastodon.fields import count_field
from mentiondesk.bot.reload import plan_reload
from mentiondesk.bot.slack.triage_view import render_triage
from mentiondesk.handlers.mention import record_mentions
from mentiondesk.storage import gauges, queries_desk, reports, retention, triage
from mentiondesk.storage.db import transaction
from mentiondesk.storage.labels import team_labels
from mentiondesk.storage.models import Mention, SlackOutbox, SlaClock, Ticket
from mentiondesk.storage.ticket_actions import close
from mentiondesk.storage.types import utcnow
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, PRAISE, post, rows
from tests.test_slack_actions import button_ids, click

Start = Callable[[Config], Awaitable[Daemon]]
Sessions = async_sessionmaker[AsyncSession]
TRIAGE = "C0TRIAGE"
# Customer text with Slack markup in it: the triage message must show it inert, as cards do.
# Not a question either: questions are never put in triage.
BORDERLINE = "@brand hmm the app logged me out again <!channel>"
ONE, TWO = "U0ONE", "U0TWO"


@pytest.fixture(scope="module")
def bands() -> dict[str, Any]:
    """Thresholds that put COMPLAINT in the ticket band, BORDERLINE in triage and PRAISE below both."""
    high, mid, low = ComplaintClassifier.load().score_many([COMPLAINT, BORDERLINE, PRAISE])
    assert high > mid > low, "the texts no longer span three bands with this model: pick others"
    return {"threshold": (high + mid) / 2, "triage_threshold": (mid + low) / 2, "triage_channel": TRIAGE}


@pytest.fixture
def triage_slack(slack: FakeSlack) -> FakeSlack:
    slack.add_channel("triage", channel_id=TRIAGE)
    return slack


def _triage_click(slack: FakeSlack, message: dict[str, Any], user: str, action_id: str, value: str) -> Any:
    payload = slack.block_actions_payload(user, action_id, value, TRIAGE, message["ts"])
    return slack.send_envelope("interactive", payload)


async def _posted(slack: FakeSlack, channel: str, n: int) -> list[dict[str, Any]]:
    """The first n messages posted in channel, once there are n."""
    await slack.wait_for(lambda: len(slack.messages(channel)) >= n, timeout_s=10)
    return slack.messages(channel)[:n]


def _current(slack: FakeSlack, message: dict[str, Any]) -> dict[str, Any]:
    edits = [u for u in slack.updates if u["ts"] == message["ts"]]
    return edits[-1] if edits else message


async def _by_acct(daemon: Daemon) -> dict[str, Ticket]:
    return {t.customer_acct: t for t in await rows(daemon, Ticket)}


async def _desk_counts(daemon: Daemon) -> tuple[dict[str, int], int, int]:
    """What the /metrics gauge, /desk stats and the reports count as tickets on the desk and opened today."""
    assert daemon.context is not None
    now = utcnow()
    async with daemon.context.sessions() as session:
        on_desk = await gauges.tickets_on_desk(session)
        day = await queries_desk.day_stats(session, since=now - timedelta(hours=1), now=now)
        period = await reports.ticket_counts(session, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert day.opened == period.opened, "/desk stats and the reports disagree on tickets opened"
    return on_desk, day.opened, period.still_open


async def test_three_bands_open_from_triage_and_not_a_complaint_on_a_card(
    mastodon: MockServer,
    triage_slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    bands: dict[str, Any],
) -> None:
    slack = triage_slack
    daemon = await start_daemon(make_config(classifier=bands))
    await post(mastodon, "alice", COMPLAINT)
    borderline = await post(mastodon, "bob", BORDERLINE)
    await post(mastodon, "carol", PRAISE)

    [card], [message] = await _posted(slack, "C0SUPPORT", 1), await _posted(slack, TRIAGE, 1)
    await eventually(lambda: _stored(daemon, 3), what="the three mentions stored")
    await eventually(lambda: _triage_ts_kept(daemon), what="the triage message's ts kept on its ticket")

    tickets = await _by_acct(daemon)
    assert set(tickets) == {"alice", "bob"}, "praise opens nothing"
    alice, bob = tickets["alice"], tickets["bob"]
    assert (alice.state, alice.label, alice.triage_reason) == ("open", "complaint", None)
    assert bob.state == "triage" and bob.label == "other" and bob.channel == "C0SUPPORT"
    assert bob.triage_reason is not None and "between the triage threshold" in bob.triage_reason
    # The triage message is not the card: the card's ts stays free for the card an agent may open.
    assert (bob.triage_channel, bob.triage_ts, bob.slack_ts) == (TRIAGE, message["ts"], None)
    assert bob.first_response_due_at is None
    assert {c.ticket_id for c in await rows(daemon, SlaClock)} == {alice.id}, "no clocks run in triage"
    labels = {m.account_acct: m.label for m in await rows(daemon, Mention)}
    assert labels == {"alice": "complaint", "bob": "other", "carol": "other"}

    # The triage message: the post (inert), why it is here, its score, and the two choices.
    blob = str(message["blocks"])
    assert "&lt;!channel&gt;" in blob and "<!channel>" not in blob
    assert "Bob &lt;!channel" in blob and "between the triage threshold" in blob
    assert f"{bob.score:.2f}" in blob and str(borderline["url"]) in blob
    assert button_ids(message) == ["triage_open", "triage_dismiss"]

    assert await _desk_counts(daemon) == ({"open": 1, "waiting": 0}, 1, 1), "triage is not on the desk"

    # Two agents open it at the same moment: one does, the other is told who did.
    await asyncio.gather(
        _triage_click(slack, message, ONE, "triage_open", str(bob.id)),
        _triage_click(slack, message, TWO, "triage_open", str(bob.id)),
    )
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 2, timeout_s=10)
    new_card = slack.messages("C0SUPPORT")[1]
    assert f"#{bob.id}" in str(new_card["blocks"]) and "ticket_claim" in button_ids(new_card)
    await slack.wait_for(lambda: "Opened as ticket" in str(_current(slack, message)["blocks"]), timeout_s=10)
    updated = _current(slack, message)
    assert button_ids(updated) == []
    [told] = await slack.wait_for(lambda: [e for e in slack.ephemerals if "already opened" in str(e)], timeout_s=5)
    winner = ONE if told["user"] == TWO else TWO
    assert f"<@{winner}>" in str(updated["blocks"]) and f"<@{winner}>" in str(told)

    await eventually(lambda: _card_ts_kept(daemon, "bob"), what="the new card's ts kept on its ticket")
    opened = (await _by_acct(daemon))["bob"]
    assert (opened.state, opened.label, opened.slack_ts) == ("open", "complaint", new_card["ts"])
    clocks = [c for c in await rows(daemon, SlaClock) if c.ticket_id == bob.id]
    # The customer has waited since they posted, not since an agent looked at the triage channel.
    assert clocks and all(c.started_at == opened.posted_at for c in clocks)
    assert opened.first_response_due_at is not None
    assert await _desk_counts(daemon) == ({"open": 2, "waiting": 0}, 2, 2)

    # "Not a complaint" on alice's card: closed, and the post becomes a training example of what is not one.
    await click(slack, card, ONE, "ticket_not_complaint", str(alice.id))
    await eventually(
        lambda: _labels_are(daemon, {"bob": ("complaint", "triage_open"), "alice": ("other", "card_not_complaint")}),
        what="labels",
    )
    assert (await _by_acct(daemon))["alice"].state == "closed"


# SQLite only, to keep the suite quick: its storage is the conditional updates and counts the test above runs on both.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_language_the_model_does_not_cover_follow_ups_and_dismissal(
    mastodon: MockServer,
    triage_slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    bands: dict[str, Any],
) -> None:
    slack = triage_slack
    reactions = {"rotating_light": "complaint", "x": "other"}
    daemon = await start_daemon(make_config(classifier=bands, slack={"label_reactions": reactions}))
    # However sure the model is, it does not read German: a person decides.
    first = await post(mastodon, "dan", COMPLAINT, language="de")
    # Another customer's borderline post in triage, settled by their next post, a clear complaint.
    await post(mastodon, "carol", BORDERLINE)
    messages = await _posted(slack, TRIAGE, 2)
    await eventually(lambda: _triage_ts_kept(daemon, 2), what="both triage messages' ts kept")
    tickets = await _by_acct(daemon)
    dan, carol = tickets["dan"], tickets["carol"]
    assert dan.state == "triage" and dan.triage_reason is not None and "'de'" in dan.triage_reason
    [dan_message] = [m for m in messages if m["ts"] == dan.triage_ts]
    [carol_message] = [m for m in messages if m["ts"] == carol.triage_ts]
    assert slack.messages("C0SUPPORT") == []

    # Follow-ups join the item in triage: no second ticket, and the agent deciding sees them in its thread.
    await post(mastodon, "dan", "@brand hallo?", in_reply_to_id=first["id"])
    await post(mastodon, "carol", COMPLAINT)
    await slack.wait_for(lambda: any("hallo" in str(m) for m in slack.thread(TRIAGE, dan_message["ts"])), timeout_s=10)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    tickets = await _by_acct(daemon)
    assert len(await rows(daemon, Ticket)) == 2 and tickets["dan"].state == "triage"
    assert tickets["carol"].state == "open" and f"#{carol.id}" in str(slack.messages("C0SUPPORT")[0]["blocks"])
    await slack.wait_for(lambda: "a later post" in str(_current(slack, carol_message)["blocks"]), timeout_s=10)

    # An agent's labelling reaction on the card is a label too; an emoji not in slack.label_reactions is not.
    await eventually(lambda: _card_ts_kept(daemon, "carol"), what="carol's card ts kept")
    [carol_card] = slack.messages("C0SUPPORT")
    for emoji in ("tada", "rotating_light"):
        await slack.send_envelope("events_api", slack.reaction_added_payload(TWO, "C0SUPPORT", carol_card["ts"], emoji))

    await _triage_click(slack, dan_message, ONE, "triage_dismiss", str(dan.id))
    await slack.wait_for(lambda: "Not a complaint, said <@U0ONE>" in str(_current(slack, dan_message)), timeout_s=10)
    assert button_ids(_current(slack, dan_message)) == []
    dismissed = (await _by_acct(daemon))["dan"]
    assert (dismissed.state, dismissed.label, dismissed.closed_reason) == (
        "closed",
        "other",
        "not a complaint (triage)",
    )
    # Only agents' decisions are labels: carol's item was opened by her own post, her label is the reaction's.
    expected = {"dan": ("other", "triage_dismiss"), "carol": ("complaint", "reaction")}
    await eventually(lambda: _labels_are(daemon, expected), what="the dismissal's and the reaction's labels")
    on_desk, opened, _ = await _desk_counts(daemon)
    assert (on_desk["open"], opened) == (1, 1), "a dismissed item was never on the desk"


async def test_items_left_in_triage_are_erased_like_closed_tickets(sessions: Sessions) -> None:
    long_ago = utcnow() - timedelta(days=40)
    async with sessions() as session:
        item = Ticket(
            state="triage",
            label="other",
            customer_account_id="9",
            customer_acct="eve@social.example",
            root_status_id="77",
            posted_at=long_ago,
            received_at=long_ago,
            created_at=long_ago,
            updated_at=long_ago,
            score=0.3,
            channel="C0SUPPORT",
            triage_reason="borderline",
            triage_channel=TRIAGE,
            triage_ts="1773000000.000001",
        )
        session.add(item)
        await session.flush()
        session.add(
            Mention(
                status_uri="https://social.example/77",
                status_id="77",
                status_url="https://social.example/77",
                account_id="9",
                account_acct="eve@social.example",
                text="where is my parcel",
                source="notification",
                posted_at=long_ago,
                received_at=long_ago,
                label="other",
                score=0.3,
                ticket_id=item.id,
            )
        )
        await session.commit()
        assert item.id is not None
    assert (await retention.erase_expired(sessions, before=utcnow() - timedelta(days=30))).tickets == 1

    async with sessions() as session:
        erased = await session.get(Ticket, item.id)
        assert erased is not None and erased.customer_acct == retention.ERASED
        # The triage message showed the post: it is drawn again, with the post gone and nothing left to click.
        queued = list(await session.exec(select(SlackOutbox)))
        assert [(row.kind, row.ticket_id) for row in queued] == [("triage_update", item.id)]
        _, blocks = await render_triage(session, erased)
        assert "parcel" not in str(blocks) and "erased" in str(blocks)
        assert not [b for b in blocks if b["type"] == "actions"]
        assert not await triage.open_ticket(session, ticket_id=item.id, user=ONE, label="complaint", due=None)


async def test_the_posts_cues_reach_the_judge(sessions: Sessions) -> None:
    """Mastodon's counts and the customer's recent tickets, as ingest passes them, show in the ticket's priority."""
    ctx = AppContext(
        settings=_settings(),
        sessions=sessions,
        classifier=ComplaintClassifier.load(),
        mastodon=MastodonClient("http://127.0.0.1:9", "not-a-token"),  # never asked: no post here is a reply
        brand=AccountRef(id="1", acct="brand", display_name="Brand", url=""),
        wake_outbox=lambda: None,
    )
    ids = iter(range(100, 200))

    async def ticket_for(who: str, followers: int | None = None) -> Ticket:
        status_id = str(next(ids))
        account = AccountRef(id=f"a-{who}", acct=who, display_name=who, url="", followers_count=followers)
        post = Post(
            id=status_id,
            uri=f"https://social.example/{status_id}",
            url=f"https://social.example/{status_id}",
            account=account,
            text=COMPLAINT,
            created_at=utcnow(),
            visibility="public",
            language="en",
            in_reply_to_id=None,
            in_reply_to_account_id=None,
            tags=(),
            mentioned_account_ids=("1",),
        )
        batch = MentionsReceived(mentions=(MentionReceived(post, "notification"),))
        await record_mentions(batch, ctx)
        assert batch.outcomes == [None]
        async with sessions() as session:
            found = await session.exec(select(Ticket).where(col(Ticket.root_status_id) == status_id))
            return found.one()

    famous = await ticket_for("famous", followers=50_000)
    assert famous.priority in ("high", "urgent") and "50,000 followers" in famous.priority_reasons
    repeats = []
    for _ in range(3):
        ticket = await ticket_for("again")
        repeats.append([reason for reason in ticket.priority_reasons if "ticket in 30 days" in reason])
        # Closed, so the next post opens a new ticket rather than joining this one.
        async with transaction(sessions) as session:
            assert ticket.id is not None
            assert await close(session, ticket_id=ticket.id, actor=ONE, reason="test")
    # The third ticket within the window is a repeat (classifier.priority.repeat_tickets = 2 by default).
    assert repeats == [[], [], ["3rd ticket in 30 days"]]
    assert not any("ticket in 30 days" in reason for reason in famous.priority_reasons)


def _settings(**classifier: Any) -> Settings:
    data: dict[str, Any] = {
        "mastodon": {"base_url": "https://social.example"},
        "slack": {"default_channel": "C0SUPPORT"},
        "database": {"url": "sqlite+aiosqlite:///unused.db"},
        "classifier": classifier,
    }
    return parse_settings(data, source="test")


def test_the_triage_keys_apply_on_reload_and_bad_bands_are_refused() -> None:
    running = _settings()
    plan = plan_reload(running, _settings(triage_threshold=0.2, triage_channel="C0TRIAGE", tickets_for=["question"]))
    assert plan.restart_needed == () and plan.changed == ("classifier",)
    judge = Tuning.of(plan.settings, {"threshold": 0.39}).judge
    assert (judge.threshold, judge.triage_threshold, judge.tickets_for) == (0.39, 0.2, frozenset({"question"}))
    assert Tuning.of(running, {"threshold": 0.39}).judge.triage_threshold == 0.39, "no triage band unless asked"
    # Above the model's own threshold, a triage threshold leaves no band: said at start or reload, not mid-batch.
    with pytest.raises(ConfigError, match="triage threshold"):
        Tuning.of(_settings(triage_threshold=0.6), {"threshold": 0.39})


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12), ("7", 7), (0, 0), (None, None), (True, None), (-3, None), (2.5, None), ("12k", None), (10**13, None)],
)
def test_counts_from_mastodon_are_read_or_left_unknown(value: object, expected: int | None) -> None:
    assert count_field(value) == expected


def test_a_posts_counts_reach_the_post() -> None:
    status = {
        "id": "1",
        "uri": "https://x.example/1",
        "content": "<p>hi</p>",
        "account": {"id": "9", "acct": "a", "followers_count": "4210"},
        "reblogs_count": 3,
        "favourites_count": "many",
    }
    post = post_from_json(status)
    assert (post.account.followers_count, post.reblogs_count, post.favourites_count) == (4210, 3, None)


async def _stored(daemon: Daemon, n: int) -> bool:
    return len(await rows(daemon, Mention)) == n


async def _triage_ts_kept(daemon: Daemon, n: int = 1) -> bool:
    return sum(1 for t in await rows(daemon, Ticket) if t.triage_ts is not None) == n


async def _card_ts_kept(daemon: Daemon, acct: str) -> bool:
    return (await _by_acct(daemon))[acct].slack_ts is not None


async def _labels_are(daemon: Daemon, expected: dict[str, tuple[str, str]]) -> bool:
    assert daemon.context is not None
    async with daemon.context.sessions() as session:
        labels = await team_labels(session)
        accts = {m.id: m.account_acct for m in await rows(daemon, Mention)}
    return {accts[lb.mention_id]: (lb.label, lb.source) for lb in labels} == expected
