"""The library type-checks under ``mypy --strict`` (configuration in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_strict():
    pytest.importorskip("mypy", reason="mypy is in the test extras: pip install -e '.[test]'")
    proc = subprocess.run([sys.executable, "-m", "mypy", "vfl"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_mypy_checks_for_the_running_python():
    # The stubs of the installed packages are written for this interpreter: numpy 2.5, which pip
    # picks on 3.12+, uses 3.12-only syntax; read "as 3.11" they make mypy fail on correct code.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert "python_version" not in config, (
        "[tool.mypy] python_version makes mypy check for another Python than the one whose "
        "packages are installed; CI runs the suite on the oldest and the newest Python instead")
