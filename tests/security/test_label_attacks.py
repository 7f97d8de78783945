"""A curious host's label-recovery attacks (issue 8, findings 1 and 2) against the real protocol.

The "after" tests run the attacker's computation (``tests/security/attacks.py``)
on what the first host legitimately holds after a real in-memory training run
and assert it learns nothing beyond chance. The controls prove the same code
does recover labels when the leak is present, so the "after" tests cannot pass
vacuously.

Data: Gaussian features; labels logistic in the *guest's* features only, so
the host's own columns predict them no better than the majority class and any
accuracy above :func:`attacks.chance_bound` is label leakage.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from tests.security import attacks
from vfl.crypto.encoding import quantize
from vfl.lr.config import TrainConfig
from vfl.lr.driver import run_guest_training

F, G = 32, 20
BATCH = 64


def _config(batch: int = BATCH, **kw) -> TrainConfig:
    # the first-batch attacks read the host's plaintext gradient: protocol reveal-gradients
    # (under protocol shared, the default, no gradient reaches a host at all:
    # test_stacking_attacks.py attacks a whole run of it)
    base = dict(key_bits=1024, allow_insecure_key_size=True, epochs=1, batch_size=batch, tol=0.0,
                score_frac_bits=F, feature_frac_bits=G, validation_fraction=0.0,
                protocol="reveal-gradients", optimizer="adam", learning_rate=0.1, decay=1.0)
    base.update(kw)
    return TrainConfig(**base)


_VIEWS: dict[tuple[int, int, str], tuple[attacks.HostView, np.ndarray]] = {}
VALIDATION = 0.2


def _real_view(batch: int, k_host: int, mode: str = "taylor"
               ) -> tuple[attacks.HostView, np.ndarray]:
    """One real training run with validation (cached): the host's view and all true labels."""
    key = (batch, k_host, mode)
    if key not in _VIEWS:
        n = int(round(2.2 * batch / (1.0 - VALIDATION)))
        Xg, y, Xh = attacks.synthetic_labels_data(n, 4, k_host, seed=100 + k_host)
        view = attacks.host_view_first_batch(
            Xg, y, Xh, _config(batch, validation_fraction=VALIDATION, mode=mode))
        _VIEWS[key] = (view, y)
    return _VIEWS[key]


# ------------------------------------------------------------------ finding 1: after
@pytest.mark.parametrize(("batch", "k_host", "mode"),
                         [(64, 4, "taylor"), (64, 8, "taylor"), (128, 32, "taylor"),
                          (64, 4, "accurate"), (64, 8, "accurate")])
def test_first_batch_lattice_attack_recovers_no_more_than_chance(batch, k_host, mode):
    view, y = _real_view(batch, k_host, mode)
    assert view.exact, "the capture must hold the host's exact unmasked integers"
    truth = y[list(view.rows)]
    out = attacks.lattice_attack_detailed(view.Q, view.gradient, view.score_frac_bits,
                                          n_train=view.n_train, n_rows=view.n_rows,
                                          own_scores=view.own_scores)
    assert out is None or not out.certain, "the gradient equations have an exact 0/1 solution"
    labels = None if out is None else out.labels
    acc = attacks.label_accuracy(labels, truth)
    assert acc < 1.0
    assert acc <= attacks.chance_bound(truth), (
        f"lattice attack got {acc:.3f} of {len(truth)} labels; chance is "
        f"{attacks.chance_bound(truth):.3f}")


# ------------------------------------------------------------------ finding 2: after
def test_validation_replay_pins_nothing():
    view, _ = _real_view(64, 4)
    assert view.validation_rows, "the job must hold out validation rows"
    out = attacks.validation_replay_attack(view.n_rows, list(view.validation_rows), VALIDATION,
                                           _config().seed)
    assert out.determined == {}, (
        f"replaying the draw fixed {len(out.determined)} labels "
        f"(positive counts {out.consistent_counts[:5]})")


# ------------------------------------------------------------------ controls
@pytest.mark.parametrize("k_host", [8, 16])
def test_control_lattice_attack_solves_two_valued_residuals(k_host):
    """With every weight but the intercept at zero the attack gets the whole batch and the count."""
    rng = np.random.default_rng(k_host)
    n_train = 2 * BATCH
    y_all = (rng.random(n_train) < 0.35).astype(np.int64)
    Q = quantize(rng.normal(size=(BATCH, k_host)), G)
    y = y_all[:BATCH]
    b0 = float(2.0 * np.mean(2.0 * y_all - 1.0))  # the old guest's intercept start
    grad = attacks.simulate_first_batch_gradient(Q, y, F, b0)
    out = attacks.lattice_attack_detailed(Q, grad, F, n_train=n_train, use_bkz=False)
    assert out is not None and out.certain
    assert np.array_equal(out.labels, y)
    assert out.positives == int(y_all.sum())


def test_control_noisy_cvp_decodes_small_noise():
    """The continuous-residual path is not vacuous: tiny unknown scores are still decoded."""
    rng = np.random.default_rng(5)
    Q = quantize(rng.normal(size=(BATCH, 16)), G)
    y = (rng.random(BATCH) < 0.35).astype(np.int64)
    grad = attacks.simulate_first_batch_gradient(Q, y, F, 0.3,
                                                 guest_scores=1e-3 * rng.normal(size=BATCH))
    out = attacks.lattice_attack_detailed(Q, grad, F, use_bkz=False)
    assert out is not None and not out.certain
    assert np.array_equal(out.labels, y)


@pytest.mark.parametrize("mode", ["taylor", "accurate"])
def test_control_attack_end_to_end_on_a_zero_start(mode):
    """Through the real protocol, a guest starting from zero weights loses the whole batch
    (in both modes: the accurate mode's first residual ``4(σ(b0) - y)`` is two-valued too).

    With the hardened guest this is its explicit ``initial_coef`` (zeros plus
    ``2 mean(y)``): the run shows the capture and the attack work on real
    messages, and what a zero start would give away.
    """
    Xg, y, Xh = attacks.synthetic_labels_data(2 * BATCH, 4, 8, seed=3)
    kwargs = {}
    if "initial_coef" in inspect.signature(run_guest_training).parameters:
        kwargs["initial_coef"] = np.append(np.zeros(Xg.shape[1]), 2.0 * np.mean(2.0 * y - 1.0))
    view = attacks.host_view_first_batch(Xg, y, Xh, _config(mode=mode), guest_kwargs=kwargs)
    assert view.exact
    out = attacks.lattice_attack_detailed(view.Q, view.gradient, view.score_frac_bits,
                                          n_train=view.n_train, own_scores=view.own_scores,
                                          use_bkz=False)
    assert out is not None and out.certain
    assert np.array_equal(out.labels, y[list(view.rows)])
    if mode == "taylor":  # the Taylor constant also gives the positives of the whole set
        assert out.positives == int(y.sum())


def test_control_validation_replay_on_the_seeded_split():
    """The pre-issue-8 seeded draw gives the exact count and many labels, all correct."""
    rng = np.random.default_rng(8)
    y = (rng.random(500) < 0.3).astype(np.int64)
    rows = attacks.seeded_validation_split_v1(y, 0.2, 0)
    out = attacks.validation_replay_attack(500, rows, 0.2, 0,
                                           split=attacks.seeded_validation_split_v1)
    assert out.consistent_counts == [int(y.sum())]
    assert out.determined_among(rows) >= len(rows) // 2
    assert all(y[r] == label for r, label in out.determined.items())


def test_chance_bound_is_the_majority_rate_plus_binomial_margin():
    truth = np.array([1] * 16 + [0] * 48)
    assert attacks.chance_bound(truth, z=3.0) == pytest.approx(0.75 + 3 * 0.5 / 8)
    assert attacks.label_accuracy(1 - truth, truth) == 1.0  # a global flip is no defence
    assert attacks.label_accuracy(None, truth) == 0.0
