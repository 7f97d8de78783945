"""Arbiter role: holds the Paillier private key, decrypts masked values only.

State and pure step methods, no I/O: :mod:`vfl.lr.driver` runs
:class:`ArbiterParty` over a channel in the order of :mod:`vfl.lr.schedule`.
"""

from __future__ import annotations

import numpy as np

from vfl.calibration import (
    brier_and_log_loss,
    calibration_figures,
    cross_fitted_platt,
    platt_fit,
    score_bands,
    sigmoid,
)
from vfl.checkpoint import ArbiterSecret, CheckpointError
from vfl.crypto.engine import CipherEngine, make_engine
from vfl.crypto.paillier import (
    PaillierPrivateKey,
    Randomizer,
    check_key_size,
    generate_keypair,
)
from vfl.crypto.vector import EncryptedVector, slots_per_ciphertext, unpack_residue
from vfl.crypto.wire import decode_ciphertexts, encode_ciphertexts, encode_residues
from vfl.exceptions import ConfigError, CryptoError, LocalProtocolError, RemoteProtocolError
from vfl.lr._shared import (
    ShareState,
    check_guest_equations,
    clipped_square,
    square_slot_bits,
)
from vfl.lr.config import (
    LOSS_GRID_BITS,
    LOSS_ROW_BITS,
    MIN_VALIDATION_ROWS,
    SQUARE_VALUE_BITS,
    VALIDATION_SLOT_BITS,
    TrainConfig,
    epoch_batches,
    loss_frac_bits,
    mask_budget,
    residual_frac_bits,
    score_scale_bits,
    selection_key,
    tol_applies,
)
from vfl.lr.messages import (
    DECILES,
    METRIC_DIGITS,
    CalibrationReport,
    CalibrationRequest,
    DecryptedGradient,
    EpochDecision,
    EpochLoss,
    FinalShare,
    MaskedGradient,
    PublicKeyAnnounce,
    ShareUpdate,
    TrainSetup,
    ValidationBatch,
    ValidationMetrics,
)
from vfl.metrics import auc, ks
from vfl.policy import DEFAULT_POLICY, SecurityPolicy

__all__ = ["ArbiterParty", "MAX_VALIDATION_SCORE", "MAX_CALIBRATION"]

#: Largest Platt slope or |intercept| applied; a fit beyond it (or a slope <= 0) is not.
MAX_CALIBRATION = 100.0

#: Largest absolute joint score the arbiter accepts from validation rows.
MAX_VALIDATION_SCORE = 1 << 10


class ArbiterParty:
    """The arbiter's side of training.

    What the arbiter learns: the job's shapes (the number of training rows,
    never which rows are held out for validation) and hyper-parameters, and
    the epoch loss; with validation rows, their number, their labels and
    joint scores in an order that the guest draws afresh each epoch, from
    which it returns only rounded aggregates (AUC, KS, log-loss, Brier; at the
    end a Platt fit and per-band averages). Every gradient it decrypts carries a fresh secret mask of
    ``ℓ + κ`` bits chosen by the party that sent it, so each decrypted value is
    within statistical distance ``2**(1-κ)`` of one independent of the data.

    It is not a decryption oracle: it returns a decrypted gradient value only
    if it lies in the masked range ``[0, 2**(ℓ+κ+1))`` and the loss only if it
    lies in the range of a loss of the job's mode, mean magnitude below ``2**9``
    (rounded to ``2**-32``); anything else
    stops the job with an error naming the sender. So one slot carries at most
    ``ℓ + κ + 1`` bits back to a deviating sender, whatever it packed into it.

    Parameters
    ----------
    setup : TrainSetup
    guest : str
    allow_insecure_key_size : bool
        The arbiter's own policy; a guest cannot lower it.
    """

    def __init__(self, setup: TrainSetup, guest: str, *,
                 allow_insecure_key_size: bool = False,
                 private_key: PaillierPrivateKey | None = None,
                 policy: SecurityPolicy = DEFAULT_POLICY) -> None:
        self.setup = setup
        self.config: TrainConfig = setup.config  # checked as the codec rebuilt it
        self.guest = guest
        hosts = list(setup.hosts)
        if not hosts or len(set(hosts)) != len(hosts) or guest in hosts:
            raise RemoteProtocolError(f"TrainSetup from {guest} does not list distinct hosts.")
        if len(setup.columns) != len(hosts) + 1 or min(setup.columns) < 1:
            raise RemoteProtocolError(
                f"TrainSetup from {guest}: column counts do not match its host list.")
        if not 1 <= setup.n_rows <= policy.max_psi_set_size:
            raise RemoteProtocolError(
                f"TrainSetup from {guest} announces {setup.n_rows} rows; this arbiter accepts "
                f"1 to {policy.max_psi_set_size} (its max_psi_set_size).")
        check_key_size(self.config.key_bits, allow_insecure_key_size=allow_insecure_key_size)
        if private_key is None:
            _, private_key = generate_keypair(self.config.key_bits,
                                              allow_insecure_key_size=allow_insecure_key_size)
        self.private_key = private_key
        self.public_key = private_key.public_key
        if setup.validation_rows:
            raise RemoteProtocolError(
                f"TrainSetup from {guest} lists validation rows; the arbiter must not learn them.")
        if setup.n_validation and not (MIN_VALIDATION_ROWS <= setup.n_validation
                                       <= policy.max_psi_set_size):
            raise RemoteProtocolError(
                f"TrainSetup from {guest} announces {setup.n_validation} validation rows; this "
                f"arbiter evaluates {MIN_VALIDATION_ROWS} to {policy.max_psi_set_size}.")
        self.n_validation = setup.n_validation
        #: (selection score, epoch, joint scores, labels) of the best epoch so far
        self._best: tuple[tuple[bool, float], int, np.ndarray, np.ndarray] | None = None
        self.validation_history: list[ValidationMetrics] = []
        self.widths = dict(zip([guest, *setup.hosts], setup.columns, strict=True))
        self.budget = mask_budget(self.config, setup.n_rows)
        self.loss_history: list[float] = []
        self.decision: EpochDecision | None = None
        #: protocol shared: the arbiter's share of every party's weights
        self.shared = self.config.protocol == "shared"
        self.shares: dict[str, ShareState] = {}
        self.kept_epoch: int | None = None
        if self.shared:
            fi = self.config.fit_intercept
            self.shares = {p: ShareState.zeros(k, [not (fi and p == guest and i == k - 1)
                                                   for i in range(k)])
                           for p, k in self.widths.items()}
            try:
                check_guest_equations(self.config, setup.n_rows)
            except ConfigError as exc:
                raise RemoteProtocolError(f"TrainSetup from {guest}: {exc}") from None
            self._randomizer = Randomizer(self.public_key, window_bits=8)
        #: protocol shared: the arbiter encrypts the squares (about b/4 a batch) with the
        #: same engine as the other parties (a process pool on a job of thousands of rows,
        #: its randomisers made while it waits for the next gradient); made at first use
        self._engine: CipherEngine | None = None

    @property
    def hosts(self) -> list[str]:
        """The job's hosts, in order."""
        return list(self.setup.hosts)

    def batches(self, epoch: int) -> list[list[int]]:
        """The mini-batches of ``epoch`` over the training rows (only their count matters here)."""
        return epoch_batches(self.setup.n_rows, [], self.config, epoch)

    def announce(self) -> PublicKeyAnnounce:
        """The public key for the other parties."""
        return PublicKeyAnnounce(self.public_key.to_bytes())

    def on_masked_gradient(self, party: str, msg: MaskedGradient, epoch: int,
                           batch: int) -> DecryptedGradient | ShareUpdate:
        """Decrypt a masked gradient to residues mod n (uniform, thanks to the mask).

        Protocol ``shared``: nothing decrypted goes back. The value is the arbiter's
        share of the batch's gradient: it steps its share of ``party``'s weights and
        answers with that share, encrypted afresh (:class:`ShareUpdate`); for the
        guest's packed masked values it answers with fresh encryptions of their squares.
        """
        if (msg.epoch, msg.batch) != (epoch, batch):
            raise RemoteProtocolError(
                f"MaskedGradient from {party} is for epoch/batch {(msg.epoch, msg.batch)}; "
                f"expected {(epoch, batch)}."
            )
        cfg = self.config
        enc = decode_ciphertexts(self.public_key, msg.values, peer=party, what="MaskedGradient",
                                 expected_len=self.widths[party],
                                 frac_bits=residual_frac_bits(cfg) + cfg.feature_frac_bits)
        residues = enc.decrypt_residues(self.private_key)
        limit = 1 << self.budget.masked_bits
        if any(r >= limit for r in residues):
            raise RemoteProtocolError(
                f"MaskedGradient from {party} (epoch {epoch}, batch {batch}) decrypts outside "
                f"the masked range [0, 2^{self.budget.masked_bits}): refused. The sender packed "
                "extra data into it, or its gradient overflowed the protocol's bit budget."
            )
        if not self.shared:
            if msg.squares is not None:
                raise RemoteProtocolError(f"MaskedGradient from {party} carries squares, "
                                          "which this job never asks for.")
            return DecryptedGradient(epoch, batch, encode_residues(residues, self.budget.width))
        rows = len(self.batches(epoch)[batch])
        self.shares[party].step([int(r) for r in residues], cfg, epoch, rows)
        share = EncryptedVector.encrypt(self.public_key, self.shares[party].weights,
                                        cfg.score_frac_bits, self._randomizer)
        squares = None
        if msg.squares is not None:
            if party != self.guest:
                raise RemoteProtocolError(f"MaskedGradient from {party} carries squares; only "
                                          "the guest asks for them.")
            squares = encode_ciphertexts(self._squares(msg, epoch, rows))
        return ShareUpdate(epoch, batch, encode_ciphertexts(share), squares)

    def _squares(self, msg: MaskedGradient, epoch: int, rows: int) -> EncryptedVector:
        """Fresh ``[[Q(clip(x, ±3)^2)]]`` of every packed value ``x`` of the guest, in the order
        received (the guest's secret order: the arbiter learns the values, not their rows);
        each value refused unless ``|x| < 2^SQUARE_VALUE_BITS``."""
        g, cfg = self.guest, self.config
        n_sq = msg.n_squares
        if not 1 <= n_sq <= rows:
            raise RemoteProtocolError(f"MaskedGradient from {g} asks for {n_sq} squares in a "
                                      f"batch of {rows} rows.")
        fs = score_scale_bits(cfg)
        bits = square_slot_bits(cfg)
        k = slots_per_ciphertext(self.public_key, bits)
        assert msg.squares is not None
        enc = decode_ciphertexts(self.public_key, msg.squares, peer=g, what="Squares request",
                                 expected_len=-(-n_sq // k), frac_bits=fs)
        offset = 1 << (bits - 1)
        values: list[int] = []
        try:
            for i, r in enumerate(enc.decrypt_residues(self.private_key)):
                values += [v - offset for v in unpack_residue(int(r), bits, min(k, n_sq - i * k))]
        except CryptoError:
            raise RemoteProtocolError(f"The squares request from {g} (epoch {epoch}) is not a "
                                      "packed vector: refused.") from None
        limit = 1 << (fs + SQUARE_VALUE_BITS)
        if any(abs(v) >= limit for v in values):
            raise RemoteProtocolError(
                f"The squares request from {g} (epoch {epoch}) holds a value beyond "
                f"±2^{SQUARE_VALUE_BITS}: refused. Training diverged, or the guest sent "
                "something else.")
        if self._engine is None:
            self._engine = make_engine(self.public_key, None, self.setup.n_rows)
        squares = np.array([clipped_square(v, fs) for v in values], dtype=np.int64)
        out = self._engine.encrypt(squares, fs)  # each below 9 * 2^F_s: int64
        self._engine.prefill(len(values))  # the next batch's, while the parties compute
        return out

    def close(self) -> None:
        """Stop the arbiter's worker processes, if it started any."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def final_share(self, party: str) -> FinalShare:
        """Protocol ``shared``, after the last epoch: the arbiter's share of ``party``'s
        weights of the kept epoch, in the clear, to that party alone."""
        state = self.shares[party]
        if not state.snapshots:
            raise LocalProtocolError("No epoch has ended yet.")
        # the kept epoch (with validation), else the last one run (also after a resume that
        # only finishes: the snapshots come back with the checkpoint)
        epoch = self.kept_epoch if self.kept_epoch is not None else len(state.snapshots) - 1
        values = state.snapshots[epoch]
        n = int(self.public_key.n)
        return FinalShare(epoch, encode_residues([v % n for v in values], (n.bit_length() + 7) // 8))

    def on_epoch_loss(self, msg: EpochLoss, epoch: int) -> EpochDecision:
        """Decrypt the epoch loss and decide whether to stop."""
        n_train = self.setup.n_rows
        if msg.epoch != epoch or msg.n_samples != n_train:
            raise RemoteProtocolError(f"EpochLoss from {self.guest} does not match epoch {epoch}.")
        accurate = self.config.mode == "accurate"
        # Taylor: [[8 * 2^(2F) * sum of losses]] (non-negative); accurate mode:
        # [[2^(F+E) * sum of second-order losses around s_g]] (signed: the linear term may win);
        # protocol shared: F_s = F + G for F (the Taylor loss at 2^F_s, the squares' scale)
        scale_bits = loss_frac_bits(self.config)
        enc = decode_ciphertexts(self.public_key, msg.loss, peer=self.guest, what="EpochLoss",
                                 expected_len=1, frac_bits=scale_bits)
        total = int(enc.decrypt_residues(self.private_key)[0])
        denominator = (n_train << scale_bits) * (1 if accurate else 8)
        signed = accurate or self.shared  # shared Taylor: no square term before the squares
        if signed and total > self.public_key.n // 2:
            total -= int(self.public_key.n)
        if not (-(denominator << LOSS_ROW_BITS) < total < denominator << LOSS_ROW_BITS) or (
                total < 0 and not signed):
            raise RemoteProtocolError(
                f"EpochLoss from {self.guest} (epoch {epoch}) decrypts outside the range of a "
                f"{'' if accurate else 'Taylor '}loss (mean of magnitude below "
                f"2^{LOSS_ROW_BITS}): refused. Training diverged, or the guest substituted "
                "another ciphertext."
            )
        # the mean loss, rounded to 2^-LOSS_GRID_BITS: at most LOSS_ROW_BITS + LOSS_GRID_BITS
        # bits go back to the guest per epoch
        grid = ((total << LOSS_GRID_BITS) + denominator // 2) // denominator  # floor: signed ok
        loss = grid / float(1 << LOSS_GRID_BITS)
        prev = self.loss_history[-1] if self.loss_history else None
        self.loss_history.append(loss)
        stop = epoch + 1 >= self.config.epochs or msg.stop_requested or (
            self.config.tol > 0 and prev is not None and abs(prev - loss) < self.config.tol
            and tol_applies(self.config, epoch)
        )
        if self.shared:
            for state in self.shares.values():
                state.snapshot()
        self.decision = EpochDecision(epoch, stop, loss)
        return self.decision

    @property
    def validation(self) -> bool:
        """Whether the job holds out validation rows (the arbiter knows only how many)."""
        return self.n_validation > 0

    def on_validation_batch(self, msg: ValidationBatch, epoch: int) -> ValidationMetrics:
        """Decrypt the shuffled joint scores; rounded AUC, KS, log-loss and Brier score.

        Keeps the scores and labels of the best epoch so far (by the rounded figure of
        :func:`~vfl.lr.config.selection_key`,
        the first of equals, as the guest picks it) for the calibration.
        """
        g = self.guest
        if msg.epoch != epoch:
            raise RemoteProtocolError(f"ValidationBatch from {g} is for epoch {msg.epoch}; "
                                      f"expected {epoch}.")
        n = self.n_validation
        F = score_scale_bits(self.config)
        k = slots_per_ciphertext(self.public_key, VALIDATION_SLOT_BITS)
        enc = decode_ciphertexts(self.public_key, msg.scores, peer=g, what="ValidationBatch",
                                 expected_len=-(-n // k), frac_bits=F)
        if len(msg.labels) != (n + 7) // 8:
            raise RemoteProtocolError(f"ValidationBatch from {g}: {len(msg.labels)} label bytes "
                                      f"for {n} rows; expected {(n + 7) // 8}.")
        bits = np.unpackbits(np.frombuffer(msg.labels, dtype=np.uint8))
        if bits[n:].any():
            raise RemoteProtocolError(f"ValidationBatch from {g}: label padding is not zero.")
        y = bits[:n].astype(np.float64)
        n_bad = int(y.sum())
        if n_bad in (0, n):
            raise RemoteProtocolError(
                f"ValidationBatch from {g}: {n_bad} defaults among {n} rows; validation "
                "figures need both classes.")
        offset = 1 << (VALIDATION_SLOT_BITS - 1)
        raw: list[int] = []
        try:
            for i, r in enumerate(enc.decrypt_residues(self.private_key)):
                raw += [v - offset for v in unpack_residue(r, VALIDATION_SLOT_BITS,
                                                           min(k, n - i * k))]
        except CryptoError:
            raise RemoteProtocolError(f"ValidationBatch from {g} (epoch {epoch}) is not a packed "
                                      "score vector: refused.") from None
        limit = MAX_VALIDATION_SCORE << F
        if any(abs(v) > limit for v in raw):
            raise RemoteProtocolError(
                f"ValidationBatch from {g} (epoch {epoch}) holds a joint score beyond "
                f"±{MAX_VALIDATION_SCORE}: refused. Training diverged, or the guest sent "
                "something else.")
        s = np.array(raw, dtype=np.float64) / float(1 << F)
        brier, log_loss = brier_and_log_loss(sigmoid(s), y)
        d = METRIC_DIGITS
        metrics = ValidationMetrics(epoch, round(auc(y, s), d), round(ks(y, s), d),
                                    round(log_loss, d), round(brier, d))
        self.validation_history.append(metrics)
        key = selection_key(self.config, epoch, metrics.auc, metrics.log_loss)
        if self._best is None or key > self._best[0]:
            self._best = (key, epoch, s, y)
        return metrics

    def on_calibration_request(self, msg: CalibrationRequest) -> CalibrationReport:
        """Platt-scale the kept epoch's joint scores; rounded figures before and after."""
        if self._best is None:
            raise RemoteProtocolError(f"CalibrationRequest from {self.guest} before any "
                                      "ValidationBatch.")
        _, best_epoch, s, y = self._best
        if msg.best_epoch != best_epoch:
            raise RemoteProtocolError(
                f"CalibrationRequest from {self.guest} names epoch {msg.best_epoch}; the best "
                f"validation {'log-loss' if self.config.mode == 'accurate' else 'AUC'} was at "
                f"epoch {best_epoch}.")
        self.kept_epoch = best_epoch
        slope, intercept = platt_fit(s, y)
        if not (0 < slope <= MAX_CALIBRATION and abs(intercept) <= MAX_CALIBRATION):
            # not an increasing map within the report's range (few or odd validation rows):
            # apply none rather than invert or blow up the model's ranking
            slope, intercept = 1.0, 0.0
        p_before = sigmoid(s)
        p_after = cross_fitted_platt(s, y)
        bands = score_bands(s, DECILES)
        k = range(min(DECILES, len(s)))
        d = METRIC_DIGITS
        self._best = None  # the scores are not needed any more
        return CalibrationReport(
            best_epoch, round(slope, 6), round(intercept, 6),
            np.round(calibration_figures(p_before, y), d),
            np.round(calibration_figures(p_after, y), d),
            np.array([int(np.sum(bands == b)) for b in k], dtype=np.int64),
            np.array([int(y[bands == b].sum()) for b in k], dtype=np.int64),
            np.round(np.array([p_before[bands == b].mean() for b in k]), d),
            np.round(np.array([p_after[bands == b].mean() for b in k]), d))

    # ----------------------------------------------------------- checkpoints
    def secret_state(self) -> ArbiterSecret:
        """Its key pair and what its later decisions depend on (sealed by the driver)."""
        val = np.array([[m.epoch, m.auc, m.ks, m.log_loss, m.brier]
                        for m in self.validation_history],
                       dtype=np.float64).reshape(len(self.validation_history), 5)
        key, epoch, s, y = self._best if self._best is not None else ((False, 0.0), None,
                                                                        np.zeros(0), np.zeros(0))
        nb = (self.public_key.bits + 15) // 16
        return ArbiterSecret(int(self.private_key.p).to_bytes(nb, "big"),
                             int(self.private_key.q).to_bytes(nb, "big"),
                             np.asarray(self.loss_history, dtype=np.float64), val, epoch,
                             bool(key[0]), float(key[1]), np.asarray(s, dtype=np.float64),
                             np.asarray(y, dtype=np.float64),
                             [self.shares[p].to_record() for p in self.widths]
                             if self.shared else [], self.kept_epoch)

    def restore(self, secret: ArbiterSecret) -> None:
        """Continue from a checkpoint's sealed state (its key pair was given to the constructor)."""
        self.loss_history = [float(v) for v in secret.loss_history]
        self.validation_history = [ValidationMetrics(int(r[0]), float(r[1]), float(r[2]),
                                                     float(r[3]), float(r[4]))
                                   for r in secret.validation]
        self._best = None if secret.best_epoch is None else (
            (secret.best_ok, secret.best_value), secret.best_epoch, secret.best_scores.copy(),
            secret.best_labels.copy())
        if self.shared:
            if len(secret.shares) != len(self.widths):
                raise CheckpointError("The arbiter's checkpoint holds the weight shares of "
                                      f"{len(secret.shares)} parties; this job has "
                                      f"{len(self.widths)}: refused.")
            self.shares = {p: ShareState.from_record(rec, k, self.shares[p].penalized, p)
                           for (p, k), rec in zip(self.widths.items(), secret.shares,
                                                  strict=True)}
            self.kept_epoch = secret.kept_epoch

    def guest_decision(self) -> EpochDecision:
        """The latest decision as the guest gets it: whether to stop, and the loss."""
        if self.decision is None:
            raise LocalProtocolError("No epoch decision yet; expected EpochLoss first.")
        return self.decision

    def host_decision(self) -> EpochDecision:
        """The latest decision as the hosts get it: whether to stop, without the loss."""
        decision = self.guest_decision()
        return EpochDecision(decision.epoch, decision.stop, None)
