"""Loading FATE's default_credit split, joined on id, for the benchmark scripts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def cpu_model() -> str:
    """The CPU's model name, for the record of a benchmark run."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_credit(data: str | Path = DEFAULT_DATA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X_guest, y, X_host)`` aligned by id."""
    g = pd.read_csv(Path(data) / "default_credit_hetero_guest.csv")
    h = pd.read_csv(Path(data) / "default_credit_hetero_host.csv")
    h = h.rename(columns={c: f"h_{c}" for c in h.columns if c != "id"})
    m = g.merge(h, on="id")
    y = m["y"].to_numpy(float)
    Xg = m[[c for c in g.columns if c not in ("id", "y")]].to_numpy(float)
    Xh = m[[c for c in h.columns if c != "id"]].to_numpy(float)
    return Xg, y, Xh
