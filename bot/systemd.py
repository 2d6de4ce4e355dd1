"""Telling systemd how the daemon is doing: the sd_notify protocol on $NOTIFY_SOCKET, and the watchdog.

The protocol is one datagram of newline-separated KEY=value lines to an AF_UNIX socket (see sd_notify(3));
the unmaintained `sdnotify` package adds nothing a few lines of stdlib cannot do. Outside systemd (no
$NOTIFY_SOCKET) every call does nothing. A notification must never stall or stop the daemon: the socket is
non-blocking, and a failure is logged once and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

# Names of the workers that are not running (finished or crashed); empty while all is well.
LivenessCheck = Callable[[], list[str]]


class Notifier:
    """Sends READY/STATUS/RELOADING/STOPPING to systemd, and WATCHDOG pings while a liveness check passes."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._socket: socket.socket | None = None
        self._failed = False
        self.watchdog_interval_s = _watchdog_interval_s(env) if self._address is not None else None

    @property
    def enabled(self) -> bool:
        """True when systemd (or a test) listens on $NOTIFY_SOCKET."""
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send the lines as one message; False if it was not sent (no socket, or an error, logged once)."""
        if self._address is None:
            return False
        message = "\n".join(lines).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # systemd reads its socket promptly; should it not, a full buffer drops this message rather
                # than blocking the event loop.
                self._socket.setblocking(False)
            self._socket.sendto(message, self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                logger.warning("cannot notify systemd on $NOTIFY_SOCKET (%s); further failures are not logged", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        """Started (or reloaded) and serving."""
        self.notify("READY=1", *_status_lines(status))

    def status(self, text: str) -> None:
        """A one-line state for `systemctl status`."""
        self.notify(*_status_lines(text))

    def reloading(self, status: str | None = None) -> None:
        """Re-reading the configuration; call ready() when done."""
        # systemd 253+ (Type=notify-reload) wants the time of the reload with it; older versions ignore the line.
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={now_us}", *_status_lines(status))

    def stopping(self, status: str | None = None) -> None:
        """Shutting down: systemd shows the unit as deactivating and waits up to TimeoutStopSec for the exit."""
        self.notify("STOPPING=1", *_status_lines(status))

    async def watchdog(self, check: LivenessCheck) -> None:
        """Ping WATCHDOG=1 from this event loop while check() names no dead worker; returns at once if not asked.

        A loop that is stuck stops the pings by itself; a dead worker stops them on purpose. Either way systemd
        sees no ping within WatchdogSec, kills the process and (Restart=on-failure) starts a fresh one.
        """
        interval_s = self.watchdog_interval_s
        if interval_s is None:
            return
        halted_for: list[str] = []
        while True:
            dead = check()
            if not dead:
                if halted_for:
                    logger.warning("workers running again: watchdog pings resume")
                halted_for = []
                self.notify("WATCHDOG=1")
            elif dead != halted_for:
                halted_for = dead
                logger.error(
                    "worker stopped: %s; no more watchdog pings, so systemd restarts the daemon", ", ".join(dead)
                )
            await asyncio.sleep(interval_s)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        # An abstract socket: no file, its name starts with a NUL byte.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd also hands out vsock: addresses (to VMs); they are not for a service like this one.
    logger.warning("$NOTIFY_SOCKET=%s is neither a path nor an abstract @name; not notifying systemd", value)
    return None


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """Half the watchdog timeout systemd asks for (sd_watchdog_enabled(3)), or None if it asks none of us."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        # Meant for another process (set for our parent, say, and inherited).
        return None
    try:
        timeout_us = int(usec)
    except ValueError:
        timeout_us = 0
    if timeout_us <= 0:
        logger.warning("$WATCHDOG_USEC=%r is not a positive number of microseconds; not pinging the watchdog", usec)
        return None
    return timeout_us / 2 / 1_000_000


def _status_lines(text: str | None) -> list[str]:
    if text is None:
        return []
    # One line: a newline would start another KEY=value line.
    return ["STATUS=" + " ".join(text.split())]


__all__ = ["LivenessCheck", "Notifier"]
