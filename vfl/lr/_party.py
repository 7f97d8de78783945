"""Pieces shared by the guest and host roles: quantised features, masking, unmasking (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vfl.checkpoint import CheckpointError, PartyCheckpoint
from vfl.crypto.encoding import dequantize, quantize
from vfl.crypto.engine import CipherEngine, ComputeConfig, current_compute, make_engine
from vfl.crypto.paillier import PaillierPublicKey, Randomizer, check_key_size
from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import decode_ciphertexts, decode_residues, encode_ciphertexts
from vfl.exceptions import (
    ConfigError,
    CryptoError,
    EncodingOverflowError,
    LocalProtocolError,
    RemoteProtocolError,
)
from vfl.lr._shared import ShareState, expansion_of, int_matvec
from vfl.lr.config import FEATURE_BITS, MaskBudget, TrainConfig, residual_frac_bits
from vfl.lr.messages import (
    DecryptedGradient,
    FinalShare,
    MaskedGradient,
    PublicKeyAnnounce,
    ShareUpdate,
    expect_batch,
)
from vfl.lr.optim import Optimizer
from vfl.types import FloatArray

__all__ = ["QuantizedMatrix", "GradientParty", "decode_signed", "MAX_WEIGHT_BITS"]

#: Largest magnitude of a weight a party accepts from the shares: ``|w| < 2^MAX_WEIGHT_BITS``.
MAX_WEIGHT_BITS = 24


def decode_signed(data: bytes, key: PaillierPublicKey, count: int, *, peer: str,
                  what: str) -> list[int]:
    """``count`` values mod ``n`` at the key's width, read as signed (``v > n/2``: ``v - n``)."""
    n = int(key.n)
    vals = decode_residues(data, (n.bit_length() + 7) // 8, n, peer=peer, expected=count,
                           what=what)
    return [v - n if v > n // 2 else v for v in vals]

@dataclass(frozen=True)
class QuantizedMatrix:
    """Features rounded to ``2**-frac_bits`` and shifted to be non-negative.

    ``shifted = round(X * 2**f) + offsets`` is what the multi-exponentiation
    consumes (computed once per training run); ``values`` are the rounded
    features as floats, used for the plaintext partial scores.
    """

    shifted: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    values: FloatArray

    @classmethod
    def build(cls, X: FloatArray, frac_bits: int) -> QuantizedMatrix:
        """Quantise ``X`` (2-D); every value must satisfy ``|x| < 2**FEATURE_BITS``."""
        arr = np.asarray(X, dtype=np.float64)
        if arr.size and not np.all(np.abs(arr) < 2.0 ** FEATURE_BITS):
            cols = sorted({int(j) for j in np.nonzero(~(np.abs(arr) < 2.0 ** FEATURE_BITS))[1]})
            raise ConfigError(
                f"Feature column(s) {cols[:5]} hold values beyond +-{2 ** FEATURE_BITS:,} (or "
                "non-finite values): the protocol's masks are sized for preprocessed features; "
                "standardise or WOE-encode the columns first."
            )
        q = quantize(arr, frac_bits)
        offsets = np.maximum(0, -q.min(axis=0)) if q.shape[0] else np.zeros(q.shape[1], np.int64)
        return cls(q + offsets, offsets.astype(np.int64), dequantize(q, frac_bits))


def shifted_column(values: FloatArray, frac_bits: int) -> tuple[npt.NDArray[np.int64], int]:
    """One quantised column with its non-negative offset."""
    q = quantize(values, frac_bits)
    off = int(max(0, -int(q.min()))) if q.size else 0
    return q + off, off


class GradientParty:
    """State common to guest and host: key, randomness, weights, optimiser, masks."""

    def _quantized_scores(self, values: FloatArray, epoch: int, batch: int,
                          set_by: str | None) -> npt.NDArray[np.int64]:
        """This party's scores at ``2**score_frac_bits``, or a clear error if training diverged.

        ``set_by``: the peer that chose the hyper-parameters (the guest, for a
        host), named in the error; ``None`` for the guest's own config.
        """
        cfg = self.config
        try:
            return quantize(values, cfg.score_frac_bits)
        except EncodingOverflowError:
            what = (f"{self.name}'s partial scores left the fixed-point range in epoch "
                    f"{epoch + 1}, batch {batch + 1}: training diverged under the job's "
                    f"learning_rate {cfg.learning_rate} and optimizer {cfg.optimizer!r}")
            if set_by is not None:
                raise RemoteProtocolError(f"{what}, set by {set_by}.") from None
            raise ConfigError(f"{what}; lower the learning rate.") from None

    name: str
    config: TrainConfig
    n_weights: int
    n_rows: int

    def __init__(self, name: str, config: TrainConfig, n_weights: int,
                 unpenalized: int | None, workers: int | None = None,
                 exponent_bits: int | None = None) -> None:
        self.name = name
        self.config = config
        self.n_weights = n_weights
        self.coef = np.zeros(n_weights)
        self.optimizer = Optimizer(config.optimizer, config.learning_rate, config.decay,
                                   config.penalty, config.alpha, n_weights, unpenalized)
        self.public_key: PaillierPublicKey | None = None
        self.randomizer: Randomizer | None = None
        self.engine: CipherEngine | None = None
        self.workers = workers
        self.exponent_bits = exponent_bits
        # where the engine will run: set by the estimator's ``compute`` for this run
        # (vfl.crypto.engine.compute_context); None: the local pool of ``workers``
        self.compute: ComputeConfig | None = current_compute()
        self._masks: list[int] | None = None
        self.budget: MaskBudget | None = None
        self._batch_rows = 0
        self._epoch = 0
        self._batch = 0
        #: protocol ``shared``: this party's share of its weights (the arbiter holds the
        #: other), and the arbiter's share as it last sent it, encrypted under its key
        self.shared = config.protocol == "shared"
        penalized = [i != unpenalized for i in range(n_weights)]
        self.share = ShareState.zeros(n_weights, penalized)
        self._v_enc: EncryptedVector | None = None

    def on_public_key(self, msg: PublicKeyAnnounce, *, peer: str,
                      allow_insecure_key_size: bool) -> None:
        """Accept the arbiter's key after checking its size."""
        try:
            key = PaillierPublicKey.from_bytes(msg.n)
        except CryptoError as exc:
            raise RemoteProtocolError(f"Public key from {peer} refused: {exc}") from None
        check_key_size(key.bits, allow_insecure_key_size=allow_insecure_key_size)
        if key.bits != self.config.key_bits:
            raise RemoteProtocolError(
                f"Public key from {peer} has {key.bits} bits; the job asked for "
                f"{self.config.key_bits}."
            )
        self.public_key = key
        self.randomizer = Randomizer(key, self.exponent_bits, window_bits=8)
        self.engine = make_engine(key, self.workers, self.n_rows, self.exponent_bits,
                                  compute=self.compute)

    # ----------------------------------------------------------- checkpoints
    def checkpoint_fields(self) -> dict[str, Any]:
        """Weights, optimiser state and per-epoch weights, for a :class:`PartyCheckpoint`."""
        opt = self.optimizer
        snaps: list[FloatArray] = getattr(self, "snapshots", [])
        share = None
        if self.shared:
            enc = None if self._v_enc is None else encode_ciphertexts(self._v_enc)
            share = self.share.to_record(enc, getattr(self, "_expansion", None) or None)
        return {"coef": self.coef.copy(), "opt_t": int(opt.t), "opt_m": opt.m.copy(),
                "opt_v": opt.v.copy(),
                "snapshots": np.asarray(snaps, dtype=np.float64).reshape(len(snaps),
                                                                         self.n_weights),
                "share": share}

    def restore_fields(self, ckpt: PartyCheckpoint) -> None:
        """Take back :meth:`checkpoint_fields` (shapes checked against this party's weights)."""
        k = self.n_weights
        if (ckpt.coef.shape != (k,) or ckpt.opt_m.shape != (k,) or ckpt.opt_v.shape != (k,)
                or ckpt.snapshots.ndim != 2 or ckpt.snapshots.shape[1:] != (k,)):
            raise CheckpointError(f"The checkpoint of {self.name} holds weights of another "
                                  f"shape than its {k} weights now: refused.")
        self.coef = ckpt.coef.astype(np.float64).copy()
        self.optimizer.t = ckpt.opt_t
        self.optimizer.m = ckpt.opt_m.astype(np.float64).copy()
        self.optimizer.v = ckpt.opt_v.astype(np.float64).copy()
        if hasattr(self, "snapshots"):
            self.snapshots = [row.copy() for row in ckpt.snapshots]
        if self.shared:
            rec = ckpt.share
            if rec is None:
                raise CheckpointError(f"The checkpoint of {self.name} holds no weight share; "
                                      "this job keeps its weights shared: refused.")
            self.share = ShareState.from_record(rec, k, self.share.penalized, self.name)
            self._v_enc = None
            if rec.encrypted is not None:
                key, _ = self._require_key()
                try:
                    self._v_enc = decode_ciphertexts(
                        key, rec.encrypted, peer=f"{self.name}'s checkpoint",
                        what="the arbiter's share", expected_len=k,
                        frac_bits=self.config.score_frac_bits)
                except RemoteProtocolError as exc:
                    raise CheckpointError(str(exc)) from None
            if hasattr(self, "_expansion"):
                point = expansion_of(rec, k, self.name)
                if point is not None:
                    self._expansion = point

    def close(self) -> None:
        """Stop this party's worker processes, or leave its Dask cluster, if any."""
        if self.engine is not None:
            self.engine.close()

    def _require_engine(self) -> CipherEngine:
        if self.engine is None:
            raise LocalProtocolError(f"{self.name} has no public key yet; expected PublicKeyAnnounce.")
        return self.engine

    def _require_key(self) -> tuple[PaillierPublicKey, Randomizer]:
        if self.public_key is None or self.randomizer is None:
            raise LocalProtocolError(f"{self.name} has no public key yet; expected PublicKeyAnnounce.")
        return self.public_key, self.randomizer

    def _mask_and_send(self, gradient: EncryptedVector, epoch: int, batch: int,
                       rows: int) -> MaskedGradient:
        """Add ``2**ℓ`` plus secret masks of ``ℓ + κ`` bits, re-randomise, remember the masks.

        The arbiter decrypts only values below ``2**(ℓ + κ + 1)`` (see
        :class:`~vfl.lr.config.MaskBudget`).
        """
        key, rnd = self._require_key()
        budget = self._require_budget()
        masks = budget.draw_masks(len(gradient))
        masked = gradient.add_residues([budget.offset + m for m in masks]).rerandomize(rnd)
        self._masks = masks
        self._batch_rows = rows
        self._epoch, self._batch = epoch, batch
        return MaskedGradient(epoch, batch, encode_ciphertexts(masked))

    def _require_budget(self) -> MaskBudget:
        if self.budget is None:
            raise LocalProtocolError(f"{self.name} has no mask budget yet; the job is not set up.")
        return self.budget

    # ------------------------------------------------------- shared weights
    def _start_share(self, coef: FloatArray) -> None:
        """Protocol ``shared``: this party's share starts as ``coef`` (the arbiter's at 0)."""
        penalized = self.share.penalized
        self.share = ShareState.of_weights(coef, self.config.score_frac_bits, penalized)

    def _shared_scores(self, shifted: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64],
                       quantized: npt.NDArray[np.int64], *, fresh: bool) -> EncryptedVector:
        """``[[X w]]`` at ``2^F_s`` from the two shares: ``X U`` in the clear plus ``X [[V]]``.

        ``shifted``/``offsets``: the rows' quantised features made non-negative (with a
        column of ``2^G`` for the guest's intercept); ``quantized``: the same features
        signed, without that column. ``fresh``: add new randomness (the result leaves
        the party as it is); else the caller re-randomises what it derives from it.
        """
        key, rnd = self._require_key()
        G = self.config.feature_frac_bits
        frac = self.config.score_frac_bits + G
        plain = int_matvec(quantized, self.share.weights, G)
        try:
            if self._v_enc is None:  # the arbiter's share is still 0
                return EncryptedVector.encrypt(key, plain, frac, rnd)
            enc = self._require_engine().project(shifted, offsets, self._v_enc, G)
            enc = enc.add_plain(plain)
        except EncodingOverflowError:
            # this party's share left the key's range: its steps diverged (a learning rate
            # far too large, or a share the arbiter's steps do not match)
            set_by = getattr(self, "guest", None)
            what = (f"{self.name}'s weight share left the key's range in epoch "
                    f"{self._epoch + 1}: training diverged under the job's learning_rate "
                    f"{self.config.learning_rate}")
            if set_by is not None:
                raise RemoteProtocolError(f"{what}, set by {set_by}.") from None
            raise ConfigError(f"{what}; lower the learning rate.") from None
        return self._require_engine().rerandomize(enc) if fresh else enc

    def on_share_update(self, msg: ShareUpdate, *, peer: str) -> None:
        """Protocol ``shared``: take the arbiter's new encrypted share; step this party's own.

        The party's share of the batch's ``X^T 4d`` is ``-(2^ℓ + r)``: minus the
        masks it added, which the arbiter's decrypted value carries.
        """
        key, _ = self._require_key()
        budget = self._require_budget()
        if self._masks is None:
            raise RemoteProtocolError(
                f"Received ShareUpdate from {peer} but no masked gradient is outstanding.")
        expect_batch(msg, self._epoch, self._batch, peer)
        self._v_enc = decode_ciphertexts(key, msg.share, peer=peer, what="ShareUpdate",
                                         expected_len=self.n_weights,
                                         frac_bits=self.config.score_frac_bits)
        z = [-(budget.offset + m) for m in self._masks]
        self._masks = None
        self.share.step(z, self.config, self._epoch, self._batch_rows)

    def on_final_share(self, msg: FinalShare, *, peer: str, epoch: int) -> FloatArray:
        """Protocol ``shared``: add the arbiter's share of the kept epoch (``epoch``: the
        best validation epoch, or the last) to this party's own; the weights, in the clear
        to this party alone."""
        key, _ = self._require_key()
        if msg.epoch != epoch:
            raise RemoteProtocolError(f"FinalShare from {peer} is for epoch {msg.epoch}; this "
                                      f"party keeps epoch {epoch}.")
        theirs = decode_signed(msg.share, key, self.n_weights, peer=peer, what="FinalShare")
        snaps = self.share.snapshots
        own = snaps[epoch] if epoch < len(snaps) else self.share.weights
        F = self.config.score_frac_bits
        total = [a + b for a, b in zip(own, theirs, strict=True)]
        if any(abs(t) >= 1 << (F + MAX_WEIGHT_BITS) for t in total):
            raise RemoteProtocolError(
                f"FinalShare from {peer} gives {self.name} a weight beyond "
                f"±2^{MAX_WEIGHT_BITS}: refused (training diverged, or the share is not the "
                "arbiter's).")
        self.coef = np.array([t / 2.0**F for t in total], dtype=np.float64)
        return self.coef

    def on_decrypted(self, msg: DecryptedGradient, *, peer: str) -> FloatArray:
        """Unmask the arbiter's answer, take an optimiser step; returns the gradient."""
        self._require_key()
        budget = self._require_budget()
        if self._masks is None:
            raise RemoteProtocolError(
                f"Received DecryptedGradient from {peer} but no masked gradient is outstanding."
            )
        expect_batch(msg, self._epoch, self._batch, peer)
        values = decode_residues(msg.residues, budget.width, 1 << budget.masked_bits, peer=peer,
                                 expected=len(self._masks))
        unmasked = [v - m - budget.offset for v, m in zip(values, self._masks, strict=True)]
        self._masks = None
        scale = 2.0 ** (residual_frac_bits(self.config) + self.config.feature_frac_bits)
        grad = np.array([float(v) for v in unmasked]) / scale / (4.0 * self._batch_rows)
        self.coef = self.optimizer.step(self.coef, grad, self._epoch)
        return grad
