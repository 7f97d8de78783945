"""A streamed (bucketed) PSI of 1M x 1M IDs stays under the stated per-party memory bound.

The bound (``protocols/specs/psi.md``, "Bucketed PSI"; README "Bank scale"): with the default
bucket size, each party's process tree (its process and its blinding workers) stays under
768 MB and its main process under 512 MB, whatever the set size. The single-message protocol
held every point of both sets at once instead (824 MB for two parties at 1M, growing with N).

Runs the real benchmark (two OS processes over gRPC + mutual TLS, IDs read from Parquet in
chunks), so it takes a minute or more: marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREE_MB, MAIN_MB = 768, 512


@pytest.mark.slow
def test_streamed_psi_of_a_million_ids_stays_under_the_bound(tmp_path):
    pytest.importorskip("psutil", reason="psutil comes with the test extras (distributed)")
    out = tmp_path / "psi.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.psi_scale", "--n", "1000000",
         "--workdir", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(out.read_text())["runs"]["bucketed"]
    for role, party in run["parties"].items():
        assert party["rows"] == 500_000
        assert not party["spill_left"], f"{role} left bucket files behind"
        assert party["party_peak_mb"] < TREE_MB, (role, party)
        assert party["main_peak_mb"] < MAIN_MB, (role, party)
