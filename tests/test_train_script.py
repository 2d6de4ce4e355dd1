"""scripts/train_classifier.py as a person runs it: a missing data file is one line naming where it looked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "train_classifier.py"


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_without_data_beside_the_repository_it_says_where_it_looked(tmp_path: Path) -> None:
    # A checkout with no ../shared/data next to it, as a fresh clone has.
    script = tmp_path / "checkout" / "scripts" / "train_classifier.py"
    script.parent.mkdir(parents=True)
    shutil.copy(SCRIPT, script)
    result = run_script(script)
    expected = tmp_path / "shared" / "data" / "complaints-train.csv"
    assert result.returncode == 2
    assert result.stderr == (
        f"train_classifier.py: no training data at {expected}; "
        "name the complaints CSV (columns text, complaint) with --data PATH\n"
    )


@pytest.mark.parametrize("name", ["missing.csv", "."])
def test_a_data_path_that_is_not_a_file_is_one_line(tmp_path: Path, name: str) -> None:
    result = run_script(SCRIPT, "--data", str(tmp_path / name))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"no training data at {tmp_path / name}" in result.stderr
