"""mastodon-mock for the benchmark, in a process of its own, and what the benchmark asks of it.

Its own process, so that serving Mastodon never shares a core (or the GIL) with the benchmark's fake Slack,
replay server and database polling. ``python -m bench.mastodon_side --customers N`` serves the brand and N
customers (each with an access token), prints its base URL as a JSON line and runs until its stdin is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from mastodon import Mastodon
from mastodon_mock.config import DatabaseConfig, MastodonMockConfig, SeedAccount, SeedConfig, StreamingConfig
from mastodon_mock.testing.server import MockServer

from bench.posts import Planned, Templates
from mentiondesk.bot.mastodon.client import USER_AGENT
from mentiondesk.bot.mastodon.watcher import PAGE_LIMIT

BRAND_TOKEN = "brand_token"  # a token for the local mock server, not a credential
REPO_ROOT = Path(__file__).resolve().parent.parent


class HarnessError(Exception):
    """The benchmark itself is broken (a server did not start, a count does not add up): not a slow result."""


def customer_token(customer: int) -> str:
    return f"customer{customer}_token"


def mock_config(customers: int) -> MastodonMockConfig:
    accounts = [SeedAccount(username="brand", display_name="Acme Support", access_token=BRAND_TOKEN)]
    accounts += [
        SeedAccount(username=f"customer{i}", display_name=f"Customer {i}", access_token=customer_token(i))
        for i in range(customers)
    ]
    return MastodonMockConfig(
        database=DatabaseConfig(path=":memory:"),
        seed=SeedConfig(accounts=accounts),
        streaming=StreamingConfig(heartbeat_seconds=15.0),
    )


class MockProcess:
    """mastodon-mock in a child process; ``async with`` starts it and stops it."""

    def __init__(self, *, customers: int, log_path: Path) -> None:
        self.customers = customers
        self._log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self.base_url = ""

    async def __aenter__(self) -> MockProcess:
        with self._log_path.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.mastodon_side",
                "--customers",
                str(self.customers),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=REPO_ROOT,
            )
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), timeout=60)
            self.base_url = str(json.loads(line)["base_url"])
        except (TimeoutError, ValueError, KeyError) as exc:
            await self.__aexit__()
            raise HarnessError(f"mastodon-mock did not start (see {self._log_path})") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def post_status(
    http: aiohttp.ClientSession, base_url: str, token: str, text: str, *, in_reply_to_id: str | None = None
) -> dict[str, Any]:
    form = {"status": text, **({"in_reply_to_id": in_reply_to_id} if in_reply_to_id else {})}
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{base_url}/api/v1/statuses", data=form, headers=headers) as resp:
        if resp.status != 200:
            raise HarnessError(f"mastodon-mock refused a post: HTTP {resp.status} {await resp.text()}")
        status: dict[str, Any] = await resp.json()
        return status


async def mention_notifications(http: aiohttp.ClientSession, base_url: str, *, limit: int) -> list[dict[str, Any]]:
    """The brand's latest mention notifications, newest first, as raw JSON."""
    params = [("types[]", "mention"), ("limit", str(limit))]
    headers = {"Authorization": f"Bearer {BRAND_TOKEN}"}
    async with http.get(f"{base_url}/api/v1/notifications", params=params, headers=headers) as resp:
        if resp.status != 200:
            raise HarnessError(f"mastodon-mock refused the notifications: HTTP {resp.status}")
        page: list[dict[str, Any]] = await resp.json()
        return page


async def capture_templates(http: aiohttp.ClientSession, base_url: str) -> Templates:
    """A mention and a reply to it, posted by a customer, as mastodon-mock serves their notifications."""
    first = await post_status(http, base_url, customer_token(0), "@brand my parcel is late again")
    await post_status(http, base_url, customer_token(0), "@brand any update on this?", in_reply_to_id=first["id"])
    page = await mention_notifications(http, base_url, limit=2)
    replies = [n for n in page if n["status"]["in_reply_to_id"]]
    mentions = [n for n in page if not n["status"]["in_reply_to_id"]]
    if not (replies and mentions):
        raise HarnessError(f"mastodon-mock did not serve the two mentions just posted: {page!r}")
    return Templates(mention=mentions[0], reply=replies[0])


async def latest_mention_id(http: aiohttp.ClientSession, base_url: str) -> str:
    page = await mention_notifications(http, base_url, limit=1)
    return str(page[0]["id"]) if page else "0"


async def post_mentions(
    http: aiohttp.ClientSession, base_url: str, planned: list[Planned], *, concurrency: int = 4
) -> None:
    """Post the planned mentions to mastodon-mock as its seeded customers; a follow-up waits for the post it answers."""
    loop = asyncio.get_running_loop()
    real_ids: dict[str, asyncio.Future[str]] = {p.status_id: loop.create_future() for p in planned}
    gate = asyncio.Semaphore(concurrency)

    async def one(p: Planned) -> None:
        parent = await real_ids[p.in_reply_to_id] if p.in_reply_to_id in real_ids else None
        async with gate:
            status = await post_status(
                http, base_url, customer_token(p.customer), f"@brand {p.text}", in_reply_to_id=parent
            )
        real_ids[p.status_id].set_result(str(status["id"]))

    async with asyncio.TaskGroup() as group:
        for p in planned:
            group.create_task(one(p))


def plain_catch_up(base_url: str, cursor: str) -> tuple[int, float]:
    """Page through the mentions after cursor as a plain Mastodon.py client does (blocking): (items, seconds).

    The same calls the daemon makes: 40 mentions per page, each page the one after the previous, until empty.
    """
    api = Mastodon(
        access_token=BRAND_TOKEN,
        api_base_url=base_url,
        ratelimit_method="throw",
        user_agent=USER_AGENT,
        version_check_mode="none",
    )
    read = 0
    started = time.perf_counter()
    while True:
        page = api.notifications(types=["mention"], min_id=cursor, limit=PAGE_LIMIT)
        if not page:
            return read, time.perf_counter() - started
        read += len(page)
        cursor = str(max(int(n["id"]) for n in page))


def _serve(customers: int) -> None:
    with MockServer(config=mock_config(customers)) as server:
        print(json.dumps({"base_url": server.base_url}), flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin, or exits


def main() -> None:
    parser = argparse.ArgumentParser(description="mastodon-mock for bench/ingest.py")
    parser.add_argument("--customers", type=int, default=40)
    _serve(parser.parse_args().customers)


if __name__ == "__main__":
    main()
