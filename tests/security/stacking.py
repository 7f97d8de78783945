"""Multi-epoch "stacking" attacks of a curious party (issue 24), against the real parties.

Everything an attack computes comes from a :class:`PartyView`: what the
attacking party legitimately holds during and after a run (its own features,
for the guest its labels, the public batch plan, the plaintext values the
protocol hands it per batch, and its own final weights). The ground truth
lives in :class:`Truth` and is used only by the scoring helpers. The capture
(:func:`capture_run`) runs the real protocol (``vfl.lr`` over
:class:`~vfl.transport.memory.InMemoryNetwork`) and records each party's view
without changing a message.

The two attacks
---------------

Notation: ``b`` rows in a batch, ``X_b`` a party's batch features, ``s = g + h``
the joint score (``g`` the guest's partial score with intercept, ``h`` the
hosts' sum), ``y`` in {0, 1}, ``y± = 2y - 1``. Under the ``reveal-gradients``
protocol (today's) every party unmasks its own gradient ``X_b^T d_b / b`` after
every batch, with the per-row residual

* Taylor mode: ``4d = s - 2y±``;
* accurate mode: ``4d = 4(σ(g) - y) + 4σ'(g) h + 2σ''(g) q`` (``q`` the clipped
  square ``clip(h, ±3)²`` of the row's last refresh; ``σ''`` applies only once
  the row has squares), i.e. ``d ≈ σ(s) - y``.

1. **Curious host → labels** (:func:`host_label_attack`). Each batch gives the
   host ``k_h`` linear equations ``X_b^T d_b / b = γ_b`` in the residuals of
   its rows. Batches are reshuffled every epoch, so over ``E`` epochs the
   stacked system has ``E k_h / b`` equations per row, over-determined once
   ``E > b / k_h``, whatever the batch-size guardrail does for one batch. The
   residual drifts between epochs, but its **sign** does not: in the accurate
   mode ``d ≈ σ(s) - y`` lies in ``(-1, 0)`` for ``y = 1`` and in ``(0, 1)``
   for ``y = 0`` in every epoch; in the Taylor mode ``4d = s - 2y±`` has the
   sign of ``-y±`` while ``|s| < 2``. So the attack models ``d_i`` as one
   constant per row (least squares then estimates a weighted average of the
   row's residuals, whose sign is the label) and labels ``y_i = 1`` iff
   ``d_i < 0``: the threshold is the residual's own zero, not a split tuned
   on the truth (centring would move it by the class imbalance). The ranking
   score ``-d_i`` gives the AUC.
2. **Curious guest → host scores** (:func:`guest_score_attack`). The guest
   knows every term of its residual except the hosts' scores: per batch it
   gets ``k_g + 1`` equations (its columns and the intercept), ``X̃ = [X_g, 1]``:

   * Taylor: ``X̃_b^T h_b / b = 4 γ_b - X̃_b^T (g_b - 2y±_b) / b``, exact and linear;
   * accurate: ``X̃_b^T (c1 h + c2 clip(h, ±3)²) / b = 4 γ_b - X̃_b^T 4(σ(g_b) - y_b) / b``
     with ``c1 = 4σ'(g)``, ``c2 = 2σ''(g)`` (zero before the row's first
     squares, from the public refresh rule), solved by Gauss-Newton.

   ``h_i`` is one constant per row. The estimate is scored against the host's
   **final** scores ``X_h w_h`` (the weights the host keeps, the best epoch's
   with validation): what ``allow_training_scores = false`` protects.

Drift: one constant per row, after a burn-in chosen on held-out equations.
Per-epoch windows would need ``b / k`` epochs each to be determined (16 at
batch 2,048 and 128 columns), so the run cannot be cut into several; a
constant over the run is the model. What hurts it is the start: Adam's first
steps move every weight by about the learning rate (the host's 128 weights
jump to norm 1.1 after one step at batch 2,048), so the first epochs' residuals
and host scores are far from their later values, and a least-squares fit
spreads that error over every row. Measured (``python -m
benchmarks.stacking_attacks --validation off --burn-in-sweep``, one run per
setting, host labels): batch 64 x 16 columns, every epoch 1020/1024, from epoch
4 on 1024/1024; batch 256 x 16, 1968/2048 (AUC 0.996), from epoch 8 2044/2048,
from epoch 20 1592/2048 (too few equations left); batch 2,048 x 128, 2757/4096
(AUC 0.752), from epoch 2 3582/4096 (AUC 0.963), from epoch 20 2877/4096. So
the attacker drops the first ``s`` epochs, ``s`` chosen without the truth
(:func:`_choose`): each candidate is fitted on the epochs before the last and
scored by how well it predicts the last epoch's gradients (the closest to the
final state); it picked 8, 8 and 2 there. ``burn_in`` fixes ``s`` instead.

A ridge is then chosen the same way (it matters where the system is
under-determined or ill-conditioned: the accurate mode's guest, whose row
weights ``4σ'(g)`` are small for confidently scored rows; at batch 256 its
near minimum-norm fits had R² of -8 to -15,000 and Spearman below 0.14; with
the chosen burn-in and ridge, Spearman 0.53). With fewer equations than unknowns the attack keeps every epoch.

Solver: the normal equations ``(Σ_t P_t M_t M_t^T P_t^T + λ I) u = Σ_t P_t M_t c_t``,
accumulated batch by batch and solved by Cholesky with one BLAS thread (LSQR
beyond :data:`NORMAL_LIMIT` unknowns); their sums over epochs are reused
across the candidate burn-ins.

Baselines: an attacker holding only the final weights
------------------------------------------------------

* Host: its own final partial score ``X_h w_h`` is its legitimate label
  predictor (:func:`host_final_weights_baseline`); label accuracy is also held
  against :func:`tests.security.attacks.chance_bound`.
* Guest: from its own data and final weights it can form ``y - σ(g)`` (what
  its own final score leaves unexplained: large where the hosts' score must
  be high) and ``g`` itself; :func:`guest_final_weights_baseline` returns the
  former and the scoring takes the larger ``|Spearman|`` of the two.

Protocol ``shared`` (issue 24)
------------------------------

No decrypted value reaches the party that sent it, so the views hold no
per-batch gradient. The host then has nothing but its final weights and
:func:`host_label_attack` returns the baseline. The guest, in the accurate
mode, expands around its own model, fitted alone, and is told no weight before
the end (version 2 of the protocol told it its weights at epoch ends). The
capture still records any change of the guest's expansion point at an epoch's
decision (``PartyView.epoch_weights``), and :func:`guest_reveal_attack` would
replay the shared algorithm through such weights with the hosts' scores as
unknowns (``k_g + 1`` equations per weight told): the tests check the capture
stays empty. A view with neither gradients nor reveals yields exactly the
final-weights baseline, without error.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.security.attacks import chance_bound, label_accuracy

__all__ = [
    "BatchRecord",
    "PartyView",
    "Truth",
    "RunCapture",
    "LabelEstimate",
    "ScoreEstimate",
    "LabelScore",
    "ScoreScore",
    "stacking_data",
    "capture_run",
    "protocol_field_exists",
    "train_config",
    "host_label_attack",
    "host_final_weights_baseline",
    "guest_score_attack",
    "guest_final_weights_baseline",
    "score_labels",
    "score_host_scores",
    "guest_baseline_spearman",
    "clear_success_accuracy",
    "auc_margin",
    "spearman_margin",
    "REVEAL_GRADIENTS",
    "V4_DEFAULTS",
    "burn_in_candidates",
    "config_protocol",
    "guest_reveal_attack",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: The protocol name under which today's per-batch plaintext gradients are revealed (issue 24).
REVEAL_GRADIENTS = "reveal-gradients"
#: Accurate mode: the hosts clip their scores to ±this before squaring (``vfl.lr.config``).
CURVATURE_CLIP = 3.0


# ====================================================================== views
@dataclass(frozen=True)
class BatchRecord:
    """One batch as the attacking party saw it.

    Attributes
    ----------
    epoch, batch : int
        The batch's position (from the arbiter's answer, checked by the party).
    rows : int64 array
        The batch's aligned row indices (from the public batch plan), sorted.
    gradient : float array
        The plaintext gradient the party unmasked: ``X_b^T d_b / b`` over its
        own columns (the guest's with the intercept last).
    coef : float array
        The party's own weights while the batch ran (before its step): the
        guest needs them to know its own scores ``g`` of the batch.
    have_squares : bool array or None
        Guest, accurate mode: which batch rows had the second-order term
        (a public rule, :func:`vfl.lr.config.squares_due`); ``None`` otherwise.
    """

    epoch: int
    batch: int
    rows: IntArray
    gradient: FloatArray
    coef: FloatArray
    have_squares: BoolArray | None = None


@dataclass(frozen=True)
class PartyView:
    """What one party legitimately holds over and after a run.

    ``X`` is the party's own features as the protocol quantised them (all
    aligned rows), ``y`` the labels (guest only), ``train_rows`` the rows not
    held out for validation (the host knows them from the guest's
    ``TrainSetup``), ``batches`` every per-batch plaintext gradient it received
    (empty when the protocol reveals none), ``final_coef`` its final weights.
    ``epoch_weights``: weights the protocol told the party at the end of an
    epoch, ``(epoch, weights)`` (protocol ``shared``, accurate mode: the
    guest's expansion points); ``start_coef``: the guest's own secret start;
    ``config``: the job's hyper-parameters (known to every party).
    """

    role: str
    X: FloatArray
    train_rows: IntArray
    batches: tuple[BatchRecord, ...]
    final_coef: FloatArray
    mode: str
    fit_intercept: bool
    y: FloatArray | None = None
    epoch_weights: tuple[tuple[int, FloatArray], ...] = ()
    start_coef: FloatArray | None = None
    config: Any = None

    @property
    def has_gradients(self) -> bool:
        """Whether the protocol gave this party any per-batch plaintext gradient."""
        return bool(self.batches)

    @property
    def epochs_seen(self) -> int:
        """Epochs with at least one recorded gradient."""
        return len({r.epoch for r in self.batches})

    def design(self, rows: npt.ArrayLike) -> FloatArray:
        """The party's gradient design matrix on ``rows``: ``X`` (host) or ``[X, 1]`` (guest
        with an intercept), matching the gradient's entries."""
        Xr = self.X[np.asarray(rows, dtype=np.int64)]
        if self.role == "guest" and self.fit_intercept:
            return np.hstack([Xr, np.ones((Xr.shape[0], 1))])
        return Xr

    def own_final_scores(self) -> FloatArray:
        """The party's partial scores of every aligned row with its final weights."""
        k = self.X.shape[1]
        s: FloatArray = self.X @ self.final_coef[:k]
        if self.role == "guest" and self.fit_intercept:
            s = s + self.final_coef[k]
        return s


@dataclass(frozen=True)
class Truth:
    """Ground truth of a run, for scoring only (never an input of an attack)."""

    y: FloatArray
    host_final_scores: FloatArray


@dataclass(frozen=True)
class RunCapture:
    """A real run: the host's and the guest's views, the truth, and how it went."""

    host: PartyView
    guest: PartyView
    truth: Truth
    protocol: str
    epochs_run: int
    seconds: float
    config: Any = None


# ====================================================================== data
def stacking_data(n: int, k_guest: int, k_host: int, *, host_signal: float, seed: int
                  ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Standard-normal columns and a label logistic in them: ``(X_guest, y, X_host)``.

    ``logit = X_g β_g + host_signal · X_h β_h / ||β_h|| - 0.6`` with ``β_g`` of
    norm ~1.6: ``host_signal = 0`` makes the host's columns carry no label
    signal at all (any label accuracy a host gets beyond chance comes from the
    protocol); ``host_signal > 0`` gives the hosts' scores something to be (for
    the guest's attack).
    """
    rng = np.random.default_rng(seed)  # test data, not a secret
    Xg = rng.normal(size=(n, k_guest))
    Xh = rng.normal(size=(n, k_host))
    bg = rng.normal(size=k_guest)
    bg *= 1.6 / max(float(np.linalg.norm(bg)), 1e-12)
    bh = rng.normal(size=k_host)
    bh *= host_signal / max(float(np.linalg.norm(bh)), 1e-12)
    logit = Xg @ bg + Xh @ bh - 0.6
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    return Xg, y, Xh


# ====================================================================== configs
def protocol_field_exists() -> bool:
    """Whether ``TrainConfig`` has the ``protocol`` field of issue 24 (the shared protocol)."""
    from vfl.lr.config import TrainConfig

    return "protocol" in {f.name for f in dataclasses.fields(TrainConfig)}


#: The hyper-parameter defaults of versions 1-4 (today's protocol, the one the issue measured:
#: Adam, learning rate 0.1, decay 1). Runs of ``reveal-gradients`` pin them, so that the
#: positive controls reproduce the issue's setting whatever the defaults become (the shared
#: protocol's defaults are momentum, 0.4, 0.5; Adam cannot run on shares).
V4_DEFAULTS: dict[str, Any] = {"optimizer": "adam", "learning_rate": 0.1, "decay": 1.0}


def train_config(*, protocol: str | None = None, **kw: Any) -> Any:
    """A ``TrainConfig`` with 512-bit keys (explicitly insecure) and ``kw``.

    ``protocol`` is passed through when the field exists; ``None`` runs the
    code's default protocol, ``"reveal-gradients"`` without the field runs
    today's protocol (which is the one revealing gradients); any other value
    without the field is an error, so a run never silently attacks another
    protocol than it names. ``reveal-gradients`` runs with :data:`V4_DEFAULTS`
    unless ``kw`` sets them.
    """
    from vfl.lr.config import TrainConfig

    base: dict[str, Any] = dict(key_bits=512, allow_insecure_key_size=True, tol=0.0)
    if protocol == REVEAL_GRADIENTS:
        base.update(V4_DEFAULTS)
    base.update(kw)
    if protocol is not None:
        if protocol_field_exists():
            base["protocol"] = protocol
        elif protocol != REVEAL_GRADIENTS:
            raise ValueError(f"TrainConfig has no 'protocol' field: only {REVEAL_GRADIENTS!r} "
                             f"(today's protocol) can run, not {protocol!r}.")
    return TrainConfig(**base)


def config_protocol(config: Any) -> str:
    """The protocol a config runs (today's code: ``reveal-gradients``)."""
    return str(getattr(config, "protocol", REVEAL_GRADIENTS))


# ====================================================================== capture
def _have_squares(config: Any, epoch: int, rows: IntArray) -> BoolArray | None:
    """Guest, accurate mode: rows with stored squares in ``epoch`` (the public refresh rule:
    row ``r`` first gets squares in epoch ``1 + r mod curvature_every``)."""
    if getattr(config, "mode", "taylor") != "accurate":
        return None
    every = int(getattr(config, "curvature_every", 1))
    out: BoolArray = epoch >= 1 + (rows % every)
    return out


def _install(cls: type, name: str, spy: Callable[..., Any], own: Any) -> Callable[[], None]:
    """Set ``cls.name = spy``; return what puts back ``own`` (the class's own method) or
    removes the attribute (the method was inherited)."""
    setattr(cls, name, spy)

    def restore() -> None:
        if own is not None:
            setattr(cls, name, own)
        else:
            delattr(cls, name)

    return restore


def _spy_on(cls: type, role: str, sink: list[BatchRecord], lock: threading.Lock,
            config: Any) -> Callable[[], None]:
    """Wrap ``cls.on_decrypted`` (if the class has one) to record what it returns; returns
    the function that puts the original back.

    Recorded: the party's plaintext gradient (the method's return value, when
    it is one value per weight), the batch's rows from the party's public
    batch plan, and the party's weights before its step. A protocol in which
    the party never unmasks a gradient leaves ``sink`` empty.
    """
    original = getattr(cls, "on_decrypted", None)
    if original is None:
        return lambda: None
    own = "on_decrypted" in cls.__dict__  # the class's own method, or inherited

    def spy(self: Any, msg: Any, *args: Any, **kwargs: Any) -> Any:
        coef = np.array(getattr(self, "coef", ()), dtype=np.float64, copy=True)
        out = original(self, msg, *args, **kwargs)
        if out is None or not hasattr(msg, "epoch") or not hasattr(msg, "batch"):
            return out
        grad = np.asarray(out, dtype=np.float64)
        if grad.shape != coef.shape or not grad.size:
            return out  # not a per-weight gradient: nothing this attack reads
        # the batch's rows, sorted (their order does not matter to a sum over them)
        rows = np.sort(np.asarray(self.batches(int(msg.epoch))[int(msg.batch)], dtype=np.int64))
        have = _have_squares(config, int(msg.epoch), rows) if role == "guest" else None
        with lock:
            sink.append(BatchRecord(int(msg.epoch), int(msg.batch), rows, grad.copy(), coef,
                                    have))
        return out

    return _install(cls, "on_decrypted", spy, original if own else None)


def _spy_on_reveals(cls: type, sink: list[tuple[int, FloatArray]], lock: threading.Lock
                    ) -> Callable[[], None]:
    """Wrap ``cls.on_decision`` to record the weights the party learns at an epoch end.

    Protocol ``shared``, accurate mode (version 2): at the epochs it was told its weights the
    arbiter sends the guest its share and the guest adds it to its own, to
    expand the next epoch around (``GuestParty._expansion``, integers at
    ``2^score_frac_bits``). Recorded whenever that point changes.
    """
    original = getattr(cls, "on_decision", None)
    if original is None:
        return lambda: None
    own = "on_decision" in cls.__dict__  # the class's own method, or inherited

    def spy(self: Any, msg: Any, epoch: int, *args: Any, **kwargs: Any) -> Any:
        before = getattr(self, "_expansion", None)
        before = None if before is None else list(before)
        out = original(self, msg, epoch, *args, **kwargs)
        after = getattr(self, "_expansion", None)
        if after is not None and list(after) != before:
            scale = 2.0 ** int(self.config.score_frac_bits)
            with lock:
                sink.append((int(epoch), np.array([float(v) for v in after]) / scale))
        return out

    return _install(cls, "on_decision", spy, original if own else None)


def capture_run(X_guest: FloatArray, y: FloatArray, X_host: FloatArray, config: Any, *,
                guest_kwargs: dict[str, Any] | None = None, workers: int | None = 1
                ) -> RunCapture:
    """Train with the real protocol in memory; return the host's and the guest's views.

    The guest, one host (``host1``) and the arbiter run in threads over an
    :class:`~vfl.transport.memory.InMemoryNetwork`. ``HostParty.on_decrypted``
    and ``GuestParty.on_decrypted`` are wrapped to record each party's own
    per-batch plaintext gradient (see :func:`_spy_on`), ``GuestParty.on_decision``
    the weights the guest is told at epoch ends (:func:`_spy_on_reveals`);
    nothing sent changes. Final weights are each party's ``coef`` when its
    training function returns; the truth (labels, the host's final scores) is
    kept apart, for scoring.
    ``workers=1`` keeps the ciphertext work in-process (the machine's cores are
    better spent on one run at a time).
    """
    from vfl.lr import guest as guest_mod
    from vfl.lr import host as host_mod
    from vfl.lr.driver import run_arbiter, run_guest_training, run_host_training
    from vfl.pipeline import run_threads
    from vfl.transport.memory import InMemoryNetwork

    if getattr(config, "class_weight", "none") != "none":
        raise ValueError("The capture assumes class_weight='none' (the guest's known part of "
                         "the residual would carry its class weights).")
    lock = threading.Lock()
    host_log: list[BatchRecord] = []
    guest_log: list[BatchRecord] = []
    kwargs = dict(guest_kwargs or {})
    insecure = bool(config.allow_insecure_key_size)
    targets: dict[str, Callable[[Any], Any]] = {
        "guest": lambda ch: run_guest_training(ch, "guest", X_guest, y, config, hosts=["host1"],
                                               arbiter="arbiter", workers=workers, **kwargs),
        "host1": lambda ch: run_host_training(ch, "host1", X_host, guest="guest",
                                              arbiter="arbiter", workers=workers,
                                              allow_insecure_key_size=insecure),
        "arbiter": lambda ch: run_arbiter(ch, guest="guest", allow_insecure_key_size=insecure),
    }
    reveals: list[tuple[int, FloatArray]] = []
    undo = [_spy_on(host_mod.HostParty, "host", host_log, lock, config),
            _spy_on(guest_mod.GuestParty, "guest", guest_log, lock, config),
            _spy_on_reveals(guest_mod.GuestParty, reveals, lock)]
    t0 = time.perf_counter()
    try:
        results = run_threads(InMemoryNetwork(["guest", "host1", "arbiter"]), targets)
    finally:
        for fn in reversed(undo):
            fn()
    seconds = time.perf_counter() - t0
    guest_party, epochs_run = results["guest"]
    host_party, _ = results["host1"]
    Xh = np.asarray(host_party.X.values, dtype=np.float64)
    Xg = np.asarray(guest_party.X.values, dtype=np.float64)
    val = np.asarray(sorted(int(r) for r in guest_party.validation_rows), dtype=np.int64)
    train = np.setdiff1d(np.arange(Xg.shape[0]), val)
    fit_intercept = bool(config.fit_intercept)
    host_view = PartyView("host", Xh, train, tuple(sorted(host_log, key=_order)),
                          np.array(host_party.coef, dtype=np.float64), config.mode, False,
                          config=config)
    F = int(config.score_frac_bits)
    start = np.round(np.asarray(guest_party.initial_coef, dtype=np.float64) * 2.0**F) / 2.0**F
    guest_view = PartyView("guest", Xg, train, tuple(sorted(guest_log, key=_order)),
                           np.array(guest_party.coef, dtype=np.float64), config.mode,
                           fit_intercept, np.asarray(y, dtype=np.float64),
                           tuple(sorted(reveals, key=lambda r: r[0])), start, config)
    truth = Truth(np.asarray(y, dtype=np.float64), Xh @ host_view.final_coef)
    return RunCapture(host_view, guest_view, truth, config_protocol(config), int(epochs_run),
                      seconds, config)


def _order(r: BatchRecord) -> tuple[int, int]:
    return r.epoch, r.batch


# ====================================================================== solver
@dataclass(frozen=True)
class _Block:
    """One batch's linear equations ``M^T u[idx] = c``."""

    idx: IntArray
    M: FloatArray
    c: FloatArray


#: Unknowns up to which the normal equations are formed (an n x n matrix; 4,096 rows: 134 MB).
NORMAL_LIMIT = 12_000
#: The smallest ridge, relative to the normal equations' mean diagonal: keeps the solve
#: defined for rows no equation touches and approximates the minimum-norm solution.
RELATIVE_RIDGE = 1e-10
#: Ridges the attacker tries on held-out equations (relative, as :data:`RELATIVE_RIDGE`).
RIDGE_CANDIDATES = (1e-10, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


class _Normal:
    """The normal equations ``N u = r`` of a set of blocks, accumulated block by block.

    ``N = Σ_t P_t M_t M_t^T P_t^T`` and ``r = Σ_t P_t M_t c_t`` (``P_t`` places the
    batch's rows among the unknowns): one ``b x b`` product per batch, however
    many columns, and sums over epochs can be reused when only the first
    epoch kept or the ridge changes (:func:`_choose`).
    """

    def __init__(self, n: int) -> None:
        self.N = np.zeros((n, n))
        self.r = np.zeros(n)

    def add(self, blocks: Sequence[_Block]) -> None:
        """Add each block's ``b x b`` product at its rows (sorted rows keep the scatter
        local: the capture sorts every batch's rows)."""
        for blk in blocks:
            self.N[np.ix_(blk.idx, blk.idx)] += blk.M @ blk.M.T
            self.r[blk.idx] += blk.M @ blk.c

    def solve(self, ridge: float = RELATIVE_RIDGE) -> FloatArray:
        """``(N + λ I)^-1 r`` with ``λ = ridge · mean diag N`` (Cholesky; an
        eigen-decomposition if that fails)."""
        from scipy.linalg import cho_factor, cho_solve, eigh  # type: ignore[import-untyped]

        n = len(self.r)
        if not n:
            return np.zeros(0)
        diag = float(np.mean(np.diag(self.N))) or 1.0
        A = self.N + max(ridge, RELATIVE_RIDGE) * diag * np.eye(n)
        try:
            return np.asarray(cho_solve(cho_factor(A, check_finite=False), self.r),
                              dtype=np.float64)
        except np.linalg.LinAlgError:
            w, V = eigh(A, check_finite=False)
            keep = w > 1e-12 * max(float(w.max()), 1e-300)
            return np.asarray(V[:, keep] @ ((V[:, keep].T @ self.r) / w[keep]), dtype=np.float64)


def _stacked_lstsq(blocks: Sequence[_Block], n: int, *, ridge: float = RELATIVE_RIDGE
                   ) -> FloatArray:
    """``argmin_u Σ_t ||M_t^T u[idx_t] - c_t||² + λ ||u||²``, ``λ = ridge · mean diag N``.

    The stacked matrix has one row per batch and gradient entry and one column
    per unknown. Up to :data:`NORMAL_LIMIT` unknowns the normal equations are
    formed and solved by Cholesky (:class:`_Normal`); beyond, LSQR runs on
    products computed batch by batch, never forming anything.
    """
    if n <= NORMAL_LIMIT:
        ne = _Normal(n)
        ne.add(blocks)
        return ne.solve(ridge)
    mean_diag = sum(float(np.sum(blk.M ** 2)) for blk in blocks) / max(n, 1)
    return _lsqr(blocks, n, math.sqrt(max(ridge, RELATIVE_RIDGE) * mean_diag), 20_000)


def _lsqr(blocks: Sequence[_Block], n: int, damp: float, iterations: int) -> FloatArray:
    """LSQR on the stacked system, products batch by batch (minimum-norm from a zero start)."""
    from scipy.sparse.linalg import LinearOperator, lsqr  # type: ignore[import-untyped]

    sizes = [blk.M.shape[1] for blk in blocks]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    m = int(offsets[-1])
    rhs = np.concatenate([blk.c for blk in blocks]) if blocks else np.zeros(0)

    def matvec(u: FloatArray) -> FloatArray:
        u = np.ravel(u)
        out = np.empty(m)
        for blk, o in zip(blocks, offsets[:-1], strict=False):
            out[o:o + blk.M.shape[1]] = blk.M.T @ u[blk.idx]
        return out

    def rmatvec(v: FloatArray) -> FloatArray:
        v = np.ravel(v)
        out = np.zeros(n)
        for blk, o in zip(blocks, offsets[:-1], strict=False):
            out[blk.idx] += blk.M @ v[o:o + blk.M.shape[1]]  # a batch's rows are distinct
        return out

    op = LinearOperator((m, n), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    sol = lsqr(op, rhs, damp=damp, atol=1e-10, btol=1e-10, iter_lim=iterations)
    return np.asarray(sol[0], dtype=np.float64)


@dataclass(frozen=True)
class _Equations:
    """One batch's equations ``A^T (c1 u + c2 φ(u)) = rhs`` in the unknowns ``u[idx]``.

    ``A`` is the party's design of the batch rows divided by ``b`` (so every
    batch weighs alike), ``φ(u) = clip(u, ±3)²`` (the accurate mode's squares;
    ``c2 = 0`` makes the equations linear).
    """

    epoch: int
    idx: IntArray
    A: FloatArray
    c1: FloatArray
    c2: FloatArray
    rhs: FloatArray

    @property
    def linear(self) -> bool:
        return not bool(np.any(self.c2))

    def residual(self, u: FloatArray) -> FloatArray:
        """``A^T (c1 u + c2 φ(u)) - rhs`` at ``u``."""
        v = u[self.idx]
        hc = np.clip(v, -CURVATURE_CLIP, CURVATURE_CLIP)
        out: FloatArray = self.A.T @ (self.c1 * v + self.c2 * hc * hc) - self.rhs
        return out

    def linearised(self, u: FloatArray) -> _Block:
        """The block of the equations linearised at ``u`` (exact when linear):
        ``A^T ((c1 + c2 φ'(u0)) u) = rhs - A^T c2 (φ(u0) - φ'(u0) u0)``."""
        if self.linear:
            return _Block(self.idx, self.A * self.c1[:, None], self.rhs)
        u0 = u[self.idx]
        hc = np.clip(u0, -CURVATURE_CLIP, CURVATURE_CLIP)
        phi, dphi = hc * hc, 2.0 * hc * (np.abs(u0) < CURVATURE_CLIP)
        weight = self.c1 + self.c2 * dphi
        return _Block(self.idx, self.A * weight[:, None],
                      self.rhs - self.A.T @ (self.c2 * (phi - dphi * u0)))


def _objective(eqs: Sequence[_Equations], u: FloatArray) -> float:
    return sum(float(np.sum(e.residual(u) ** 2)) for e in eqs)


def _solve(eqs: Sequence[_Equations], n: int, *, steps: int,
           ridge: float = RELATIVE_RIDGE) -> FloatArray:
    """Least squares over ``eqs``: one linear solve, or Gauss-Newton from ``u = 0`` when
    some ``c2 ≠ 0`` (each step solves the equations linearised at the current
    iterate, :meth:`_Equations.linearised`). The clip makes ``φ`` kinked and
    undamped steps can overshoot, so the iterate with the smallest sum of
    squared residuals is kept (the attacker's own objective; no truth involved).
    """
    u = np.zeros(n)
    if all(e.linear for e in eqs):
        return _stacked_lstsq([e.linearised(u) for e in eqs], n, ridge=ridge)
    best, best_obj = u, math.inf
    for _ in range(max(1, steps)):
        u = _stacked_lstsq([e.linearised(u) for e in eqs], n, ridge=ridge)
        obj = _objective(eqs, u)
        if obj < best_obj:
            best, best_obj = u, obj
    return best


def burn_in_candidates(last_epoch: int) -> list[int]:
    """Burn-ins the attacker tries: ``0, 1, 2, 4, 8`` and half and two thirds of the run,
    each leaving at least one epoch before the held-out last one."""
    cands = {0, 1, 2, 4, 8, last_epoch // 2, (2 * last_epoch) // 3}
    return sorted(c for c in cands if c < last_epoch)


def _choose(eqs: Sequence[_Equations], n: int, *, steps: int
            ) -> tuple[int, float, dict[str, float]]:
    """The burn-in, then the ridge, whose fit best predicts the last epoch's gradients.

    The residuals (host) and host scores (guest) drift most while the weights
    move most: in the first epochs (Adam's first steps move every weight by
    about the learning rate, which then decays as ``1/(1 + t)``). Equations of
    those epochs are inconsistent with a per-row constant, and when the system
    is only mildly over-determined a least-squares fit spreads their error
    over every row. How many epochs to drop is chosen without the truth: each
    candidate burn-in is fitted on the epochs between it and the last one, and
    the last epoch's equations, the closest to the final state, score it by
    their relative residual ``Σ||A^T(c1 u + c2 φ(u)) - rhs||² / Σ||rhs||²``
    (skipped when the whole run has fewer equations than unknowns: then every
    epoch counts). The ridge (:data:`RIDGE_CANDIDATES`) is then chosen the
    same way at that burn-in: it matters where the system is under-determined
    or ill-conditioned, and a minimum-norm solution there amplifies the drift.
    Linear equations reuse one accumulation of the normal equations; nonlinear
    ones take at most 2 Gauss-Newton steps per candidate (``steps`` in the
    final fit). Returns the burn-in, the ridge and every candidate's held-out
    error.
    """
    last = max(e.epoch for e in eqs)
    held = [e for e in eqs if e.epoch == last]
    scale = sum(float(np.sum(e.rhs ** 2)) for e in held) or 1.0
    linear = all(e.linear for e in eqs) and n <= NORMAL_LIMIT
    errors: dict[str, float] = {}
    if last == 0:
        return 0, RELATIVE_RIDGE, errors
    skip = 0
    cands = burn_in_candidates(last)
    if sum(len(e.rhs) for e in eqs) >= n and len(cands) > 1:
        by_skip: dict[int, float] = {}
        if linear:
            ne = _Normal(n)
            zero = np.zeros(n)
            for epoch in range(last - 1, min(cands) - 1, -1):
                ne.add([e.linearised(zero) for e in eqs if e.epoch == epoch])
                if epoch in cands:
                    by_skip[epoch] = _objective(held, ne.solve()) / scale
        else:
            for c in cands:
                u = _solve([e for e in eqs if c <= e.epoch < last], n, steps=min(steps, 2))
                by_skip[c] = _objective(held, u) / scale
        skip = min(by_skip, key=lambda c: (by_skip[c], c))
        errors.update({f"burn-in {c}": v for c, v in by_skip.items()})
    fit = [e for e in eqs if skip <= e.epoch < last]
    by_ridge: dict[float, float] = {}
    if n <= NORMAL_LIMIT:
        # nonlinear: each ridge is one step from the burn-in's solution (linearised there)
        at = np.zeros(n) if linear else _solve(fit, n, steps=min(steps, 2))
        ne = _Normal(n)
        ne.add([e.linearised(at) for e in fit])
        for r in RIDGE_CANDIDATES:
            by_ridge[r] = _objective(held, ne.solve(r)) / scale
    else:
        for r in RIDGE_CANDIDATES:
            by_ridge[r] = _objective(held, _solve(fit, n, steps=steps, ridge=r)) / scale
    ridge = min(by_ridge, key=lambda r: (by_ridge[r], r))
    errors.update({f"ridge {r:g}": v for r, v in by_ridge.items()})
    return skip, ridge, errors


BurnIn = int | str | None


def _fit(eqs: Sequence[_Equations], n: int, burn_in: BurnIn, *, steps: int
         ) -> tuple[FloatArray, int, float, dict[str, float]]:
    """Solve with the given burn-in (``"auto"``: burn-in and ridge by :func:`_choose`;
    ``None``: 0); returns the solution, the burn-in, the ridge and the held-out errors.

    With ``"auto"``, a run whose equations are fewer than the unknowns keeps
    every epoch and takes one linear step: the clip's curvature would only
    scatter an under-determined solution.
    """
    with _one_blas_thread():
        return _fit_unthreaded(eqs, n, burn_in, steps=steps)


def _one_blas_thread() -> Any:
    """A context in which BLAS runs one thread: OpenBLAS's spinning threads made a 1,024-row
    Cholesky 60 times slower (1.3 s against 0.02 s) on two cores shared with another busy
    process. (``threadpool_limits`` acts on the libraries loaded when it is entered, so
    SciPy's is loaded first.)"""
    import scipy.linalg  # type: ignore[import-untyped]  # noqa: F401
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    return threadpool_limits(limits=1, user_api="blas")


def _fit_unthreaded(eqs: Sequence[_Equations], n: int, burn_in: BurnIn, *, steps: int
                    ) -> tuple[FloatArray, int, float, dict[str, float]]:
    errors: dict[str, float] = {}
    ridge = RELATIVE_RIDGE
    if burn_in == "auto":
        if sum(len(e.rhs) for e in eqs) < n:
            steps = 1
        skip, ridge, errors = _choose(eqs, n, steps=steps)
    elif burn_in is None:
        skip = 0
    elif isinstance(burn_in, int):
        skip = burn_in
    else:
        raise ValueError(f"burn_in must be an int, None or 'auto', not {burn_in!r}")
    kept = [e for e in eqs if e.epoch >= skip]
    return _solve(kept, n, steps=steps, ridge=ridge), skip, ridge, errors


def _row_positions(view: PartyView) -> tuple[IntArray, dict[int, int]]:
    rows = np.unique(np.concatenate([r.rows for r in view.batches]))
    return rows, {int(r): i for i, r in enumerate(rows.tolist())}


def _positions(pos: dict[int, int], rows: IntArray) -> IntArray:
    return np.fromiter((pos[int(i)] for i in rows), dtype=np.int64, count=len(rows))


# ====================================================================== estimates
@dataclass(frozen=True)
class LabelEstimate:
    """A host's label estimate: a ranking score (higher: label 1 more likely) and hard labels.

    ``rows`` are the aligned rows estimated (training rows that were in a
    batch; the baseline estimates every training row). ``burn_in``: the
    leading epochs left out; ``errors``: each candidate burn-in's held-out
    error when it was chosen automatically.
    """

    rows: IntArray
    score: FloatArray
    labels: npt.NDArray[np.int8]
    method: str
    equations: int = 0
    burn_in: int = 0
    ridge: float = 0.0
    errors: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreEstimate:
    """The guest's estimate of the hosts' scores of ``rows`` (fields as :class:`LabelEstimate`)."""

    rows: IntArray
    values: FloatArray
    method: str
    equations: int = 0
    burn_in: int = 0
    ridge: float = 0.0
    errors: dict[str, float] = field(default_factory=dict)


def host_final_weights_baseline(view: PartyView) -> LabelEstimate:
    """The host's legitimate label predictor: its own final partial score ``X_h w_h``.

    ``h`` is the host's contribution to the logit of label 1, so label 1 is
    predicted where it is positive.
    """
    rows = view.train_rows
    h = view.own_final_scores()[rows]
    return LabelEstimate(rows, h, (h > 0).astype(np.int8), "final weights only")


def host_label_attack(view: PartyView, *, burn_in: BurnIn = "auto") -> LabelEstimate:
    """The curious host's stacked least squares for the residuals, hence the labels.

    Solves ``X_{B_t}^T d_{B_t} / b_t = γ_t`` for every recorded batch ``t`` from
    epoch ``burn_in`` on (``"auto"``: chosen on held-out equations,
    :func:`_choose`) with one unknown ``d_i`` per row (module
    docstring: the residual's sign is the label in every epoch), and labels
    ``y_i = 1`` iff ``d_i < 0``. Without recorded gradients it returns
    :func:`host_final_weights_baseline`.
    """
    if view.role != "host":
        raise ValueError("host_label_attack needs the host's view.")
    if not view.batches:
        return host_final_weights_baseline(view)
    rows, pos = _row_positions(view)
    eqs = []
    for r in view.batches:
        b = len(r.rows)
        eqs.append(_Equations(r.epoch, _positions(pos, r.rows), view.design(r.rows) / b,
                              np.ones(b), np.zeros(b), r.gradient))
    d, skip, ridge, errors = _fit(eqs, len(rows), burn_in, steps=1)
    kept = [r for r in view.batches if r.epoch >= skip]
    return LabelEstimate(rows, -d, (d < 0).astype(np.int8),
                         f"stacked least squares, {len(kept)} batches from epoch {skip}, "
                         f"ridge {ridge:g}", sum(len(r.gradient) for r in kept), skip, ridge,
                         errors)


def _guest_scores(view: PartyView, rec: BatchRecord) -> FloatArray:
    """The guest's own scores ``g`` (intercept included) of a batch, with its weights then."""
    k = view.X.shape[1]
    g: FloatArray = view.X[rec.rows] @ rec.coef[:k]
    if view.fit_intercept:
        g = g + rec.coef[k]
    return g


def guest_final_weights_baseline(view: PartyView) -> ScoreEstimate:
    """What the guest can say about the hosts' scores from its final model and data alone.

    ``y - σ(g)``: the part of the label the guest's own final score does not
    explain; since the joint model fits ``σ(g + h) ≈ P(y)``, rows where it is
    large tend to have large ``h``. (:func:`guest_baseline_spearman` also
    tries ``g`` itself and keeps the better.)
    """
    if view.y is None:
        raise ValueError("The guest's view holds its labels.")
    rows = view.train_rows
    g = view.own_final_scores()[rows]
    est = view.y[rows] - 1.0 / (1.0 + np.exp(-g))
    return ScoreEstimate(rows, np.asarray(est, dtype=np.float64), "final weights only")


def guest_equations(view: PartyView) -> tuple[list[_Equations], IntArray]:
    """The guest's equations in the hosts' scores, one block per recorded batch (module
    docstring), and the rows they are about."""
    if view.y is None:
        raise ValueError("The guest's view holds its labels.")
    rows, pos = _row_positions(view)
    y01 = view.y
    eqs = []
    for r in view.batches:
        b = len(r.rows)
        A = view.design(r.rows) / b
        g = _guest_scores(view, r)
        if view.mode == "taylor":
            known = g - 2.0 * (2.0 * y01[r.rows] - 1.0)
            c1, c2 = np.ones(b), np.zeros(b)
        else:
            sig = 1.0 / (1.0 + np.exp(-g))
            known = 4.0 * (sig - y01[r.rows])
            c1 = 4.0 * sig * (1.0 - sig)
            have = r.have_squares if r.have_squares is not None else np.zeros(b, dtype=bool)
            c2 = 2.0 * sig * (1.0 - sig) * (1.0 - 2.0 * sig) * have
        eqs.append(_Equations(r.epoch, _positions(pos, r.rows), A, c1, c2,
                              4.0 * r.gradient - A.T @ known))
    return eqs, rows


def guest_score_attack(view: PartyView, *, burn_in: BurnIn = "auto",
                       gauss_newton: int = 4) -> ScoreEstimate:
    """The curious guest's stacked solve for the hosts' scores ``h`` of its training rows.

    Per recorded batch (module docstring), with ``X̃`` its design with the
    intercept and ``g`` its own scores at the time:

    * Taylor: ``X̃^T h = 4bγ - X̃^T (g - 2y±)``: one linear solve;
    * accurate: ``X̃^T (c1 h + c2 φ(h)) = 4bγ - X̃^T 4(σ(g) - y)``, ``φ(h) =
      clip(h, ±3)²``: ``gauss_newton`` Gauss-Newton steps from ``h = 0``.

    ``h_i`` is one constant per row from epoch ``burn_in`` on (``"auto"``:
    chosen on held-out equations, :func:`_choose`: the hosts' weights
    start at zero, so their scores drift most early). Without recorded
    gradients it returns :func:`guest_final_weights_baseline`.
    """
    if view.role != "guest" or view.y is None:
        raise ValueError("guest_score_attack needs the guest's view (with its labels).")
    if not view.batches:
        return guest_reveal_attack(view)
    eqs, rows = guest_equations(view)
    h, skip, ridge, errors = _fit(eqs, len(rows), burn_in, steps=gauss_newton)
    kept = [r for r in view.batches if r.epoch >= skip]
    return ScoreEstimate(rows, h, f"stacked least squares, {len(kept)} batches from epoch "
                         f"{skip}, ridge {ridge:g}", sum(len(r.gradient) for r in kept), skip,
                         ridge, errors)


# ====================================================================== reveals
def _reveal_equations(view: PartyView, first: int, u0: FloatArray
                      ) -> list[tuple[int, FloatArray, FloatArray]]:
    """Replay the shared algorithm from epoch ``first`` with the unknowns ``u = (h, μ)``.

    ``h``: the hosts' scores of the training rows (one constant each), ``μ``:
    the momentum at the start of epoch ``first`` (zero, and unused, when
    ``first`` is 0). The guest's weights and momentum stay affine in ``u``
    through the linear recursion; the stored squares ``clip(x, ±3)²`` are
    linearised at ``u0``. Returns, for every revealed epoch replayed, the
    equations ``A u = b`` its weights give (``k_g + 1`` of them); the replay then
    re-anchors to the revealed weights.
    """
    from vfl.lr.config import CURVATURE_FRAC_BITS, epoch_batches
    try:
        from vfl.lr.config import MOMENTUM, shared_squares_due
    except ImportError:  # the shared protocol's rules are not in this version
        return []
    cfg = view.config
    assert view.y is not None and view.start_coef is not None and cfg is not None
    Q = 2.0 ** CURVATURE_FRAC_BITS
    revealed = dict(view.epoch_weights)
    rows_all = view.train_rows
    n, K = len(rows_all), len(view.start_coef)
    N = n + K
    pos = np.full(view.X.shape[0], -1, dtype=np.int64)
    pos[rows_all] = np.arange(n)
    val = np.setdiff1d(np.arange(view.X.shape[0]), rows_all).tolist()
    beta = MOMENTUM[0] / MOMENTUM[1] if cfg.optimizer == "momentum" else 0.0
    l2 = float(cfg.alpha) if cfg.penalty == "l2" else 0.0
    mask = np.ones(K)
    if view.fit_intercept:
        mask[-1] = 0.0
    point = view.start_coef if first == 0 else revealed[first - 1]
    Wa, wa = np.zeros((K, N)), np.array(point, dtype=np.float64)
    Ma, ma = np.zeros((K, N)), np.zeros(K)
    if first > 0:
        Ma[:, n:] = np.eye(K)
    expansion = wa.copy()
    # squares before the replay: rows that had them are linearised at the replay's start
    Qa, qa = np.zeros((n, N)), np.zeros(n)
    have = np.zeros(n, dtype=bool)
    if first > 1:
        have[:] = first - 1 >= 1 + (rows_all % int(cfg.curvature_every))
    X_all = view.design(rows_all)
    Xa0 = np.zeros((n, N))
    Xa0[np.arange(n), np.arange(n)] = 1.0
    x0 = X_all @ wa - X_all @ expansion + u0[:n]
    hc = np.clip(x0, -CURVATURE_CLIP, CURVATURE_CLIP)
    dphi = 2.0 * hc * (np.abs(x0) < CURVATURE_CLIP)
    Qa[have] = dphi[have, None] * Xa0[have]
    qa[have] = (hc * hc - dphi * x0)[have] + dphi[have] * (X_all @ wa - X_all @ expansion)[have]
    out: list[tuple[int, FloatArray, FloatArray]] = []
    last = max(revealed)
    y01 = view.y
    for epoch in range(first, last + 1):
        if epoch > first and epoch - 1 in revealed:
            expansion = revealed[epoch - 1]
        lr = float(cfg.learning_rate) / (1.0 + float(cfg.decay) * epoch)
        for batch in epoch_batches(view.X.shape[0], val, cfg, epoch):
            r = np.asarray(batch, dtype=np.int64)
            p = pos[r]
            b = len(r)
            Xb = view.design(r)
            gt = Xb @ expansion
            sig = 1.0 / (1.0 + np.exp(-gt))
            c1 = np.round(4.0 * sig * (1.0 - sig) * Q) / Q
            c2 = np.round(2.0 * sig * (1.0 - sig) * (1.0 - 2.0 * sig) * Q) / Q * have[p]
            Xa = Xb @ Wa
            Xa[np.arange(b), p] += 1.0
            xa = Xb @ wa - gt
            d_aff = c1[:, None] * Xa + c2[:, None] * Qa[p]
            d_const = 4.0 * (sig - y01[r]) + c1 * xa + c2 * qa[p]
            G, g = Xb.T @ d_aff / (4.0 * b), Xb.T @ d_const / (4.0 * b)
            due = np.asarray(shared_squares_due(cfg, epoch, batch), dtype=bool)
            if due.any():
                x_now = Xa[due] @ u0 + xa[due]
                hc = np.clip(x_now, -CURVATURE_CLIP, CURVATURE_CLIP)
                dphi = 2.0 * hc * (np.abs(x_now) < CURVATURE_CLIP)
                Qa[p[due]] = dphi[:, None] * Xa[due]
                qa[p[due]] = hc * hc - dphi * x_now + dphi * xa[due]
                have[p[due]] = True
            Ma = beta * Ma + G + l2 * mask[:, None] * Wa
            ma = beta * ma + g + l2 * mask * wa
            Wa = Wa - lr * Ma
            wa = wa - lr * ma
        if epoch in revealed:
            out.append((epoch, Wa.copy(), revealed[epoch] - wa))
            Wa, wa = np.zeros((K, N)), np.array(revealed[epoch], dtype=np.float64)
    return out


def _dual_solve(blocks: Sequence[tuple[int, FloatArray, FloatArray]], ridge: float
                ) -> FloatArray:
    """The ridge solution ``A^T (A A^T + λ I)^-1 b`` of the stacked reveal equations (fewer
    equations than unknowns), each equation scaled to unit norm."""
    A = np.vstack([a for _, a, _ in blocks])
    b = np.concatenate([v for _, _, v in blocks])
    norms = np.linalg.norm(A, axis=1)
    norms[norms == 0] = 1.0
    A, b = A / norms[:, None], b / norms
    AAt = A @ A.T
    lam = max(ridge, RELATIVE_RIDGE) * float(np.trace(AAt)) / max(len(AAt), 1)
    out: FloatArray = A.T @ np.linalg.solve(AAt + lam * np.eye(len(AAt)), b)
    return out


def guest_reveal_attack(view: PartyView, *, gauss_newton: int = 3) -> ScoreEstimate:
    """The curious guest's attack on the weights it learns at epoch ends (protocol ``shared``,
    accurate mode), where no per-batch gradient reaches it.

    The guest replays the shared algorithm (public: the batch plan, the
    learning-rate schedule, momentum 9/10, the squares schedule; its own: its
    labels, its start and the expansion points it was told) with the hosts'
    scores ``h`` as unknowns, one constant per training row (:func:`_reveal_equations`):
    per batch ``4d = 4(σ(g~) - y) + c1 (X̃ w_t + h - g~) + c2 q``, its in-epoch
    weights ``w_t`` affine in ``h`` through the optimiser's linear recursion.
    Every reveal gives ``k_g + 1`` equations: at most ``GUEST_EQUATION_SHARE``
    of the training rows over a run, so the system is under-determined and
    the estimate is the ridge solution (the projection of ``h`` on the
    equations' row space, plus the model's error). The first replayed epoch
    (0, or one after a reveal, with the momentum then unknown) and the ridge
    are chosen on the last reveal, held out; the squares are linearised at
    the current estimate (``gauss_newton`` rounds). Without reveals it returns
    :func:`guest_final_weights_baseline`.
    """
    if (not view.epoch_weights or view.config is None or view.start_coef is None
            or view.mode != "accurate" or len(view.epoch_weights) < 2
            or getattr(view.config, "optimizer", "") not in ("sgd", "momentum")):
        return guest_final_weights_baseline(view)
    n = len(view.train_rows)
    K = len(view.start_coef)
    revealed = [e for e, _ in view.epoch_weights]
    starts = sorted({0} | {e + 1 for e in revealed[:-2]})
    cands = sorted({min((s for s in starts if s >= c), default=0)
                    for c in burn_in_candidates(revealed[-1])})
    errors: dict[str, float] = {}
    with _one_blas_thread():
        def fit(first: int, ridge: float, steps: int, hold_out: bool
                ) -> tuple[FloatArray, float]:
            u = np.zeros(n + K)
            err = math.inf
            for _ in range(max(1, steps)):
                blocks = _reveal_equations(view, first, u)
                if len(blocks) < (2 if hold_out else 1):
                    return u, math.inf
                train = blocks[:-1] if hold_out else blocks
                u = _dual_solve(train, ridge)
                _, A, b = blocks[-1]
                err = float(np.sum((A @ u - b) ** 2) / max(float(np.sum(b ** 2)), 1e-300))
            return u, err

        by_first = {c: fit(c, 1e-6, 1, True)[1] for c in cands}
        errors.update({f"first epoch {c}": v for c, v in by_first.items()})
        first = min(by_first, key=lambda c: (by_first[c], c))
        by_ridge = {r: fit(first, r, min(gauss_newton, 2), True)[1] for r in RIDGE_CANDIDATES}
        errors.update({f"ridge {r:g}": v for r, v in by_ridge.items()})
        ridge = min(by_ridge, key=lambda r: (by_ridge[r], r))
        u, _ = fit(first, ridge, gauss_newton, False)
    return ScoreEstimate(view.train_rows, u[:n], f"replay of {len(view.epoch_weights)} "
                         f"revealed epochs from epoch {first}, ridge {ridge:g}",
                         K * sum(1 for e in revealed if e >= first), first, ridge, errors)


# ====================================================================== scoring
@dataclass(frozen=True)
class LabelScore:
    """How a label estimate fares against the truth of its rows."""

    n: int
    correct: int
    accuracy: float
    auc: float
    chance: float


@dataclass(frozen=True)
class ScoreScore:
    """How a host-score estimate fares: ``r2`` (as it stands, ``1 - SSE/SST``),
    ``r2_affine`` (after the best affine rescaling, i.e. squared Pearson: an upper bound
    for an estimate on another scale), ``spearman``."""

    n: int
    r2: float
    r2_affine: float
    spearman: float


def _auc(y: FloatArray, score: FloatArray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def score_labels(est: LabelEstimate, truth: Truth) -> LabelScore:
    """Accuracy (the better of the labels and their complement, as
    :func:`~tests.security.attacks.label_accuracy`), count correct, AUC of the ranking
    score (not flipped: the attack's sign is part of the attack), chance bound."""
    t = truth.y[est.rows]
    acc = label_accuracy(est.labels, t)
    return LabelScore(len(t), int(round(acc * len(t))), acc, _auc(t, est.score),
                      chance_bound(t))


def _spearman(a: FloatArray, b: FloatArray) -> float:
    from scipy.stats import spearmanr  # type: ignore[import-untyped]

    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def score_host_scores(est: ScoreEstimate, truth: Truth) -> ScoreScore:
    """R² (raw and affine) and Spearman of the estimate against the host's final scores."""
    t = truth.host_final_scores[est.rows]
    v = est.values
    sst = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - float(np.sum((v - t) ** 2)) / sst if sst > 0 else float("nan")
    corr = float(np.corrcoef(v, t)[0, 1]) if np.std(v) > 0 and np.std(t) > 0 else 0.0
    return ScoreScore(len(t), r2, corr * corr, _spearman(v, t))


def guest_baseline_spearman(view: PartyView, truth: Truth) -> tuple[float, float]:
    """The final-weights guest's best ``|Spearman|`` with the host scores, and its affine R²:
    the larger of its own final score ``g`` and ``y - σ(g)`` (taking the better of a few
    candidates favours the baseline, so an attack held below it is held below the best)."""
    base = guest_final_weights_baseline(view)
    rows = base.rows
    t = truth.host_final_scores[rows]
    best_rho, best_r2 = 0.0, 0.0
    for cand in (base.values, view.own_final_scores()[rows]):
        rho = abs(_spearman(cand, t))
        corr = float(np.corrcoef(cand, t)[0, 1]) if np.std(cand) > 0 and np.std(t) > 0 else 0.0
        if rho > best_rho:
            best_rho, best_r2 = rho, corr * corr
    return best_rho, best_r2


# ====================================================================== thresholds
def clear_success_accuracy(truth_labels: npt.ArrayLike) -> float:
    """The positive controls' bar: half-way from the chance bound to every label.

    ``chance_bound`` (majority rate + 3 binomial standard errors) is what an
    attacker who learns nothing stays below; an attack that "clearly succeeds"
    must close at least half the gap between that and perfect recovery.
    """
    c = chance_bound(truth_labels)
    return c + 0.5 * (1.0 - c)


def auc_margin(truth_labels: npt.ArrayLike, z: float = 3.0) -> float:
    """``z`` standard errors of an AUC of a score unrelated to the labels (Mann-Whitney:
    ``sqrt((n0 + n1 + 1) / (12 n0 n1))``)."""
    t = np.asarray(truth_labels).astype(np.int64)
    n1 = int(t.sum())
    n0 = len(t) - n1
    if not n0 or not n1:
        return 1.0
    return z * math.sqrt((n0 + n1 + 1) / (12.0 * n0 * n1))


def spearman_margin(n: int, z: float = 3.0) -> float:
    """``z`` standard errors of a rank correlation between unrelated variables (``1/sqrt(n-1)``)."""
    return z / math.sqrt(max(n - 1, 1))
