"""End to end with production-size (2048-bit) keys: PSI, training, scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vfl.data import load_table
from vfl.lr import TrainConfig
from vfl.lr.reference import fit_reference
from vfl.pipeline import fit_local, predict_local
from vfl.preprocess import Standardizer

from .conftest import shared_csv


@pytest.mark.slow
def test_breast_end_to_end_2048_bits(tmp_path):
    g = pd.read_csv(shared_csv("breast_hetero_guest.csv"))
    h = pd.read_csv(shared_csv("breast_hetero_host.csv"))
    g = g.sample(frac=0.9, random_state=1)  # partial overlap, different row orders
    h = h.sample(frac=0.9, random_state=2)
    guest = load_table(g, id_column="id", label_column="y")
    host = load_table(h, id_column="id")
    cfg = TrainConfig(epochs=3, batch_size=128, tol=0.0,  # key_bits defaults to 2048
                      validation_fraction=0.0)
    assert cfg.key_bits == 2048
    res = fit_local(guest, [host], cfg, out_dir=tmp_path)
    shared = set(g["id"].astype(str)) & set(h["id"].astype(str))
    assert res.report["n_intersection"] == len(shared)
    assert res.aligned_guest.ids == res.aligned_hosts[0].ids
    # same weights as the plaintext reference on the aligned, locally standardised blocks
    Xg = Standardizer.fit(res.aligned_guest.X).transform(res.aligned_guest.X)
    Xh = Standardizer.fit(res.aligned_hosts[0].X).transform(res.aligned_hosts[0].X)
    init = np.append(res.guest.coef_init_, res.guest.intercept_init_)
    ref = fit_reference(Xg, res.aligned_guest.y.astype(float), [Xh], cfg,
                        initial_guest_coef=init)
    np.testing.assert_allclose(np.append(res.guest.coef_, res.guest.intercept_), ref.guest_coef,
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(res.hosts[0].coef_, ref.host_coefs[0], atol=1e-6, rtol=0)
    assert res.report["auc"] > 0.97
    scores = predict_local(tmp_path, guest, [host])
    scores = scores[scores["matched"]]
    by_id = dict(zip(scores["id"], scores["probability"], strict=False))
    trained = dict(zip(res.aligned_guest.ids, res.proba, strict=False))
    assert set(by_id) == shared
    assert max(abs(by_id[k] - trained[k]) for k in shared) < 1e-9
