"""Configuration: every mistake stops the start with one message naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mentiondesk.bot.config import ConfigError, load_config, parse_settings, read_secrets

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"
MINIMAL = """
[mastodon]
base_url = "https://social.example"
[slack]
default_channel = "#support"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_is_valid_and_documents_every_key() -> None:
    settings = parse_settings(tomllib.loads(EXAMPLE.read_text(encoding="utf-8")), source=str(EXAMPLE))
    assert settings.slack.base_url == "https://slack.com/api/"
    example = EXAMPLE.read_text(encoding="utf-8")
    for section_name, section in settings.model_dump().items():
        for key in section:
            documented = f"{key} =" in example or f"[[{section_name}.{key}]]" in example
            assert documented, f"{section_name}.{key} not in example"
    for rule_key in ("channel", "keywords", "hashtags", "languages"):
        assert f"{rule_key} =" in example


def test_minimal_config_gets_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, MINIMAL), environ={})
    assert config.settings.database.url == f"sqlite+aiosqlite:///{tmp_path}/mentiondesk.db"
    assert config.settings.slack.base_url == "https://slack.com/api/"
    assert config.settings.slack.dry_run is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[slack]\ndefault_channel = '#s'\n", "mastodon: required key is missing"),
        (MINIMAL + "[database]\nurl = 'postgresql://x/y'\n", "database.url: Value error, must start with"),
        (
            MINIMAL.replace("https://social.example", "social.example"),
            "mastodon.base_url: Value error, must be an http",
        ),
        (MINIMAL + "[slack2]\n", "slack2: unknown key"),
        (
            MINIMAL.replace('default_channel = "#support"', 'default_chanel = "#support"'),
            "slack.default_chanel: unknown key",
        ),
        (
            MINIMAL + "[sla]\nfirst_response_minutes = -5\n",
            "sla.first_response_minutes: Input should be greater than 0",
        ),
        (MINIMAL + "[[routing.rules]]\nchannel = '#x'\n", "routing.rules.0: Value error, a rule needs at least one"),
        ("[mastodon\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml", environ={})


def test_secrets_from_env_and_files(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-secret\n", encoding="utf-8")
    secrets = read_secrets(
        {"MENTIONDESK_MASTODON_TOKEN": "env-secret", "MENTIONDESK_SLACK_BOT_TOKEN_FILE": str(token_file)}
    )
    assert secrets.mastodon_token == "env-secret"
    assert secrets.slack_bot_token == "file-secret"
    assert secrets.slack_app_token is None
    assert "secret" not in repr(secrets)


def test_secret_file_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MENTIONDESK_MASTODON_TOKEN_FILE: cannot read"):
        read_secrets({"MENTIONDESK_MASTODON_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="both MENTIONDESK_SLACK_BOT_TOKEN and"):
        read_secrets({"MENTIONDESK_SLACK_BOT_TOKEN": "a", "MENTIONDESK_SLACK_BOT_TOKEN_FILE": "b"})


def test_required_secrets(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), environ={})
    with pytest.raises(ConfigError) as info:
        config.require_secrets()
    assert str(info.value) == (
        "MENTIONDESK_MASTODON_TOKEN, MENTIONDESK_SLACK_BOT_TOKEN, "
        "MENTIONDESK_SLACK_APP_TOKEN (Socket Mode) not set (or the matching *_FILE "
        "variable naming a file)"
    )
    http = load_config(
        write(tmp_path, MINIMAL + 'mode = "http"\n'),
        environ={"MENTIONDESK_MASTODON_TOKEN": "t", "MENTIONDESK_SLACK_BOT_TOKEN": "b"},
    )
    with pytest.raises(ConfigError, match=r"^MENTIONDESK_SLACK_SIGNING_SECRET \(HTTP mode\) not set"):
        http.require_secrets()
    dry = load_config(write(tmp_path, MINIMAL + "dry_run = true\n"), environ={"MENTIONDESK_MASTODON_TOKEN": "t"})
    dry.require_secrets()  # no Slack token needed to print cards
