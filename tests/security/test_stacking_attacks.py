"""Multi-epoch stacking attacks (issue 24) against the real parties.

A curious host stacks its per-batch plaintext gradients over a whole run and
solves for the residuals (hence the labels); a curious guest stacks its own
and solves for the hosts' scores (``tests/security/stacking.py`` has the
maths). Each attack is held against what an attacker holding only the final
weights gets, which the tests compute themselves.

* The plaintext tests check the attack code on equations built in the clear:
  exact recovery when the equations are consistent, the burn-in choice when
  early epochs are not, the guest's exact replay of the shared algorithm
  through its revealed weights, and the fallback when there is nothing.
* The controls run today's protocol (``reveal-gradients``): the attacks must
  clearly succeed, so the protocol test below cannot pass vacuously.
* ``test_stacking_attacks_do_no_better_than_final_weights`` is the test of
  issue 24's protocol, parametrised over the protocols ``TrainConfig`` offers:
  a protocol named for what it reveals must leak (the harness works), any
  other must give the attacker no more than the final weights do. Under
  ``shared`` neither party is told any weight before the end: the capture
  checks that the guest's expansion point never changes during the run (it
  would replay the run through any weight it were told,
  ``stacking.guest_reveal_attack``).

Data: standard-normal columns, labels logistic in the guest's columns (and,
in the Taylor control, partly in the host's, so that its scores matter).
Keys: 512 bits through the explicit insecure flag. The guest's secret start
and validation split are drawn with ``secrets``, so every run differs: the
bars are derived from chance bounds and baselines with wide room, not echoed
from one run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pytest

from tests.security import stacking as st

REVEAL = st.REVEAL_GRADIENTS
SHARED = "shared"
# The protocols to hold to issue 24's bound. Before the shared protocol lands, TrainConfig has no
# `protocol` field and today's protocol is the only one: the "shared" case is then simply not
# generated (not skipped), and appears by itself once the field exists.
PROTOCOLS = [SHARED, REVEAL] if st.protocol_field_exists() else [REVEAL]
#: Protocols that name what they reveal: the attacks must succeed on them (a positive control).
LEAKING = {REVEAL}


@dataclass(frozen=True)
class Setting:
    """One training job of the attacks: data shape, mode, batch and validation share."""

    mode: str
    batch: int
    k_host: int
    n_train: int
    validation: float
    host_signal: float
    k_guest: int = 8
    epochs: int = 30
    seed: int = 24

    @property
    def n_rows(self) -> int:
        """Aligned rows, so that ``n_train`` remain after the validation share."""
        return int(round(self.n_train / (1.0 - self.validation)))

    def config(self, protocol: str) -> Any:
        return st.train_config(protocol=protocol, epochs=self.epochs, batch_size=self.batch,
                               mode=self.mode, validation_fraction=self.validation)


# the accurate-mode finding: 1,024 training rows, 16 host columns, batch 64, default
# validation share and early stopping; the host's columns carry no label signal
ACCURATE_64 = Setting("accurate", 64, 16, 1024, 0.2, host_signal=0.0)
# the Taylor finding for the guest: batch 64, 8 guest and 4 host columns, 30 epochs
TAYLOR_64 = Setting("taylor", 64, 4, 1024, 0.0, host_signal=1.0)
# slow: batch 256 (2,048 training rows) and the default batch 2,048 with 128 host columns
ACCURATE_256 = Setting("accurate", 256, 16, 2048, 0.0, host_signal=0.0)
ACCURATE_2048_WIDE = Setting("accurate", 2048, 128, 4096, 0.0, host_signal=0.0)


@cache
def capture(setting: Setting, protocol: str) -> st.RunCapture:
    """One real run per setting and protocol (cached for the tests of this module)."""
    Xg, y, Xh = st.stacking_data(setting.n_rows, setting.k_guest, setting.k_host,
                                 host_signal=setting.host_signal, seed=setting.seed)
    return st.capture_run(Xg, y, Xh, setting.config(protocol))


@cache
def host_outcome(setting: Setting, protocol: str
                 ) -> tuple[st.LabelScore, st.LabelScore, st.LabelEstimate]:
    """The host's attack and its final-weights baseline, scored."""
    cap = capture(setting, protocol)
    est = st.host_label_attack(cap.host)
    base = st.host_final_weights_baseline(cap.host)
    return st.score_labels(est, cap.truth), st.score_labels(base, cap.truth), est


@cache
def guest_outcome(setting: Setting, protocol: str
                  ) -> tuple[st.ScoreScore, tuple[float, float], st.ScoreEstimate]:
    """The guest's attack, scored, and its final-weights baseline (|Spearman|, affine R²)."""
    cap = capture(setting, protocol)
    est = st.guest_score_attack(cap.guest)
    return (st.score_host_scores(est, cap.truth), st.guest_baseline_spearman(cap.guest, cap.truth),
            est)


def _truth_labels(setting: Setting, protocol: str) -> np.ndarray:
    cap = capture(setting, protocol)
    return cap.truth.y[host_outcome(setting, protocol)[2].rows]


def _folded(auc: float) -> float:
    return max(auc, 1.0 - auc)


# ------------------------------------------------------------------ assertions
def assert_host_attack_leaks(setting: Setting, protocol: str, *, clearly: bool = True) -> None:
    """The host's estimate beats the final weights by the AUC margin and the chance bound;
    ``clearly``: its accuracy closes half the gap from the chance bound to every label."""
    s, base, est = host_outcome(setting, protocol)
    truth = _truth_labels(setting, protocol)
    what = (f"host attack ({est.method}): {s.correct}/{s.n} labels, AUC {s.auc:.3f}; final "
            f"weights: AUC {base.auc:.3f}; chance bound {s.chance:.3f}")
    assert s.auc >= _folded(base.auc) + st.auc_margin(truth), what
    bar = st.clear_success_accuracy(truth) if clearly else s.chance
    assert s.accuracy >= bar, f"{what}; accuracy bar {bar:.3f}"


def assert_host_attack_bounded(setting: Setting, protocol: str) -> None:
    """Issue 24's bound: accuracy within the chance bound, AUC no better than the final
    weights' (within the AUC's standard-error margin)."""
    s, base, est = host_outcome(setting, protocol)
    truth = _truth_labels(setting, protocol)
    what = (f"{protocol}: host attack ({est.method}) got {s.correct}/{s.n} labels, AUC "
            f"{s.auc:.3f}; final weights AUC {base.auc:.3f}; chance bound {s.chance:.3f}")
    assert s.accuracy <= s.chance, what
    assert s.auc <= _folded(base.auc) + st.auc_margin(truth), what


def assert_guest_attack_leaks(setting: Setting, protocol: str, *, clearly: bool = True,
                              r2: bool = False) -> None:
    """The guest's estimate ranks the host scores better than the final weights beyond the
    margin of unrelated ranks; ``clearly``: at least half-way from the baseline to 1;
    ``r2``: the same for R²."""
    s, (rho_b, r2_b), est = guest_outcome(setting, protocol)
    what = (f"guest attack ({est.method}): R² {s.r2:.4f}, Spearman {s.spearman:.4f}; final "
            f"weights: R² {r2_b:.4f}, |Spearman| {rho_b:.4f}")
    assert s.spearman >= rho_b + st.spearman_margin(s.n), what
    if clearly:
        assert s.spearman >= rho_b + 0.5 * (1.0 - rho_b), what
    if r2:
        assert s.r2 >= r2_b + 0.5 * (1.0 - r2_b), what


def assert_guest_attack_bounded(setting: Setting, protocol: str) -> None:
    """Issue 24's bound: no rank correlation above the final-weights baseline (within the
    margin of a rank correlation between unrelated variables)."""
    s, (rho_b, _), est = guest_outcome(setting, protocol)
    assert abs(s.spearman) <= rho_b + st.spearman_margin(s.n), (
        f"{protocol}: guest attack ({est.method}) ranks the host scores at Spearman "
        f"{s.spearman:.4f}; the final weights alone at {rho_b:.4f}")


# ------------------------------------------------------------------ plaintext: the attack code
def _plain_batches(n: int, batch: int, epochs: int, rng: np.random.Generator
                   ) -> list[tuple[int, int, np.ndarray]]:
    out = []
    for epoch in range(epochs):
        perm = rng.permutation(n)
        for b, rows in enumerate(np.array_split(perm, n // batch)):
            out.append((epoch, b, np.sort(rows).astype(np.int64)))
    return out


def _plain_host_view(d: np.ndarray, X: np.ndarray, batches, noise_epochs: int = 0,
                     rng: np.random.Generator | None = None) -> st.PartyView:
    recs = []
    for epoch, b, rows in batches:
        grad = X[rows].T @ d[rows] / len(rows)
        if epoch < noise_epochs and rng is not None:  # epochs far from the final residuals
            grad = grad + rng.normal(scale=3.0 * np.abs(grad).mean(), size=grad.shape)
        recs.append(st.BatchRecord(epoch, b, rows, grad, np.zeros(X.shape[1])))
    return st.PartyView("host", X, np.arange(len(d)), tuple(recs), np.zeros(X.shape[1]),
                        "accurate", False)


def test_host_stacking_solves_consistent_equations_exactly():
    rng = np.random.default_rng(1)
    n, k = 300, 16
    X = rng.normal(size=(n, k))
    y = (rng.random(n) < 0.35).astype(float)
    d = 1.0 / (1.0 + np.exp(-rng.normal(size=n))) - y  # σ(s) - y: its sign is the label
    view = _plain_host_view(d, X, _plain_batches(n, 60, 12, rng))
    est = st.host_label_attack(view, burn_in=None)
    assert np.allclose(-est.score, d, atol=1e-6)
    assert st.score_labels(est, st.Truth(y, np.zeros(n))).correct == n


def test_host_stacking_drops_inconsistent_early_epochs():
    """Epochs whose gradients do not fit a per-row constant are dropped by the held-out
    choice, and the labels still come out; kept, they cost labels."""
    rng = np.random.default_rng(2)
    n, k = 400, 16
    X = rng.normal(size=(n, k))
    y = (rng.random(n) < 0.35).astype(float)
    d = 1.0 / (1.0 + np.exp(-rng.normal(size=n))) - y
    view = _plain_host_view(d, X, _plain_batches(n, 50, 16, rng), noise_epochs=3, rng=rng)
    truth = st.Truth(y, np.zeros(n))
    auto = st.host_label_attack(view)
    assert auto.burn_in >= 3, auto.errors
    assert st.score_labels(auto, truth).correct == n
    assert st.score_labels(st.host_label_attack(view, burn_in=None), truth).correct < n


@pytest.mark.parametrize("mode", ["taylor", "accurate"])
def test_guest_stacking_recovers_host_scores_from_consistent_equations(mode):
    """The guest's equations, built in the clear as the protocol forms the residual (the
    accurate mode's clipped squares included), give back the host scores."""
    rng = np.random.default_rng(3)
    n, k = 300, 6
    X = rng.normal(size=(n, k))
    y = (rng.random(n) < 0.4).astype(float)
    h = 1.5 * rng.normal(size=n)  # some beyond the clip at ±3
    recs = []
    for epoch, b, rows in _plain_batches(n, 50, 14, rng):
        coef = 0.5 * rng.normal(size=k + 1)
        g = X[rows] @ coef[:k] + coef[k]
        if mode == "taylor":
            d4 = g + h[rows] - 2.0 * (2.0 * y[rows] - 1.0)
            have = None
        else:
            sig = 1.0 / (1.0 + np.exp(-g))
            have = (rows + epoch) % 3 != 0
            q = np.clip(h[rows], -3.0, 3.0) ** 2
            d4 = (4.0 * (sig - y[rows]) + 4.0 * sig * (1 - sig) * h[rows]
                  + 2.0 * sig * (1 - sig) * (1 - 2 * sig) * q * have)
        grad = np.hstack([X[rows], np.ones((len(rows), 1))]).T @ (d4 / 4.0) / len(rows)
        recs.append(st.BatchRecord(epoch, b, rows, grad, coef, have))
    view = st.PartyView("guest", X, np.arange(n), tuple(recs), np.zeros(k + 1), mode, True, y)
    s = st.score_host_scores(st.guest_score_attack(view, burn_in=None), st.Truth(y, h))
    assert s.r2 > 0.999, s


def test_guest_replays_revealed_epochs_exactly_and_ranks_host_scores():
    """The reveal attack (protocol shared, accurate mode): the guest's replay of the shared
    algorithm, from its start and the weights revealed at epoch ends, is exact at the true
    host scores, and its estimate ranks them beyond chance. Built in the clear with a
    constant ``h`` as ``vfl.lr.reference`` runs the shared algorithm (momentum 9/10,
    expansion at the last reveal, stored squares on the public schedule)."""
    from types import SimpleNamespace

    from vfl.lr.config import epoch_batches, shared_squares_due

    rng = np.random.default_rng(6)
    n, k, epochs = 300, 4, 14
    X = rng.normal(size=(n, k))
    y = (rng.random(n) < 0.4).astype(float)
    h = 0.8 * rng.normal(size=n)
    cfg = SimpleNamespace(optimizer="momentum", penalty="none", alpha=0.0, learning_rate=0.4,
                          decay=0.5, curvature_every=4, batch_size=50, seed=3)
    Xt = np.hstack([X, np.ones((n, 1))])
    start = np.append(0.5 * rng.normal(size=k), 0.0)
    w, m, expansion = start.copy(), np.zeros(k + 1), start.copy()
    q, have = np.zeros(n), np.zeros(n, dtype=bool)
    E = 2.0**16
    reveals = []
    for epoch in range(epochs):
        lr = cfg.learning_rate / (1 + cfg.decay * epoch)
        for batch in epoch_batches(n, [], cfg, epoch):
            r = np.asarray(batch)
            gt = Xt[r] @ expansion
            sig = 1 / (1 + np.exp(-gt))
            c1 = np.round(4 * sig * (1 - sig) * E) / E
            c2 = np.round(2 * sig * (1 - sig) * (1 - 2 * sig) * E) / E
            x = Xt[r] @ w + h[r] - gt
            d4 = 4 * (sig - y[r]) + c1 * x + c2 * q[r] * have[r]
            due = np.asarray(shared_squares_due(cfg, epoch, batch), dtype=bool)
            q[r[due]], have[r[due]] = np.clip(x[due], -3, 3) ** 2, True
            m = 0.9 * m + Xt[r].T @ d4 / (4 * len(r))
            w = w - lr * m
        if epoch < epochs - 1:  # an epoch end followed by another epoch
            reveals.append((epoch, w.copy()))
            expansion = w.copy()
    view = st.PartyView("guest", X, np.arange(n), (), w, "accurate", True, y, tuple(reveals),
                        start, cfg)
    truth = np.append(h, np.zeros(k + 1))
    for _, A, b in st._reveal_equations(view, 0, truth):
        assert np.linalg.norm(A @ truth - b) <= 1e-9 * np.linalg.norm(b)
    est = st.guest_score_attack(view)  # no gradients: the reveals are what it has
    assert est.method.startswith("replay")
    s = st.score_host_scores(est, st.Truth(y, h))
    assert s.spearman > st.spearman_margin(n), s


def test_attacks_fall_back_to_the_final_weights_without_gradients():
    """A view with no per-batch plaintext (the shared protocol) yields exactly the
    final-weights baseline, with no error."""
    rng = np.random.default_rng(4)
    n = 120
    Xh, Xg = rng.normal(size=(n, 5)), rng.normal(size=(n, 3))
    y = (rng.random(n) < 0.4).astype(float)
    train = np.arange(20, n)
    host = st.PartyView("host", Xh, train, (), rng.normal(size=5), "accurate", False)
    guest = st.PartyView("guest", Xg, train, (), rng.normal(size=4), "accurate", True, y)
    est, base = st.host_label_attack(host), st.host_final_weights_baseline(host)
    assert not host.has_gradients and est.method == base.method
    assert np.array_equal(est.rows, train) and np.array_equal(est.score, base.score)
    g_est, g_base = st.guest_score_attack(guest), st.guest_final_weights_baseline(guest)
    assert g_est.method == g_base.method and np.array_equal(g_est.values, g_base.values)
    s = st.score_labels(est, st.Truth(y, Xh @ host.final_coef))
    assert s.n == len(train)


def test_thresholds_follow_the_chance_bound():
    truth = np.array([1] * 30 + [0] * 70)
    c = st.chance_bound(truth)
    assert c == pytest.approx(0.7 + 3 * 0.5 / 10)
    assert st.clear_success_accuracy(truth) == pytest.approx(c + (1 - c) / 2)
    assert st.auc_margin(truth) == pytest.approx(3 * np.sqrt(101 / (12 * 30 * 70)))
    assert st.spearman_margin(101) == pytest.approx(0.3)


# ------------------------------------------------------------------ controls: today's protocol
def test_control_host_recovers_labels_accurate_batch_64():
    """The issue's finding: accurate mode, 1,024 training rows, 16 host columns, batch 64,
    validation and early stopping: nearly every label, where the final weights give none."""
    cap = capture(ACCURATE_64, REVEAL)
    assert cap.host.has_gradients and cap.host.epochs_seen == cap.epochs_run
    assert_host_attack_leaks(ACCURATE_64, REVEAL)


def test_control_guest_recovers_host_scores_accurate_batch_64():
    # (the margin, not half-way to 1: across secret starts the attack ranked the scores at
    # 0.47-0.82 against 0.12 from the final weights; half-way failed one run in several)
    assert_guest_attack_leaks(ACCURATE_64, REVEAL, clearly=False)


def test_control_guest_recovers_host_scores_taylor():
    """The issue's finding: Taylor mode, batch 64, 8 guest and 4 host columns, 30 epochs:
    every training row's host score (R² and Spearman both close to 1)."""
    assert_guest_attack_leaks(TAYLOR_64, REVEAL, r2=True)


def test_control_host_recovers_labels_taylor():
    assert_host_attack_leaks(TAYLOR_64, REVEAL)


@pytest.mark.slow
def test_control_host_recovers_labels_batch_256():
    assert_host_attack_leaks(ACCURATE_256, REVEAL)


@pytest.mark.slow
def test_control_host_ranks_labels_at_the_default_batch_with_128_columns():
    """Batch 2,048 (the default), 128 host columns, 4,096 rows: no single batch is solvable
    (b >= 4k), yet the run's batches rank the labels far above the host's own final model."""
    assert_host_attack_leaks(ACCURATE_2048_WIDE, REVEAL, clearly=False)


# ------------------------------------------------------------------ issue 24's protocol
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("setting", [ACCURATE_64,
                                     pytest.param(ACCURATE_256, marks=pytest.mark.slow)],
                         ids=["accurate-b64-validation", "accurate-b256"])
def test_stacking_attacks_do_no_better_than_final_weights(protocol, setting):
    """Issue 24: over a whole run, the host learns no more about the labels, and the guest
    no more about the host scores, than their final weights tell them.

    Under a protocol that names what it reveals (``reveal-gradients``) the same attacks
    must succeed instead: the harness captures what it should.
    """
    if protocol in LEAKING:  # the negation of the bound below (the controls ask for more)
        assert_host_attack_leaks(setting, protocol, clearly=False)
        assert_guest_attack_leaks(setting, protocol, clearly=False)
    else:
        _assert_reveals_captured(setting, protocol)
        assert_host_attack_bounded(setting, protocol)
        assert_guest_attack_bounded(setting, protocol)


def _assert_reveals_captured(setting: Setting, protocol: str) -> None:
    """The guest is told no weight during the run: the capture, which records every change
    of the guest's expansion point at an epoch's decision, recorded none, and the guest's
    transcript from the arbiter holds no EpochDecision field beyond epoch, stop and loss."""
    cap = capture(setting, protocol)
    seen = [e for e, _ in cap.guest.epoch_weights]
    assert seen == [], f"the guest's expansion point changed after epochs {seen}"
    from vfl.lr.messages import EpochDecision

    assert [f.name for f in dataclasses.fields(EpochDecision)] == ["epoch", "stop", "loss"]


def test_capture_records_only_the_attackers_own_view():
    """The views hold each party's own columns and weights, and gradients of its own width."""
    cap = capture(ACCURATE_64, REVEAL)
    assert cap.host.X.shape[1] == ACCURATE_64.k_host and cap.host.y is None
    assert cap.guest.X.shape[1] == ACCURATE_64.k_guest
    assert all(len(r.gradient) == ACCURATE_64.k_host for r in cap.host.batches)
    assert all(len(r.gradient) == ACCURATE_64.k_guest + 1 for r in cap.guest.batches)
    assert len(cap.host.train_rows) == ACCURATE_64.n_train
    rows = {int(r) for rec in cap.host.batches for r in rec.rows}
    assert rows == set(cap.host.train_rows.tolist())  # validation rows are never in a batch
    stripped = dataclasses.replace(cap.host, batches=())
    assert st.host_label_attack(stripped).method == "final weights only"
