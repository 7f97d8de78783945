"""Wire messages of hetero logistic regression (``protocols/specs/hetero_lr.md``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vfl.codec import message
from vfl.crypto.wire import Ciphertexts
from vfl.exceptions import RemoteProtocolError
from vfl.lr.config import TrainConfig

__all__ = [
    "HostHello",
    "TrainSetup",
    "PublicKeyAnnounce",
    "HostForward",
    "Residual",
    "CrossTerm",
    "MaskedGradient",
    "DecryptedGradient",
    "ShareUpdate",
    "FinalShare",
    "EpochLoss",
    "EpochDecision",
    "ScoreRequest",
    "TrainingResult",
    "PartialScores",
    "ValidationScores",
    "ValidationBatch",
    "ValidationMetrics",
    "CalibrationRequest",
    "CalibrationReport",
    "METRIC_DIGITS",
    "MAX_POINTS_SCALE",
    "MAX_ROW_POINTS",
    "DECILES",
]

#: Decimal places of every figure the arbiter returns from validation rows.
METRIC_DIGITS = 4
#: Score bands of the calibration report (equal-count bands of the joint score).
DECILES = 10


@message("lr.HostHello/3")
@dataclass(frozen=True, slots=True)
class HostHello:
    """Host → guest: aligned row and column counts; where its newest checkpoint stands."""

    n_rows: int
    n_features: int
    checkpoint_epochs: int = 0  # resuming: epochs completed in its newest valid checkpoint
    checkpoint_batches: int = 0  # ... and batches of the next epoch (0: at an epoch's end)


@message("lr.TrainSetup/5")
@dataclass(frozen=True, slots=True)
class TrainSetup:
    """Guest → hosts and arbiter: hyper-parameters and the parties' shapes; where to resume."""

    model_id: str
    config: TrainConfig
    n_rows: int
    hosts: list[str]
    columns: list[int]  # weight count per party: guest first, then hosts in order
    validation_rows: list[int]  # aligned rows held out for validation (empty: none)
    n_validation: int  # how many: hosts check it against the rows; the arbiter gets only this
    resume_epochs: int = 0  # > 0: every party continues from its checkpoint of this many epochs
    resume_batches: int = 0  # ... and this many batches of the next epoch
    checkpoint_every: int = 0  # guest and hosts also checkpoint every this many batches (0: no)


@message("lr.PublicKey/1")
@dataclass(frozen=True, slots=True)
class PublicKeyAnnounce:
    """Arbiter → guest and hosts: the session's Paillier modulus ``n``."""

    n: bytes


@message("lr.HostForward/2")
@dataclass(frozen=True, slots=True)
class HostForward:
    """Host → guest: ``[[X_b w_h]]``; Taylor mode: ``[[sum (X_b w_h)^2]]``; accurate mode:
    ``[[clip(X_b w_h, ±3)^2]]`` of the batch rows due (:func:`~vfl.lr.config.squares_due`)."""

    epoch: int
    batch: int
    scores: Ciphertexts
    square_sum: Ciphertexts  # Taylor mode: one ciphertext; accurate mode: none
    squares: Ciphertexts  # accurate mode: one per batch row due, in batch order


@message("lr.Residual/1")
@dataclass(frozen=True, slots=True)
class Residual:
    """Guest → host: re-randomised ``[[4d]]``; for the 2nd+ host also ``[[sum of earlier hosts' scores]]``."""

    epoch: int
    batch: int
    residual: Ciphertexts
    earlier_scores: Ciphertexts | None


@message("lr.CrossTerm/1")
@dataclass(frozen=True, slots=True)
class CrossTerm:
    """Host → guest: ``[[sum_i h_k,i * H_<k,i]]`` for the multi-host loss."""

    epoch: int
    batch: int
    value: Ciphertexts


@message("lr.MaskedGradient/3")
@dataclass(frozen=True, slots=True)
class MaskedGradient:
    """Party → arbiter: ``[[X_b^T 4d + 2^ℓ + r]]`` with a secret mask ``r < 2^(ℓ+κ)``.

    Protocol ``shared``, the guest only: ``squares`` packs ``[[x_i + 2^ℓq + r_i]]`` of
    the batch rows due for new squares (``x = s - g~``, or ``s`` in the Taylor mode),
    each ``r_i < 2^(ℓq+κ)`` secret; empty otherwise.
    """

    epoch: int
    batch: int
    values: Ciphertexts
    squares: Ciphertexts | None = None
    n_squares: int = 0


@message("lr.ShareUpdate/1")
@dataclass(frozen=True, slots=True)
class ShareUpdate:
    """Arbiter → party (protocol ``shared``): the arbiter's new share of the party's
    weights, encrypted under its own key, ``[[V]]`` at ``2^F``; for the guest also
    ``[[y_i^2]]`` of each packed square value it sent (fresh encryptions)."""

    epoch: int
    batch: int
    share: Ciphertexts
    squares: Ciphertexts | None = None


@message("lr.FinalShare/1")
@dataclass(frozen=True, slots=True)
class FinalShare:
    """Arbiter → party after the last epoch (protocol ``shared``): the arbiter's share of
    the party's weights of the kept epoch, in the clear (``2^F``; each value mod ``n``
    at the key's width, read as signed)."""

    epoch: int
    share: bytes  # signed values mod n, fixed width (vfl.crypto.wire.encode_residues)


@message("lr.DecryptedGradient/2")
@dataclass(frozen=True, slots=True)
class DecryptedGradient:
    """Arbiter → party: the masked values, each checked below ``2^(ℓ+κ+1)`` (fixed width)."""

    epoch: int
    batch: int
    residues: bytes


@message("lr.EpochLoss/1")
@dataclass(frozen=True, slots=True)
class EpochLoss:
    """Guest → arbiter: ``[[8 * 2^(2F) * sum of batch Taylor losses]]``."""

    epoch: int
    loss: Ciphertexts
    n_samples: int
    stop_requested: bool  # the guest's validation-based early stop


@message("lr.EpochDecision/3")
@dataclass(frozen=True, slots=True)
class EpochDecision:
    """Arbiter → guest and hosts: continue or stop (the loss goes to the guest only).

    Version 3 drops version 2's ``guest_share``: under protocol ``shared`` the guest
    expands around its own model and learns no weights before the end.
    """

    epoch: int
    stop: bool
    loss: float | None


@message("lr.TrainingResult/1")
@dataclass(frozen=True, slots=True)
class TrainingResult:
    """Guest → hosts after the last epoch (with validation): keep this epoch's weights."""

    best_epoch: int


#: Largest scorecard scale (points per unit of a partial logit) a host accepts in a
#: ``ScoreRequest``: pdo / ln 2 times a calibration slope; 10,000 is pdo 6,931 at slope 1,
#: far beyond any scorecard in use (pdo 20 gives 28.9).
MAX_POINTS_SCALE = 1e4
#: Largest magnitude of a host's points for one row (its table's bins are bounded by
#: 10^9 points each; this keeps the guest's int64 sums exact for any number of hosts).
MAX_ROW_POINTS = 10**15


def _no_points() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@message("lr.ScoreRequest/2")
@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """Guest → host: ask for partial scores (and points) of the aligned scoring rows.

    ``scale``: points per unit of the host's partial logit, ``pdo / ln 2 *
    calibration slope``, for the host's scorecard points; 0.0 asks for no
    points. Each host refuses a scale that is not 0 or in ``(0, MAX_POINTS_SCALE]``.
    """

    model_id: str
    n_rows: int
    scale: float = 0.0


@message("lr.PartialScores/2")
@dataclass(frozen=True, slots=True)
class PartialScores:
    """Host → guest: ``X_h w_h`` for the aligned scoring rows (plaintext; see spec).

    ``points``: the host's integer scorecard points per row (int64, from its
    own points table at the requested scale); empty when none were asked.
    """

    model_id: str
    scores: np.ndarray
    points: np.ndarray = field(default_factory=_no_points)


@message("lr.ValidationScores/1")
@dataclass(frozen=True, slots=True)
class ValidationScores:
    """Host → guest: ``[[X_v w_h]]`` on the validation rows with this epoch's weights."""

    epoch: int
    scores: Ciphertexts


@message("lr.ValidationBatch/1")
@dataclass(frozen=True, slots=True)
class ValidationBatch:
    """Guest → arbiter: joint scores ``[[s_v]]`` in a fresh secret order, and the labels in that order.

    ``labels`` is one bit per row (``numpy.packbits``, big-endian bit order,
    zero padding).
    """

    epoch: int
    scores: Ciphertexts
    labels: bytes


@message("lr.ValidationMetrics/1")
@dataclass(frozen=True, slots=True)
class ValidationMetrics:
    """Arbiter → guest: this epoch's validation AUC, KS, log-loss and Brier score.

    Each rounded to :data:`METRIC_DIGITS` decimal places.
    """

    epoch: int
    auc: float
    ks: float
    log_loss: float
    brier: float

    def __post_init__(self) -> None:
        for name in ("auc", "ks", "brier"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise RemoteProtocolError(f"ValidationMetrics: {name} outside [0, 1].")
        if not 0.0 <= self.log_loss <= 1e3:
            raise RemoteProtocolError("ValidationMetrics: log_loss outside [0, 1000].")


@message("lr.CalibrationRequest/1")
@dataclass(frozen=True, slots=True)
class CalibrationRequest:
    """Guest → arbiter after the last epoch: calibrate the scores of the kept epoch."""

    best_epoch: int


@message("lr.CalibrationReport/1")
@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """Arbiter → guest: Platt scaling of the kept epoch's joint score, and what it does.

    The calibrated probability is ``sigmoid(slope * s + intercept)`` for the
    joint score ``s``. ``before`` and ``after`` hold, over the validation rows,
    ``[brier, log_loss, calibration_in_the_large, calibration_slope]`` of the
    raw and of the calibrated probabilities (``after`` out of sample: each
    row's calibrated probability comes from a fit on the other half). Per
    score band (:data:`DECILES` equal-count bands of ``s``, lowest first):
    rows, defaults, mean predicted PD before and after. Every float rounded to
    :data:`METRIC_DIGITS` decimal places.
    """

    best_epoch: int
    slope: float
    intercept: float
    before: np.ndarray
    after: np.ndarray
    band_rows: np.ndarray
    band_defaults: np.ndarray
    band_pd_before: np.ndarray
    band_pd_after: np.ndarray

    def __post_init__(self) -> None:
        if not (-1e3 <= self.slope <= 1e3 and -1e3 <= self.intercept <= 1e3):
            raise RemoteProtocolError("CalibrationReport: slope or intercept outside [-1000, 1000].")
        for name in ("before", "after"):
            arr = getattr(self, name)
            if arr.dtype != np.float64 or arr.shape != (4,):
                raise RemoteProtocolError(f"CalibrationReport: {name} must hold 4 floats.")
        bands = [self.band_rows, self.band_defaults, self.band_pd_before, self.band_pd_after]
        if any(b.ndim != 1 or b.shape[0] > DECILES for b in bands) or len(
                {b.shape[0] for b in bands}) != 1:
            raise RemoteProtocolError(
                f"CalibrationReport: the band arrays must have one equal length <= {DECILES}.")
        if self.band_rows.dtype != np.int64 or self.band_defaults.dtype != np.int64 or np.any(
                self.band_defaults < 0) or np.any(self.band_defaults > self.band_rows):
            raise RemoteProtocolError("CalibrationReport: band counts are not counts.")
        for b in (self.band_pd_before, self.band_pd_after):
            if b.dtype != np.float64 or np.any((b < 0) | (b > 1)):
                raise RemoteProtocolError("CalibrationReport: band PDs outside [0, 1].")


def expect_batch(msg: object, epoch: int, batch: int, peer: str) -> None:
    """Refuse a message that belongs to another epoch or batch."""
    got = (getattr(msg, "epoch", None), getattr(msg, "batch", batch))
    if got != (epoch, batch):
        raise RemoteProtocolError(
            f"{type(msg).__name__} from {peer} is for epoch/batch {got}; expected {(epoch, batch)}."
        )


__all__ += ["expect_batch"]
