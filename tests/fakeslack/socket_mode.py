"""Slack's Socket Mode, as ``SocketModeMixin`` of ``FakeSlack``.

The handshake's Web API half (apps.connections.open hands out a one-use ticket
URL), the websocket at ``/socket`` (hello, then ack frames from the client),
delivering envelopes and waiting for their ack, and the ways Slack ends
connections (an announced disconnect, an abrupt drop, shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, WSMsgType, web

from .protocol import APP_ID, Handler, JSONDict, _Fault
from .state import FakeSlackState


@dataclass(eq=False)
class _Socket:
    ws: web.WebSocketResponse
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class SocketModeMixin(FakeSlackState):
    """apps.connections.open, the ``/socket`` websocket, and envelope delivery to connected clients."""

    # Inspection state (public, read by tests).
    envelopes: list[JSONDict]
    socket_frames: list[JSONDict]
    connections_total: int
    _tickets: set[str]
    _sockets: list[_Socket]
    _pending_acks: dict[str, asyncio.Future[JSONDict]]
    # Delays (s) for the next websocket upgrades (slow_socket_upgrade), and the event that ends them at stop.
    _slow_upgrades: deque[float]
    _stopping: asyncio.Event

    def slow_socket_upgrade(self, *, delay_s: float, count: int = 1) -> None:
        """Hold the next ``count`` websocket upgrades ``delay_s`` before answering, as a stalled Slack edge would."""
        self._slow_upgrades.extend([delay_s] * count)

    def _socket_mode_methods(self) -> dict[str, Handler]:
        return {"apps.connections.open": self._apps_connections_open}

    def _apps_connections_open(self, p: JSONDict) -> JSONDict:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}"}

    # ------------------------------------------------------------------ connections

    @property
    def connected_count(self) -> int:
        return len(self._open_sockets())

    def _open_sockets(self) -> list[_Socket]:
        return [s for s in self._sockets if not s.ws.closed]

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        if self._down:
            return _Fault(503).response()
        if self._slow_upgrades:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._slow_upgrades.popleft())
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=408)  # the client gave up waiting; nobody reads this
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid or used ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        # Consume the ticket only once the upgrade succeeded: slack-sdk retries a
        # failed handshake with the same URL, so burning it early would wedge it.
        self._tickets.discard(ticket)
        self.connections_total += 1
        sock = _Socket(ws)
        self._sockets.append(sock)
        try:
            await ws.send_json(self._hello())
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._on_socket_frame(frame.data)
        finally:
            self._sockets.remove(sock)
            sock.gone.set()
        return ws

    def _hello(self) -> JSONDict:
        return {
            "type": "hello",
            "num_connections": self.connected_count,
            "debug_info": {
                "host": "applink-fake-1",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": APP_ID},
        }

    def _on_socket_frame(self, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            self.socket_frames.append({"unparsed": data})
            return
        self.socket_frames.append(frame)
        # An ack's payload is shown as it is: a slash command's answer, or the view a submission turns into.
        if isinstance(frame.get("payload"), dict):
            self._check_markup("ack", f"envelope {frame.get('envelope_id')}", frame["payload"])
        pending = self._pending_acks.get(str(frame.get("envelope_id")))
        if pending is not None and not pending.done():
            pending.set_result(frame)

    # ------------------------------------------------------------------ envelopes

    async def send_envelope(
        self,
        type_: str,
        payload: object,
        *,
        timeout_s: float = 5.0,
        accepts_response_payload: bool | None = None,
    ) -> JSONDict:
        """Deliver an envelope to the newest client and return its ack frame.

        The payload is whatever the test passes, a malformed one included, as a broken or hostile sender could.
        """
        sockets = self._open_sockets()
        if not sockets:
            raise RuntimeError(f"no Socket Mode client connected to deliver a {type_} envelope")
        envelope = self._envelope(type_, payload, accepts_response_payload)
        ack: asyncio.Future[JSONDict] = asyncio.get_running_loop().create_future()
        self._pending_acks[envelope["envelope_id"]] = ack
        try:
            await sockets[-1].ws.send_json(envelope)
            self.envelopes.append(envelope)
            return await asyncio.wait_for(ack, timeout_s)
        except TimeoutError:
            raise TimeoutError(f"no ack for {type_} envelope {envelope['envelope_id']} within {timeout_s}s") from None
        finally:
            del self._pending_acks[envelope["envelope_id"]]

    @staticmethod
    def _envelope(type_: str, payload: object, accepts_response_payload: bool | None) -> JSONDict:
        if accepts_response_payload is None:
            # Slack offers a response payload for slash commands and for the
            # interactions whose answer shapes the UI (modal submits, option loads).
            accepts_response_payload = type_ == "slash_commands" or (
                type_ == "interactive"
                and isinstance(payload, dict)
                and payload.get("type") in ("view_submission", "block_suggestion")
            )
        envelope: JSONDict = {
            "envelope_id": str(uuid.uuid4()),
            "type": type_,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if type_ == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        return envelope

    # ------------------------------------------------------------------ ending connections

    async def disconnect_clients(self, reason: str = "refresh_requested", *, grace_s: float = 1.0) -> None:
        """Ask every client to reconnect, then close whatever is still open after ``grace_s``.

        This mirrors Slack: it announces the disconnect, a well-behaved client
        opens a new connection and drops the old one itself.
        """
        sockets = self._open_sockets()
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake-1"}}
        for sock in sockets:
            await sock.ws.send_json(message)
        gone = [asyncio.ensure_future(sock.gone.wait()) for sock in sockets]
        if gone:
            _, still_waiting = await asyncio.wait(gone, timeout=grace_s)
            for waiter in still_waiting:
                waiter.cancel()
        await self.drop_clients(only=sockets)

    async def drop_clients(self, *, only: list[_Socket] | None = None) -> None:
        """Close sockets abruptly, without a disconnect message (a network blip)."""
        for sock in list(self._sockets if only is None else only):
            if not sock.ws.closed:
                await sock.ws.close(code=WSCloseCode.GOING_AWAY, message=b"connection dropped")

    async def _close_sockets(self) -> None:
        """At shutdown: fail every envelope still waiting for an ack, then close every connection."""
        for pending in self._pending_acks.values():
            if not pending.done():
                pending.set_exception(RuntimeError("FakeSlack stopped before the envelope was acked"))
        for sock in list(self._sockets):
            await sock.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
