"""`mentiondesk demo`: the real daemon against a local Mastodon (mastodon-mock), with Slack in dry-run mode."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

from sqlmodel import col, select

from mentiondesk.bot.config import Config, Secrets, parse_settings
from mentiondesk.bot.daemon import Daemon
from mentiondesk.storage.models import Mention, Ticket

# Tokens for the throwaway in-process server only.
_BRAND_TOKEN = "demo-brand-token"

# (seconds to wait first, customer, text, index of an earlier post this one replies to)
SCRIPT: list[tuple[float, str, str, int | None]] = [
    (
        1.0,
        "maya",
        "@acme my parcel was due Monday and tracking hasn't moved in 5 days. Nobody answers "
        "the phone. Really disappointed.",
        None,
    ),
    # Mixed: praise with a small grievance, the kind of post the triage band is for.
    (1.5, "theo", "@acme the new app update is lovely, though the basket button took me a while to find", None),
    (1.5, "maya", "@acme order number is 88123 if that helps", 0),
    (
        1.5,
        "ines",
        "@acme charged twice for the same order and still no refund after two weeks. This is unacceptable #acmehelp",
        None,
    ),
    (1.5, "theo", "@acme do you ship to Portugal?", None),
    (
        1.5,
        "ravi",
        "@acme the app crashes every time I try to check out. Lost my cart three times now, so frustrating",
        None,
    ),
]


def _mock_server() -> Any:
    try:
        from mastodon_mock.config import DatabaseConfig, MastodonMockConfig, SeedAccount, SeedConfig
        from mastodon_mock.testing.server import MockServer
    except ImportError as exc:
        raise RuntimeError("the demo needs mastodon-mock: pip install 'mentiondesk[demo]'") from exc
    customers = sorted({who for _, who, _, _ in SCRIPT})
    accounts = [SeedAccount(username="acme", display_name="Acme Support", access_token=_BRAND_TOKEN)]
    accounts += [SeedAccount(username=u, display_name=u.title(), access_token=f"demo-{u}") for u in customers]
    return MockServer(
        config=MastodonMockConfig(database=DatabaseConfig(path=":memory:"), seed=SeedConfig(accounts=accounts))
    )


def _config(mastodon_url: str, folder: Path) -> Config:
    settings = parse_settings(
        {
            "mastodon": {"base_url": mastodon_url, "hashtags": ["acmehelp"], "poll_interval_s": 5.0},
            "slack": {"default_channel": "#support", "dry_run": True},
            "routing": {"rules": [{"channel": "#billing", "keywords": ["refund", "charged", "invoice"]}]},
            "database": {"url": f"sqlite+aiosqlite:///{folder / 'demo.db'}"},
            # A demo next to a real daemon must not take (or wait for) its port.
            "http": {"enabled": False},
        },
        source="demo",
    )
    return Config(settings=settings, secrets=Secrets(mastodon_token=_BRAND_TOKEN), source="demo")


async def _play_script(server: Any, out: TextIO) -> None:
    posted: list[dict[str, Any]] = []
    for delay_s, who, text, reply_to in SCRIPT:
        await asyncio.sleep(delay_s)
        kwargs = {"in_reply_to_id": posted[reply_to]["id"]} if reply_to is not None else {}
        client = server.client(who)
        status = await asyncio.to_thread(client.status_post, text, **kwargs)
        posted.append(status)
        out.write(f"\n>>> @{who} posts: {text}\n")
        out.flush()


async def _summary(daemon: Daemon, out: TextIO) -> None:
    assert daemon.context is not None
    async with daemon.context.sessions() as session:
        tickets = list(await session.exec(select(Ticket).order_by(col(Ticket.id))))
        mentions = list(await session.exec(select(Mention).order_by(col(Mention.id))))
    out.write(f"\n=== {len(mentions)} mentions stored, {len(tickets)} tickets opened ===\n")
    for m in mentions:
        where = f"ticket #{m.ticket_id}" if m.ticket_id else "no ticket"
        out.write(f"  @{m.account_acct:<6} {m.label:<9} score {m.score:.2f}  {where}\n")


async def _show(daemon: Daemon, server: Any, out: TextIO, seconds: float) -> None:
    await _play_script(server, out)
    if seconds > 0:
        remaining = max(3.0, seconds - sum(d for d, *_ in SCRIPT))
        await asyncio.sleep(remaining)
    else:
        await daemon.wait()


async def _until_stopped(show: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run the show until it ends or `stop` is set; a failure in the show is raised."""
    shown = asyncio.create_task(show)
    stopped = asyncio.create_task(stop.wait())
    done, pending = await asyncio.wait({shown, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if shown in done:
        shown.result()


async def run_demo(*, seconds: float, out: TextIO, stop: asyncio.Event | None = None, keep: bool = False) -> int:
    """Run the demo for `seconds` (0: until `stop` is set), print a summary; `keep` leaves the database behind."""
    server = _mock_server()
    await asyncio.to_thread(server.start)
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="mentiondesk-demo-"))
    try:
        out.write(
            f"mentiondesk demo: Mastodon (mastodon-mock) at {server.base_url}, SQLite in {folder}, "
            "Slack in dry-run mode (cards are printed below). Ctrl-C to stop.\n"
        )
        out.flush()
        async with Daemon(_config(server.base_url, folder), dry_run_out=out) as daemon:
            await _until_stopped(_show(daemon, server, out, seconds), stop or asyncio.Event())
            await _summary(daemon, out)
    finally:
        await asyncio.to_thread(server.stop)
        if keep:
            out.write(f"demo database kept at {folder / 'demo.db'}\n")
        else:
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
    return 0
