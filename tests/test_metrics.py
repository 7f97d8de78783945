"""Credit-risk metrics against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vfl.metrics import (
    calibration_table,
    decile_table,
    evaluate,
    gini,
    ks_detail,
    stability_index,
)

rng = np.random.default_rng(11)
Y = (rng.random(5000) < 0.2).astype(int)
S = Y * 0.8 + rng.normal(size=5000)


def test_gini_and_ks_by_definition():
    assert gini(Y, S) == pytest.approx(2 * roc_auc_score(Y, S) - 1)
    k, at = ks_detail(Y, S)
    # KS by definition: max over thresholds of |F_good(t) - F_bad(t)|
    grid = np.sort(S)
    direct = max(abs((S[Y == 1] < t).mean() - (S[Y == 0] < t).mean()) for t in grid[::7])
    assert k == pytest.approx(direct, abs=2e-3)
    assert abs((S[Y == 1] >= at).mean() - (S[Y == 0] >= at).mean() - k) < 1e-12
    assert set(evaluate(Y, 1 / (1 + np.exp(-S)))) >= {"auc", "gini", "ks", "ks_threshold"}


def test_decile_table_adds_up():
    rows = decile_table(Y, S)
    assert [r["decile"] for r in rows] == list(range(1, 11))
    assert sum(r["count"] for r in rows) == 5000
    assert sum(r["events"] for r in rows) == Y.sum()
    assert rows[-1]["cumulative_gain"] == pytest.approx(1.0)
    assert rows[0]["lift"] > 1.5 > rows[-1]["lift"]  # riskiest decile first
    assert rows[0]["events"] == int(Y[np.argsort(-S)[:500]].sum())


def test_calibration_table():
    p = 1 / (1 + np.exp(-(S - 1.5)))
    rows = calibration_table(Y, p)
    assert rows[0]["mean_predicted"] > rows[-1]["mean_predicted"]
    top = np.argsort(-p)[:500]
    assert rows[0]["observed_rate"] == pytest.approx(Y[top].mean())


def test_stability_index():
    base = rng.normal(size=20000)
    assert stability_index(base, rng.normal(size=20000)) < 0.01
    shifted = stability_index(base, rng.normal(0.5, 1, size=20000))
    assert 0.15 < shifted < 0.4
    # by hand for two bins
    e = np.array([0, 0, 1, 1.0])
    a = np.array([0, 1, 1, 1.0])
    pe, pa = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    assert stability_index(e, a, bins=2) == pytest.approx(np.sum((pa - pe) * np.log(pa / pe)))
