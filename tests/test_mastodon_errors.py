"""Mastodon failures in `check` and at `run` start: what failed, the likely cause, and the key or variable to fix."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from mastodon_mock.testing.server import MockServer

from mentiondesk.bot.cli import main
from tests.conftest import BRAND_TOKEN

SCOPES = "read:accounts read:notifications read:statuses write:statuses"
VERIFY = "/api/v1/accounts/verify_credentials"


def unused_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, mastodon_url: str, *, request_timeout_s: float = 5.0) -> Path:
    # Slack in dry run: these tests are about Mastodon alone.
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[mastodon]
base_url = "{mastodon_url}"
request_timeout_s = {request_timeout_s}
[slack]
default_channel = "C0SUPPORT"
dry_run = true
[database]
url = "sqlite+aiosqlite:///{tmp_path / "md.db"}"
""",
        encoding="utf-8",
    )
    return path


def check_line(tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str], **config: Any) -> str:
    """What `check` says about Mastodon."""
    assert main(["check", "--config", str(write_config(tmp_path, url, **config))]) == 1
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if " mastodon: " in line]
    return line


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (
            {"status": 401, "body": {"error": "The access token is invalid"}},
            "Mastodon refused MENTIONDESK_MASTODON_TOKEN (401 Unauthorized: The access token is invalid): "
            f"create an access token for the brand account under Preferences > Development with the scopes {SCOPES}",
        ),
        (
            {"status": 403, "body": {"error": "This action is outside the authorized scopes"}},
            "Mastodon refused MENTIONDESK_MASTODON_TOKEN (403 Forbidden: This action is outside the authorized "
            f"scopes): the token needs the scopes {SCOPES} (Preferences > Development, the application's page)",
        ),
        (
            {"status": 404},
            "mastodon.base_url = {url} does not look like a Mastodon server (its API answered 404 Not Found): "
            "set it to the instance's address, like https://mastodon.social",
        ),
        (
            {"type": "malformed"},
            "mastodon.base_url = {url} does not look like a Mastodon server (its API did not answer in JSON): "
            "set it to the instance's address, like https://mastodon.social",
        ),
        (
            {"status": 503},
            "Mastodon at mastodon.base_url = {url} is failing (503 Service Unavailable: Service temporarily "
            "unavailable): try again later",
        ),
        (
            {"type": "ratelimit"},
            "Mastodon at mastodon.base_url = {url} is rate limiting this token: try again in a few minutes",
        ),
        (
            {"type": "latency", "delay_ms": 2000},
            "Mastodon at mastodon.base_url = {url} did not answer within mastodon.request_timeout_s = 0.5 s: "
            "check the address, or raise the timeout for a slow server",
        ),
    ],
    ids=["401", "403", "404", "not-json", "503", "429", "timeout"],
)
def test_check_explains_what_mastodon_answered(
    tmp_path: Path,
    mastodon: MockServer,
    fault: dict[str, Any],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", BRAND_TOKEN)
    with mastodon.fault(path=VERIFY, **fault):
        line = check_line(tmp_path, mastodon.base_url, capsys, request_timeout_s=0.5)
    assert line == "FAIL mastodon: " + expected.format(url=mastodon.base_url)


def test_check_explains_a_wrong_token(
    tmp_path: Path, mastodon: MockServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", "not-the-token")
    line = check_line(tmp_path, mastodon.base_url, capsys)
    assert line.startswith("FAIL mastodon: Mastodon refused MENTIONDESK_MASTODON_TOKEN (401 Unauthorized")
    assert line.endswith(f"with the scopes {SCOPES}") and "not-the-token" not in line


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("http://127.0.0.1:{port}", "connection refused (is the address right, and the server up?)"),
        ("http://mastodon.invalid", "no such host mastodon.invalid (check the spelling)"),
    ],
    ids=["refused", "no-such-host"],
)
def test_check_explains_an_unreachable_server(
    tmp_path: Path, url: str, cause: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url.format(port=unused_port())
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", "t")
    assert check_line(tmp_path, url, capsys) == f"FAIL mastodon: cannot reach mastodon.base_url = {url}: {cause}"


@pytest.mark.parametrize(
    ("token", "reachable", "expected"),
    [
        ("not-the-token", True, "mentiondesk: Mastodon refused MENTIONDESK_MASTODON_TOKEN (401 Unauthorized"),
        (BRAND_TOKEN, False, "mentiondesk: cannot reach mastodon.base_url = {url}: connection refused"),
    ],
    ids=["401", "refused"],
)
def test_run_stops_at_start_with_one_line(
    tmp_path: Path,
    mastodon: MockServer,
    token: str,
    reachable: bool,
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = mastodon.base_url if reachable else f"http://127.0.0.1:{unused_port()}"
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", token)
    assert main(["run", "--config", str(write_config(tmp_path, url))]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(expected.format(url=url))
    assert "Traceback" not in err and "HTTPConnectionPool" not in err and token not in err


def test_check_explains_https_to_a_plain_http_server(
    tmp_path: Path, mastodon: MockServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MENTIONDESK_MASTODON_TOKEN", BRAND_TOKEN)
    url = mastodon.base_url.replace("http://", "https://")
    assert check_line(tmp_path, url, capsys) == (
        f"FAIL mastodon: cannot reach mastodon.base_url = {url}: TLS failed (WRONG_VERSION_NUMBER): "
        "check http:// versus https:// and the certificate"
    )
