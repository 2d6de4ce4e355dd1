"""Strict fake Slack (Web API + Socket Mode) for tests; see server.FakeSlack."""

from .blockkit import validate_blocks, validate_modal
from .server import ApiError, FakeSlack

__all__ = ["ApiError", "FakeSlack", "validate_blocks", "validate_modal"]
