"""Encrypted training equals the plaintext run of the same algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from vfl.exceptions import ConfigError, InsecureKeySizeError

from .trio import run_trio, small_config


def _assert_matches(run, ref, tol=1e-6):
    np.testing.assert_allclose(run.guest.coef, ref.guest_coef, atol=tol, rtol=0)
    for host, ref_coef in zip(run.hosts, ref.host_coefs, strict=False):
        np.testing.assert_allclose(host.coef, ref_coef, atol=tol, rtol=0)
    # protocol shared: each share is rounded on its own (~2^-32 a step), so the losses agree
    # to a few units of 1e-8 (class weights scale the residuals, and the rounding, by up to 8)
    np.testing.assert_allclose(run.guest.loss_history, ref.loss_history, atol=1e-7, rtol=0)
    assert run.epochs == ref.epochs_run


def test_encrypted_equals_plaintext_reference_on_breast(breast):
    Xg, y, Xh = breast
    cfg = small_config(epochs=5, batch_size=128)
    run = run_trio(Xg, y, [Xh], cfg)
    ref = run.reference(Xg, y, [Xh], cfg)
    _assert_matches(run, ref)
    # the weights moved: the comparison is not trivially between zeros
    assert np.abs(ref.guest_coef[:-1]).max() > 0.05
    assert ref.loss_history[-1] < ref.loss_history[0]


REVEAL = dict(protocol="reveal-gradients", optimizer="adam", learning_rate=0.1, decay=1.0)


@pytest.mark.parametrize("protocol", ["shared", "reveal-gradients"])
@pytest.mark.parametrize("mode", ["taylor", "accurate"])
def test_two_hosts_equal_reference_with_loss(breast, mode, protocol):
    Xg, y, Xh = breast
    extra = REVEAL if protocol == "reveal-gradients" else {}
    cfg = small_config(epochs=3, batch_size=100, mode=mode, curvature_every=1, **extra)
    run = run_trio(Xg, y, [Xh[:, :12], Xh[:, 12:]], cfg)
    ref = run.reference(Xg, y, [Xh[:, :12], Xh[:, 12:]], cfg)
    _assert_matches(run, ref)
    one = run.reference(Xg, y, [Xh], cfg)
    if protocol == "shared":
        # the squares are of the joint score: two hosts train as one host with their columns
        np.testing.assert_allclose(ref.loss_history, one.loss_history, atol=1e-6)
        np.testing.assert_allclose(np.concatenate(ref.host_coefs), one.host_coefs[0],
                                   atol=1e-6)
    elif mode == "taylor":
        # the multi-host loss (with cross-host terms) equals the one-host loss on the same columns
        np.testing.assert_allclose(ref.loss_history, one.loss_history, atol=1e-6)
    else:
        # accurate mode has no cross-host terms: epoch 0 (no squares yet) is the same, later
        # epochs use each host's own clipped square (hetero_lr.md, "Several hosts")
        assert ref.loss_history[0] == pytest.approx(one.loss_history[0], abs=1e-6)
        assert ref.loss_history[1] != pytest.approx(one.loss_history[1], abs=1e-6)


@pytest.mark.parametrize(
    "optimizer, penalty, alpha",
    [("sgd", "l2", 0.01), ("momentum", "l2", 0.05), ("momentum", "l1", 0.01),
     ("rmsprop", "none", 0.0), ("adam", "l2", 0.1)],
)
def test_optimizers_and_penalties_match_reference(breast, optimizer, penalty, alpha):
    """Under the default protocol (shared) for the optimisers that run on shares; Adam,
    RMSprop and L1 need the gradient itself: protocol reveal-gradients."""
    Xg, y, Xh = breast
    linear = optimizer in ("sgd", "momentum") and penalty != "l1"
    cfg = small_config(optimizer=optimizer, penalty=penalty, alpha=alpha, learning_rate=0.1,
                       decay=0.3, epochs=2,
                       protocol="shared" if linear else "reveal-gradients")
    run = run_trio(Xg, y, [Xh], cfg)
    _assert_matches(run, run.reference(Xg, y, [Xh], cfg))


def test_early_stopping_same_epoch_as_reference(breast):
    Xg, y, Xh = breast
    cfg = small_config(epochs=30, tol=5e-3, batch_size=0)
    run = run_trio(Xg, y, [Xh], cfg)
    ref = run.reference(Xg, y, [Xh], cfg)
    assert run.epochs == ref.epochs_run < 30


def test_batch_guardrail(breast):
    Xg, y, Xh = breast
    with pytest.raises(ConfigError, match="too small"):
        run_trio(Xg, y, [Xh], small_config(batch_size=50))


def test_host_refuses_small_key_without_its_own_flag(breast):
    Xg, y, Xh = breast
    with pytest.raises(InsecureKeySizeError):
        run_trio(Xg, y, [Xh], small_config(epochs=1), host_insecure=False)


@pytest.mark.parametrize("class_weight", ["balanced", "3.0"])
def test_class_weights_match_reference_and_shift_the_model(breast, class_weight):
    Xg, y, Xh = breast
    cfg = small_config(epochs=3, class_weight=class_weight, learning_rate=0.2)
    run = run_trio(Xg, y, [Xh[:, :12], Xh[:, 12:]], cfg)
    ref = run.reference(Xg, y, [Xh[:, :12], Xh[:, 12:]], cfg)
    _assert_matches(run, ref)
    plain = run.reference(Xg, y, [Xh[:, :12], Xh[:, 12:]], cfg.replace(class_weight="none"))
    # up-weighting a class moves the predictions towards it (breast: label 1 is the majority,
    # so "balanced" up-weights class 0). The mean predicted probability, not the intercept alone:
    # from some secret starts the features absorb the shift within 3 epochs.
    w1_heavier = class_weight == "3.0" or y.mean() < 0.5

    def mean_p(r):
        s = Xg @ r.guest_coef[:-1] + r.guest_coef[-1] + Xh[:, :12] @ r.host_coefs[0] \
            + Xh[:, 12:] @ r.host_coefs[1]
        return float(np.mean(1 / (1 + np.exp(-s))))

    assert (mean_p(ref) > mean_p(plain)) == w1_heavier


def test_accurate_mode_refuses_score_bits_its_residual_cannot_hold():
    """4(σ − y) at 2^(F+16) must fit the encoder's 62 bits: F ≤ 43 in the accurate mode."""
    from vfl.lr import TrainConfig

    assert TrainConfig(mode="accurate", score_frac_bits=43).score_frac_bits == 43
    assert TrainConfig(mode="taylor", score_frac_bits=48).score_frac_bits == 48
    with pytest.raises(ConfigError, match="at most 43 in the accurate mode"):
        TrainConfig(mode="accurate", score_frac_bits=44)


@pytest.mark.parametrize("mode, protocol, first_stop", [
    ("taylor", "reveal-gradients", 1), ("accurate", "reveal-gradients", 4),
    ("taylor", "shared", 4), ("accurate", "shared", 4)])
def test_tol_stops_nothing_during_the_accurate_warm_up(breast, mode, protocol, first_stop):
    """A tol so large that any two losses are close: Taylor stops after epoch 1, the accurate
    mode only from epoch curvature_every (4) on, while its squares still arrive (under
    protocol shared both modes' losses use stored squares); the encrypted run agrees with
    the reference."""
    Xg, y, Xh = breast
    extra = REVEAL if protocol == "reveal-gradients" else {}
    cfg = small_config(epochs=8, batch_size=128, tol=10.0, mode=mode, **extra)
    ref = run_trio(Xg, y, [Xh], cfg)
    assert ref.epochs == first_stop + 1
    assert ref.reference(Xg, y, [Xh], cfg).epochs_run == first_stop + 1
