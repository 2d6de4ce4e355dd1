"""The README's operator instructions agree with what the code and the systemd unit really do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mentiondesk.bot.cli import EXIT_CONFIG, main
from mentiondesk.bot.config import SECRET_VARIABLES

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
UNIT = (ROOT / "deploy" / "mentiondesk.service").read_text(encoding="utf-8")
EXAMPLE = (ROOT / "config.example.toml").read_text(encoding="utf-8")


def unit_values(key: str, text: str = UNIT) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", text, re.MULTILINE)


def readme_section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n#", start + len(title))
    return README[start : end if end != -1 else None]


def test_readme_sample_config_error_is_what_check_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = re.search(r"```\n\$ (mentiondesk check --config config\.toml)\n(.+?)\n```", README, re.DOTALL)
    assert sample is not None, "the README's sample configuration error is gone"
    # The sample's mistake, as the README describes it: the example config with default_channel misspelt.
    assert "`default_channel` misspelt" in README
    (tmp_path / "config.toml").write_text(
        EXAMPLE.replace("\ndefault_channel =", "\ndefault_chanel =", 1), encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    assert main(sample.group(1).split()[1:]) == EXIT_CONFIG
    assert capsys.readouterr().err.rstrip("\n") == sample.group(2)


def test_readme_install_steps_name_what_the_unit_expects() -> None:
    steps = readme_section("### 5. Run it as a service (systemd)")
    (program, *_) = unit_values("ExecStart")[0].split()
    venv = str(Path(program).parent.parent)
    assert f"python3 -m venv {venv}" in steps and f"{venv}/bin/pip install" in steps
    config = dict(v.split("=", 1) for v in unit_values("Environment"))["MENTIONDESK_CONFIG"]
    assert config in steps
    # The Socket Mode credentials the unit loads, and the HTTP mode one its comment offers instead.
    credentials = unit_values("LoadCredential") + unit_values("# LoadCredential")
    assert len(credentials) == 4
    for credential in credentials:
        name, source = credential.split(":", 1)
        assert source in steps, f"{source} (credential {name}) is not in the README's install steps"
    for command in ("systemctl daemon-reload", "systemctl enable --now mentiondesk", "journalctl -u mentiondesk"):
        assert command in steps


def test_unit_hands_each_credential_to_the_variable_mentiondesk_reads() -> None:
    loaded = {c.split(":", 1)[0] for c in unit_values("LoadCredential") + unit_values("# LoadCredential")}
    file_variables = {f"{var}_FILE" for var in SECRET_VARIABLES.values()}
    handed = unit_values("Environment") + unit_values("# Environment")
    passed = dict(v.split("=", 1) for v in handed if v.split("=", 1)[0] in file_variables)
    assert set(passed) == file_variables
    assert {value.removeprefix("%d/") for value in passed.values()} == loaded


def test_unit_does_not_restart_on_a_configuration_error() -> None:
    assert str(EXIT_CONFIG) in unit_values("RestartPreventExitStatus")[0].split()
    # systemd applies RestartPreventExitStatus= to the main process only: a configuration error in an
    # ExecStartPre= command would restart the unit every RestartSec, forever.
    assert unit_values("ExecStartPre") == []
