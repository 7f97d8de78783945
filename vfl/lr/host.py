"""Host role of hetero logistic regression: state and pure step methods, no I/O.

:class:`HostParty` is a host's side of training and :class:`HostScoring` its
side of one scoring request; :mod:`vfl.lr.driver` runs them over a channel in
the order of :mod:`vfl.lr.schedule`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from vfl.checkpoint import CheckpointError, PartyCheckpoint
from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import decode_ciphertexts, encode_ciphertexts
from vfl.exceptions import ConfigError, LocalProtocolError, RemoteProtocolError
from vfl.lr._party import GradientParty, QuantizedMatrix, shifted_column
from vfl.lr._shared import check_guest_equations
from vfl.lr.config import (
    CURVATURE_CLIP,
    epoch_batches,
    mask_budget,
    min_batch_size,
    residual_frac_bits,
    squares_due,
)
from vfl.lr.messages import (
    MAX_POINTS_SCALE,
    CrossTerm,
    EpochDecision,
    HostForward,
    HostHello,
    MaskedGradient,
    PartialScores,
    Residual,
    ScoreRequest,
    TrainingResult,
    TrainSetup,
    ValidationScores,
    expect_batch,
)
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.types import FloatArray, IntArray

__all__ = ["HostParty", "HostScoring", "host_hello", "answer_score_request", "PointsFn"]


def host_hello(X: FloatArray) -> HostHello:
    """A host's first message: its aligned row count and number of feature columns."""
    return HostHello(X.shape[0], X.shape[1])


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
        if setup.n_validation != len(val):
            raise RemoteProtocolError(
                f"{guest}'s TrainSetup lists {len(val)} validation rows but announces "
                f"{setup.n_validation}.")
        if len(set(val)) != len(val) or any(not 0 <= r < setup.n_rows for r in val):
            raise RemoteProtocolError(f"The guest's validation rows are not distinct rows of {name}.")
        # the guest's stratified draw rounds each class: allow one row per class over the share
        if len(val) > int(policy.max_validation_share * setup.n_rows) + 2:
            raise RemoteProtocolError(
                f"{guest} holds out {len(val)} of {setup.n_rows} rows for validation "
                f"({len(val) / setup.n_rows:.0%}); {name} accepts at most "
                f"{policy.max_validation_share:.0%} of its rows for validation "
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
        if cfg.protocol == "shared":
            try:
                check_guest_equations(cfg, n_train)
            except ConfigError as exc:
                raise RemoteProtocolError(f"{name} refuses the job of {guest}: {exc}") from None
        self.X = QuantizedMatrix.build(X, cfg.feature_frac_bits)
        self.n_train = n_train
        self.budget = mask_budget(cfg, n_train)
        self.validation_rows = val
        self.hosts = list(setup.hosts)
        self.snapshots: list[FloatArray] = []
        self.best_epoch: int | None = None
        self._scores: FloatArray | None = None
        self._batch_idx: list[int] = []

    @classmethod
    def from_setup(cls, name: str, X: FloatArray, setup: TrainSetup, guest: str = "guest",
                   workers: int | None = None, exponent_bits: int | None = None,
                   policy: SecurityPolicy = DEFAULT_POLICY) -> HostParty:
        """The host ``name`` of the guest's job, at its position in the job's host list."""
        if name not in setup.hosts:
            raise RemoteProtocolError(f"The guest's job does not list host {name!r}.")
        return cls(name, X, setup, setup.hosts.index(name), guest, workers, exponent_bits,
                   policy)

    def batches(self, epoch: int) -> list[list[int]]:
        """Row indices of each mini-batch of ``epoch`` (as the guest computes them)."""
        return epoch_batches(self.n_rows, self.validation_rows, self.config, epoch)

    def forward(self, epoch: int, batch: int, rows: list[int]) -> HostForward:
        """Encrypt this host's partial scores ``X_b w_h``, with their square sum (Taylor mode)
        or the clipped squares of the batch rows that are due (accurate mode,
        :func:`~vfl.lr.config.squares_due`), in batch order.

        Protocol ``shared``: ``[[X_b U + X_b [[V]]]]`` from its own weight share ``U`` and
        the arbiter's encrypted one, fresh randomness added; nothing else (the guest
        squares joint values with the arbiter)."""
        key, rnd = self._require_key()
        if self.shared:
            none = encode_ciphertexts(EncryptedVector(key, [], 0))
            X = self.X
            enc = self._shared_scores(X.shifted[rows], X.offsets,
                                      X.shifted[rows] - X.offsets, fresh=True)
            self._batch_idx = rows
            self._epoch, self._batch = epoch, batch
            return HostForward(epoch, batch, encode_ciphertexts(enc), none, none)
        F = self.config.score_frac_bits
        h = self.X.values[rows] @ self.coef
        H = self._quantized_scores(h, epoch, batch, set_by=self.guest)
        engine = self._require_engine()
        enc = engine.encrypt(H, F)
        none = encode_ciphertexts(EncryptedVector(key, [], F))
        if self.config.mode == "taylor":
            square_sum = sum(int(v) * int(v) for v in H.tolist())
            sq = EncryptedVector.encrypt(key, [square_sum], 2 * F, rnd)
            forward = HostForward(epoch, batch, encode_ciphertexts(enc), encode_ciphertexts(sq),
                                  none)
        else:
            due = np.flatnonzero(squares_due(self.config, epoch, rows))  # type: ignore[arg-type]
            squares = none
            if due.size:
                q = clipped_squares(self.X.values[[rows[i] for i in due]], self.coef, F)
                squares = encode_ciphertexts(engine.encrypt(q, F))
            forward = HostForward(epoch, batch, encode_ciphertexts(enc), none, squares)
        self._scores = h
        self._batch_idx = rows
        self._epoch, self._batch = epoch, batch
        return forward

    def on_residual(self, msg: Residual) -> tuple[MaskedGradient, CrossTerm | None]:
        """Compute ``[[X_b^T 4d]]``, mask it for the arbiter; cross term for the guest."""
        key, rnd = self._require_key()
        expect_batch(msg, self._epoch, self._batch, self.guest)
        cfg = self.config
        rows = self._batch_idx
        enc = decode_ciphertexts(key, msg.residual, peer=self.guest, what="Residual",
                                 expected_len=len(rows),
                                 frac_bits=residual_frac_bits(cfg))
        engine = self._require_engine()
        grad = engine.matvec_t(self.X.shifted[rows], self.X.offsets, enc, cfg.feature_frac_bits)
        masked = self._mask_and_send(grad, self._epoch, self._batch, len(rows))
        cross = None
        if cfg.mode == "accurate" or self.shared:
            if msg.earlier_scores is not None:  # no cross terms in accurate mode
                raise RemoteProtocolError(f"Residual from {self.guest} carries earlier hosts' "
                                          "scores, which this job never sends.")
        elif self.index > 0:
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
        # randomisers for the next batch (and its share of squares), made while we wait
        share = 1.0 + (1.0 / cfg.curvature_every
                       if cfg.mode == "accurate" and not self.shared else 0.0)
        engine.prefill(int(len(rows) * share))
        return masked, cross

    # ------------------------------------------------------------ epoch end
    def validation_scores(self, epoch: int) -> ValidationScores:
        """``[[X_v w_h]]`` on the validation rows with this epoch's weights, for the guest.

        Encrypted: the guest adds its own scores and passes the sums to the
        arbiter in a secret order, so no host score of a validation row
        reaches the guest in the clear. Keeps this epoch's weights, in case the
        guest names the epoch best.
        """
        self._require_key()
        val = self.validation_rows
        if self.shared:
            X = self.X
            enc = self._shared_scores(X.shifted[val], X.offsets, X.shifted[val] - X.offsets,
                                      fresh=True)
            self.share.snapshot()
            return ValidationScores(epoch, encode_ciphertexts(enc))
        H = self._quantized_scores(self.X.values[val] @ self.coef, epoch, 0, set_by=self.guest)
        enc = self._require_engine().encrypt(H, self.config.score_frac_bits)
        self.snapshots.append(self.coef.copy())
        return ValidationScores(epoch, encode_ciphertexts(enc))

    def checkpoint(self, *, job: str, epochs_done: int, stopped: bool, setup_digest: bytes,
                   key_fingerprint: bytes, data_digest: bytes,
                   batches_done: int = 0) -> PartyCheckpoint:
        """This host's state after ``epochs_done`` epochs and ``batches_done`` batches of
        the next."""
        return PartyCheckpoint("host", self.name, job, self.model_id, epochs_done, stopped,
                               setup_digest, key_fingerprint, data_digest, guest=None,
                               sealed=b"", batches_done=batches_done,
                               **self.checkpoint_fields())

    def restore(self, ckpt: PartyCheckpoint) -> None:
        """Continue from ``ckpt``: weights, optimiser state, per-epoch weights."""
        if ckpt.model_id != self.model_id:
            raise CheckpointError(f"The checkpoint of {self.name} is of model {ckpt.model_id}; "
                                  f"the guest resumes model {self.model_id}: refused.")
        self.restore_fields(ckpt)

    def on_decision(self, msg: EpochDecision, epoch: int, *, peer: str) -> bool:
        """Check the arbiter's decision for ``epoch``; whether training stops."""
        if msg.epoch != epoch:
            raise RemoteProtocolError(f"EpochDecision from {peer} is for epoch {msg.epoch}.")
        return msg.stop

    def on_training_result(self, msg: TrainingResult) -> None:
        """Keep the weights of the epoch the guest names best (protocol ``shared``: this
        host's share of them, until the arbiter's :class:`FinalShare`)."""
        ran = len(self.share.snapshots) if self.shared else len(self.snapshots)
        if not 0 <= msg.best_epoch < ran:
            raise RemoteProtocolError(f"{self.guest} named epoch {msg.best_epoch} as best; "
                                      f"{ran} epochs ran.")
        self.best_epoch = msg.best_epoch
        if not self.shared:
            self.coef = self.snapshots[msg.best_epoch].copy()


def clipped_squares(X: FloatArray, coef: FloatArray, frac_bits: int) -> IntArray:
    """``Q_F(clip(X w, ±CURVATURE_CLIP)²)``: a host's second-order term in accurate mode.

    Computed from the quantised scores (``Q_F(X w)``) so that the plaintext
    reference squares exactly the values the host encrypts as its scores.
    """
    from vfl.crypto.encoding import dequantize, quantize

    h = dequantize(quantize(X @ coef, frac_bits), frac_bits)
    c = np.clip(h, -CURVATURE_CLIP, CURVATURE_CLIP)
    return quantize(c * c, frac_bits)


#: A host's points for a scale: its integer points per aligned scoring row (from its points
#: table; see :mod:`vfl.scorecard`). The caller builds it; the protocol only checks the result.
PointsFn = Callable[[float], IntArray]


def answer_score_request(msg: ScoreRequest, scores: FloatArray, model_id: str, *,
                         guest: str, points: PointsFn | None = None) -> PartialScores:
    """This host's partial scores (and points), if the request fits this model and these rows.

    ``points`` gives the host's integer points per row for the requested
    scale (None: this host serves no points). A request for points at a scale
    that is not finite, not positive or above ``MAX_POINTS_SCALE`` is refused.
    """
    if msg.model_id != model_id:
        raise RemoteProtocolError(
            f"{guest} asks for scores of model {msg.model_id!r}; this host holds {model_id!r}."
        )
    if msg.n_rows != scores.shape[0]:
        raise RemoteProtocolError(
            f"{guest} expects {msg.n_rows} aligned scoring rows; this host has {scores.shape[0]}."
        )
    scale = msg.scale
    if not isinstance(scale, float) or not math.isfinite(scale) or not (
            scale == 0.0 or 0.0 < scale <= MAX_POINTS_SCALE):
        raise RemoteProtocolError(
            f"{guest} asks for scorecard points at scale {scale!r}; a host accepts 0 (no "
            f"points) or a finite scale in (0, {MAX_POINTS_SCALE:g}] (pdo / ln 2 times the "
            "calibration slope).")
    if scale == 0.0:
        return PartialScores(model_id, np.asarray(scores, dtype=np.float64))
    if points is None:
        raise RemoteProtocolError(f"{guest} asks for scorecard points; this host serves none.")
    p = np.asarray(points(scale))
    if p.dtype != np.int64 or p.shape != scores.shape:
        raise LocalProtocolError(f"The host's points have dtype {p.dtype} and shape {p.shape}; "
                                 f"expected int64 of shape {scores.shape}.")
    return PartialScores(model_id, np.asarray(scores, dtype=np.float64), p)


class HostScoring:
    """A host's side of one scoring request: its partial scores ``X_h w_h``.

    What the host learns: that the guest scores this many aligned rows, and
    the scorecard scale when points are asked (``pdo / ln 2`` times the
    guest's calibration slope).

    Parameters
    ----------
    scores : ndarray of shape (n_rows,)
    model_id, guest : str
    points : callable, optional
        ``points(scale)``: this host's integer points per row from its own
        points table (None: the host serves no points).
    """

    def __init__(self, scores: FloatArray, model_id: str, guest: str,
                 points: PointsFn | None = None) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)
        self.model_id = model_id
        self.guest = guest
        self.points = points

    def on_score_request(self, msg: ScoreRequest) -> PartialScores:
        """Check the guest's request and answer it."""
        return answer_score_request(msg, self.scores, self.model_id, guest=self.guest,
                                    points=self.points)
