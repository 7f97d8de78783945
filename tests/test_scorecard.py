"""Scorecard points: the parties' totals equal the points of the joined model in the clear."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vfl.data import load_table
from vfl.exceptions import ConfigError
from vfl.lr import TrainConfig
from vfl.pipeline import fit_local
from vfl.scorecard import PointsTable, Scorecard, points_table
from vfl.synthetic import make_two_banks


def test_scaling_conventions():
    sc = Scorecard(base_score=600, base_odds=50, pdo=20)
    p50 = 1 / 51  # odds good:bad = 50:1
    assert sc.from_probability(np.array([p50]))[0] == pytest.approx(600)
    p100 = 1 / 101  # doubled odds -> +pdo
    assert sc.from_probability(np.array([p100]))[0] == pytest.approx(620, abs=1e-9)
    with pytest.raises(ConfigError):
        Scorecard(pdo=0)


def test_party_points_sum_to_joint_model_points():
    g, h = make_two_banks(1200)
    guest = load_table(g, id_column="customer_id", label_column="default")
    host = load_table(h, id_column="customer_id")
    res = fit_local(guest, [host], TrainConfig(epochs=2, batch_size=128, key_bits=512,
                                               allow_insecure_key_size=True), baselines=False)
    sc = Scorecard(600, 50, 20)
    g_pts = sc.guest_points(res.guest.partial_score(res.aligned_guest.X))
    h_pts = sc.host_points(res.hosts[0].partial_score(res.aligned_hosts[0].X))
    total = g_pts + h_pts
    # in the clear: joined model on the pooled, standardised columns
    zg = res.guest.preprocessor_.transform(res.aligned_guest.X)
    zh = res.hosts[0].preprocessor_.transform(res.aligned_hosts[0].X)
    logit = zg @ res.guest.coef_ + res.guest.intercept_ + zh @ res.hosts[0].coef_
    clear = 600 - 20 / math.log(2) * math.log(50) - 20 / math.log(2) * logit
    np.testing.assert_allclose(total, clear, atol=1e-9)
    # the probability is calibrated (validation rows by default): logit' = a * logit + c
    cal = res.guest.calibration_
    a, c = (cal["slope"], cal["intercept"]) if cal is not None else (1.0, 0.0)
    calibrated = sc.offset - sc.factor * (a * logit + c)
    np.testing.assert_allclose(calibrated, sc.from_probability(res.proba), atol=1e-6)
    # the legacy writer's entry point: the new tables (base row for the guest only)
    host_df = points_table(res.hosts[0], res.aligned_hosts[0], scorecard=sc)
    guest_df = points_table(res.guest, res.aligned_guest, scorecard=sc)
    assert set(host_df["feature"].dropna()) == set(res.aligned_hosts[0].feature_names)
    assert "base" not in set(host_df["kind"])
    assert list(guest_df["kind"]).count("base") == 1 and guest_df["kind"].iloc[0] == "base"
    assert ((host_df["kind"] == "missing") & (host_df["feature"] == "savings_balance")).any()
    # the tables' integer total tracks the joint model's points (a binned approximation)
    g_tab = PointsTable.from_frame(guest_df)
    h_tab = PointsTable.from_frame(host_df)
    table_total = g_tab.score(res.aligned_guest.X) + h_tab.score(res.aligned_hosts[0].X)
    assert table_total.dtype == np.int64
    assert np.mean(np.abs(table_total - total)) < sc.pdo
