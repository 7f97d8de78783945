"""Host role of hetero logistic regression: pure step methods plus the I/O loop."""

from __future__ import annotations

import numpy as np

from vfl.channel import Channel
from vfl.crypto.encoding import quantize
from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import decode_ciphertexts, encode_ciphertexts
from vfl.exceptions import RemoteProtocolError
from vfl.lr._party import GradientParty, QuantizedMatrix, shifted_column
from vfl.lr.config import (
    epoch_batches,
    mask_budget,
    message_limits,
    min_batch_size,
    weight_frac_bits,
)
from vfl.lr.messages import (
    CrossTerm,
    DecryptedGradient,
    EpochDecision,
    HostForward,
    HostHello,
    MaskedGradient,
    PartialScores,
    PublicKeyAnnounce,
    Residual,
    ScoreRequest,
    TrainingResult,
    TrainSetup,
    expect_batch,
)
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.progress import ProgressHook
from vfl.types import FloatArray

__all__ = ["HostParty", "run_host_training", "run_host_scoring"]


class HostParty(GradientParty):
    """One host's side of training.

    What the host learns: the job's hyper-parameters and row count, its own
    gradient ``X_h^T d / b`` per batch (after unmasking), and whether training
    stops. It sees the labels, the guest's features and the other hosts'
    features only through ciphertexts it cannot decrypt.

    Parameters
    ----------
    name : str
    X : ndarray of shape (n_rows, n_features)
        This host's preprocessed features, rows in the PSI order.
    setup : TrainSetup
        The guest's job description; the host checks it against its own data.
    index : int
        This host's position among the hosts (0-based).
    policy : SecurityPolicy
        This host's own limits (e.g. the largest validation share it accepts).
    """

    def __init__(self, name: str, X: FloatArray, setup: TrainSetup, index: int,
                 guest: str = "guest", workers: int | None = None,
                 exponent_bits: int | None = None,
                 policy: SecurityPolicy = DEFAULT_POLICY) -> None:
        cfg = setup.config  # checked as the codec rebuilt it from the guest's bytes
        self.n_rows = X.shape[0]
        super().__init__(name, cfg, X.shape[1], None, workers, exponent_bits)
        self.guest = guest
        self.index = index
        self.model_id = setup.model_id
        if setup.n_rows != X.shape[0]:
            raise RemoteProtocolError(
                f"The guest announced {setup.n_rows} aligned rows but {name} has {X.shape[0]}."
            )
        if len(setup.columns) != len(setup.hosts) + 1 or min(setup.columns) < 1:
            raise RemoteProtocolError("The guest's column counts do not match its host list.")
        if setup.columns[index + 1] != X.shape[1]:
            raise RemoteProtocolError(f"The guest announced a wrong column count for {name}.")
        val = list(setup.validation_rows)
        if len(set(val)) != len(val) or any(not 0 <= r < setup.n_rows for r in val):
            raise RemoteProtocolError(f"The guest's validation rows are not distinct rows of {name}.")
        # the guest's stratified draw rounds each class: allow one row per class over the share
        if len(val) > int(policy.max_validation_share * setup.n_rows) + 2:
            raise RemoteProtocolError(
                f"{guest} holds out {len(val)} of {setup.n_rows} rows for validation "
                f"({len(val) / setup.n_rows:.0%}); {name} scores at most "
                f"{policy.max_validation_share:.0%} of its rows in the clear for validation "
                "(its [security] max_validation_share)."
            )
        n_train = setup.n_rows - len(val)
        widest = max(setup.columns)
        effective = n_train if cfg.batch_size == 0 else min(cfg.batch_size, n_train)
        if effective < min_batch_size(widest):
            raise RemoteProtocolError(
                f"{name} refuses batch size {effective}: with up to {widest} columns per party "
                f"a batch needs at least {min_batch_size(widest)} rows so no party can solve for "
                "the residuals from its gradient."
            )
        self.X = QuantizedMatrix.build(X, cfg.feature_frac_bits)
        self.n_train = n_train
        self.budget = mask_budget(cfg, n_train)
        self.validation_rows = val
        self.snapshots: list[FloatArray] = []
        self._scores: FloatArray | None = None
        self._batch_idx: list[int] = []

    def forward(self, epoch: int, batch: int, rows: list[int]) -> HostForward:
        """Encrypt this host's partial scores ``X_b w_h`` and their square sum."""
        key, rnd = self._require_key()
        F = self.config.score_frac_bits
        h = self.X.values[rows] @ self.coef
        H = quantize(h, F)
        enc = self._require_engine().encrypt(H, F)
        square_sum = sum(int(v) * int(v) for v in H.tolist())
        sq = EncryptedVector.encrypt(key, [square_sum], 2 * F, rnd)
        self._scores = h
        self._batch_idx = rows
        self._epoch, self._batch = epoch, batch
        return HostForward(epoch, batch, encode_ciphertexts(enc), encode_ciphertexts(sq))

    def on_residual(self, msg: Residual) -> tuple[MaskedGradient, CrossTerm | None]:
        """Compute ``[[X_b^T 4d]]``, mask it for the arbiter; cross term for the guest."""
        key, rnd = self._require_key()
        expect_batch(msg, self._epoch, self._batch, self.guest)
        cfg = self.config
        rows = self._batch_idx
        enc = decode_ciphertexts(key, msg.residual, peer=self.guest, what="Residual",
                                 expected_len=len(rows),
                                 frac_bits=cfg.score_frac_bits + weight_frac_bits(cfg))
        engine = self._require_engine()
        grad = engine.matvec_t(self.X.shifted[rows], self.X.offsets, enc, cfg.feature_frac_bits)
        masked = self._mask_and_send(grad, self._epoch, self._batch, len(rows))
        cross = None
        if self.index > 0:
            if msg.earlier_scores is None:
                raise RemoteProtocolError(f"Residual from {self.guest} lacks the earlier scores.")
            earlier = decode_ciphertexts(key, msg.earlier_scores, peer=self.guest,
                                         what="Earlier scores", expected_len=len(rows),
                                         frac_bits=cfg.score_frac_bits)
            assert self._scores is not None
            col, off = shifted_column(self._scores, cfg.feature_frac_bits)
            ct = engine.matvec_t(col[:, None], np.array([off], dtype=np.int64), earlier,
                                 cfg.feature_frac_bits).rerandomize(rnd)
            cross = CrossTerm(self._epoch, self._batch, encode_ciphertexts(ct))
        engine.prefill(len(rows))  # randomisers for the next batch, made while we wait
        return masked, cross


def run_host_training(channel: Channel, name: str, X: FloatArray, *, guest: str, arbiter: str,
                      allow_insecure_key_size: bool = False,
                      progress: ProgressHook | None = None,
                      workers: int | None = None,
                      exponent_bits: int | None = None,
                      policy: SecurityPolicy | None = None) -> tuple[HostParty, int]:
    """Run the host's side of training; returns the party (with ``coef``) and epochs run.

    ``policy``: this host's own limits (default: :data:`~vfl.policy.DEFAULT_POLICY`
    with ``allow_insecure_key_size`` as given).
    """
    progress = progress or ProgressHook()
    if policy is None:
        policy = DEFAULT_POLICY.replace(allow_insecure_key_size=allow_insecure_key_size)
    allow_insecure_key_size = policy.allow_insecure_key_size
    channel.send(guest, HostHello(X.shape[0], X.shape[1]))
    setup = channel.recv(guest, TrainSetup)
    if name not in setup.hosts:
        raise RemoteProtocolError(f"The guest's job does not list host {name!r}.")
    party = HostParty(name, X, setup, setup.hosts.index(name), guest, workers, exponent_bits,
                      policy)
    limits = message_limits(party.config, setup.n_rows, party.n_train, list(setup.columns))
    channel.limit_message_size(guest, limits["guest_to_host"])
    channel.limit_message_size(arbiter, limits["arbiter_to_party"])
    try:
        epochs_run = _host_loop(channel, party, setup, guest=guest, arbiter=arbiter,
                                allow_insecure_key_size=allow_insecure_key_size,
                                progress=progress)
    finally:
        party.close()
    return party, epochs_run


def _host_loop(channel: Channel, party: HostParty, setup: TrainSetup, *, guest: str,
               arbiter: str, allow_insecure_key_size: bool, progress: ProgressHook) -> int:
    party.on_public_key(channel.recv(arbiter, PublicKeyAnnounce), peer=arbiter,
                        allow_insecure_key_size=allow_insecure_key_size)
    cfg = party.config
    epochs_run = 0
    val = party.validation_rows
    for epoch in range(cfg.epochs):
        plan = epoch_batches(setup.n_rows, val, cfg, epoch)
        if epoch == 0:
            progress.on_start(cfg.epochs, len(plan))
        for b, rows in enumerate(plan):
            channel.send(guest, party.forward(epoch, b, rows))
            masked, cross = party.on_residual(channel.recv(guest, Residual))
            channel.send(arbiter, masked)
            if cross is not None:
                channel.send(guest, cross)
            party.on_decrypted(channel.recv(arbiter, DecryptedGradient), peer=arbiter)
            progress.on_batch(epoch, b, len(plan))
        if val:
            run_host_scoring(channel, party.X.values[val] @ party.coef, party.model_id,
                             guest=guest)
            party.snapshots.append(party.coef.copy())
        decision = channel.recv(arbiter, EpochDecision)
        if decision.epoch != epoch:
            raise RemoteProtocolError(f"EpochDecision from {arbiter} is for epoch {decision.epoch}.")
        epochs_run = epoch + 1
        progress.on_epoch(epoch, None)
        if decision.stop:
            break
    if val:
        result = channel.recv(guest, TrainingResult)
        if not 0 <= result.best_epoch < len(party.snapshots):
            raise RemoteProtocolError(f"{guest} named epoch {result.best_epoch} as best; "
                                      f"{len(party.snapshots)} epochs ran.")
        party.coef = party.snapshots[result.best_epoch].copy()
    return epochs_run


def run_host_scoring(channel: Channel, scores: FloatArray, model_id: str, *, guest: str) -> None:
    """Answer one scoring request with this host's partial scores ``X_h w_h``."""
    req = channel.recv(guest, ScoreRequest)
    if req.model_id != model_id:
        raise RemoteProtocolError(
            f"{guest} asks for scores of model {req.model_id!r}; this host holds {model_id!r}."
        )
    if req.n_rows != scores.shape[0]:
        raise RemoteProtocolError(
            f"{guest} expects {req.n_rows} aligned scoring rows; this host has {scores.shape[0]}."
        )
    channel.send(guest, PartialScores(model_id, np.asarray(scores, dtype=np.float64)))
