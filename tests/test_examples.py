"""The examples run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_library_api_example_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "library_api.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "intersection:" in proc.stdout
    auc = float(proc.stdout.split("'auc': ")[1].split(",")[0])
    assert auc > 0.7
