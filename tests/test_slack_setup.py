"""A broken Slack setup says so at once: `run` refuses a token Slack rejects, `check` checks every channel
and explains every Slack failure in terms of the variable or key to fix."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.cli import main
from mentiondesk.bot.config import Config
from mentiondesk.bot.slack.problems import APP_TOKEN, BOT_TOKEN, Token, token_format_problem
from mentiondesk.storage.models import OutboxState, SlackOutbox, Ticket
from tests.conftest import BRAND_TOKEN, eventually, spawn_run
from tests.fakeslack import FakeSlack
from tests.fakeslack.server import DEFAULT_SCOPES
from tests.test_e2e import COMPLAINT, COMPLAINT_2, Start, post, rows


def write_config(
    tmp_path: Path,
    *,
    mastodon_url: str,
    slack_url: str,
    db_url: str,
    default_channel: str = "C0SUPPORT",
    extra: str = "",
) -> Path:
    """A config file; ``extra`` is TOML appended to it (lines for [slack] come right after its keys)."""
    path = tmp_path / "config.toml"
    # Any free port: tests run daemons side by side, and the HTTP server is on by default.
    http = "" if "[http]" in extra else "[http]\nport = 0"
    path.write_text(
        f"""
[mastodon]
base_url = "{mastodon_url}"
[database]
url = "{db_url}"
[slack]
base_url = "{slack_url}"
default_channel = "{default_channel}"
{extra}
{http}
""",
        encoding="utf-8",
    )
    return path


def tokens(bot: str, app: str, mastodon: str = BRAND_TOKEN) -> dict[str, str]:
    return {
        "MENTIONDESK_MASTODON_TOKEN": mastodon,
        "MENTIONDESK_SLACK_BOT_TOKEN": bot,
        "MENTIONDESK_SLACK_APP_TOKEN": app,
    }


async def check(path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any) -> tuple[int, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = await asyncio.to_thread(main, ["check", "--config", str(path)])
    return code, capsys.readouterr().out


def line(out: str, start: str) -> str:
    """The report line that starts with ``start``, with its indented continuation lines."""
    lines = out.splitlines()
    for i, text in enumerate(lines):
        if text.startswith(start):
            more = []
            for t in lines[i + 1 :]:
                if not t.startswith("     "):
                    break
                more.append(t)
            return "\n".join([text, *more])
    raise AssertionError(f"no line starting {start!r} in:\n{out}")


# ---------------------------------------------------------------- run: the tokens are checked at start


async def run_daemon(path: Path, env: dict[str, str], *, timeout_s: float = 60.0) -> tuple[int, str]:
    """`mentiondesk run` in a process of its own (it owns its signals), with only ``env``'s tokens."""
    proc = await spawn_run(path, env)
    assert proc.stderr is not None
    # Read as it comes, so what was logged survives a kill.
    reader = asyncio.create_task(proc.stderr.read())
    try:
        code = await asyncio.wait_for(proc.wait(), timeout=timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"run did not stop within {timeout_s}s; it logged:\n{(await reader).decode()}") from None
    return code, (await reader).decode()


@pytest.mark.parametrize(
    ("bot", "app", "variable", "says"),
    [
        ("xoxb-wrong", None, "MENTIONDESK_SLACK_BOT_TOKEN", "invalid_auth"),
        (None, "xapp-wrong", "MENTIONDESK_SLACK_APP_TOKEN", "invalid_auth"),
        ("xapp-test-app", None, "MENTIONDESK_SLACK_BOT_TOKEN", "must be a bot token starting xoxb-"),
    ],
    ids=["wrong bot token", "wrong app token", "app token as bot token"],
)
async def test_run_stops_at_once_on_a_token_slack_rejects(
    tmp_path: Path,
    mastodon: MockServer,
    slack: FakeSlack,
    bot: str | None,
    app: str | None,
    variable: str,
    says: str,
) -> None:
    path = write_config(
        tmp_path,
        mastodon_url=mastodon.base_url,
        slack_url=slack.base_url,
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'md.db'}",
    )
    code, err = await run_daemon(path, tokens(bot or slack.bot_token, app or slack.app_token))
    assert code == 1
    [message] = [text for text in err.splitlines() if text.startswith("mentiondesk: ")]
    assert variable in message and says in message
    assert "Traceback" not in err and "Socket Mode connected" not in err
    assert "xoxb-wrong" not in err and "xapp-wrong" not in err


async def test_slack_unreachable_at_start_does_not_stop_the_daemon(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    slack.fail_next("auth.test", status=503)
    daemon = await start_daemon(make_config())
    await post(mastodon, "alice", COMPLAINT)
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    assert len(await rows(daemon, Ticket)) == 1


async def test_the_daemons_slack_calls_time_out_at_request_timeout_s(
    mastodon: MockServer, slack: FakeSlack, make_config: Callable[..., Config], start_daemon: Start
) -> None:
    # Slack takes the post but answers far later than request_timeout_s: the sender must give up waiting,
    # find the card in Slack, and record it, long before the answer would have come.
    slack.slow_next("chat.postMessage", delay_s=60)
    daemon = await start_daemon(make_config(slack={"request_timeout_s": 1}))
    await post(mastodon, "alice", COMPLAINT)

    async def card_recorded() -> bool:
        tickets = await rows(daemon, Ticket)
        return bool(tickets) and tickets[0].slack_ts is not None

    await eventually(card_recorded, timeout_s=15, what="card recorded after the post timed out")
    assert len(slack.messages("C0SUPPORT")) == 1 and slack.call_count("chat.postMessage") == 1


async def test_a_routed_channel_without_the_bot_parks_its_cards_until_the_invite(
    mastodon: MockServer,
    slack: FakeSlack,
    make_config: Callable[..., Config],
    start_daemon: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slack.remove_bot("C0BILLING")
    config = make_config(
        slack={"parked_retry_s": 0.5}, routing={"rules": [{"channel": "#billing", "keywords": ["refund"]}]}
    )

    async def parked() -> bool:
        return any(row.state == OutboxState.PARKED for row in await rows(daemon, SlackOutbox))

    with caplog.at_level(logging.ERROR, logger="mentiondesk.bot.slack"):
        daemon = await start_daemon(config)
        await post(mastodon, "alice", COMPLAINT)  # asks for a refund: routed to #billing
        await eventually(parked, what="the #billing card parked")
    fix = 'routing.rules[0].channel = "#billing": the bot is not a member: /invite @mentiondesk in #billing'
    assert fix in caplog.text

    await post(mastodon, "bob", COMPLAINT_2)  # other channels keep flowing
    await slack.wait_for(lambda: len(slack.messages("C0SUPPORT")) == 1, timeout_s=10)
    slack.invite_bot("#billing")
    await slack.wait_for(lambda: len(slack.messages("C0BILLING")) == 1, timeout_s=10)


# ---------------------------------------------------------------- check: channels


async def test_check_names_each_channel_that_fails(
    tmp_path: Path,
    db_url: str,
    mastodon: MockServer,
    slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slack.remove_bot("C0BILLING")
    slack.archive("C0APPROVE")
    slack.add_channel("team-private", private=True, bot_member=False)
    path = write_config(
        tmp_path,
        mastodon_url=mastodon.base_url,
        slack_url=slack.base_url,
        db_url=db_url,
        default_channel="#nosuchchannel",
        extra="""needs_approval = ["U0NEW"]
approval_channel = "C0APPROVE"
[[routing.rules]]
channel = "#billing"
keywords = ["refund"]
[[routing.rules]]
channel = "#support"
keywords = ["crash"]
[[routing.rules]]
channel = "#team-private"
languages = ["de"]
""",
    )
    code, out = await check(path, tokens(slack.bot_token, slack.app_token), monkeypatch, capsys)
    assert code == 1
    report = line(out, "FAIL slack channels:")
    assert 'slack.default_channel = "#nosuchchannel": no such channel' in report
    assert 'routing.rules[0].channel = "#billing": the bot is not a member: /invite @mentiondesk in #billing' in report
    assert 'slack.approval_channel = "C0APPROVE": #approvals is archived' in report
    assert 'routing.rules[2].channel = "#team-private": no such channel' in report
    assert "routing.rules[1].channel" not in report  # #support is fine
    assert "ok   slack: bot mentiondesk" in out


async def test_check_confirms_every_channel(
    tmp_path: Path,
    db_url: str,
    mastodon: MockServer,
    slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = slack.add_channel("team-private", private=True)
    path = write_config(
        tmp_path,
        mastodon_url=mastodon.base_url,
        slack_url=slack.base_url,
        db_url=db_url,
        extra=f"""[[routing.rules]]
channel = "#billing"
keywords = ["refund"]
[[routing.rules]]
channel = "{secret}"
languages = ["de"]
""",
    )
    code, out = await check(path, tokens(slack.bot_token, slack.app_token), monkeypatch, capsys)
    assert "ok   slack channels: 3 channels exist and the bot is in each" in out
    assert code == 0, out


async def test_check_says_which_scope_the_channel_check_needs(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An app installed from an older manifest, before check looked channels up.
    async with FakeSlack(scopes=DEFAULT_SCOPES - {"channels:read", "groups:read"}) as slack:
        path = write_config(
            tmp_path,
            mastodon_url="http://127.0.0.1:9",
            slack_url=slack.base_url,
            db_url=db_url,
            default_channel="#support",
        )
        _, out = await check(path, tokens(slack.bot_token, slack.app_token), monkeypatch, capsys)
    report = line(out, "FAIL slack channels:")
    assert "the Slack app lacks the channels:read scope" in report
    assert "deploy/slack-app-manifest.yaml" in report and "reinstall" in report


# ---------------------------------------------------------------- check: what each Slack failure means


@pytest.mark.parametrize(
    ("bot", "app", "expected"),
    [
        (
            "xoxb-wrong",
            None,
            "Slack rejected MENTIONDESK_SLACK_BOT_TOKEN (invalid_auth): the token is wrong or was revoked; "
            "reinstall the app and copy the Bot User OAuth Token",
        ),
        ("xapp-test-app", None, "MENTIONDESK_SLACK_BOT_TOKEN must be a bot token starting xoxb-"),
        ("xoxp-user", None, "MENTIONDESK_SLACK_BOT_TOKEN must be a bot token starting xoxb-"),
        (None, "xoxb-test-bot", "MENTIONDESK_SLACK_APP_TOKEN must be an app-level token starting xapp-"),
        (
            None,
            "xapp-wrong",
            "Slack rejected MENTIONDESK_SLACK_APP_TOKEN (invalid_auth): the token is wrong or was revoked; "
            "generate an app-level token with the connections:write scope",
        ),
    ],
    ids=["wrong bot token", "app token as bot token", "user token", "bot token as app token", "wrong app token"],
)
async def test_check_explains_token_mistakes(
    tmp_path: Path,
    slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    bot: str | None,
    app: str | None,
    expected: str,
) -> None:
    path = write_config(
        tmp_path, mastodon_url="http://127.0.0.1:9", slack_url=slack.base_url, db_url="sqlite+aiosqlite://"
    )
    _, out = await check(path, tokens(bot or slack.bot_token, app or slack.app_token), monkeypatch, capsys)
    assert expected in line(out, "FAIL slack:")
    assert all(secret not in out for secret in ("xoxb-wrong", "xapp-wrong", "xoxp-user"))
    # The channel check does not repeat what is wrong with the token.
    assert "FAIL slack channels: not checked" in out or "ok   slack channels" in out


async def test_check_explains_a_revoked_token(
    tmp_path: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    slack.revoke_token(slack.bot_token)
    path = write_config(
        tmp_path, mastodon_url="http://127.0.0.1:9", slack_url=slack.base_url, db_url="sqlite+aiosqlite://"
    )
    _, out = await check(path, tokens(slack.bot_token, slack.app_token), monkeypatch, capsys)
    assert "Slack rejected MENTIONDESK_SLACK_BOT_TOKEN (token_revoked)" in line(out, "FAIL slack:")


async def test_check_names_an_unreachable_slack_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        tmp_path,
        mastodon_url="http://127.0.0.1:9",
        slack_url="http://127.0.0.1:9/api/",
        db_url="sqlite+aiosqlite://",
    )
    _, out = await check(path, tokens("xoxb-x", "xapp-x"), monkeypatch, capsys)
    assert "FAIL slack: cannot reach Slack at slack.base_url = http://127.0.0.1:9/api/: connection refused" in out


async def test_check_lists_parked_messages_and_what_to_do(
    tmp_path: Path,
    db_url: str,
    slack: FakeSlack,
    sessions: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.test_slack_sender import drive, in_state, new_ticket, sender_for

    slack.remove_bot("C0BILLING")
    first, first_row = await new_ticket(sessions, channel="C0BILLING")
    second, second_row = await new_ticket(sessions, channel="C0BILLING")
    sender = sender_for(slack, sessions, channel_keys={"C0BILLING": "routing.rules[0].channel"})
    await drive(sender, in_state(sessions, "parked", first_row, second_row))
    path = write_config(tmp_path, mastodon_url="http://127.0.0.1:9", slack_url=slack.base_url, db_url=db_url)
    _, out = await check(path, tokens(slack.bot_token, slack.app_token), monkeypatch, capsys)
    report = line(out, "FAIL slack outbox:")
    assert "2 messages parked" in report and "retried every 180s and at each start" in report
    assert f'2 (tickets #{first}, #{second}): routing.rules[0].channel = "C0BILLING": the bot is not a member' in report


async def test_check_says_when_slack_base_url_is_not_slack(
    tmp_path: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A proxy or a wrong path answers with a page of its own, not Slack's JSON.
    slack.fail_next("auth.test", status=404)
    path = write_config(
        tmp_path, mastodon_url="http://127.0.0.1:9", slack_url=slack.base_url, db_url="sqlite+aiosqlite://"
    )
    _, out = await check(path, tokens(slack.bot_token, slack.app_token), monkeypatch, capsys)
    assert f"FAIL slack: slack.base_url = {slack.base_url} answered HTTP 404: is slack.base_url right?" in out


@pytest.mark.parametrize(
    ("token", "value", "problem"),
    [
        (BOT_TOKEN, "xoxb-1-abc", None),
        (BOT_TOKEN, "xoxe.xoxb-1-abc", None),  # a rotating bot token
        (APP_TOKEN, "xapp-1-abc", None),
        (BOT_TOKEN, "xapp-1-abc", "an app-level token, which belongs in MENTIONDESK_SLACK_APP_TOKEN"),
        (APP_TOKEN, "xoxb-1-abc", "a bot token, which belongs in MENTIONDESK_SLACK_BOT_TOKEN"),
        (BOT_TOKEN, "xoxp-1-abc", "a user token, which would post as that person"),
        (BOT_TOKEN, "hunter2", "MENTIONDESK_SLACK_BOT_TOKEN must be a bot token starting xoxb-; reinstall"),
    ],
)
def test_token_kinds_are_told_apart_without_showing_the_token(token: Token, value: str, problem: str | None) -> None:
    found = token_format_problem(token, value)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and value not in found


async def test_check_names_the_managers_channel_when_the_bot_is_not_in_it(
    tmp_path: Path,
    db_url: str,
    mastodon: MockServer,
    slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Scheduled summaries go there: a channel the bot cannot post in is found before the first summary is due.
    slack.remove_bot("C0BILLING")
    path = write_config(
        tmp_path,
        mastodon_url=mastodon.base_url,
        slack_url=slack.base_url,
        db_url=db_url,
        extra="""[reports]
channel = "#billing"
daily = "08:00"
""",
    )
    code, out = await check(path, tokens(slack.bot_token, slack.app_token), monkeypatch, capsys)
    assert code == 1
    report = line(out, "FAIL slack channels:")
    assert 'reports.channel = "#billing": the bot is not a member: /invite @mentiondesk in #billing' in report
