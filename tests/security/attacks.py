"""Label-recovery attacks of an honest-but-curious host (issue 8, findings 1 and 2).

Everything here is the attacker's real computation, fed only with what a host
legitimately holds; the ground truth is never an input of an attack, only of
the scoring helpers at the end. The capture helper runs the real protocol
(``vfl.lr`` over :class:`~vfl.transport.memory.InMemoryNetwork`) and records
the host's view without changing a message.

Finding 1, first-batch labels. The host learns its exact unmasked integer
gradient ``G_j = sum_i q_ij D_i`` of every batch, with ``q_ij`` its features
quantised at ``2**G`` and ``D_i = H_i + round((g_i - 2 y_i) 2**F)`` the
guest's residual (``H_i`` the hosts' scores at ``2**F``, ``g_i`` the guest's
partial score, ``y_i`` in {-1, 1}). In epoch 0, batch 0 every weight but the
guest's intercept ``b0`` is zero, so ``D_i = C' - 2**(F+2) y01_i`` with one
unknown constant ``C' = round(b0 2**F) + 2**(F+1)``: ``C'`` follows from the
congruences ``G_j = C' s_j (mod 2**(F+2))`` (``s_j`` the column sums), and
``Q^T y01 = (C' s - G) / 2**(F+2)`` is a low-density 0/1 knapsack that lattice
reduction solves. When ``g_i`` is not constant the attacker treats
``g_i = c + e_i`` as an unknown constant plus Gaussian noise, whitens the
constraints, projects the constant out and solves the resulting closest-vector
problem for several noise levels, keeping the labels with the smallest
whitened residual (the maximum-likelihood choice).

Finding 2, validation labels. A stratified validation split drawn from the
public seed can be replayed for every class count: only the counts whose
replay reproduces the rows the host received stay, and a merge DP over the
two classes' chosen ranks gives every label fixed by all consistent labellings.

``fpylll`` (BKZ) is used when it is installed; python-flint's LLL always runs.
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import flint
import numpy as np
import numpy.typing as npt

__all__ = [
    "HostView",
    "host_view_first_batch",
    "simulate_first_batch_gradient",
    "LatticeOutcome",
    "lattice_attack",
    "lattice_attack_detailed",
    "least_squares_attack",
    "seeded_validation_split_v1",
    "ReplayOutcome",
    "validation_replay_attack",
    "label_accuracy",
    "chance_bound",
    "bkz_available",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Noise levels (std of the guest's unknown score part, in score units) tried by the CVP.
DEFAULT_NOISE_LEVELS: tuple[float, ...] = tuple(2.0**-e for e in range(20, -1, -2))


def bkz_available() -> bool:
    """Whether ``fpylll`` (BKZ) is importable; the attack is stronger with it."""
    try:
        import fpylll  # noqa: F401
    except ImportError:
        return False
    return True


# ====================================================================== capture
@dataclass(frozen=True)
class HostView:
    """What the first host holds after epoch 0, batch 0 (all of it legitimately its own).

    Attributes
    ----------
    Q : int64 array of shape (b, k)
        Its features of the batch rows, quantised at ``2**feature_frac_bits`` (signed).
    gradient : tuple of int
        Its unmasked integer gradient ``sum_i q_ij D_i`` (scale ``2**(F+G)``).
    own_scores : tuple of int
        Its own partial scores of the batch at ``2**F`` (what it encrypted).
    rows : tuple of int
        The batch's row indices (from the public batch plan).
    n_rows, validation_rows
        From the guest's ``TrainSetup``.
    exact : bool
        Whether ``gradient`` is the exact integer (else rounded from the float gradient).
    """

    Q: IntArray
    gradient: tuple[int, ...]
    own_scores: tuple[int, ...]
    rows: tuple[int, ...]
    n_rows: int
    validation_rows: tuple[int, ...]
    score_frac_bits: int
    feature_frac_bits: int
    exact: bool

    @property
    def n_train(self) -> int:
        """Training rows (the intersection less the validation rows)."""
        return self.n_rows - len(self.validation_rows)


def host_view_first_batch(X_guest: FloatArray, y: FloatArray, X_host: FloatArray,
                          config: Any, *, extra_hosts: Sequence[FloatArray] = (),
                          guest_kwargs: dict[str, Any] | None = None) -> HostView:
    """Train with the real protocol in memory and return the first host's view of batch 0.

    The first ``HostParty.on_decrypted`` call of ``host1`` is observed (its own
    masks, the arbiter's answer and the gradient it returns); nothing sent is
    changed. ``config`` is a :class:`vfl.lr.config.TrainConfig` (use one epoch
    and 1024-bit keys with ``allow_insecure_key_size=True`` in tests).
    """
    from vfl.crypto.encoding import quantize
    from vfl.lr import host as host_mod
    from vfl.lr.config import epoch_batches, weight_frac_bits
    from vfl.lr.driver import run_arbiter, run_guest_training, run_host_training
    from vfl.pipeline import run_threads
    from vfl.transport.memory import InMemoryNetwork

    if weight_frac_bits(config):
        raise ValueError("The capture assumes class_weight='none'.")
    hosts = [X_host, *extra_hosts]
    names = [f"host{i + 1}" for i in range(len(hosts))]
    record: dict[str, Any] = {}
    lock = threading.Lock()
    original = host_mod.HostParty.on_decrypted

    def spy(self: Any, msg: Any, *, peer: str) -> Any:
        with lock:
            first = self.name == names[0] and "grad" not in record
        if not first:
            return original(self, msg, peer=peer)
        masks = list(self._masks or [])
        coef = np.array(self.coef, dtype=np.float64, copy=True)
        grad = original(self, msg, peer=peer)
        with lock:
            record.update(party=self, masks=masks, coef=coef, residues=bytes(msg.residues),
                          grad=np.asarray(grad, dtype=np.float64))
        return grad

    kwargs = dict(guest_kwargs or {})
    targets: dict[str, Callable[[Any], Any]] = {
        "guest": lambda ch: run_guest_training(ch, "guest", X_guest, y, config, hosts=names,
                                               arbiter="arbiter", **kwargs),
        "arbiter": lambda ch: run_arbiter(ch, guest="guest",
                                          allow_insecure_key_size=config.allow_insecure_key_size),
    }

    def host_job(name: str, X: FloatArray) -> Callable[[Any], Any]:
        return lambda ch: run_host_training(ch, name, X, guest="guest", arbiter="arbiter",
                                            allow_insecure_key_size=config.allow_insecure_key_size)

    for name, X in zip(names, hosts, strict=True):
        targets[name] = host_job(name, X)
    host_mod.HostParty.on_decrypted = spy  # type: ignore[method-assign]
    try:
        run_threads(InMemoryNetwork(["guest", *names, "arbiter"]), targets)
    finally:
        host_mod.HostParty.on_decrypted = original  # type: ignore[method-assign]
    if "grad" not in record:
        raise RuntimeError("The host never finished a batch.")
    from vfl.lr.config import residual_frac_bits

    party = record["party"]
    cfg = party.config
    # the residual's scale: 2^F (Taylor) or 2^(F+16) (accurate mode, whose first-batch residual
    # 4(σ(s_g) - y) has the same form, "continuous unknown minus a label step of 4")
    F, G = residual_frac_bits(cfg), cfg.feature_frac_bits
    val = sorted(int(r) for r in party.validation_rows)
    rows = epoch_batches(party.n_rows, val, cfg, 0)[0]
    values = np.asarray(party.X.values, dtype=np.float64)[rows]
    Q = quantize(values, G)
    own = quantize(values @ record["coef"], F)
    approx = [float(g) * 2.0 ** (F + G) * 4.0 * len(rows) for g in record["grad"]]
    gradient, exact = _exact_gradient(approx, record["masks"], record["residues"], party)
    return HostView(Q, tuple(gradient), tuple(int(v) for v in own), tuple(rows), party.n_rows,
                    tuple(val), F, G, exact)


def _exact_gradient(approx: list[float], masks: list[int], residues: bytes,
                    party: Any) -> tuple[list[int], bool]:
    """The host's exact unmasked integers, checked against the float gradient it computed.

    Tries the unmasking rules the protocol has used (bounded masks with an
    offset; uniform masks mod n); falls back to rounding the float gradient.
    """
    count = len(masks)
    if count and len(residues) % count == 0:
        width = len(residues) // count
        vals = [int.from_bytes(residues[i * width:(i + 1) * width], "big") for i in range(count)]
        candidates: list[list[int]] = []
        budget = getattr(party, "budget", None)
        if budget is not None and hasattr(budget, "offset"):
            candidates.append([v - m - int(budget.offset) for v, m in zip(vals, masks, strict=True)])
        key = getattr(party, "public_key", None)
        if key is not None:
            n = int(key.n)
            candidates.append([((v - m) % n) - (n if (v - m) % n > n // 2 else 0)
                               for v, m in zip(vals, masks, strict=True)])
        for cand in candidates:
            if all(abs(c - a) <= 1e-9 * abs(a) + 4.0 for c, a in zip(cand, approx, strict=True)):
                return cand, True
    return [int(round(a)) for a in approx], False


def simulate_first_batch_gradient(Q: IntArray, y01: npt.ArrayLike, F: int, intercept: float,
                                  guest_scores: npt.ArrayLike | None = None,
                                  host_scores: Sequence[int] | None = None) -> list[int]:
    """The host's first-batch integer gradient, computed in the clear as the protocol does.

    ``D_i = H_i + quantize(g_i - 2 y_i, F)`` with ``g_i = intercept (+ guest_scores_i)``
    (``GuestParty.residuals``), then ``G_j = sum_i q_ij D_i`` (the host's
    ``matvec_t``, exact). With ``guest_scores=None`` the residual is two-valued:
    the leak of finding 1.
    """
    from vfl.crypto.encoding import quantize

    y_pm = 2.0 * np.asarray(y01, dtype=np.float64) - 1.0
    g = np.full(y_pm.shape, float(intercept))
    if guest_scores is not None:
        g = g + np.asarray(guest_scores, dtype=np.float64)
    D = [int(v) for v in quantize(g - 2.0 * y_pm, F)]
    if host_scores is not None:
        D = [d + int(h) for d, h in zip(D, host_scores, strict=True)]
    Qi = np.asarray(Q).tolist()
    k = len(Qi[0]) if Qi else 0
    return [sum(int(Qi[i][j]) * D[i] for i in range(len(D))) for j in range(k)]


# ====================================================================== lattice
@dataclass(frozen=True)
class LatticeOutcome:
    """The attacker's best labels for the batch and how it got them.

    ``certain`` means the labels satisfy the gradient equations exactly (the
    two-valued case): the attacker knows it has the right answer.
    ``constant`` is the recovered ``C'`` in the exact case; ``positives`` the
    training set's positive count it implies (when ``n_train`` was given).
    """

    labels: npt.NDArray[np.int8]
    certain: bool
    method: str
    score: float
    constant: int | None = None
    positives: int | None = None
    tried: list[str] = field(default_factory=list)


def lattice_attack(Q: npt.ArrayLike, gradient_ints: Sequence[int], F: int, *,
                   n_train: int | None = None, n_rows: int | None = None,
                   own_scores: Sequence[int] | None = None,
                   noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS,
                   use_bkz: bool | None = None) -> npt.NDArray[np.int8] | None:
    """Recover the batch's labels (0/1) from the host's first gradient, or ``None``.

    See :func:`lattice_attack_detailed`.
    """
    out = lattice_attack_detailed(Q, gradient_ints, F, n_train=n_train, n_rows=n_rows,
                                  own_scores=own_scores, noise_levels=noise_levels,
                                  use_bkz=use_bkz)
    return None if out is None else out.labels


def lattice_attack_detailed(Q: npt.ArrayLike, gradient_ints: Sequence[int], F: int, *,
                            n_train: int | None = None, n_rows: int | None = None,
                            own_scores: Sequence[int] | None = None,
                            noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS,
                            use_bkz: bool | None = None) -> LatticeOutcome | None:
    """The host's attack on one batch gradient.

    Parameters
    ----------
    Q : (b, k) integers
        The host's quantised batch features (signed, at ``2**G``).
    gradient_ints : k integers
        The host's exact unmasked gradient ``sum_i q_ij D_i``.
    F : int
        ``score_frac_bits`` (public in the job's config).
    n_train, n_rows : int, optional
        Training rows and all aligned rows (public); the attacker also tries
        ``b0 = 2 mean(y)`` over either for every positive count, as in the
        finding (the intercept start used all rows before validation rows
        were excluded from it).
    own_scores : b integers, optional
        The host's own partial scores ``H_i`` (subtracted; zero in batch 0).
    noise_levels : floats
        Stds of the guest's unknown score part tried by the noisy CVP.
    use_bkz : bool, optional
        BKZ (fpylll) after LLL; default: when installed.

    Returns
    -------
    LatticeOutcome or None
        ``None`` only when no candidate at all came out of the reductions.
    """
    Qi = [[int(v) for v in row] for row in np.asarray(Q, dtype=np.int64).tolist()]
    b = len(Qi)
    if b == 0:
        return None
    k = len(Qi[0])
    bkz = bkz_available() if use_bkz is None else (use_bkz and bkz_available())
    Gp = _subtract_own(np.asarray(Q, dtype=np.int64), gradient_ints, own_scores)
    tried: list[str] = []
    # ---- exact path: two-valued residuals
    M = 1 << (F + 2)
    s = [sum(Qi[i][j] for i in range(b)) for j in range(k)]
    counts = [c for c in dict.fromkeys((n_train, n_rows)) if c]
    for cprime in _constant_candidates(Gp, s, F, counts)[:8]:
        t = [(cprime * s[j] - Gp[j]) // M for j in range(k)]
        tried.append("exact")
        y = _solve_knapsack(Qi, t, bkz)
        if y is not None:
            positives = _positives_from_constant(cprime, F, counts)
            return LatticeOutcome(np.asarray(y, dtype=np.int8), True, "exact knapsack", 0.0,
                                  cprime, positives, tried)
    # ---- noisy path: unknown continuous guest scores
    best = _noisy_cvp(np.asarray(Qi, dtype=np.float64), Gp, F, noise_levels, bkz, tried)
    if best is None:
        return None
    labels, score = best
    return LatticeOutcome(labels.astype(np.int8), False, "noisy CVP", score, None, None, tried)


def _positives_from_constant(cprime: int, F: int, counts: Sequence[int]) -> int | None:
    """The positive count whose intercept start gives ``C'`` (first matching row count)."""
    for n in counts:
        for p in range(n + 1):
            if _intercept_constant(p, n, F) + (1 << (F + 1)) == cprime:
                return p
    return None


def _intercept_constant(p: int, n: int, F: int) -> int:
    """``round(b0 2**F)`` for ``b0 = 2 mean(y)`` with ``p`` of ``n`` positive, as floats do it."""
    mean = (2 * p - n) / n
    return int(np.rint(2.0 * mean * 2.0**F))


def _constant_candidates(G: list[int], s: list[int], F: int, counts: Sequence[int]) -> list[int]:
    """Every ``C'`` in ``[0, 2**(F+2))`` with ``C' s_j = G_j (mod 2**(F+2))`` for all ``j``.

    First the finding's search (``b0 = 2 mean(y)`` for each positive count of
    each candidate row count), then the general solution of the congruences,
    which needs no assumption on how the constant was chosen.
    """
    M = 1 << (F + 2)
    out: list[int] = []
    for n in counts:
        for p in range(n + 1):
            c = _intercept_constant(p, n, F) + (1 << (F + 1))
            if c not in out and all((c * sj - gj) % M == 0 for sj, gj in zip(s, G, strict=True)):
                out.append(c)
    nonzero = [(j, sj) for j, sj in enumerate(s) if sj % M]
    if not nonzero:
        return out
    def v2(x: int) -> int:
        return (x & -x).bit_length() - 1
    j, sj = min(nonzero, key=lambda js: v2(js[1] % M))
    e = v2(sj % M)
    if e > 8 or G[j] % (1 << e):
        return out
    mod = M >> e
    c0 = ((G[j] >> e) * pow((sj >> e) % mod, -1, mod)) % mod if mod > 1 else 0
    for t in range(1 << e):
        c = c0 + t * mod
        if c not in out and all((c * a - g) % M == 0 for a, g in zip(s, G, strict=True)):
            out.append(c)
    return out


def _reductions(rows: list[list[int]], bkz: bool,
                blocks: Sequence[int] = (10, 20, 30)) -> Iterator[list[list[int]]]:
    """LLL (python-flint), then BKZ with growing blocks (fpylll) when available."""
    red = flint.fmpz_mat(rows).lll()
    ncols = red.ncols()
    yield [[int(red[r, c]) for c in range(ncols)] for r in range(red.nrows())]
    if not bkz:
        return
    from fpylll import BKZ, IntegerMatrix

    A = IntegerMatrix.from_matrix(rows)
    for bs in blocks:
        if bs >= len(rows):
            break
        BKZ.reduction(A, BKZ.Param(block_size=bs, max_loops=8,
                                   flags=BKZ.AUTO_ABORT | BKZ.GH_BND))
        yield [list(A[r]) for r in range(A.nrows)]


def _solve_knapsack(Qi: list[list[int]], t: list[int], bkz: bool) -> list[int] | None:
    """0/1 ``y`` with ``Q^T y = t`` by the CJLOSS embedding, verified exactly."""
    b, k = len(Qi), len(t)
    N = 1 << (max(1, b).bit_length() + 2)  # > sqrt(b + 1): any constraint miss is long
    rows = [[2 if c == i else 0 for c in range(b)] + [N * Qi[i][j] for j in range(k)] + [0]
            for i in range(b)]
    rows.append([1] * b + [N * tj for tj in t] + [1])
    for red in _reductions(rows, bkz):
        for v in red:
            if abs(v[-1]) != 1 or any(v[b + j] for j in range(k)):
                continue
            sgn = -v[-1]
            if all(abs(x) == 1 for x in v[:b]):
                y = [(sgn * x + 1) // 2 for x in v[:b]]
                if all(sum(Qi[i][j] * y[i] for i in range(b)) == t[j] for j in range(k)):
                    return y
    return None


def _noisy_cvp(X: FloatArray, G: list[int], F: int, noise_levels: Sequence[float], bkz: bool,
               tried: list[str]) -> tuple[FloatArray, float] | None:
    """Maximum-likelihood labels when ``g_i = c + e_i`` with unknown ``c`` and noise ``e``.

    Model (score units): ``X^T y + u - c' s = X^T e / 4`` with ``u = G / 2**(F+2)``
    and ``s = X^T 1``. Whitening by ``L^-1`` (``X^T X = L L^T``) makes the
    noise isotropic; projecting out ``L^-1 s`` removes ``c'``. The CVP
    ``sum_i y_i a_i ~ t`` is embedded with weight ``N ~ sqrt(b / (k-1)) / sigma'``
    for each noise level, reduced, and every candidate is scored by its
    whitened residual, then improved by greedy label flips.
    """
    b, k = X.shape
    system = _whitened_system(X, G, F)
    if system is None:
        return None
    Amat, target = system

    def residual(y: FloatArray) -> FloatArray:
        return Amat @ y - target

    cands: list[FloatArray] = []
    lam = 1 << 10
    for sigma in noise_levels:
        sig = max(float(sigma) / 4.0, 1e-12)
        weight = math.sqrt(b / max(k - 1, 1)) / sig
        scale = lam * weight
        if not math.isfinite(scale) or scale > 2.0**200:
            continue
        cols = np.rint(Amat.T * scale)  # (b, k)
        tcol = np.rint(target * scale)
        rows = [[2 * lam if c == i else 0 for c in range(b)] + [int(x) for x in cols[i]] + [0]
                for i in range(b)]
        rows.append([lam] * b + [int(x) for x in tcol] + [lam])
        tried.append(f"cvp sigma={sigma:g}")
        for red in _reductions(rows, bkz, blocks=(20,)):
            for v in red:
                if v[-1] == 0:
                    continue
                sgn = -1 if v[-1] > 0 else 1
                cands.append((np.asarray([sgn * x for x in v[:b]], dtype=np.float64) > 0)
                             .astype(np.float64))
    if not cands:
        return None
    best_y: FloatArray | None = None
    best = math.inf
    seen: set[bytes] = set()
    for y in cands:
        key = y.astype(np.int8).tobytes()
        if key in seen:
            continue
        seen.add(key)
        y2 = _greedy_flips(Amat, residual(y), y)
        sc = float(np.sum(residual(y2) ** 2))
        if sc < best:
            best, best_y = sc, y2
    assert best_y is not None
    return best_y, best


def _greedy_flips(Amat: FloatArray, r: FloatArray, y: FloatArray,
                  max_steps: int = 1000) -> FloatArray:
    """Flip single labels while the whitened residual's norm decreases."""
    y = y.copy()
    r = r.copy()
    sq = np.sum(Amat * Amat, axis=0)
    for _ in range(max_steps):
        delta = 1.0 - 2.0 * y  # +1 flips 0 -> 1
        change = 2.0 * delta * (Amat.T @ r) + sq
        i = int(np.argmin(change))
        if change[i] >= -1e-15:
            break
        r = r + delta[i] * Amat[:, i]
        y[i] = 1.0 - y[i]
    return y


def least_squares_attack(Q: npt.ArrayLike, gradient_ints: Sequence[int], F: int, *,
                         own_scores: Sequence[int] | None = None,
                         positive_rate: float = 0.5) -> npt.NDArray[np.int8]:
    """The linear estimate any host gets from ``X^T d`` (the protocol's documented leak).

    ``z = A^T t`` is the minimum-norm solution of the whitened, constant-free
    equations of :func:`_whitened_system`; the ``positive_rate`` share of rows
    with the highest ``z`` is labelled 1. No lattice: a reference for what the
    gradient reveals linearly, which the batch-size guardrail bounds (``k / b``
    of the label vector's energy) but does not remove.
    """
    X = np.asarray(Q, dtype=np.float64)
    b = X.shape[0]
    G = _subtract_own(np.asarray(Q, dtype=np.int64), gradient_ints, own_scores)
    system = _whitened_system(X, G, F)
    y = np.zeros(b, dtype=np.int8)
    if system is None:
        return y
    Amat, target = system
    z = Amat.T @ target
    y[np.argsort(-z)[: int(round(positive_rate * b))]] = 1
    return y


def _subtract_own(Q: IntArray, gradient_ints: Sequence[int],
                  own_scores: Sequence[int] | None) -> list[int]:
    """``G_j - sum_i q_ij H_i``: the guest's part of the gradient (exact integers)."""
    G = [int(g) for g in gradient_ints]
    if own_scores is None:
        return G
    Qi = Q.tolist()
    H = [int(h) for h in own_scores]
    return [G[j] - sum(int(Qi[i][j]) * H[i] for i in range(len(H))) for j in range(len(G))]


def _whitened_system(X: FloatArray, G: list[int], F: int) -> tuple[FloatArray, FloatArray] | None:
    """``(A, t)`` with ``A y - t`` the whitened, constant-free residual of labels ``y``.

    Model (score units): ``X^T y + u - c' s = X^T e / 4`` with ``u = G / 2**(F+2)``,
    ``s = X^T 1`` and ``c'`` unknown. With ``X^T X = L L^T``, ``L^-1 X^T`` has
    orthonormal rows, so the noise becomes isotropic; the projection ``P``
    orthogonal to ``L^-1 s`` removes ``c'``.
    """
    k = X.shape[1]
    if k < 2:
        return None
    try:
        L = np.linalg.cholesky(X.T @ X)
    except np.linalg.LinAlgError:
        return None
    Linv = np.linalg.inv(L)
    Z = Linv @ X.T
    u = np.array([float(g) for g in G]) / 2.0 ** (F + 2)
    ws = Linv @ X.sum(axis=0)
    shat = ws / np.linalg.norm(ws)
    P = np.eye(k) - np.outer(shat, shat)
    return P @ Z, -(P @ (Linv @ u))


# ====================================================================== validation
def seeded_validation_split_v1(y: npt.ArrayLike, fraction: float, seed: int) -> list[int]:
    """The validation split before issue 8 (public seed): kept for the control test."""
    yy = np.asarray(y)
    if fraction <= 0:
        return []
    rng = np.random.default_rng([seed, 7919])
    out: list[int] = []
    for cls in (0, 1):
        idx = np.flatnonzero(yy == cls)
        k = int(round(len(idx) * fraction))
        out.extend(rng.choice(idx, size=k, replace=False).tolist())
    return sorted(out)


@dataclass(frozen=True)
class ReplayOutcome:
    """Positive counts whose replay matches the observed rows, and the labels they fix."""

    consistent_counts: list[int]
    determined: dict[int, int]

    def determined_among(self, rows: Sequence[int]) -> int:
        """How many of ``rows`` have a determined label."""
        return sum(1 for r in rows if r in self.determined)


def current_split() -> Callable[[npt.ArrayLike, float, int], list[int]]:
    """The code's own ``validation_split``, called the way its signature allows."""
    from vfl.lr import config

    fn: Any = config.validation_split
    if len(inspect.signature(fn).parameters) >= 3:  # before issue 8: (y, fraction, seed)
        return lambda y, f, seed: list(fn(y, f, seed))
    return lambda y, f, seed: list(fn(y, f))


def validation_replay_attack(n_rows: int, validation_rows: Sequence[int], fraction: float,
                             seed: int, *,
                             split: Callable[[npt.ArrayLike, float, int], list[int]] | None = None
                             ) -> ReplayOutcome:
    """Replay the validation draw for every class count (finding 2).

    For each count ``n1`` of positives, the split is regenerated on the
    canonical labelling (``n0`` zeros then ``n1`` ones): with a stratified
    draw, the rows it returns are the *ranks* chosen within each class, since
    the draw within a class depends only on the class size and the generator.
    The observed rows must then be a merge of the two classes' rank marks;
    a forward/backward DP over (row, negatives so far) keeps the counts for
    which some labelling reproduces the observation and, per row, the labels
    that any such labelling can give. A row is determined when exactly one
    label is possible across all consistent counts.

    ``split`` defaults to the current ``vfl.lr.config.validation_split``.
    """
    split_fn = split or current_split()
    V = sorted({int(r) for r in validation_rows})
    nv = len(V)
    S = [False] * n_rows
    for r in V:
        S[r] = True
    counts: list[int] = []
    possible: list[int] = [0] * n_rows  # bit 0: label 0 possible, bit 1: label 1 possible
    for n1 in range(n_rows + 1):
        n0 = n_rows - n1
        if int(round(n0 * fraction)) + int(round(n1 * fraction)) != nv:
            continue
        canon = np.concatenate([np.zeros(n0), np.ones(n1)])
        chosen = split_fn(canon, fraction, seed)
        r0 = [r for r in chosen if r < n0]
        r1 = [r - n0 for r in chosen if r >= n0]
        labels = _merge_dp(S, n0, n1, r0, r1)
        if labels is None:
            continue
        counts.append(n1)
        for i, bits in enumerate(labels):
            possible[i] |= bits
    determined = {i: (0 if p == 1 else 1) for i, p in enumerate(possible) if p in (1, 2)}
    return ReplayOutcome(counts, determined if counts else {})


def _merge_dp(S: list[bool], n0: int, n1: int, r0: list[int], r1: list[int]) -> list[int] | None:
    """Per row, the labels (bit 0: 0, bit 1: 1) of merges consistent with the marks; or None."""
    n = len(S)
    full0 = (1 << n0) - 1
    am = 0
    for a in r0:
        am |= 1 << a
    # reversed marks of class 1: bit (n1 - 1 - j) set for marked rank j
    rb = 0
    for j in r1:
        rb |= 1 << (n1 - 1 - j)
    rb_not = ((1 << n1) - 1) & ~rb
    m0 = (am, full0 & ~am)

    def mask1(i: int, marked: bool) -> int:
        src = rb if marked else rb_not
        shift = n1 - 1 - i
        return src >> shift if shift >= 0 else src << -shift

    fwd = [0] * (n + 1)
    fwd[0] = 1
    masks: list[tuple[int, int]] = []
    for i in range(n):
        a0 = m0[0] if S[i] else m0[1]
        a1 = mask1(i, S[i])
        masks.append((a0, a1))
        f = fwd[i]
        fwd[i + 1] = ((f & a0) << 1) | (f & a1)
        if not fwd[i + 1]:
            return None
    end = 1 << n0
    if not fwd[n] & end:
        return None
    back = end
    out = [0] * n
    for i in range(n - 1, -1, -1):
        a0, a1 = masks[i]
        f = fwd[i]
        bits = 0
        if f & a0 & (back >> 1):
            bits |= 1
        if f & a1 & back:
            bits |= 2
        out[i] = bits
        back = (a0 & (back >> 1)) | (a1 & back)
    return out


# ====================================================================== scoring
def label_accuracy(recovered: npt.ArrayLike | None, truth: npt.ArrayLike) -> float:
    """Share of labels right, taking the better of the labels and their complement.

    The complement counts too: labels known up to a global flip are known
    (the minority class is the defaults). ``None`` (no answer) scores 0.
    """
    t = np.asarray(truth).astype(np.int64)
    if recovered is None:
        return 0.0
    r = np.asarray(recovered).astype(np.int64)
    acc = float(np.mean(r == t))
    return max(acc, 1.0 - acc)


def chance_bound(truth: npt.ArrayLike, z: float = 3.0) -> float:
    """What guessing achieves: the majority-class rate plus ``z`` binomial standard errors.

    An attacker who learns nothing guesses each label independently of it, so
    its accuracy has mean at most ``max(pi, 1 - pi)`` and standard deviation
    at most ``0.5 / sqrt(b)`` over ``b`` labels.
    """
    t = np.asarray(truth).astype(np.float64)
    pi = float(np.mean(t))
    return max(pi, 1.0 - pi) + z * 0.5 / math.sqrt(len(t))


def synthetic_labels_data(n: int, k_guest: int, k_host: int, seed: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test data whose labels depend on the guest's columns only (so any label
    information a host extracts comes from the protocol, not from its features)."""
    rng = np.random.default_rng(seed)  # test data, not a secret
    Xg = rng.normal(size=(n, k_guest))
    Xh = rng.normal(size=(n, k_host))
    logit = Xg @ rng.normal(0.0, 0.8, size=k_guest) - 0.6
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    return Xg, y, Xh
