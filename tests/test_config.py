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
            documented = f"{key} =" in example or f"[{section_name}.{key}]" in example  # [x.y] or [[x.y]]
            assert documented, f"{section_name}.{key} not in example"
    for rule_key in ("channel", "keywords", "hashtags", "languages"):
        assert f"{rule_key} =" in example


def test_copied_example_config_routes_nowhere_the_user_has_not_set_up(tmp_path: Path) -> None:
    copied = tmp_path / "config.toml"
    copied.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    settings = load_config(copied, environ={}).settings
    assert settings.routing.rules == ()
    assert settings.mastodon.hashtags == ()
    assert settings.slack.default_channel == "#support"


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
        (MINIMAL + "[database]\nurl = 'postgresql://x/y'\n", "database.url: must start with"),
        (
            MINIMAL.replace("https://social.example", "social.example"),
            "mastodon.base_url: must be an http",
        ),
        (MINIMAL + "[slack2]\n", "slack2: unknown key"),
        (
            MINIMAL.replace('default_channel = "#support"', 'default_chanel = "#support"'),
            "slack.default_chanel: unknown key",
        ),
        (
            MINIMAL + "[sla]\nfirst_response_minutes = -5\n",
            "sla.first_response_minutes: must be greater than 0",
        ),
        (MINIMAL + "[[routing.rules]]\nchannel = '#x'\n", "routing.rules (item 1): a rule needs at least one"),
        ("[mastodon\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(info.value)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("section", "line", "expected"),
    [
        ("mastodon", 'hashtags = "acme"', 'mastodon.hashtags: must be a list, like ["a", "b"]'),
        ("mastodon", 'hashtags = ["acme", 5]', "mastodon.hashtags (item 2): must be a string in quotes"),
        ("routing", 'rules = "#billing"', 'routing.rules: must be a list, like ["a", "b"]'),
        ("routing", 'rules = ["#billing"]', "routing.rules (item 1): must be a table of keys and values"),
        ("routing", 'rules = [{ keywords = ["x"] }]', "routing.rules.channel (item 1): required key is missing"),
        ("slack", 'mode = "sockets"', "slack.mode: must be 'socket' or 'http'"),
        ("daemon", "log_level = 3", "daemon.log_level: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("http", 'port = "http"', "http.port: must be a whole number"),
        ("http", "port = 3000.5", "http.port: must be a whole number"),
        ("http", "port = 1e30", "http.port: must be a whole number"),
        ("http", "port = 70000", "http.port: must be less than or equal to 65535"),
        (
            "http",
            'token_env = "my token"',
            "http.token_env: must be the name of an environment variable (like MENTIONDESK_DASHBOARD_TOKEN), "
            "got 'my token'; the token itself goes in that variable, never in this file",
        ),
        (
            "slack",
            'http_host = "0.0.0.0"\nhttp_port = 3000',
            "slack: slack.http_host and slack.http_port moved to the [http] section, which serves Slack's HTTP "
            'mode and the dashboard: write host = "0.0.0.0" and port = 3000 under [http] instead',
        ),
        ("mastodon", 'poll_interval_s = "fast"', "mastodon.poll_interval_s: must be a number"),
        ("mastodon", "poll_interval_s = [1]", "mastodon.poll_interval_s: must be a number"),
        ("mastodon", "poll_interval_s = 0", "mastodon.poll_interval_s: must be greater than 0"),
        ("classifier", "threshold = 1.5", "classifier.threshold: must be less than or equal to 1"),
        ("slack", "dry_run = 2", "slack.dry_run: must be true or false"),
        ("slack", 'dry_run = "maybe"', "slack.dry_run: must be true or false"),
        ("slack", "approval_channel = 5", "slack.approval_channel: must be a string in quotes"),
        ("classifier", "model_path = 5", "classifier.model_path: must be a file path in quotes"),
        (
            "slack",
            'repliers = ["bob"]',
            "slack.repliers: must be Slack user IDs (U...) or user group IDs (S...), got ['bob']",
        ),
        (
            "slack",
            'needs_approval = ["U0123ABCD"]',
            "slack: needs_approval is set, so approval_channel must name the approvers' channel",
        ),
        ("slack", "colour = 1", "slack.colour: unknown key (check the spelling against config.example.toml)"),
    ],
)
def test_each_kind_of_mistake_reads_as_plain_english(tmp_path: Path, section: str, line: str, expected: str) -> None:
    # Under the section's header when MINIMAL has one: TOML refuses a table defined twice.
    header = f"[{section}]\n"
    text = MINIMAL.replace(header, header + line + "\n") if header in MINIMAL else MINIMAL + header + line + "\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"{path}: {expected}"


def test_a_section_given_as_a_value_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, 'database = "sqlite"\n' + MINIMAL)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"{path}: database: must be a table of keys and values"


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


def test_the_dashboard_token_is_read_from_the_variable_http_token_env_names(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[http]\ntoken_env = "DESK_DASHBOARD"\n')
    environ = {
        "MENTIONDESK_MASTODON_TOKEN": "t",
        "MENTIONDESK_SLACK_BOT_TOKEN": "b",
        "MENTIONDESK_SLACK_APP_TOKEN": "a",
    }
    config = load_config(path, environ={**environ, "DESK_DASHBOARD": "s3cret-dash"})
    assert config.secrets.dashboard_token == "s3cret-dash"
    assert "s3cret-dash" not in repr(config)
    config.require_secrets()
    # Named but unset: starting with an open dashboard is not what was asked for.
    unset = load_config(path, environ=environ)
    with pytest.raises(ConfigError, match=r"^DESK_DASHBOARD \(named by http.token_env"):
        unset.require_secrets()


def test_the_http_server_listens_on_loopback_unless_turned_off(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, MINIMAL), environ={}).settings.http_server()
    assert default is not None and (default.host, default.port) == ("127.0.0.1", 8089)
    given = load_config(write(tmp_path, MINIMAL + "[http]\nport = 9000\n"), environ={}).settings.http_server()
    assert given is not None and (given.host, given.port) == ("127.0.0.1", 9000)
    off = load_config(write(tmp_path, MINIMAL + "[http]\nenabled = false\n"), environ={}).settings.http_server()
    assert off is None


def test_slack_http_mode_cannot_turn_the_http_server_off(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'mode = "http"\n[http]\nenabled = false\n')
    with pytest.raises(ConfigError, match=r'http.enabled = false, but slack.mode = "http" needs the HTTP server'):
        load_config(path, environ={})
