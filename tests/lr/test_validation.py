"""Validation split, early stopping with patience, best-epoch restore."""

from __future__ import annotations

import numpy as np
import pytest

from vfl.lr.config import validation_split

from .trio import run_trio, small_config


def test_split_is_stratified_and_secret():
    y = np.r_[np.zeros(800), np.ones(200)]
    v = validation_split(y, 0.25)
    assert len(v) == 250 and y[v].sum() == 50 and v == sorted(v)
    # drawn with the OS CSPRNG: a second draw differs (probability of equality ~ 1e-200)
    assert validation_split(y, 0.25) != v


def _best(cfg, hist):
    """The epoch the mode keeps, first of equals: the best AUC (Taylor); the best log-loss
    among the epochs from ``curvature_every`` on, or among all if none is that late
    (accurate)."""
    if cfg.mode == "taylor":
        return int(np.argmax([h["auc"] for h in hist]))
    late = [i for i in range(len(hist)) if i >= cfg.curvature_every]
    pool = late or list(range(len(hist)))
    return min(pool, key=lambda i: (hist[i]["loss"], i))


@pytest.mark.parametrize("mode", ["taylor", "accurate"])
def test_best_epoch_weights_equal_reference_at_that_epoch(breast, mode):
    Xg, y, Xh = breast
    cfg = small_config(epochs=4, batch_size=128, validation_fraction=0.25, learning_rate=0.3,
                       optimizer="sgd", mode=mode)
    run = run_trio(Xg, y, [Xh], cfg)
    hist = run.guest.validation_history
    assert len(hist) == 4 and all(0.5 < h["auc"] <= 1 for h in hist)
    best = run.guest.best_epoch
    assert best == _best(cfg, hist)
    ref = run.reference(Xg, y, [Xh], cfg.replace(epochs=best + 1))
    np.testing.assert_allclose(run.guest.coef, ref.guest_coef, atol=1e-6, rtol=0)
    np.testing.assert_allclose(run.hosts[0].coef, ref.host_coefs[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["taylor", "accurate"])
def test_patience_stops_early(breast, mode):
    Xg, y, Xh = breast
    # Taylor: SGD 0.5 overshoots its AUC; accurate: SGD 2.0 reaches its lowest log-loss
    # within the 40 epochs (at 0.5 it still improves at epoch 40)
    lr, decay = (0.5, 1.0) if mode == "taylor" else (2.0, 0.0)
    # (the step sizes were chosen for version 4's protocol; under protocol shared the accurate
    # mode's expansion point is refreshed only at some epoch ends on 400 training rows, and
    # SGD 2.0 diverges there: the patience logic is the same for both protocols)
    cfg = small_config(epochs=40, batch_size=128, validation_fraction=0.3, patience=2,
                       learning_rate=lr, decay=decay, optimizer="sgd", mode=mode,
                       protocol="reveal-gradients")
    run = run_trio(Xg, y, [Xh], cfg)
    best = _best(cfg, run.guest.validation_history)
    assert run.epochs < 40
    assert run.epochs == best + 1 + 2  # stopped exactly when patience ran out
    if mode == "accurate":  # no epoch before every row had its squares is kept
        assert run.guest.best_epoch >= cfg.curvature_every
    assert run.guest.best_epoch == best


def test_separate_validation_tables(tmp_path):
    """Validation tables aligned by their own PSI; early stopping uses them."""
    from vfl.data import load_table
    from vfl.lr import TrainConfig
    from vfl.pipeline import fit_local
    from vfl.synthetic import make_two_banks

    g, h = make_two_banks(3000, seed=11)
    gv, hv = make_two_banks(1000, seed=12)
    load = lambda df, lab: load_table(df, id_column="customer_id", label_column=lab)  # noqa: E731
    res = fit_local(load(g, "default"), [load(h, None)],
                    TrainConfig(epochs=8, batch_size=256, key_bits=512,
                                allow_insecure_key_size=True, tol=0.0, patience=2),
                    baselines=False, guest_valid=load(gv, "default"),
                    hosts_valid=[load(hv, None)])
    hist = res.report["validation_history"]
    assert 1 <= len(hist) <= 8 and res.report["best_epoch"] is not None
    # validation AUC is measured on the validation intersection, not on training rows
    from vfl.metrics import auc

    assert abs(hist[res.report["best_epoch"]]["auc"] - res.report["auc"]) > 1e-9
    assert all(0.55 < v["auc"] < 1 for v in hist)
    assert auc(res.aligned_guest.y, res.proba) == res.report["auc"]
