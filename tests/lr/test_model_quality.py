"""Model quality against scikit-learn on the shared FATE data sets."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from vfl.lr import TrainConfig
from vfl.lr.guest import initial_guest_coef
from vfl.lr.reference import fit_reference
from vfl.synthetic import host_dominant

from .trio import run_trio


def _scores(Xg, Xhs, guest_coef, host_coefs):
    s = Xg @ guest_coef[:-1] + guest_coef[-1]
    for X, w in zip(Xhs, host_coefs, strict=False):
        s = s + X @ w
    return s


def test_reference_reaches_taylor_optimum_on_default_credit(default_credit):
    """The default settings get within 0.002 AUC of the Taylor optimum (least squares on +-1)."""
    Xg, y, Xh = default_credit
    X = np.hstack([Xg, Xh])
    taylor_opt = roc_auc_score(y, LinearRegression().fit(X, 2 * y - 1).predict(X))
    exact = roc_auc_score(y, LogisticRegression(max_iter=2000).fit(X, y).decision_function(X))
    guest_only = roc_auc_score(y, LogisticRegression(max_iter=2000).fit(Xg, y).decision_function(Xg))
    ref = fit_reference(Xg, y, [Xh], TrainConfig(epochs=10, validation_fraction=0.0,
                                                 mode="taylor"))
    auc = roc_auc_score(y, _scores(Xg, [Xh], ref.guest_coef, ref.host_coefs))
    assert abs(auc - taylor_opt) < 0.002
    assert abs(auc - exact) < 0.01
    assert auc > guest_only + 0.04


def test_converges_to_least_squares_weights(breast):
    """With full batches and many epochs, the Taylor-loss weights approach the LS solution."""
    Xg, y, Xh = breast
    X = np.hstack([Xg, Xh])
    ls = LinearRegression().fit(X, 2 * y - 1)
    # the Taylor gradient (1/4 x (wx) - 1/2 y) vanishes at w = 2 * beta_LS, under either
    # protocol (shared: momentum, the default; reveal-gradients: Adam)
    for extra in (dict(optimizer="momentum", learning_rate=0.05),
                  dict(protocol="reveal-gradients", optimizer="adam", learning_rate=0.05)):
        cfg = TrainConfig(epochs=400, validation_fraction=0.0, batch_size=0, decay=0.0,
                          tol=0.0, key_bits=512, allow_insecure_key_size=True, mode="taylor",
                          **extra)  # type: ignore[arg-type]
        ref = fit_reference(Xg, y, [Xh], cfg)
        pred = _scores(Xg, [Xh], ref.guest_coef, ref.host_coefs)
        corr = np.corrcoef(pred, ls.predict(X))[0, 1]
        assert corr > 0.99, extra


def _fit_both_modes(Xg, y, Xh, **config):
    """Plaintext reference runs of both modes from one secret start (the encrypted runs equal
    them: ``test_protocol.py``)."""
    start = initial_guest_coef(Xg, 2 * y - 1, fit_intercept=True)
    out = {}
    for mode in ("taylor", "accurate"):
        cfg = TrainConfig(validation_fraction=0.0, mode=mode, **config)
        ref = fit_reference(Xg, y, [Xh], cfg, initial_guest_coef=start, validation_rows=[])
        out[mode] = _scores(Xg, [Xh], ref.guest_coef, ref.host_coefs)
    return out


@pytest.mark.parametrize("swap", [False, True], ids=["as given", "host holds the strong columns"])
def test_accurate_mode_beats_taylor_and_reaches_sklearn_on_default_credit(default_credit, swap):
    """Issue 11: the accurate mode's AUC and log-loss are those of exact logistic regression
    (sklearn, unpenalised) within 0.002 and 1 %; the Taylor mode's are not."""
    Xg, y, Xh = default_credit
    if swap:
        Xg, Xh = Xh, Xg
    X = np.hstack([Xg, Xh])
    sk = LogisticRegression(C=np.inf, max_iter=5000).fit(X, y).decision_function(X)
    scores = _fit_both_modes(Xg, y, Xh)  # the defaults: 30 epochs, Adam, learning rate 0.1
    auc = {m: roc_auc_score(y, s) for m, s in scores.items()}
    loss = {m: log_loss(y, 1 / (1 + np.exp(-s))) for m, s in scores.items()}
    sk_auc, sk_loss = roc_auc_score(y, sk), log_loss(y, 1 / (1 + np.exp(-sk)))
    assert auc["accurate"] > auc["taylor"] + 0.003
    assert abs(auc["accurate"] - sk_auc) < 0.002
    assert abs(loss["accurate"] / sk_loss - 1) < 0.01
    assert loss["taylor"] / sk_loss - 1 > 0.02  # the Taylor gap this mode closes


@pytest.mark.parametrize("protocol,bound", [("shared", 0.015), ("reveal-gradients", 0.01)])
def test_accurate_mode_reaches_sklearn_when_the_host_dominates(protocol, bound):
    """A synthetic set where the host's score dominates (the tangent alone is 4 % off in
    log-loss here; the clipped second-order term closes it). Under protocol shared the
    expansion point is the guest's own model, fixed for the run (its coefficients are
    attenuated by the host's missing score): 30 epochs without early stopping end 1.3 %
    above sklearn, against 0.8 % for the guest's share of sklearn's own model as the point
    and 0.8 % when the guest was told its weights at epoch ends (hetero_lr.md,
    "Expansion point of the accurate mode")."""
    Xg, y, Xh = host_dominant(30000)
    X = np.hstack([Xg, Xh])
    sk = LogisticRegression(C=np.inf, max_iter=5000).fit(X, y)
    extra = {} if protocol == "shared" else dict(protocol=protocol, optimizer="adam",
                                                 learning_rate=0.1, decay=1.0)
    scores = _fit_both_modes(Xg, y, Xh, **extra)
    sk_loss = log_loss(y, sk.predict_proba(X)[:, 1])
    loss = {m: log_loss(y, 1 / (1 + np.exp(-s))) for m, s in scores.items()}
    assert abs(loss["accurate"] / sk_loss - 1) < bound
    assert loss["taylor"] / sk_loss - 1 > 0.05


@pytest.mark.slow
def test_encrypted_full_default_credit(default_credit):
    """Encrypted training on all 30,000 rows: equals the reference and beats the guest alone."""
    Xg, y, Xh = default_credit
    cfg = TrainConfig(epochs=3, key_bits=1024, allow_insecure_key_size=True, tol=0.0,
                      validation_fraction=0.0)
    run = run_trio(Xg, y, [Xh], cfg)
    ref = run.reference(Xg, y, [Xh], cfg)
    np.testing.assert_allclose(run.guest.coef, ref.guest_coef, atol=1e-6, rtol=0)
    np.testing.assert_allclose(run.hosts[0].coef, ref.host_coefs[0], atol=1e-6, rtol=0)
    X = np.hstack([Xg, Xh])
    exact = roc_auc_score(y, LogisticRegression(max_iter=2000).fit(X, y).decision_function(X))
    auc = roc_auc_score(y, _scores(Xg, [Xh], run.guest.coef, [run.hosts[0].coef]))
    assert abs(auc - exact) < 0.01
