"""The first-response deadline runs from when the customer posted, not from when mentiondesk read the post.

A post read late (the daemon was down for hours) is already that much closer to its deadline, or past it.
mastodon-mock stamps every status with the time it is created and offers no way to set another, so the test
gives it a database file and moves the post's time (and its notification's) back there, as if it had been
written hours before the daemon came back.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mastodon_mock.config import DatabaseConfig, MastodonMockConfig
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.config import Config
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.cursors import get_cursor
from mentiondesk.storage.models import Ticket
from tests.conftest import eventually
from tests.fakeslack import FakeSlack
from tests.test_e2e import COMPLAINT, post, rows

Start = Callable[[Config], Awaitable[Daemon]]
# Minutes unlike the defaults (60 and 30) and unlike each other, so each due time can only come from its own.
WINDOW_MINUTES = {"normal": 45, "high": 7}
SLA = {
    "first_response_minutes": WINDOW_MINUTES["normal"],
    "high_priority_first_response_minutes": WINDOW_MINUTES["high"],
}
DOWNTIME = timedelta(hours=3)
# The score from which a ticket is high priority: 0 makes every ticket high, 1 none short of a certain one.
HIGH_PRIORITY_SCORE = {"high": 0.0, "normal": 1.0}


@pytest.fixture
def mastodon_mock_config(mastodon_mock_config: MastodonMockConfig, tmp_path: Path) -> MastodonMockConfig:
    """The project's mastodon-mock, on a database file this test can reach."""
    database = DatabaseConfig(path=str(tmp_path / "mastodon-mock.sqlite"))
    return mastodon_mock_config.model_copy(update={"database": database})


def backdate(mastodon: MockServer, status_id: str, written: datetime) -> None:
    """Give the status, and the notifications about it, the time `written` in mastodon-mock's own database."""
    # mastodon-mock keeps naive UTC times, in SQLAlchemy's SQLite text format.
    stamp = written.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    with sqlite3.connect(mastodon.config.database.path) as db:
        changed = db.execute("UPDATE statuses SET created_at = ? WHERE id = ?", (stamp, int(status_id))).rowcount
        db.execute("UPDATE notifications SET created_at = ? WHERE status_id = ?", (stamp, int(status_id)))
    db.close()
    assert changed == 1


async def _cursor_stored(daemon: Daemon) -> bool:
    assert daemon.context is not None
    async with daemon.context.sessions() as session:
        return await get_cursor(session, name="notifications:mention") is not None


@pytest.mark.parametrize("priority", ["normal", "high"])
async def test_a_post_read_late_is_due_from_its_own_time(
    priority: str, mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    config = make_config(sla=SLA, classifier={"high_priority_score": HIGH_PRIORITY_SCORE[priority]})
    # A first run stores where the feed was read up to; the complaint then comes while the daemon is down.
    daemon = await start_daemon(config)
    await eventually(lambda: _cursor_stored(daemon), what="the notifications cursor stored")
    await daemon.stop()

    status = await post(mastodon, "alice", COMPLAINT)
    written = datetime.now(UTC).replace(microsecond=0) - DOWNTIME
    await asyncio.to_thread(backdate, mastodon, str(status["id"]), written)
    seen = await asyncio.to_thread(lambda: mastodon.client("brand").status(status["id"]))
    assert seen["created_at"] == written  # what any reader of the API now gets

    daemon = await start_daemon(config)

    async def opened() -> bool:
        return len(await rows(daemon, Ticket)) == 1

    await eventually(opened, what="the ticket opened on catch-up")
    ticket = (await rows(daemon, Ticket))[0]
    assert ticket.priority == priority
    window = timedelta(minutes=WINDOW_MINUTES[priority])
    assert ticket.posted_at == written
    assert ticket.first_response_due_at == written + window
    # Read hours after it was written: a deadline counted from reading would be hours later.
    assert ticket.received_at - written >= DOWNTIME
    assert ticket.first_response_due_at < ticket.received_at

    # The agents see the deadline as it is: already passed.
    card = (await slack.wait_for(lambda: slack.messages("C0SUPPORT"), timeout_s=10))[0]
    due = f"First response due <!date^{int((written + window).timestamp())}^"
    assert due in str(card["blocks"])
    assert "(overdue)" in str(card["blocks"])
