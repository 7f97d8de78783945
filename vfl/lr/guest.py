"""Guest role of hetero logistic regression: state and pure step methods, no I/O.

:class:`GuestParty` is the guest's side of training and :class:`GuestScoring`
its side of one scoring request; :mod:`vfl.lr.driver` runs them over a
channel in the order of :mod:`vfl.lr.schedule`.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import uuid

import numpy as np

from vfl.checkpoint import CheckpointError, GuestState, PartyCheckpoint, Position, where
from vfl.crypto.encoding import quantize
from vfl.crypto.store import CiphertextStore
from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import decode_ciphertexts, encode_ciphertexts
from vfl.exceptions import ConfigError, LocalProtocolError, RemoteProtocolError
from vfl.lr._party import (
    GradientParty,
    QuantizedMatrix,
    shifted_column,
)
from vfl.lr._shared import (
    check_guest_equations,
    expansion_point,
    int_matvec,
    secret_order,
    square_slot_bits,
)
from vfl.lr.config import (
    CLASS_WEIGHT_BITS,
    CURVATURE_FRAC_BITS,
    MIN_VALIDATION_ROWS,
    VALIDATION_SLOT_BITS,
    WEIGHT_BITS,
    TrainConfig,
    epoch_batches,
    loss_frac_bits,
    mask_budget,
    min_batch_size,
    residual_frac_bits,
    row_weights,
    score_scale_bits,
    selection_key,
    shared_squares_due,
    squares_due,
    validation_split,
    weight_frac_bits,
)
from vfl.lr.messages import (
    MAX_POINTS_SCALE,
    MAX_ROW_POINTS,
    CalibrationReport,
    CalibrationRequest,
    CrossTerm,
    EpochDecision,
    EpochLoss,
    HostForward,
    HostHello,
    MaskedGradient,
    PartialScores,
    Residual,
    ScoreRequest,
    ShareUpdate,
    TrainingResult,
    TrainSetup,
    ValidationBatch,
    ValidationMetrics,
    ValidationScores,
    expect_batch,
)
from vfl.types import FloatArray, IntArray

__all__ = ["GuestParty", "GuestScoring", "check_partial_scores", "check_host_points",
           "initial_guest_coef"]

LOG2 = math.log(2.0)
#: Smallest spread of the secret start accepted (measured: the lattice attack is
#: at chance from 0.1 on, and recovers 64/64 labels at 0.001; hetero_lr.md).
MIN_INIT_SCORE_STD = 0.25
#: Smallest spread of the whole initial guest score ``X w0`` accepted for any start
#: (warm part and random part together; the lattice attack is at chance from 0.1).
MIN_START_SPREAD = 0.1


class GuestParty(GradientParty):
    """The guest's side of training.

    What the guest learns: the hosts' row and column counts, its own gradient
    ``X_g^T d / b`` per batch (after unmasking), and the epoch loss. It sees
    host scores and cross terms only as ciphertexts it cannot decrypt.

    Its own weights start from a secret random point (``initial_guest_coef``)
    so that no batch presents residuals with a discrete structure a host could
    solve for the labels; the validation rows are drawn with ``secrets``.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The guest's preprocessed features, rows in the PSI order.
    y : ndarray of shape (n_rows,)
        Labels in {0, 1}.
    config : TrainConfig
    hosts : list of str
    initial_coef : ndarray, optional
        The guest's starting weights (intercept last). Default: a fresh secret
        random start, :func:`initial_guest_coef` with ``init_score_std``.
    init_score_std : float
        Standard deviation of the guest's initial scores on its training rows.
    """

    def __init__(self, name: str, X: FloatArray, y: FloatArray, config: TrainConfig,
                 hosts: list[str], model_id: str | None = None,
                 workers: int | None = None, exponent_bits: int | None = None,
                 validation_rows: list[int] | None = None,
                 initial_coef: FloatArray | None = None,
                 init_score_std: float = 0.5) -> None:
        cfg = config
        k = X.shape[1] + (1 if cfg.fit_intercept else 0)
        self.n_rows = X.shape[0]
        super().__init__(name, cfg, k, X.shape[1] if cfg.fit_intercept else None, workers,
                         exponent_bits)
        self.hosts = list(hosts)
        self.model_id = model_id or uuid.uuid4().hex
        self.y_pm = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
        self.X = QuantizedMatrix.build(X, cfg.feature_frac_bits)
        self.n_rows = X.shape[0]
        self.validation_rows = (sorted(int(r) for r in validation_rows)
                                if validation_rows is not None
                                else validation_split(y, cfg.validation_fraction))
        if self.validation_rows and len(self.validation_rows) < MIN_VALIDATION_ROWS:
            raise ConfigError(
                f"{len(self.validation_rows)} validation rows are too few for validation figures "
                f"(at least {MIN_VALIDATION_ROWS}): raise validation_fraction, give larger "
                "validation tables, or set validation_fraction 0.")
        self.n_train = self.n_rows - len(self.validation_rows)
        train = np.setdiff1d(np.arange(self.n_rows), np.asarray(self.validation_rows, np.int64))
        self.weights = row_weights((np.asarray(y) > 0.5).astype(np.int64), cfg, train)
        if self.weights is not None and int(np.max(np.asarray(self.weights))) >= 1 << (
                WEIGHT_BITS + CLASS_WEIGHT_BITS):
            raise ConfigError(f"Class weights above {2 ** CLASS_WEIGHT_BITS} are not supported.")
        self.budget = mask_budget(cfg, self.n_train)
        self.validation_history: list[dict[str, float]] = []
        self.calibration: CalibrationReport | None = None
        self.snapshots: list[FloatArray] = []
        self.best_epoch: int | None = None
        if initial_coef is not None:
            init = np.asarray(initial_coef, dtype=np.float64).ravel()
            if init.shape != (k,) or not np.all(np.isfinite(init)):
                raise ConfigError(f"initial_coef must hold {k} finite numbers (intercept last).")
        else:
            init = initial_guest_coef(self.X.values[train], self.y_pm[train],
                                      fit_intercept=cfg.fit_intercept,
                                      score_std=init_score_std)
        self.coef = init.copy()
        #: the secret random start (kept by the guest only; lets a run be replayed)
        self.initial_coef = init.copy()
        if self.shared:
            # protocol shared: the start is the guest's own share (the arbiter's is 0); the
            # projection matrix carries a column of 2^G for the intercept
            self._start_share(init)
            G = cfg.feature_frac_bits
            Xs, off = self.X.shifted, self.X.offsets
            self._signed = Xs - off
            if cfg.fit_intercept:
                Xs = np.hstack([Xs, np.full((Xs.shape[0], 1), 1 << G, dtype=np.int64)])
                off = np.append(off, 0).astype(np.int64)
            self._xi_shifted, self._xi_offsets = Xs, off
            #: accurate mode: the weights the guest expands around for the whole run, its
            #: own model fitted alone before training (integers at 2^F, intercept last;
            #: empty in the Taylor mode, which expands around 0)
            self._expansion: list[int] = []
            if cfg.mode == "accurate":
                self._expansion = expansion_point(
                    self.X.values[train], (self.y_pm[train] + 1.0) / 2.0,
                    None if self.weights is None else np.asarray(self.weights)[train],
                    fit_intercept=cfg.fit_intercept, frac_bits=cfg.score_frac_bits)
            check_guest_equations(cfg, self.n_train)
        self._sq: tuple[list[int], EncryptedVector] | None = None
        self.loss_history: list[float] = []
        self._hellos: dict[str, HostHello] = {}
        self._forwards: dict[str, HostForward] = {}
        self._validation_scores: dict[str, EncryptedVector] = {}
        self._rows: list[int] = []
        self._loss_acc: EncryptedVector | None = None
        self._loss_parts: list[EncryptedVector] = []
        self._p_float: FloatArray | None = None
        #: accurate mode: the hosts' latest encrypted clipped squares of each row (summed),
        #: on local disk (made when the key is known; memory: one flag per row)
        self._squares: CiphertextStore | None = None
        self._h_total: EncryptedVector | None = None
        self._q_batch: EncryptedVector | None = None
        #: resuming: the position of the guest's own newest checkpoint ((0, 0): a fresh run),
        #: and every position it holds a checkpoint of
        self.checkpoint_at: Position = (0, 0)
        self.checkpoints_held: list[Position] = []
        #: checkpoints within an epoch: every this many batches (0: at epoch ends only)
        self.checkpoint_every = 0

    # ----------------------------------------------------------- checkpoints
    def checkpoint(self, *, job: str, epochs_done: int, stopped: bool, setup_digest: bytes,
                   key_fingerprint: bytes, data_digest: bytes,
                   batches_done: int = 0) -> PartyCheckpoint:
        """This guest's state after ``epochs_done`` epochs and ``batches_done`` batches of
        the next (the stored squares stay in :attr:`squares`; the driver writes them beside
        the checkpoint)."""
        hist = self.validation_history
        validation = np.array([[h["epoch"], h["auc"], h["ks"], h["loss"], h["brier"]]
                               for h in hist], dtype=np.float64).reshape(len(hist), 5)
        present = b"" if self._squares is None else np.packbits(self._squares.present).tobytes()
        if batches_done and self._loss_acc is None:
            raise LocalProtocolError("A checkpoint within an epoch needs the epoch's loss sum.")
        loss_sum = (encode_ciphertexts(self._loss_acc)
                    if batches_done and self._loss_acc is not None else None)
        state = GuestState(self.initial_coef.copy(),
                           np.asarray(self.validation_rows, dtype=np.int64),
                           np.asarray(self.loss_history, dtype=np.float64), validation,
                           present, b"", loss_sum)
        return PartyCheckpoint("guest", self.name, job, self.model_id, epochs_done, stopped,
                               setup_digest, key_fingerprint, data_digest,
                               guest=state, sealed=b"", batches_done=batches_done,
                               **self.checkpoint_fields())

    @property
    def squares(self) -> CiphertextStore | None:
        """The accurate mode's stored squares (``None`` in the Taylor mode or before a key)."""
        return self._squares

    def restore(self, ckpt: PartyCheckpoint, squares: str | None = None) -> None:
        """Continue from ``ckpt`` (after the key is known): weights, histories, squares.

        ``squares``: the checkpoint's squares file (accurate mode).
        """
        state = ckpt.guest
        if state is None:
            raise CheckpointError(f"The checkpoint of {self.name} is not a guest's.")
        if (list(state.validation_rows.tolist()) != list(self.validation_rows)
                or not np.array_equal(state.initial_coef, self.initial_coef)):
            raise CheckpointError(f"The checkpoint of {self.name} was made with another "
                                  "validation split or start: refused.")
        self.restore_fields(ckpt)
        self._loss_acc = None
        if ckpt.batches_done:  # within an epoch: the loss sum of its batches so far
            key, _ = self._require_key()
            if state.loss_sum is None:
                raise CheckpointError(f"The checkpoint of {self.name} within epoch "
                                      f"{ckpt.epochs_done + 1} lacks the epoch's loss sum.")
            scale = loss_frac_bits(self.config)
            try:
                self._loss_acc = decode_ciphertexts(
                    key, state.loss_sum, peer=f"{self.name}'s checkpoint", what="loss sum",
                    expected_len=1, frac_bits=scale)
            except RemoteProtocolError as exc:
                raise CheckpointError(str(exc)) from None
        self.loss_history = [float(v) for v in state.loss_history]
        self.validation_history = [
            {"epoch": int(r[0]), "auc": float(r[1]), "ks": float(r[2]), "loss": float(r[3]),
             "brier": float(r[4])} for r in state.validation]
        if state.squares_present:
            key, _ = self._require_key()
            present = np.unpackbits(np.frombuffer(state.squares_present, dtype=np.uint8),
                                    count=self.n_rows).astype(bool)
            if squares is None or len(state.squares_present) != (self.n_rows + 7) // 8:
                raise CheckpointError(f"The checkpoint of {self.name} lacks its stored squares.")
            if self._squares is None:
                self._squares = CiphertextStore(self.n_rows, key.ciphertext_bytes)
            self._squares.load(squares, present)

    def close(self) -> None:
        """Stop the worker processes and delete the stored squares, if any."""
        if self._squares is not None:
            self._squares.close()
            self._squares = None
        super().close()

    # ----------------------------------------------------------------- setup
    def on_hello(self, host: str, msg: HostHello) -> None:
        """Keep a host's announced shape (checked by :meth:`setup`)."""
        if host not in self.hosts:
            raise LocalProtocolError(f"HostHello from {host!r}, which is not a host of this job.")
        self._hellos[host] = msg

    def setup(self, hellos: dict[str, HostHello] | None = None) -> TrainSetup:
        """Check the hosts' shapes and the batch-size guardrail; describe the job.

        ``hellos``: every host's ``HostHello`` (default: those given to :meth:`on_hello`).
        """
        hellos = self._hellos if hellos is None else hellos
        missing = [h for h in self.hosts if h not in hellos]
        if missing:
            raise LocalProtocolError(f"Setup before the HostHello of {', '.join(missing)}.")
        columns = [self.n_weights]
        for host in self.hosts:
            hello = hellos[host]
            if hello.n_rows != self.n_rows:
                raise RemoteProtocolError(
                    f"{host} has {hello.n_rows} aligned rows; the guest has {self.n_rows}."
                )
            if hello.n_features < 1:
                raise RemoteProtocolError(f"{host} announced no feature columns.")
            columns.append(hello.n_features)
        effective = self.n_train if self.config.batch_size == 0 else min(self.config.batch_size,
                                                                        self.n_train)
        need = min_batch_size(max(columns))
        if effective < need and effective >= min_batch_size(columns[0]):
            wide = next(h for h, k in zip(self.hosts, columns[1:], strict=True) if k == max(columns))
            raise RemoteProtocolError(
                f"{wide} announced {max(columns)} feature columns: a batch then needs at least "
                f"{need} rows, and this job's batches have {effective}. Raise batch_size (and "
                "the intersection must allow it), or give that host fewer columns. See "
                "protocols/specs/hetero_lr.md, 'Batch-size guardrail'."
            )
        if effective < need:
            raise ConfigError(
                f"Batch size {effective} is too small: with up to {max(columns)} columns per "
                f"party a batch needs at least {need} rows (and the intersection has "
                f"{self.n_train} training rows). See protocols/specs/hetero_lr.md, "
                "'Batch-size guardrail'."
            )
        # resume from the newest position every party holds ((0, 0) if one holds none): the
        # newest the guest holds at or before every host's offer (a party may still hold a
        # later position of an earlier run, or of another checkpoint interval); each host
        # checks that it holds the position chosen
        offers = {h: (hellos[h].checkpoint_epochs, hellos[h].checkpoint_batches)
                  for h in self.hosts}
        n_batches = len(self.batches(0))
        for h, offer in offers.items():
            if offer[1] >= n_batches:
                raise RemoteProtocolError(
                    f"{h} offers to resume from {where(offer)}; an epoch of this job has "
                    f"{n_batches} batches.")
        resume: Position = (0, 0)
        if any(self.checkpoint_at) and all(map(any, offers.values())):
            lowest = min(offers, key=offers.__getitem__)
            bound = min(self.checkpoint_at, offers[lowest])
            shared = [p for p in self.checkpoints_held or [self.checkpoint_at] if p <= bound]
            if not shared:
                raise RemoteProtocolError(
                    f"{lowest} offers to resume from {where(offers[lowest])}; {self.name} holds "
                    f"checkpoints of {', '.join(map(where, self.checkpoints_held))}, so the "
                    "parties share no position to resume from (a checkpoint folder restored "
                    "from elsewhere?).")
            resume = max(shared)
        return TrainSetup(self.model_id, self.config, self.n_rows, self.hosts, columns,
                          self.validation_rows, len(self.validation_rows), resume[0],
                          resume[1], self.checkpoint_every)

    def arbiter_setup(self, setup: TrainSetup) -> TrainSetup:
        """The job as the arbiter sees it: the training row count only, no validation rows."""
        return dataclasses.replace(setup, n_rows=self.n_train, validation_rows=[])

    def batches(self, epoch: int) -> list[list[int]]:
        """Row indices of each mini-batch of ``epoch`` (the training rows only)."""
        return epoch_batches(self.n_rows, self.validation_rows, self.config, epoch)

    # ----------------------------------------------------------------- batch
    def partial_scores(self, rows: list[int]) -> FloatArray:
        """``X_b w_g (+ intercept)`` on the quantised features."""
        k = self.X.values.shape[1]
        g = self.X.values[rows] @ self.coef[:k]
        if self.config.fit_intercept:
            g = g + self.coef[k]
        return g

    def on_forward(self, host: str, msg: HostForward, epoch: int, batch: int) -> None:
        """Keep a host's encrypted partial scores for this batch."""
        expect_batch(msg, epoch, batch, host)
        self._forwards[host] = msg

    def residuals(self, epoch: int, batch: int, rows: list[int]) -> dict[str, Residual]:
        """Form ``[[4d]]``, re-randomised, for every host.

        Taylor mode: ``[[4d]] = [[sum_k H_k]] + round((g - 2y) 2^F)``. Accurate
        mode: ``[[4d]] = c1 [[h]] + c2 [[q]] + round(4(σ(g) - y) 2^(F+E))`` with
        ``c1 = Q_E(4σ'(g))``, ``c2 = Q_E(2σ''(g))`` per row (``hetero_lr.md``,
        "Accurate mode").
        """
        key, rnd = self._require_key()
        cfg = self.config
        F = cfg.score_frac_bits
        if set(self._forwards) != set(self.hosts):
            raise LocalProtocolError("Residuals requested before every host's scores arrived.")
        if self.shared:
            return self._shared_residuals(epoch, batch, rows)
        if cfg.mode == "accurate":
            return self._accurate_residuals(epoch, batch, rows)
        host_scores = [
            decode_ciphertexts(key, self._forwards[h].scores, peer=h, what="HostForward",
                               expected_len=len(rows), frac_bits=F)
            for h in self.hosts
        ]
        squares = [
            decode_ciphertexts(key, self._forwards[h].square_sum, peer=h, what="HostForward",
                               expected_len=1, frac_bits=2 * F)
            for h in self.hosts
        ]
        for h in self.hosts:
            decode_ciphertexts(key, self._forwards[h].squares, peer=h, what="HostForward squares",
                               expected_len=0, frac_bits=F)
        g = self.partial_scores(rows)
        p = g - 2.0 * self.y_pm[rows]
        P = self._quantized_scores(p, epoch, batch, set_by=None)
        total = host_scores[0]
        earlier: list[EncryptedVector | None] = [None]
        for enc in host_scores[1:]:
            earlier.append(total)
            total = total.add(enc)
        engine = self._require_engine()
        raw = total.add_plain(P)
        self._d4_raw = raw
        if self.weights is not None:
            w = self.weights[rows]  # type: ignore[index]
            raw = raw.mul_elementwise(w.tolist()).at_scale(F + weight_frac_bits(cfg))
        d4 = engine.rerandomize(raw)
        self._d4 = d4
        self._rows = rows
        self._p_float = p
        self._P = P
        self._epoch, self._batch = epoch, batch
        self._loss_parts = list(squares)
        # plaintext part of 8 * sum_i [log 2 - y g / 2 + g^2 / 8], at scale 2^(2F)
        plain = float(np.sum(8.0 * LOG2 - 4.0 * self.y_pm[rows] * g + g * g))
        self._plain_loss = int(round(plain * 2.0 ** (2 * F)))
        out = {}
        wire_d4 = encode_ciphertexts(d4)
        for i, host in enumerate(self.hosts):
            e = earlier[i]
            out[host] = Residual(epoch, batch, wire_d4,
                                 None if e is None else encode_ciphertexts(engine.rerandomize(e)))
        self._forwards = {}
        return out

    def _accurate_residuals(self, epoch: int, batch: int, rows: list[int]) -> dict[str, Residual]:
        key, _ = self._require_key()
        cfg = self.config
        F, E = cfg.score_frac_bits, CURVATURE_FRAC_BITS
        due = np.flatnonzero(squares_due(cfg, epoch, rows))  # type: ignore[arg-type]
        total: EncryptedVector | None = None
        fresh: EncryptedVector | None = None
        for h in self.hosts:
            fwd = self._forwards[h]
            enc = decode_ciphertexts(key, fwd.scores, peer=h, what="HostForward",
                                     expected_len=len(rows), frac_bits=F)
            decode_ciphertexts(key, fwd.square_sum, peer=h, what="HostForward square sum",
                               expected_len=0, frac_bits=F)
            sq = decode_ciphertexts(key, fwd.squares, peer=h, what="HostForward squares",
                                    expected_len=len(due), frac_bits=F)
            total = enc if total is None else total.add(enc)
            if len(due):
                fresh = sq if fresh is None else fresh.add(sq)
        assert total is not None
        if self._squares is None:
            self._squares = CiphertextStore(self.n_rows, key.ciphertext_bytes)
        if fresh is not None:
            self._squares.put([rows[i] for i in due.tolist()], fresh.ciphertexts)
        # rows without squares yet (before their first refresh) have no second-order term:
        # their factor is 0 and their own [[h]] stands in (a power 0 is skipped)
        stored = self._squares.get(rows)
        have = np.array([c is not None for c in stored], dtype=bool)
        q: EncryptedVector | None = None
        if have.any():
            q = EncryptedVector(key, [s if s is not None else c for s, c in
                                      zip(stored, total.ciphertexts, strict=True)], F)
        self._have = have
        g = self._guest_scores_checked(rows, epoch, batch)
        sig = 1.0 / (1.0 + np.exp(-g))
        y01 = (self.y_pm[rows] + 1.0) / 2.0
        c1 = quantize(4.0 * sig * (1.0 - sig), E)
        c2 = quantize(2.0 * sig * (1.0 - sig) * (1.0 - 2.0 * sig), E) * have
        plain = quantize(4.0 * (sig - y01), F + E).tolist()
        if self.weights is not None:
            w = self.weights[rows]  # type: ignore[index]
            c1, c2 = c1 * w, c2 * w
            plain = [int(a) * int(b) for a, b in zip(plain, w.tolist(), strict=True)]
        engine = self._require_engine()
        scale = residual_frac_bits(cfg)
        vectors, factors = [total], [c1]
        if q is not None:
            vectors.append(q)
            factors.append(c2)
        raw = engine.combine_rows(vectors, factors, scale).add_plain(plain)
        d4 = engine.rerandomize(raw)
        self._d4 = d4
        self._rows = rows
        self._epoch, self._batch = epoch, batch
        self._h_total, self._q_batch = total, q
        # the loss at scale 2^(F+E): sum_i l(g_i) + (σ(g_i) - y_i) h_i + σ'(g_i) q_i / 2
        self._sig = sig
        plain_loss = float(np.sum(np.logaddexp(0.0, g) - y01 * g))
        self._plain_loss = int(round(plain_loss * 2.0 ** (F + E)))
        self._loss_parts = []
        wire_d4 = encode_ciphertexts(d4)
        self._forwards = {}
        return {host: Residual(epoch, batch, wire_d4, None) for host in self.hosts}

    # ------------------------------------------------------- protocol shared
    def _shared_residuals(self, epoch: int, batch: int, rows: list[int]) -> dict[str, Residual]:
        """Protocol ``shared``: ``[[4d]]`` from the joint score ``[[s]]``, which no one sees.

        ``[[s]] = sum_k [[h_k]] + X_b U_g + X_b [[V_g]]`` (the guest's own share in the
        clear, the arbiter's encrypted). Taylor mode: ``[[4d]] = [[s]] - 2y``. Accurate
        mode, around the guest's score ``g~`` with the weights it learnt at the last
        epoch end it was told them (its start before): ``[[4d]] = c1 [[x]] + c2 [[q]] +
        4(σ(g~) - y)`` with ``x = s - g~`` and ``q`` the row's stored square of ``x``.
        The rows due for new squares go to the arbiter masked, with the gradient.
        """
        key, _ = self._require_key()
        cfg = self.config
        F, G, E = cfg.score_frac_bits, cfg.feature_frac_bits, CURVATURE_FRAC_BITS
        Fs = F + G
        b = len(rows)
        total: EncryptedVector | None = None
        for h in self.hosts:
            fwd = self._forwards[h]
            enc = decode_ciphertexts(key, fwd.scores, peer=h, what="HostForward",
                                     expected_len=b, frac_bits=Fs)
            for part, what in ((fwd.square_sum, "square sum"), (fwd.squares, "squares")):
                decode_ciphertexts(key, part, peer=h, what=f"HostForward {what}",
                                   expected_len=0, frac_bits=0)
            total = enc if total is None else total.add(enc)
        assert total is not None
        self._forwards = {}
        own = self._shared_scores(self._xi_shifted[rows], self._xi_offsets,
                                  self._signed[rows], fresh=False)
        s_enc = total.add(own)
        engine = self._require_engine()
        if self._squares is None:
            self._squares = CiphertextStore(self.n_rows, key.ciphertext_bytes)
        stored = self._squares.get(rows)
        have = np.array([c is not None for c in stored], dtype=bool)
        q: EncryptedVector | None = None
        if have.any():
            q = EncryptedVector(key, [c if c is not None else s_enc.ciphertexts[i]
                                      for i, c in enumerate(stored)], Fs)
        y01 = (self.y_pm[rows] + 1.0) / 2.0
        w = None if self.weights is None else self.weights[rows]  # type: ignore[index]
        if cfg.mode == "taylor":
            raw = s_enc.add_plain([-(int(v) << (Fs + 1)) for v in self.y_pm[rows].tolist()])
            if w is not None:
                raw = raw.mul_elementwise(w.tolist()).at_scale(Fs + weight_frac_bits(cfg))
            x = s_enc
            plain = 8.0 * LOG2 * b
        else:
            gt_int = int_matvec(self._signed[rows], self._expansion, G)
            gt = np.array([float(v) for v in gt_int]) / 2.0**Fs
            x = s_enc.add_plain([-v for v in gt_int])
            sig = 1.0 / (1.0 + np.exp(-gt))
            c1 = quantize(4.0 * sig * (1.0 - sig), E)
            c2 = quantize(2.0 * sig * (1.0 - sig) * (1.0 - 2.0 * sig), E) * have
            P = [int(np.ldexp(v, Fs + E)) for v in (4.0 * (sig - y01)).tolist()]
            if w is not None:
                c1, c2 = c1 * w, c2 * w
                P = [p * int(k) for p, k in zip(P, w.tolist(), strict=True)]
            vectors, factors = [x], [c1]
            if q is not None:
                vectors.append(q)
                factors.append(c2)
            raw = engine.combine_rows(vectors, factors, residual_frac_bits(cfg)).add_plain(P)
            self._sig, self._gt = sig, gt
            plain = float(np.sum(np.logaddexp(0.0, gt) - y01 * gt))
        d4 = engine.rerandomize(raw)
        self._d4 = d4
        self._rows = rows
        self._epoch, self._batch = epoch, batch
        self._x_enc, self._q_batch, self._have = x, q, have
        loss_bits = Fs + (E if cfg.mode == "accurate" else 0)
        self._plain_loss = int(np.ldexp(plain, loss_bits))
        self._loss_parts = []
        # the rows due for new squares: x in a fresh secret order, for the arbiter to square
        due = np.flatnonzero(np.asarray(shared_squares_due(cfg, epoch, rows), dtype=bool))
        self._sq = None
        if due.size:
            order = secret_order(int(due.size))
            picked = [int(due[i]) for i in order]
            self._sq = ([rows[i] for i in picked], x.take(picked))
        wire_d4 = encode_ciphertexts(d4)
        return {host: Residual(epoch, batch, wire_d4, None) for host in self.hosts}

    def _shared_gradient(self) -> MaskedGradient:
        """Protocol ``shared``: ``[[X^T 4d]]`` masked, the batch's loss terms, and the rows
        due for squares packed and masked (``x + 2^ℓq + r``) for the arbiter."""
        key, _ = self._require_key()
        cfg = self.config
        G, E = cfg.feature_frac_bits, CURVATURE_FRAC_BITS
        rows = self._rows
        engine = self._require_engine()
        gradient, d4_sum = engine.matvec_t_and_sum(self.X.shifted[rows], self.X.offsets,
                                                   self._d4, G)
        if cfg.fit_intercept:
            gradient = gradient.concat(d4_sum.mul_scalar(1 << G, G))
        y_pm = self.y_pm[rows]
        parts: list[EncryptedVector] = []
        if cfg.mode == "taylor":
            # 8 * loss at 2^F_s: 8 log 2 - 4 y s + q
            col, off = shifted_column(y_pm, 0)
            ys = engine.matvec_t(col[:, None], np.array([off], dtype=np.int64), self._x_enc, 0)
            parts.append(ys.mul_scalar(-4))
        else:
            # loss at 2^(F_s + E): l(g~) + (σ - y) x + σ' q / 2
            y01 = (y_pm + 1.0) / 2.0
            a, a_off = shifted_column(self._sig - y01, E)
            parts.append(engine.matvec_t(a[:, None], np.array([a_off], dtype=np.int64),
                                         self._x_enc, E))
        if self._q_batch is not None:
            if cfg.mode == "taylor":
                coef = self._have.astype(np.float64)
                bcol, b_off = shifted_column(coef, 0)
                parts.append(engine.matvec_t(bcol[:, None], np.array([b_off], dtype=np.int64),
                                             self._q_batch, 0))
            else:
                bcol, b_off = shifted_column(0.5 * self._sig * (1.0 - self._sig) * self._have,
                                             E)
                parts.append(engine.matvec_t(bcol[:, None], np.array([b_off], dtype=np.int64),
                                             self._q_batch, E))
        self._loss_parts = parts
        squares = None
        if self._sq is not None:
            _, xd = self._sq
            bits = square_slot_bits(cfg)
            packed = xd.add_plain([1 << (bits - 1)] * len(xd)).pack(bits)
            squares = encode_ciphertexts(engine.rerandomize(packed))
        engine.prefill(len(rows) * len(self.hosts))
        masked = self._mask_and_send(gradient, self._epoch, self._batch, len(rows))
        n_sq = 0 if self._sq is None else len(self._sq[0])
        return dataclasses.replace(masked, squares=squares, n_squares=n_sq)

    def on_share_update(self, msg: ShareUpdate, *, peer: str) -> None:
        """The arbiter's new share (:meth:`GradientParty.on_share_update`); and for the rows
        due, the arbiter's fresh ``[[Q(clip(x, ±3)^2)]]``, in the secret order they were sent,
        stored per row."""
        key, _ = self._require_key()
        pending, self._sq = self._sq, None
        super().on_share_update(msg, peer=peer)
        Fs = self.config.score_frac_bits + self.config.feature_frac_bits
        if pending is None:
            if msg.squares is not None:
                raise RemoteProtocolError(f"ShareUpdate from {peer} carries squares that were "
                                          "not asked for.")
            return
        if msg.squares is None:
            raise RemoteProtocolError(f"ShareUpdate from {peer} lacks the squares asked for.")
        due_rows, _ = pending
        q = decode_ciphertexts(key, msg.squares, peer=peer, what="ShareUpdate squares",
                               expected_len=len(due_rows), frac_bits=Fs)
        assert self._squares is not None
        self._squares.put(due_rows, q.ciphertexts)

    def _guest_scores_checked(self, rows: list[int], epoch: int, batch: int) -> FloatArray:
        """The guest's scores of ``rows``, refused (as in Taylor mode) if training diverged."""
        g = self.partial_scores(rows)
        self._quantized_scores(g, epoch, batch, set_by=None)
        return g

    def masked_gradient(self) -> MaskedGradient:
        """``[[X_b^T 4d]]`` (and intercept) masked for the arbiter; keeps the loss terms."""
        cfg = self.config
        if self.shared:
            return self._shared_gradient()
        if cfg.mode == "accurate":
            return self._accurate_gradient()
        F, G = cfg.score_frac_bits, cfg.feature_frac_bits
        rows = self._rows
        assert self._p_float is not None
        qp, qp_off = shifted_column(self._p_float, G)
        engine = self._require_engine()
        k = self.X.shifted.shape[1]
        if weight_frac_bits(cfg):
            # weighted residuals for the gradient; the loss uses the unweighted ones
            gradient, d4_sum = engine.matvec_t_and_sum(self.X.shifted[rows], self.X.offsets,
                                                       self._d4, G)
            cross_raw = engine.matvec_t(qp[:, None], np.array([qp_off], dtype=np.int64),
                                        self._d4_raw, G)
        else:
            mat = np.hstack([self.X.shifted[rows], qp[:, None]])
            offs = np.append(self.X.offsets, qp_off).astype(np.int64)
            prod, d4_sum = engine.matvec_t_and_sum(mat, offs, self._d4, G)
            gradient, cross_raw = prod.take(range(k)), prod.take([k])
        if cfg.fit_intercept:
            # [[sum 4d]] at the gradient's scale: times 2^G
            gradient = gradient.concat(d4_sum.mul_scalar(1 << G, G))
        # cross = sum_i Q(p_i) H_i = sum_i Q(p_i) (4d_i) - sum_i Q(p_i) P_i   (scale F + G)
        correction = -sum(int(a) * int(b) for a, b in zip((qp - qp_off).tolist(),
                                                          self._P.tolist(), strict=True))
        cross = cross_raw.add_plain([correction])
        self._loss_parts.append(cross.mul_scalar(2 << (F - G), F - G))
        # randomisers for the next batch's residuals, made while we wait for the peers
        engine.prefill(len(rows) * len(self.hosts))
        return self._mask_and_send(gradient, self._epoch, self._batch, len(rows))

    def _accurate_gradient(self) -> MaskedGradient:
        cfg = self.config
        G, E = cfg.feature_frac_bits, CURVATURE_FRAC_BITS
        rows = self._rows
        engine = self._require_engine()
        gradient, d4_sum = engine.matvec_t_and_sum(self.X.shifted[rows], self.X.offsets,
                                                   self._d4, G)
        if cfg.fit_intercept:
            gradient = gradient.concat(d4_sum.mul_scalar(1 << G, G))
        # loss terms (scale F + E): [[sum (σ - y) h]] and [[sum σ' q / 2]]
        assert self._h_total is not None
        y01 = (self.y_pm[rows] + 1.0) / 2.0
        sig = self._sig
        a, a_off = shifted_column(sig - y01, E)
        parts = [engine.matvec_t(a[:, None], np.array([a_off], dtype=np.int64), self._h_total, E)]
        if self._q_batch is not None:
            b_, b_off = shifted_column(0.5 * sig * (1.0 - sig) * self._have, E)
            parts.append(engine.matvec_t(b_[:, None], np.array([b_off], dtype=np.int64),
                                         self._q_batch, E))
        self._loss_parts = parts
        engine.prefill(len(rows))
        return self._mask_and_send(gradient, self._epoch, self._batch, len(rows))

    def on_cross(self, host: str, msg: CrossTerm) -> None:
        """Add a later host's ``[[sum h_k H_<k]]`` (times 2) to the batch loss (Taylor mode)."""
        key, _ = self._require_key()
        if self.config.mode != "taylor":
            raise RemoteProtocolError(f"CrossTerm from {host}: accurate mode has none.")
        expect_batch(msg, self._epoch, self._batch, host)
        F, G = self.config.score_frac_bits, self.config.feature_frac_bits
        cross = decode_ciphertexts(key, msg.value, peer=host, what="CrossTerm", expected_len=1,
                                   frac_bits=F + G)
        self._loss_parts.append(cross.mul_scalar(2 << (F - G), F - G))

    def close_batch(self) -> None:
        """Fold this batch's loss terms (all at scale ``2^(2F)``) into the epoch accumulator."""
        self._require_key()
        earlier = [] if self._loss_acc is None else [self._loss_acc]
        total = EncryptedVector.sum_all(earlier + self._loss_parts)
        self._loss_acc = total.add_plain([self._plain_loss])
        self._loss_parts = []

    def epoch_loss(self, epoch: int) -> EpochLoss:
        """The epoch's encrypted loss sum, re-randomised, for the arbiter."""
        _, rnd = self._require_key()
        if self._loss_acc is None:
            raise LocalProtocolError("No batch finished in this epoch.")
        enc = self._loss_acc
        self._loss_acc = None
        return EpochLoss(epoch, encode_ciphertexts(enc.rerandomize(rnd)), self.n_train,
                         self.stop_requested())

    def on_decision(self, msg: EpochDecision, epoch: int, *, peer: str) -> EpochDecision:
        """Check the arbiter's decision for ``epoch`` and keep the loss it reports."""
        if msg.epoch != epoch or msg.loss is None:
            raise RemoteProtocolError(f"Malformed EpochDecision from {peer}.")
        self.loss_history.append(msg.loss)
        return msg

    # ------------------------------------------------------------ validation
    def on_validation_scores(self, host: str, msg: ValidationScores, epoch: int) -> None:
        """Keep a host's encrypted partial scores of the validation rows for ``epoch``."""
        key, _ = self._require_key()
        if msg.epoch != epoch:
            raise RemoteProtocolError(f"ValidationScores from {host} is for epoch {msg.epoch}; "
                                      f"expected {epoch}.")
        self._validation_scores[host] = decode_ciphertexts(
            key, msg.scores, peer=host, what="ValidationScores",
            expected_len=len(self.validation_rows), frac_bits=score_scale_bits(self.config))

    def validation_batch(self, epoch: int) -> ValidationBatch:
        """``[[s_v]] = [[sum_k h_k]] + s_g`` in a fresh secret order, packed, re-randomised, with the labels.

        Packed: :data:`VALIDATION_SLOT_BITS`-bit slots, ``s_v + 2^71`` each,
        about 28 per 2048-bit ciphertext, so the arbiter decrypts 1/28 as many.

        The order is a uniformly random permutation drawn with ``secrets``, new
        every epoch, so the arbiter cannot link a score or label to a row or
        follow a row across epochs; re-randomisation unlinks the ciphertexts
        from the hosts' (see ``hetero_lr.md``, "Validation without per-row scores").
        """
        missing = [h for h in self.hosts if h not in self._validation_scores]
        if missing:
            raise LocalProtocolError(
                f"Validation before the ValidationScores of {', '.join(missing)}.")
        rows = self.validation_rows
        total = EncryptedVector.sum_all([self._validation_scores.pop(h) for h in self.hosts])
        order = list(range(len(rows)))
        secrets.SystemRandom().shuffle(order)
        offset = 1 << (VALIDATION_SLOT_BITS - 1)  # slots hold non-negative values
        if self.shared:  # the guest's own scores from its two shares, encrypted
            own_enc = self._shared_scores(self._xi_shifted[rows], self._xi_offsets,
                                          self._signed[rows], fresh=False)
            shifted = total.add(own_enc).add_plain([offset] * len(rows))
            self.share.snapshot()
        else:
            own = self._quantized_scores(self.partial_scores(rows), epoch, 0, set_by=None)
            shifted = total.add_plain([int(v) + offset for v in own.tolist()])
        packed = shifted.take(order).pack(VALIDATION_SLOT_BITS)
        joint = self._require_engine().rerandomize(packed)
        y = (self.y_pm[np.asarray(rows, dtype=np.int64)[order]] > 0).astype(np.uint8)
        if not self.shared:
            self.snapshots.append(self.coef.copy())
        return ValidationBatch(epoch, encode_ciphertexts(joint), np.packbits(y).tobytes())

    def on_validation_metrics(self, msg: ValidationMetrics, epoch: int, *,
                              peer: str) -> dict[str, float]:
        """Keep the arbiter's figures for ``epoch`` (validation history)."""
        if msg.epoch != epoch:
            raise RemoteProtocolError(f"ValidationMetrics from {peer} is for epoch {msg.epoch}; "
                                      f"expected {epoch}.")
        m = {"epoch": epoch, "auc": msg.auc, "ks": msg.ks, "loss": msg.log_loss,
             "brier": msg.brier}
        self.validation_history.append(m)
        return m

    def stop_requested(self) -> bool:
        """Patience exhausted: no better validation figure for ``patience`` epochs."""
        pat = self.config.patience
        hist = self.validation_history
        if not pat or not hist:
            return False
        keys = self._keys()
        if not keys[-1][0]:  # the accurate mode's warm-up: no epoch may be kept yet
            return False
        return len(hist) - 1 - self._best_index() >= pat

    def _keys(self) -> list[tuple[bool, float]]:
        return [selection_key(self.config, int(h["epoch"]), h["auc"], h["loss"])
                for h in self.validation_history]

    def _best_index(self) -> int:
        """The epoch with the largest :func:`~vfl.lr.config.selection_key` (first of equals)."""
        keys = self._keys()
        return max(range(len(keys)), key=lambda i: (keys[i], -i))

    def restore_best(self) -> int:
        """Keep the weights of the epoch with the best validation figure (log-loss in the
        accurate mode, AUC in the Taylor mode)."""
        best = self._best_index()
        if not self.shared:  # shared: the weights come with the arbiter's FinalShare
            self.coef = self.snapshots[best].copy()
        self.best_epoch = best
        return best

    def training_result(self) -> TrainingResult:
        """After the last epoch (with validation): keep the best epoch and tell the hosts."""
        return TrainingResult(self.restore_best())

    def calibration_request(self) -> CalibrationRequest:
        """Ask the arbiter to calibrate the kept epoch's joint score."""
        if self.best_epoch is None:
            raise LocalProtocolError("Calibration before the best epoch is known.")
        return CalibrationRequest(self.best_epoch)

    def on_calibration_report(self, msg: CalibrationReport, *, peer: str) -> None:
        """Keep the arbiter's Platt scaling and its figures (stored in the model part)."""
        if msg.best_epoch != self.best_epoch:
            raise RemoteProtocolError(f"CalibrationReport from {peer} is for epoch "
                                      f"{msg.best_epoch}; the kept epoch is {self.best_epoch}.")
        self.calibration = msg


def check_partial_scores(msg: PartialScores, *, host: str, model_id: str,
                         n_rows: int) -> FloatArray:
    """A host's partial scores, refused unless for ``model_id`` with ``n_rows`` finite values."""
    if msg.model_id != model_id:
        raise RemoteProtocolError(f"{host} answered for model {msg.model_id!r}, not {model_id!r}.")
    if msg.scores.shape != (n_rows,) or not np.all(np.isfinite(msg.scores)):
        raise RemoteProtocolError(
            f"Partial scores from {host} have shape {msg.scores.shape}; expected ({n_rows},) "
            "finite."
        )
    return np.asarray(msg.scores, dtype=np.float64)


class GuestScoring:
    """The guest's side of one scoring request over aligned rows.

    What the guest learns: every host's partial score ``X_h w_h`` of each
    scored row and, when it asks for points, each host's integer points of
    the row (a rounded function of the same features; see
    ``protocols/specs/hetero_lr.md``, "Scoring").

    Parameters
    ----------
    own_scores : ndarray of shape (n_rows,)
        The guest's own partial scores (intercept included).
    model_id : str
    hosts : list of str
    calibration : (slope, intercept) or None
        Platt scaling applied to the joint score before the logistic function.
    scale : float
        Scorecard points per unit of partial logit (``pdo / ln 2 * slope``)
        the hosts are asked to score their points tables at; 0.0: no points.
    """

    def __init__(self, own_scores: FloatArray, model_id: str, hosts: list[str],
                 calibration: tuple[float, float] | None = None, scale: float = 0.0) -> None:
        scale = float(scale)
        if not (math.isfinite(scale) and (scale == 0.0 or 0.0 < scale <= MAX_POINTS_SCALE)):
            raise ConfigError(f"The scorecard scale must be 0 (no points) or in (0, "
                              f"{MAX_POINTS_SCALE:g}]; got {scale!r}. Check pdo and the "
                              "calibration slope.")
        self.calibration = calibration
        self.model_id = model_id
        self.hosts = list(hosts)
        self.scale = scale
        self.n_rows = int(own_scores.shape[0])
        self.total = np.asarray(own_scores, dtype=np.float64).copy()
        self.points = np.zeros(self.n_rows, dtype=np.int64)
        self._answered: set[str] = set()

    def request(self) -> ScoreRequest:
        """The request every host answers."""
        return ScoreRequest(self.model_id, self.n_rows, self.scale)

    def on_partial_scores(self, host: str, msg: PartialScores) -> None:
        """Check a host's answer; add it to the total score (and its points to the points)."""
        if host not in self.hosts or host in self._answered:
            raise LocalProtocolError(f"Unexpected PartialScores from {host!r}.")
        scores = check_partial_scores(msg, host=host, model_id=self.model_id,
                                      n_rows=self.n_rows)
        points = check_host_points(msg, host=host, n_rows=self.n_rows,
                                   asked=self.scale > 0.0)
        self.total += scores
        self.points += points
        self._answered.add(host)

    def _require_all(self) -> None:
        if self._answered != set(self.hosts):
            raise LocalProtocolError("Scores requested before every host answered.")

    def probabilities(self) -> FloatArray:
        """``P(y = 1)`` of every row, once every host has answered."""
        self._require_all()
        s = self.total
        if self.calibration is not None:
            slope, intercept = self.calibration
            s = slope * s + intercept
        out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(s, -700.0, 700.0)))
        return out

    def host_points(self) -> IntArray:
        """The sum of every host's integer points per row (all zero when none were asked)."""
        self._require_all()
        return self.points.copy()


def check_host_points(msg: PartialScores, *, host: str, n_rows: int, asked: bool) -> IntArray:
    """A host's points: ``n_rows`` int64 values of at most ``MAX_ROW_POINTS`` if asked, else none."""
    p = msg.points
    if not asked:
        if p.size:
            raise RemoteProtocolError(f"{host} sent scorecard points that were not asked for.")
        return np.zeros(n_rows, dtype=np.int64)
    if p.dtype != np.int64 or p.shape != (n_rows,):
        raise RemoteProtocolError(
            f"Scorecard points from {host} are {p.dtype} of shape {p.shape}; expected "
            f"({n_rows},) int64.")
    if p.size and (int(p.min()) < -MAX_ROW_POINTS or int(p.max()) > MAX_ROW_POINTS):
        raise RemoteProtocolError(
            f"Scorecard points from {host} exceed {MAX_ROW_POINTS:.0e} in magnitude; a points "
            "table cannot give them.")
    return np.asarray(p, dtype=np.int64)


def initial_intercept(y_pm: FloatArray) -> float:
    """Intercept minimising the Taylor loss with all weights zero: ``2 * mean(y)``, y in {-1, 1}."""
    return float(2.0 * np.mean(y_pm)) if len(y_pm) else 0.0


def secret_normal(count: int) -> FloatArray:
    """``count`` standard normal draws from the OS CSPRNG (Box-Muller over ``secrets``)."""
    out: list[float] = []
    while len(out) < count:
        u1 = (secrets.randbits(53) + 1) / 2.0**53  # (0, 1]
        u2 = secrets.randbits(53) / 2.0**53
        r = math.sqrt(-2.0 * math.log(u1))
        out += [r * math.cos(2 * math.pi * u2), r * math.sin(2 * math.pi * u2)]
    return np.asarray(out[:count], dtype=np.float64)


def initial_guest_coef(X_train: FloatArray, y_pm_train: FloatArray, *, fit_intercept: bool,
                       score_std: float = 0.5) -> FloatArray:
    """The guest's secret random start (intercept last).

    The guest-only Taylor optimum (``2 * beta_LS``: least squares of its own
    columns, and intercept, on ``y in {-1, 1}``; a guest-local warm start)
    plus a secret random direction ``z ~ N(0, I)`` drawn with ``secrets`` and
    scaled so that ``X z`` has standard deviation ``score_std`` on the
    training rows. With every weight but the intercept at zero, the first
    batch's residuals ``4d = s - 2y`` would take two values and a host could
    solve its first gradient for the labels by lattice reduction; from this
    start they are ``s_g,i - 2y_i`` with ``s_g`` continuous, secret and
    different in every run (``protocols/specs/hetero_lr.md``, "Secret random
    start").

    Raises
    ------
    ConfigError
        If ``score_std`` is not in [0.25, 10], or the guest's features are
        constant on its training rows (no random start can then hide the labels).
    """
    if not (isinstance(score_std, int | float) and MIN_INIT_SCORE_STD <= score_std <= 10):
        raise ConfigError(f"init_score_std must be in [{MIN_INIT_SCORE_STD}, 10]; got "
                          f"{score_std!r}: a smaller spread lets a host solve the first batch "
                          "for the labels.")
    n, k = X_train.shape
    A = np.hstack([X_train, np.ones((n, 1))]) if fit_intercept else X_train
    warm = 2.0 * np.linalg.lstsq(A, y_pm_train, rcond=None)[0] if n else np.zeros(A.shape[1])
    for _ in range(100):
        z = secret_normal(k)
        spread = float(np.std(X_train @ z)) if k and n else 0.0
        if not spread > 0:
            raise ConfigError(
                "The guest's own features are constant on its training rows: the secret random "
                "start cannot hide the labels in the first batch. Add informative guest columns."
            )
        noise = z * (score_std / spread)
        coef = np.asarray(warm + (np.append(noise, 0.0) if fit_intercept else noise),
                          dtype=np.float64)
        # the warm part may partly cancel the random part: keep the whole score spread
        if float(np.std(X_train @ coef[:k])) >= MIN_START_SPREAD:
            return coef
    raise ConfigError("No secret start with enough spread was found; check the guest's columns.")
