"""WOE encoding before training: federated for host columns, reproduced at scoring time."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from vfl.binning.woe import WoeEncoder
from vfl.data import load_table
from vfl.jobs import JobOptions
from vfl.lr import TrainConfig
from vfl.model import load_model_part
from vfl.pipeline import fit_local, predict_local

from .conftest import shared_csv


def _clear_woe(values, y, cuts):
    """Textbook WOE of the bins given by cut points, independently of vfl's code."""
    edges = [-np.inf, *cuts, np.inf]
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = (values > a) & (values <= b)
        bad = y[m].sum() or 0.5
        good = (1 - y[m]).sum() or 0.5
        out.append(math.log((good / (1 - y).sum()) / (bad / y.sum())))
    return out


def test_woe_training_and_scoring(tmp_path):
    g = pd.read_csv(shared_csv("breast_hetero_guest.csv")).sample(frac=0.9, random_state=3)
    h = pd.read_csv(shared_csv("breast_hetero_host.csv")).sample(frac=0.9, random_state=4)
    guest = load_table(g, id_column="id", label_column="y")
    host = load_table(h, id_column="id")
    cfg = TrainConfig(epochs=3, batch_size=128, key_bits=512, allow_insecure_key_size=True)
    res = fit_local(guest, [host], cfg, out_dir=tmp_path, baselines=False,
                    options=JobOptions(woe_bins=5))
    hp = load_model_part(tmp_path / "host1.json")
    gp = load_model_part(tmp_path / "guest.json")
    assert "woe" in hp.preprocessing and "woe" in gp.preprocessing
    # the host's WOE values (from the guest's decrypted counts) equal WOE in the clear
    enc = WoeEncoder.from_dict(hp.preprocessing["woe"])
    y = res.aligned_guest.y
    for j in (0, 7):
        vals = res.aligned_hosts[0].X[:, j]
        expected = _clear_woe(vals, y, enc.cuts[j])
        np.testing.assert_allclose(enc.woe[j][: len(expected)], expected, atol=1e-9)
    assert (tmp_path / "iv.json").is_file() and len(json.loads((tmp_path / "iv.json").read_text())) == 30
    assert res.report["auc"] > 0.95
    # scoring applies the same encodings: identical probabilities for the training rows
    scores = predict_local(tmp_path, guest, [host])
    scores = scores[scores["matched"]]
    trained = dict(zip(res.aligned_guest.ids, res.proba, strict=True))
    assert max(abs(trained[i] - p) for i, p in zip(scores["id"], scores["probability"],
                                                    strict=True)) < 1e-12
