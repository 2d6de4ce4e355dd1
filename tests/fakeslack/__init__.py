"""Strict fake Slack (Web API + Socket Mode) for tests; see server.FakeSlack."""

from .blockkit import validate_blocks, validate_modal
from .protocol import ApiError
from .server import FakeSlack

__all__ = ["ApiError", "FakeSlack", "validate_blocks", "validate_modal"]
