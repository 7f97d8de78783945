"""Wire messages of hetero logistic regression (``protocols/specs/hetero_lr.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vfl.codec import message
from vfl.crypto.paillier import PaillierPublicKey
from vfl.crypto.vector import EncryptedVector
from vfl.exceptions import CryptoError, RemoteProtocolError
from vfl.lr.config import TrainConfig

__all__ = [
    "Ciphertexts",
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
    "encode_ciphertexts",
    "decode_ciphertexts",
]


@dataclass(frozen=True, slots=True)
class Ciphertexts:
    """An encrypted vector on the wire: key fingerprint, scale, fixed-width bytes."""

    key: bytes
    frac_bits: int
    data: bytes


def encode_ciphertexts(vec: EncryptedVector) -> Ciphertexts:
    """Wire form of an :class:`EncryptedVector`."""
    return Ciphertexts(vec.public_key.fingerprint, vec.frac_bits, vec.to_bytes())


def decode_ciphertexts(
    public_key: PaillierPublicKey,
    wire: Ciphertexts,
    *,
    peer: str,
    what: str,
    expected_len: int,
    frac_bits: int,
) -> EncryptedVector:
    """Validate and parse ciphertexts received from ``peer``.

    Checks the key fingerprint, the scale, the element count and
    ``0 < c < n^2`` for every element.
    """
    if wire.key != public_key.fingerprint:
        raise RemoteProtocolError(f"{what} from {peer} is encrypted under another public key.")
    if wire.frac_bits != frac_bits:
        raise RemoteProtocolError(
            f"{what} from {peer} has scale 2^{wire.frac_bits}; expected 2^{frac_bits}."
        )
    try:
        return EncryptedVector.from_bytes(public_key, wire.data, frac_bits,
                                          expected_len=expected_len)
    except CryptoError as exc:
        raise RemoteProtocolError(f"{what} from {peer}: {exc}") from None


@message("lr.HostHello/1")
@dataclass(frozen=True, slots=True)
class HostHello:
    """Host → guest: aligned row count and number of feature columns."""

    n_rows: int
    n_features: int


@message("lr.TrainSetup/1")
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


@message("lr.Prepare/2")
@dataclass(frozen=True, slots=True)
class Prepare:
    """Guest → hosts after PSI: validation-table PSI, WOE binning, training-row scoring."""

    woe_bins: int
    validation_table: bool
    score_training_rows: bool  # the guest asks every host to score all training rows


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


def encode_residues(values: list[Any], width: int) -> bytes:
    """Fixed-width big-endian bytes of residues mod n."""
    return b"".join(int(v).to_bytes(width, "big") for v in values)


def decode_residues(data: bytes, width: int, bound: int, *, peer: str,
                    expected: int) -> list[int]:
    """Parse fixed-width values, checking count and ``0 <= v < bound``."""
    if len(data) != width * expected:
        raise RemoteProtocolError(
            f"Decrypted gradient from {peer} has {len(data)} bytes; expected {width * expected}."
        )
    out = [int.from_bytes(data[i * width : (i + 1) * width], "big") for i in range(expected)]
    if any(v >= bound for v in out):
        raise RemoteProtocolError(
            f"Decrypted gradient from {peer} has a value outside the masked range.")
    return out


__all__ += ["expect_batch", "encode_residues", "decode_residues"]
