"""Block Kit validation for the fake Slack server.

Only the limits Slack documents (and that we have seen Slack enforce) are
checked, but they are checked strictly: the point is that the product fails in
tests exactly where it would fail against real Slack.

Errors are strings ``"<json-pointer>: <reason>"``; the server returns them as
``{"ok": false, "error": "invalid_blocks", "errors": [...]}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MESSAGE_MAX_BLOCKS = 50
MODAL_MAX_BLOCKS = 100
MESSAGE_TEXT_MAX = 40_000

# Must match _Checker._block_checks().
BLOCK_TYPES = frozenset({"section", "header", "context", "actions", "divider", "image", "input", "rich_text"})
# Interactive elements Slack accepts in `actions` blocks and section accessories.
INTERACTIVE_ELEMENTS = frozenset(
    {
        "button",
        "overflow",
        "datepicker",
        "timepicker",
        "datetimepicker",
        "checkboxes",
        "radio_buttons",
        "static_select",
        "external_select",
        "users_select",
        "conversations_select",
        "channels_select",
        "multi_static_select",
        "multi_external_select",
        "multi_users_select",
        "multi_conversations_select",
        "multi_channels_select",
    }
)
# Elements that may only appear inside an `input` block.
INPUT_ONLY_ELEMENTS = frozenset(
    {
        "plain_text_input",
        "email_text_input",
        "url_text_input",
        "number_text_input",
        "rich_text_input",
        "file_input",
    }
)
RICH_TEXT_ELEMENTS = frozenset({"rich_text_section", "rich_text_list", "rich_text_preformatted", "rich_text_quote"})
BUTTON_STYLES = frozenset({"primary", "danger"})


class _Checker:
    """Accumulates every violation rather than stopping at the first, like Slack."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, reason: str) -> None:
        self.errors.append(f"{path}: {reason}")

    # -- primitives -------------------------------------------------------

    def string(self, value: object, path: str, *, max_len: int, min_len: int = 1) -> None:
        if not isinstance(value, str):
            self.fail(path, "must be a string")
        elif len(value) < min_len:
            self.fail(path, f"must be at least {min_len} characters")
        elif len(value) > max_len:
            self.fail(path, f"must be less than {max_len + 1} characters")

    def text(self, obj: object, path: str, *, max_len: int, plain_only: bool = False) -> None:
        """A composition text object: {type: plain_text|mrkdwn, text}."""
        if not isinstance(obj, dict):
            self.fail(path, "must be a text object")
            return
        kind = obj.get("type")
        if kind not in ("plain_text", "mrkdwn"):
            self.fail(f"{path}/type", f"must be plain_text or mrkdwn, got {kind!r}")
            return
        if plain_only and kind != "plain_text":
            self.fail(f"{path}/type", "must be plain_text")
        # Slack rejects these cross-type flags; a frequent copy-paste mistake.
        if kind == "mrkdwn" and "emoji" in obj:
            self.fail(f"{path}/emoji", "is only allowed for plain_text")
        if kind == "plain_text" and "verbatim" in obj:
            self.fail(f"{path}/verbatim", "is only allowed for mrkdwn")
        self.string(obj.get("text"), f"{path}/text", max_len=max_len)

    def items(self, value: object, path: str, *, min_n: int, max_n: int) -> list[Any]:
        """Check a list's length; returns the list (or [] when it is not one)."""
        if not isinstance(value, list):
            self.fail(path, "must be an array")
            return []
        if len(value) < min_n:
            self.fail(path, f"must have at least {min_n} items")
        if len(value) > max_n:
            self.fail(path, f"no more than {max_n} items allowed")
        return value

    # -- elements ---------------------------------------------------------

    def element(self, el: object, path: str, *, allowed: frozenset[str]) -> None:
        if not isinstance(el, dict):
            self.fail(path, "must be an object")
            return
        kind = el.get("type")
        if kind not in allowed:
            self.fail(f"{path}/type", f"element type {kind!r} is not allowed here")
            return
        if "action_id" in el:
            self.string(el["action_id"], f"{path}/action_id", max_len=255)
        if kind == "button":
            self.button(el, path)
        elif kind == "image":
            self.image_fields(el, path)
        elif "placeholder" in el:
            self.text(el["placeholder"], f"{path}/placeholder", max_len=150, plain_only=True)

    def button(self, el: dict[str, Any], path: str) -> None:
        self.text(el.get("text"), f"{path}/text", max_len=75, plain_only=True)
        if "value" in el:
            self.string(el["value"], f"{path}/value", max_len=2000)
        if "url" in el:
            self.string(el["url"], f"{path}/url", max_len=3000)
        if "style" in el and el["style"] not in BUTTON_STYLES:
            self.fail(f"{path}/style", f"must be one of primary, danger, got {el['style']!r}")

    def image_fields(self, el: dict[str, Any], path: str) -> None:
        if "slack_file" not in el:
            self.string(el.get("image_url"), f"{path}/image_url", max_len=3000)
        self.string(el.get("alt_text"), f"{path}/alt_text", max_len=2000)

    def unique_action_ids(self, elements: list[Any], path: str) -> None:
        # Slack requires action_id to be unique among the elements of one block.
        seen: set[str] = set()
        for i, el in enumerate(elements):
            action_id = el.get("action_id") if isinstance(el, dict) else None
            if isinstance(action_id, str):
                if action_id in seen:
                    self.fail(f"{path}/{i}/action_id", f"duplicate action_id {action_id!r}")
                seen.add(action_id)

    # -- blocks -----------------------------------------------------------

    def section(self, b: dict[str, Any], path: str) -> None:
        if "text" not in b and "fields" not in b:
            self.fail(path, "section requires text or fields")
        if "text" in b:
            self.text(b["text"], f"{path}/text", max_len=3000)
        if "fields" in b:
            fields = self.items(b["fields"], f"{path}/fields", min_n=1, max_n=10)
            for i, f in enumerate(fields):
                self.text(f, f"{path}/fields/{i}", max_len=2000)
        if "accessory" in b:
            self.element(b["accessory"], f"{path}/accessory", allowed=INTERACTIVE_ELEMENTS | {"image"})

    def header(self, b: dict[str, Any], path: str) -> None:
        self.text(b.get("text"), f"{path}/text", max_len=150, plain_only=True)

    def context(self, b: dict[str, Any], path: str) -> None:
        elements = self.items(b.get("elements"), f"{path}/elements", min_n=1, max_n=10)
        for i, el in enumerate(elements):
            el_path = f"{path}/elements/{i}"
            if isinstance(el, dict) and el.get("type") == "image":
                self.image_fields(el, el_path)
            else:
                self.text(el, el_path, max_len=3000)

    def actions(self, b: dict[str, Any], path: str) -> None:
        elements = self.items(b.get("elements"), f"{path}/elements", min_n=1, max_n=25)
        for i, el in enumerate(elements):
            self.element(el, f"{path}/elements/{i}", allowed=INTERACTIVE_ELEMENTS)
        self.unique_action_ids(elements, f"{path}/elements")

    def divider(self, b: dict[str, Any], path: str) -> None:
        """Dividers have no content to check."""

    def image(self, b: dict[str, Any], path: str) -> None:
        self.image_fields(b, path)
        if "title" in b:
            self.text(b["title"], f"{path}/title", max_len=2000, plain_only=True)

    def input(self, b: dict[str, Any], path: str) -> None:
        self.text(b.get("label"), f"{path}/label", max_len=2000, plain_only=True)
        if "hint" in b:
            self.text(b["hint"], f"{path}/hint", max_len=2000, plain_only=True)
        if "element" not in b:
            self.fail(f"{path}/element", "is required")
        else:
            allowed = INTERACTIVE_ELEMENTS | INPUT_ONLY_ELEMENTS
            self.element(b["element"], f"{path}/element", allowed=allowed)

    def rich_text(self, b: dict[str, Any], path: str) -> None:
        elements = self.items(b.get("elements"), f"{path}/elements", min_n=1, max_n=100)
        for i, el in enumerate(elements):
            kind = el.get("type") if isinstance(el, dict) else None
            if kind not in RICH_TEXT_ELEMENTS:
                self.fail(f"{path}/elements/{i}/type", f"unknown rich text element {kind!r}")

    def _block_checks(self) -> dict[str, Callable[[dict[str, Any], str], None]]:
        return {
            "section": self.section,
            "header": self.header,
            "context": self.context,
            "actions": self.actions,
            "divider": self.divider,
            "image": self.image,
            "input": self.input,
            "rich_text": self.rich_text,
        }

    def block(self, b: object, path: str, seen_ids: set[str]) -> None:
        if not isinstance(b, dict):
            self.fail(path, "must be an object")
            return
        kind = b.get("type")
        if kind not in BLOCK_TYPES:
            self.fail(f"{path}/type", f"unknown block type {kind!r}")
            return
        if "block_id" in b:
            block_id = b["block_id"]
            self.string(block_id, f"{path}/block_id", max_len=255)
            if isinstance(block_id, str):
                if block_id in seen_ids:
                    self.fail(f"{path}/block_id", f"duplicate block_id {block_id!r}")
                seen_ids.add(block_id)
        self._block_checks()[kind](b, path)

    def blocks(self, blocks: object, path: str, *, max_blocks: int) -> None:
        items = self.items(blocks, path, min_n=0, max_n=max_blocks)
        seen_ids: set[str] = set()
        for i, b in enumerate(items):
            self.block(b, f"{path}/{i}", seen_ids)


def validate_blocks(blocks: object, *, max_blocks: int = MESSAGE_MAX_BLOCKS, path: str = "/blocks") -> list[str]:
    """Return every Block Kit violation in a message's (or modal's) blocks."""
    checker = _Checker()
    checker.blocks(blocks, path, max_blocks=max_blocks)
    return checker.errors


def validate_modal(view: object, path: str = "/view") -> list[str]:
    """Return every violation in a modal view (views.open / views.update)."""
    checker = _Checker()
    if not isinstance(view, dict):
        checker.fail(path, "must be an object")
        return checker.errors
    if view.get("type") != "modal":
        checker.fail(f"{path}/type", f"must be modal, got {view.get('type')!r}")
    checker.text(view.get("title"), f"{path}/title", max_len=24, plain_only=True)
    for key in ("submit", "close"):
        if key in view:
            checker.text(view[key], f"{path}/{key}", max_len=24, plain_only=True)
    blocks = view.get("blocks")
    checker.blocks(blocks, f"{path}/blocks", max_blocks=MODAL_MAX_BLOCKS)
    # Slack refuses a modal whose inputs could never be submitted.
    has_input = isinstance(blocks, list) and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
    if has_input and "submit" not in view:
        checker.fail(f"{path}/submit", "is required when the view contains input blocks")
    for key, max_len in (("private_metadata", 3000), ("callback_id", 255), ("external_id", 255)):
        if key in view:
            checker.string(view[key], f"{path}/{key}", max_len=max_len, min_len=0)
    return checker.errors
