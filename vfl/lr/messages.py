"""Wire messages of hetero logistic regression (``protocols/specs/hetero_lr.md``)."""

from __future__ import annotations

from dataclasses import dataclass

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
    "EpochLoss",
    "EpochDecision",
    "ScoreRequest",
    "TrainingResult",
    "PartialScores",
]


@message("lr.HostHello/1")
@dataclass(frozen=True, slots=True)
class HostHello:
    """Host → guest: aligned row count and number of feature columns."""

    n_rows: int
    n_features: int


@message("lr.TrainSetup/2")
@dataclass(frozen=True, slots=True)
class TrainSetup:
    """Guest → hosts and arbiter: hyper-parameters and the parties' shapes."""

    model_id: str
    config: TrainConfig
    n_rows: int
    hosts: list[str]
    columns: list[int]  # weight count per party: guest first, then hosts in order
    validation_rows: list[int]  # aligned rows held out for validation (empty: none)


@message("lr.PublicKey/1")
@dataclass(frozen=True, slots=True)
class PublicKeyAnnounce:
    """Arbiter → guest and hosts: the session's Paillier modulus ``n``."""

    n: bytes


@message("lr.HostForward/1")
@dataclass(frozen=True, slots=True)
class HostForward:
    """Host → guest: ``[[X_b w_h]]`` and ``[[sum (X_b w_h)^2]]``."""

    epoch: int
    batch: int
    scores: Ciphertexts
    square_sum: Ciphertexts


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


@message("lr.MaskedGradient/2")
@dataclass(frozen=True, slots=True)
class MaskedGradient:
    """Party → arbiter: ``[[X_b^T 4d + 2^ℓ + r]]`` with a secret mask ``r < 2^(ℓ+κ)``."""

    epoch: int
    batch: int
    values: Ciphertexts


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


@message("lr.EpochDecision/1")
@dataclass(frozen=True, slots=True)
class EpochDecision:
    """Arbiter → guest and hosts: continue or stop (the loss goes to the guest only)."""

    epoch: int
    stop: bool
    loss: float | None


@message("lr.TrainingResult/1")
@dataclass(frozen=True, slots=True)
class TrainingResult:
    """Guest → hosts after the last epoch (with validation): keep this epoch's weights."""

    best_epoch: int


@message("lr.ScoreRequest/1")
@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """Guest → host: ask for partial scores of the aligned scoring rows."""

    model_id: str
    n_rows: int


@message("lr.PartialScores/1")
@dataclass(frozen=True, slots=True)
class PartialScores:
    """Host → guest: ``X_h w_h`` for the aligned scoring rows (plaintext; see spec)."""

    model_id: str
    scores: np.ndarray


def expect_batch(msg: object, epoch: int, batch: int, peer: str) -> None:
    """Refuse a message that belongs to another epoch or batch."""
    got = (getattr(msg, "epoch", None), getattr(msg, "batch", batch))
    if got != (epoch, batch):
        raise RemoteProtocolError(
            f"{type(msg).__name__} from {peer} is for epoch/batch {got}; expected {(epoch, batch)}."
        )


__all__ += ["expect_batch"]
