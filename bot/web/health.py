"""/healthz (is the daemon alive?) and /readyz (can it do its work right now?), for systemd, k8s or a load balancer.

Neither asks for a token: they name the daemon's parts and what is wrong with them, never a customer or a post.
Both stay cheap, as probes come every few seconds: /healthz reads memory only, /readyz runs its checks side by
side, each cut off after CHECK_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from mentiondesk.bot.mastodon.set_aside import failure_reason

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
# How often the loop-lag sampler wakes; a busy loop wakes it late, and the lateness is the lag.
LAG_SAMPLE_S = 0.5
# Past this the loop is stuck, not busy: a catch-up page or a batch of posts takes well under a second.
MAX_LOOP_LAG_S = 5.0
# Each readiness check's budget; they run at once, so a probe is answered within about this.
CHECK_TIMEOUT_S = 3.0

# One readiness check: (passes, one line saying what was found and, when it fails, why).
Probe = Callable[[], Awaitable[tuple[bool, str]]]


class LoopLag:
    """How late the event loop runs callbacks, sampled by a small task (run())."""

    def __init__(self, *, sample_s: float = LAG_SAMPLE_S) -> None:
        self._sample_s = sample_s
        self._tick: float | None = None
        self._last_lag_s = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._tick = loop.time()
            await asyncio.sleep(self._sample_s)
            self._last_lag_s = max(0.0, loop.time() - self._tick - self._sample_s)

    def lag_s(self) -> float:
        """The last sample, or the current one if it is overdue (the loop was blocked until this request ran)."""
        if self._tick is None:
            return 0.0
        overdue_s = asyncio.get_running_loop().time() - self._tick - self._sample_s
        return max(self._last_lag_s, overdue_s, 0.0)


class HealthProbes:
    """The two probe endpoints, over callables the daemon passes in (the web layer never sees the daemon)."""

    def __init__(
        self,
        *,
        dead_workers: Callable[[], list[str]],
        loop_lag: LoopLag,
        checks: Mapping[str, Probe],
        max_loop_lag_s: float = MAX_LOOP_LAG_S,
        check_timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self._dead_workers = dead_workers
        self._loop_lag = loop_lag
        self._checks = dict(checks)
        self._max_loop_lag_s = max_loop_lag_s
        self._check_timeout_s = check_timeout_s
        self._logged_problems: list[str] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.get(HEALTH_PATH, self._healthz), web.get(READY_PATH, self._readyz)]

    async def _healthz(self, request: web.Request) -> web.Response:
        """Alive: the loop answers in time and every worker is still running."""
        dead = self._dead_workers()
        lag_s = self._loop_lag.lag_s()
        problems = [f"worker {name!r} stopped" for name in dead]
        if lag_s > self._max_loop_lag_s:
            problems.append(f"event loop {lag_s:.1f}s late (more than {self._max_loop_lag_s:g}s)")
        body = {
            "status": "fail" if problems else "ok",
            "dead_workers": dead,
            "loop_lag_s": round(lag_s, 3),
            "problems": problems,
        }
        if problems != self._logged_problems:
            # Once per change: probes every few seconds would otherwise repeat it all day.
            if problems:
                logger.warning("/healthz fails: %s", "; ".join(problems))
            else:
                logger.info("/healthz passes again")
            self._logged_problems = problems
        return web.json_response(body, status=503 if problems else 200)

    async def _readyz(self, request: web.Request) -> web.Response:
        """Ready: each check passes; the body says which failed and why."""
        names = list(self._checks)
        outcomes = await asyncio.gather(*(self._run(self._checks[name]) for name in names))
        checks = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in zip(names, outcomes, strict=True)}
        ready = all(ok for ok, _ in outcomes)
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def _run(self, check: Probe) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(self._check_timeout_s):
                return await check()
        except TimeoutError:
            return False, f"no answer within {self._check_timeout_s:g}s"
        except Exception as exc:
            return False, failure_reason(exc)
