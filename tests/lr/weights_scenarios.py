"""Training runs whose weights must stay bit-identical across refactors.

Each scenario runs the whole one-machine stack (PSI, optional validation
tables and WOE binning, encrypted training through the arbiter) on the
synthetic two-bank data, from a fixed start and a fixed shuffling seed. The
masks, randomisers and keys differ in every run, but under protocol
``reveal-gradients`` they cancel exactly in integer arithmetic, so the weights are a
deterministic function of the data,
the start and the seed. ``python -m tests.lr.weights_scenarios OUT.json``
records them (as ``float.hex``) from the code checked out; the test compares
the current code against the file recorded before the issue-9 refactor.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pandas as pd

from vfl.data import PartyTable
from vfl.jobs import JobOptions
from vfl.lr.config import TrainConfig
from vfl.pipeline import fit_local
from vfl.synthetic import make_two_banks

# the defaults before issue 10 where a scenario does not set them (the recording's)
# (protocol reveal-gradients: the recording predates the shared protocol of issue 24, whose
# weights depend on the secret masks through the rounding of each share, ~2^-32 a step)
BASE = dict(key_bits=512, allow_insecure_key_size=True, batch_size=128, tol=0.0,
            learning_rate=0.05, decay=1.0, validation_fraction=0.0, patience=0, mode="taylor",
            protocol="reveal-gradients")

SCENARIOS: dict[str, dict[str, Any]] = {
    "adam_one_host": dict(hosts=1, config=dict(epochs=3, optimizer="adam")),
    "sgd_l2_balanced_two_hosts": dict(
        hosts=2, config=dict(epochs=2, optimizer="sgd", penalty="l2", alpha=0.01,
                             class_weight="balanced", learning_rate=0.1, seed=3)),
    "validation_tables_patience": dict(
        hosts=1, valid=True, config=dict(epochs=3, optimizer="rmsprop", patience=1)),
    "woe_momentum_no_intercept": dict(
        hosts=1, woe_bins=5,
        config=dict(epochs=2, optimizer="momentum", fit_intercept=False, seed=11)),
}


def _table(df: pd.DataFrame, label: str | None) -> PartyTable:
    feats = [c for c in df.columns if c not in ("customer_id", "default")]
    y = None if label is None else df[label].to_numpy(np.int64)
    return PartyTable(df["customer_id"].astype(str).tolist(), df[feats].to_numpy(np.float64),
                      feats, y)


def _split_host(h: PartyTable) -> list[PartyTable]:
    """Two hosts from one host table: the first three columns, then the rest."""
    return [PartyTable(h.ids, h.X[:, :3], h.feature_names[:3]),
            PartyTable(h.ids, h.X[:, 3:], h.feature_names[3:])]


def tables(spec: dict[str, Any]) -> tuple[PartyTable, list[PartyTable],
                                          PartyTable | None, list[PartyTable] | None]:
    """The scenario's guest, hosts and optional validation tables."""
    g_df, h_df = make_two_banks(1200, 0.8, seed=5)
    g, h = _table(g_df, "default"), _table(h_df, None)
    hosts = _split_host(h) if spec["hosts"] == 2 else [h]
    if not spec.get("valid"):
        return g, hosts, None, None
    vg_df, vh_df = make_two_banks(400, 0.8, seed=6)
    return g, hosts, _table(vg_df, "default"), [_table(vh_df, None)]


def start(n_features: int) -> np.ndarray:
    """A fixed start with enough spread (tests only; real runs draw a secret one)."""
    return np.linspace(-0.4, 0.6, n_features)


def run(name: str) -> dict[str, list[str]]:
    """Train scenario ``name``; every party's weights as ``float.hex`` strings."""
    spec = SCENARIOS[name]
    g, hosts, gv, hvs = tables(spec)
    config = TrainConfig(**{**BASE, **spec["config"]})
    result = fit_local(g, hosts, config, guest_valid=gv, hosts_valid=hvs, baselines=False,
                       coef_init=start(g.X.shape[1]), intercept_init=-1.0,
                       options=JobOptions(woe_bins=spec.get("woe_bins", 0)))
    out = {"guest": [float(v).hex() for v in result.guest.coef_]
           + [float(result.guest.intercept_).hex()]}
    for i, est in enumerate(result.hosts):
        out[f"host{i + 1}"] = [float(v).hex() for v in est.coef_]
    return out


if __name__ == "__main__":
    recorded = {name: run(name) for name in SCENARIOS}
    with open(sys.argv[1], "w") as fh:
        json.dump(recorded, fh, indent=1)
