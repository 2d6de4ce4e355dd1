"""What tests make happen on Slack's side, as ``PayloadsMixin`` of ``FakeSlack``.

Builders of the payloads Slack would deliver for a user's action (button
clicks, modal input and submits, messages, slash commands), ready to pass to
``send_envelope``; the trigger_ids and response_urls those payloads carry; and
``inject_message`` for a message a human posted.

A builder refuses (ValueError) what Slack would never send, such as a click on a
button the message does not have; ``forged=True`` builds it anyway, for tests of
what the product does with a payload only a forger sends. Every user a payload
comes from becomes a user of the workspace (``known_users``), whom the product
may mention.
"""

from __future__ import annotations

import copy
import time
import uuid
from decimal import Decimal

from aiohttp import web

from .protocol import APP_ID, BOT_ID, ApiError, JSONDict
from .state import FakeSlackState


class PayloadsMixin(FakeSlackState):
    """Interaction, event and slash-command payloads, with the trigger_ids and response_urls they carry."""

    # Inspection state (public, read by tests).
    response_url_posts: list[JSONDict]

    # ------------------------------------------------------------------ trigger_ids and response_urls

    def new_trigger_id(self) -> str:
        """Issue a trigger_id, as Slack does with each interaction payload."""
        trigger_id = f"{next(self._ids)}.{int(time.time())}.{uuid.uuid4().hex}"
        self._triggers[trigger_id] = time.monotonic()
        return trigger_id

    def _register_trigger(self, trigger_id: str | None) -> str:
        if trigger_id is None:
            return self.new_trigger_id()
        self._triggers.setdefault(trigger_id, time.monotonic())
        return trigger_id

    def _response_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/response_url/{uuid.uuid4().hex}"

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.response_url_posts.append({"id": request.match_info["id"], "body": body})
        if isinstance(body, dict):
            self._check_markup("response_url", request.match_info["id"], body)
        return web.json_response({"ok": True})

    # ------------------------------------------------------------------ messages from people

    def inject_message(
        self, channel: str, user_id: str, text: str, *, ts: str | None = None, thread_ts: str | None = None
    ) -> JSONDict:
        """Record a message as if a human had posted it (visible to history/replies)."""
        channel_id = self._channel_id(channel, allow_name=True)
        self.known_users.add(user_id)
        if ts is not None and (channel_id, ts) in self._by_key:
            return self._by_key[(channel_id, ts)]
        parent = self._by_key.get((channel_id, thread_ts or ""))
        if thread_ts is not None and (parent is None or parent["thread_ts"] is not None):
            raise ValueError(f"no top-level message {thread_ts} in {channel_id} to reply to")
        return self._store(channel_id, {"user": user_id, "text": text, "thread_ts": thread_ts}, ts=ts)

    def message_event_payload(
        self,
        user_id: str,
        channel: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        *,
        record: bool = True,
    ) -> JSONDict:
        """An ``events_api`` event_callback for a user's message.

        With ``record`` (default) the message is also stored, since Slack would
        show it in history and accept replies in its thread.
        """
        channel_id = self._channel_id(channel, allow_name=True)
        self.known_users.add(user_id)
        ts = ts or self._next_ts()
        if record:
            self.inject_message(channel_id, user_id, text, ts=ts, thread_ts=thread_ts)
        event: JSONDict = {
            "type": "message",
            "channel": channel_id,
            "user": user_id,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel_type": "channel",
            "client_msg_id": str(uuid.uuid4()),
            "team": self.team_id,
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
            parent = self._by_key.get((channel_id, thread_ts))
            if parent is not None:
                event["parent_user_id"] = parent["user"]
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": self._new_id("Ev"),
            "event_time": int(Decimal(ts)),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    def reaction_added_payload(self, user_id: str, channel: str, ts: str, name: str) -> JSONDict:
        """An ``events_api`` event_callback for a user adding a reaction (the reaction is recorded on the message).

        Refused (ValueError) as Slack would refuse it or never deliver it: no such message, an invalid emoji
        name, a reaction the user already added, a channel the bot is not in, or an app without reactions:read.
        """
        channel_id = self._channel_id(channel, allow_name=True)
        if not self._channels[channel_id].bot_is_member:
            raise ValueError(f"the bot is not in {channel_id}: Slack sends it no reaction_added from there")
        if "reactions:read" not in self.scopes:
            raise ValueError("without the reactions:read scope Slack sends no reaction_added events")
        try:
            record = self._react(user_id, channel_id, ts, name)
        except ApiError as exc:
            raise ValueError(f"Slack would refuse this reaction: {exc}") from None
        self.known_users.add(user_id)
        event_ts = self._next_ts()
        event: JSONDict = {
            "type": "reaction_added",
            "user": user_id,
            "reaction": name,
            "item_user": record["user"],
            "item": {"type": "message", "channel": channel_id, "ts": ts},
            "event_ts": event_ts,
        }
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": self._new_id("Ev"),
            "event_time": int(Decimal(event_ts)),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    # ------------------------------------------------------------------ interactions, slash commands

    def _user(self, user_id: str) -> JSONDict:
        self.known_users.add(user_id)
        name = f"user-{user_id.lower()}"
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _team(self) -> JSONDict:
        return {"id": self.team_id, "domain": "fake-team"}

    def _find_element(self, message: JSONDict | None, action_id: str) -> tuple[str | None, JSONDict]:
        """Locate an element by action_id in a stored message's blocks (block_id, element)."""
        for block in (message or {}).get("blocks") or []:
            candidates = [*block.get("elements", []), block.get("accessory") or {}]
            for element in candidates:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    return block.get("block_id"), element
        return None, {}

    def _shown_versions(self, channel_id: str, message_ts: str) -> list[JSONDict]:
        """The message clicked on as people may still see it: now, then as it was before each edit, newest first.

        A client shows an edited message's old buttons until the edit reaches it, so a click on one of them is
        a race Slack delivers. An ephemeral message is found among the ephemerals shown in the channel.
        """
        record = self._by_key.get((channel_id, message_ts))
        if record is None:
            shown = [e for e in self.ephemerals if e["channel"] == channel_id and e["ts"] == message_ts]
            return shown[-1:]
        earlier = [u["previous"] for u in self.updates if u["channel"] == channel_id and u["ts"] == message_ts]
        return [record, *reversed(earlier)]

    def _refuse_click(self, channel_id: str, message_ts: str, action_id: str, versions: list[JSONDict]) -> None:
        if not versions:
            raise ValueError(
                f"no message {message_ts} in {channel_id}: Slack sends block_actions only from a message "
                "someone sees (forged=True builds one anyway)"
            )
        offered = sorted(
            {
                str(element.get("action_id"))
                for version in versions
                for block in version.get("blocks") or []
                for element in [*block.get("elements", []), block.get("accessory") or {}]
                if isinstance(element, dict) and element.get("action_id")
            }
        )
        raise ValueError(
            f"message {message_ts} in {channel_id} has no element with action_id {action_id!r} (it has {offered}): "
            "Slack sends block_actions only for an element on the message (forged=True builds one anyway)"
        )

    def block_actions_payload(
        self,
        user_id: str,
        action_id: str,
        value: str,
        channel: str,
        message_ts: str,
        trigger_id: str | None = None,
        *,
        forged: bool = False,
    ) -> JSONDict:
        """An ``interactive`` block_actions payload for a click on an element of a posted (or ephemeral) message.

        Refused (ValueError) when the message has, and had before an edit, no element with that action_id,
        unless ``forged``.
        """
        channel_id = self._channel_id(channel, allow_name=True)
        versions = self._shown_versions(channel_id, message_ts)
        block_id: str | None = None
        element: JSONDict = {}
        for version in versions:
            block_id, element = self._find_element(version, action_id)
            if element:
                break
        if not element and not forged:
            self._refuse_click(channel_id, message_ts, action_id, versions)
        trigger_id = self._register_trigger(trigger_id)
        record = self._by_key.get((channel_id, message_ts))
        message = self._render(record, with_metadata=True) if record else {"type": "message", "ts": message_ts}
        container: JSONDict = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": record is None and bool(versions),
        }
        if record is not None and record["thread_ts"] is not None:
            container["thread_ts"] = record["thread_ts"]
        action = {
            "type": element.get("type", "button"),
            "action_id": action_id,
            "block_id": block_id or "fake-block",
            "text": element.get("text", {"type": "plain_text", "text": action_id, "emoji": True}),
            "value": value,
            "action_ts": self._next_ts(),
        }
        if "style" in element:
            action["style"] = element["style"]
        return {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": "fake-verification-token",
            "container": container,
            "trigger_id": trigger_id,
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._channels[channel_id].name},
            "message": message,
            "state": {"values": {}},
            "response_url": self._response_url(),
            "actions": [action],
        }

    def view_block_actions_payload(
        self,
        user_id: str,
        view_id: str,
        action_id: str,
        value: str,
        trigger_id: str | None = None,
    ) -> JSONDict:
        """An ``interactive`` block_actions payload from an input with ``dispatch_action`` in an open modal.

        The view is the one last opened or updated under ``view_id`` (with its current hash), its state
        holding ``value`` in that input, as Slack sends while the user types.
        """
        current = self._open_views.get(view_id)
        if current is None:
            raise ValueError(f"no open view {view_id}")
        block_id, element = self._find_element(current, action_id)
        if block_id is None:
            for block in current.get("blocks") or []:
                if (block.get("element") or {}).get("action_id") == action_id:
                    block_id, element = block.get("block_id"), block["element"]
        if block_id is None:
            raise ValueError(f"no element {action_id!r} in view {view_id}")
        view = copy.deepcopy(current)
        view["state"] = {"values": {block_id: {action_id: {"type": element.get("type"), "value": value}}}}
        return {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": "fake-verification-token",
            "container": {"type": "view", "view_id": view_id},
            "trigger_id": self._register_trigger(trigger_id),
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "view": view,
            "actions": [
                {
                    "type": element.get("type"),
                    "action_id": action_id,
                    "block_id": block_id,
                    "value": value,
                    "action_ts": self._next_ts(),
                }
            ],
        }

    def view_submission_payload(
        self,
        user_id: str,
        callback_id: str,
        private_metadata: str,
        state_values: JSONDict,
    ) -> JSONDict:
        """An ``interactive`` view_submission payload; reuses the last opened view with that callback_id."""
        opened = [v for v in self._open_views.values() if v["callback_id"] == callback_id]
        view: JSONDict = copy.deepcopy(opened[-1]) if opened else self._synthetic_view()
        view.update(
            callback_id=callback_id,
            private_metadata=private_metadata,
            state={"values": copy.deepcopy(state_values)},
        )
        return {
            "type": "view_submission",
            "team": self._team(),
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": "fake-verification-token",
            "trigger_id": self.new_trigger_id(),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def _synthetic_view(self) -> JSONDict:
        view_id = self._new_id("V")
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "title": {"type": "plain_text", "text": "Fake modal"},
            "blocks": [],
            "external_id": "",
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
        }

    def slash_command_payload(
        self,
        user_id: str,
        command: str,
        text: str,
        channel_id: str,
        trigger_id: str | None = None,
    ) -> JSONDict:
        """A ``slash_commands`` payload; like Slack's form post, every value is a string."""
        resolved = self._channel_id(channel_id, allow_name=True)
        self.known_users.add(user_id)
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "team_domain": "fake-team",
            "channel_id": resolved,
            "channel_name": self._channels[resolved].name,
            "user_id": user_id,
            "user_name": f"user-{user_id.lower()}",
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self._response_url(),
            "trigger_id": self._register_trigger(trigger_id),
        }
