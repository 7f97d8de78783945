"""Secret-shared weights (protocol ``shared``): the arithmetic both sides of a share run.

During training a party's weights ``w`` exist only as two integers per weight
at scale ``2^F``: the party's own share ``U`` and the arbiter's share ``V``,
``w = (U + V) / 2^F``. Each batch the arbiter decrypts the party's masked
gradient ``z = G + 2^ℓ + r``; the party's share of the gradient is
``-(2^ℓ + r)`` (it knows its masks), the arbiter's is ``z``, and both take the
same linear optimiser step on their own share (:func:`step`), so that the two
new shares again add up to the weights after the step. Nothing decrypted
ever goes back to the party that sent it. See ``protocols/specs/hetero_lr.md``,
"Secret-shared training".

Pure integer arithmetic, no I/O.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import numpy as np

from vfl.checkpoint import CheckpointError, ShareRecord
from vfl.crypto.wire import Ciphertexts
from vfl.exceptions import ConfigError
from vfl.lr.config import (
    CURVATURE_CLIP,
    MOMENTUM,
    TrainConfig,
    residual_frac_bits,
    square_slot_bits,
)

__all__ = ["ShareState", "step_factor", "GUEST_EQUATION_SHARE",
           "guest_equations", "check_guest_equations", "int_matvec", "expansion_point"]

#: Bits of the fixed-point learning rate and L2 factor applied to the integer shares.
RATE_BITS = 32
#: The guest may hold at most this share of the training rows as equations about the
#: hosts' scores over a whole run (``hetero_lr.md``, "What the guest learns").
GUEST_EQUATION_SHARE = 0.25


def _fixed(value: float) -> int:
    return int(round(value * (1 << RATE_BITS)))


def step_factor(config: TrainConfig, epoch: int) -> int:
    """The epoch's learning rate ``lr / (1 + decay * epoch)`` at ``2^RATE_BITS``."""
    return _fixed(config.learning_rate / (1.0 + config.decay * epoch))


@dataclass
class ShareState:
    """One side's share of one party's weights and momentum.

    ``weights``: integers at ``2^F``. ``momentum``: integers at ``2^(F + 32)``, in
    the units of the weights. ``penalized``: which weights the L2 term acts
    on (not the intercept).
    """

    weights: list[int]
    momentum: list[int]
    penalized: list[bool]
    snapshots: list[list[int]] = field(default_factory=list)

    @classmethod
    def zeros(cls, count: int, penalized: list[bool] | None = None) -> ShareState:
        return cls([0] * count, [0] * count, penalized or [True] * count)

    @classmethod
    def of_weights(cls, coef: np.ndarray, frac_bits: int,
                   penalized: list[bool] | None = None) -> ShareState:
        """A share holding whole weights (the guest's start), quantised at ``2^F``."""
        w = [int(round(float(v) * (1 << frac_bits))) for v in np.asarray(coef).ravel()]
        return cls(w, [0] * len(w), penalized or [True] * len(w))

    def step(self, z: list[int], config: TrainConfig, epoch: int, rows: int) -> None:
        """Take this side's optimiser step with its share ``z`` of the batch's ``X^T 4d``.

        ``z`` (at the gradient's scale ``2^(R + G)``) becomes this side's share of the
        gradient ``X^T 4d / 4b (+ alpha w)`` at ``2^(F + 32)``; then ``m <- floor(9 m / 10)
        + g`` (``sgd``: ``m <- g``) and ``w <- w - floor(lr m)`` at ``2^F``. Each floor
        loses less than one unit of its scale per step and side.
        """
        if len(z) != len(self.weights):
            raise ValueError("a gradient share needs one value per weight")
        F, G = config.score_frac_bits, config.feature_frac_bits
        shift = residual_frac_bits(config) + G - F  # gradient scale over weight scale
        per_row = (4 * rows) << shift
        g = [(v << RATE_BITS) // per_row for v in z]
        if config.penalty == "l2":
            alpha = _fixed(config.alpha)
            g = [v + (w * alpha if p else 0)
                 for v, w, p in zip(g, self.weights, self.penalized, strict=True)]
        if config.optimizer == "momentum":
            num, den = MOMENTUM
            self.momentum = [(num * m) // den + v for m, v in zip(self.momentum, g, strict=True)]
        else:
            self.momentum = g
        rate = step_factor(config, epoch)
        self.weights = [w - ((m * rate) >> (2 * RATE_BITS))
                        for w, m in zip(self.weights, self.momentum, strict=True)]

    def snapshot(self) -> None:
        """Keep the weights share of the epoch just ended (for the kept epoch)."""
        self.snapshots.append(list(self.weights))

    def to_record(self, encrypted: Ciphertexts | None = None,
                  expansion: list[int] | None = None) -> ShareRecord:
        """This share for a checkpoint (signed integers at one fixed width)."""
        values = [*self.weights, *self.momentum, *(v for s in self.snapshots for v in s),
                  *(expansion or [])]
        width = max((v.bit_length() for v in values), default=0) // 8 + 1
        return ShareRecord(width, _pack(self.weights, width), _pack(self.momentum, width),
                           _pack([v for s in self.snapshots for v in s], width),
                           len(self.snapshots), encrypted,
                           _pack(expansion, width) if expansion is not None else b"")

    @classmethod
    def from_record(cls, rec: ShareRecord, count: int, penalized: list[bool],
                    owner: str) -> ShareState:
        """A share back from a checkpoint, its sizes checked against ``count`` weights."""
        w = rec.width
        if not 1 <= w <= MAX_SHARE_BYTES or len(rec.weights) != count * w or len(
                rec.momentum) != count * w or len(rec.snapshots) != rec.n_snapshots * count * w:
            raise CheckpointError(f"The checkpoint of {owner} holds a weight share of another "
                                  f"shape than its {count} weights now: refused.")
        snaps = _unpack(rec.snapshots, w)
        return cls(_unpack(rec.weights, w), _unpack(rec.momentum, w), list(penalized),
                   [snaps[i * count:(i + 1) * count] for i in range(rec.n_snapshots)])


#: Largest width of a stored share value (bytes); shares stay near ``2^(ℓ + κ + F)``.
MAX_SHARE_BYTES = 256


def _pack(values: list[int], width: int) -> bytes:
    return b"".join(int(v).to_bytes(width, "big", signed=True) for v in values)


def _unpack(data: bytes, width: int) -> list[int]:
    return [int.from_bytes(data[i:i + width], "big", signed=True)
            for i in range(0, len(data), width)]


def expansion_of(rec: ShareRecord, count: int, owner: str) -> list[int] | None:
    """The guest's expansion point kept in ``rec`` (None: none kept)."""
    if not rec.expansion:
        return None
    if len(rec.expansion) != count * rec.width:
        raise CheckpointError(f"The checkpoint of {owner} holds an expansion point of another "
                              "shape: refused.")
    return _unpack(rec.expansion, rec.width)


def int_matvec(X: np.ndarray, w: list[int], frac_bits: int = 0) -> list[int]:
    """``X w`` exactly, ``X`` int64 (rows x k) and ``w`` Python integers of any size;
    the intercept column, when ``len(w) == k + 1``, is ``2^frac_bits`` (a one)."""
    k = X.shape[1]
    cols = np.asarray(w[:k], dtype=object)
    out = (X.astype(object) @ cols) if k else np.zeros(X.shape[0], dtype=object)
    if len(w) == k + 1:
        out = out + (int(w[k]) << frac_bits)
    return [int(v) for v in out]


#: Ridge of the guest's own model that serves as its expansion point, per training row
#: (on the sum of the row losses: scikit-learn's ``C = 1 / (0.03 n)``). It keeps a
#: separable guest's scores moderate, where the expansion still has curvature; measured
#: in ``benchmarks/shared_quality.py`` (0.003 to 0.1 per row; 0.03 to 0.1 kept quality).
EXPANSION_RIDGE_PER_ROW = 0.03
#: Newton steps of that fit (it converges in under 10 on every data set measured).
EXPANSION_STEPS = 50


def expansion_point(X: np.ndarray, y01: np.ndarray, sample_weight: np.ndarray | None, *,
                    fit_intercept: bool, frac_bits: int) -> list[int]:
    """The accurate mode's expansion point: the guest's own logistic regression.

    Fitted by the guest alone, before training, on its own columns ``X`` (its
    quantised training rows, floats) and labels ``y01``, with the run's class
    weights: an L2-penalised maximum likelihood by Newton's method. The guest
    expands the logistic loss around ``g~ = X w~ + b~`` for the whole run, so
    that it never needs its jointly trained weights, and the arbiter tells it
    nothing before the end (``hetero_lr.md``, "Accurate mode under shares").
    Deterministic; returned as integers at ``2^frac_bits`` (intercept last).
    """
    n, k = X.shape
    A = np.hstack([X, np.ones((n, 1))]) if fit_intercept else np.asarray(X, dtype=np.float64)
    sw = (np.ones(n) if sample_weight is None
          else np.asarray(sample_weight, dtype=np.float64) / float(np.mean(sample_weight)))
    ridge = np.full(A.shape[1], EXPANSION_RIDGE_PER_ROW * n)
    if fit_intercept:
        ridge[k] = 1e-8  # the intercept unpenalised (a tiny term keeps the system regular)
    w = np.zeros(A.shape[1])
    for _ in range(EXPANSION_STEPS):
        s = np.clip(A @ w, -30.0, 30.0)
        p = 1.0 / (1.0 + np.exp(-s))
        grad = A.T @ (sw * (p - y01)) + ridge * w
        hess = (A * (sw * p * (1.0 - p))[:, None]).T @ A + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if float(np.max(np.abs(step), initial=0.0)) < 1e-10:
            break
    bound = float(1 << 20)
    w = np.clip(w, -bound, bound)
    return [int(round(float(v) * 2.0**frac_bits)) for v in w]


def guest_equations(config: TrainConfig) -> int:
    """Linear equations about the hosts' training scores the guest holds after a run:
    one epoch loss per epoch (linear in the joint scores and stored squares, since the
    guest knows its expansion point). Nothing else it receives before the end is
    decrypted."""
    return config.epochs


def check_guest_equations(config: TrainConfig, n_train: int) -> None:
    """Refuse a job in which the guest would hold equations about the hosts' scores for
    ``GUEST_EQUATION_SHARE`` of the training rows or more."""
    if config.protocol != "shared":
        return
    used = guest_equations(config)
    if used > GUEST_EQUATION_SHARE * n_train:
        raise ConfigError(
            f"With {config.epochs} epochs the guest would hold {used} equations about the "
            f"hosts' scores of {n_train} training rows, more than "
            f"{GUEST_EQUATION_SHARE:.0%} of them (one epoch loss per epoch): lower 'epochs' "
            f"to at most {int(GUEST_EQUATION_SHARE * n_train)}, or train on more rows. See "
            "protocols/specs/hetero_lr.md, 'What the guest learns'.")


def clipped_square(value: int, frac_bits: int) -> int:
    """``Q_F(clip(x, ±CURVATURE_CLIP)^2)`` of ``x = value / 2^F`` in integers (floor)."""
    bound = int(CURVATURE_CLIP) << frac_bits
    v = max(-bound, min(bound, value))
    return (v * v) >> frac_bits


def secret_order(count: int) -> list[int]:
    """A uniformly random permutation of ``range(count)`` drawn with ``secrets``."""
    order = list(range(count))
    secrets.SystemRandom().shuffle(order)
    return order


__all__ += ["clipped_square", "secret_order", "square_slot_bits"]
