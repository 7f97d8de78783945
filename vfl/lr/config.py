"""Training configuration shared by the roles, and its validation."""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, fields

from vfl.codec import message
from vfl.exceptions import ConfigError

__all__ = ["TrainConfig", "OPTIMIZERS", "PENALTIES", "min_batch_size", "batch_plan",
           "epoch_batches", "validation_split", "row_weights", "weight_frac_bits",
           "MaskBudget", "mask_budget", "MASK_KAPPA", "FEATURE_BITS", "RESIDUAL_BITS",
           "CLASS_WEIGHT_BITS", "LOSS_ROW_BITS", "LOSS_GRID_BITS", "message_limits",
           "ciphertext_width", "MIN_VALIDATION_ROWS", "VALIDATION_SLOT_BITS", "MODES",
           "CURVATURE_CLIP", "CURVATURE_FRAC_BITS", "squares_due", "residual_frac_bits",
           "selection_key", "tol_applies", "MAX_ACCURATE_SCORE_FRAC_BITS", "PROTOCOLS",
           "SHARED_OPTIMIZERS", "score_scale_bits", "loss_frac_bits", "shared_squares_due",
           "square_slot_bits", "SQUARE_VALUE_BITS", "MOMENTUM"]

#: Fewest validation rows a job may hold out (the arbiter evaluates no fewer).
MIN_VALIDATION_ROWS = 20
#: Bits per slot of a packed validation score (offset by ``2^71``: honest sums of up to
#: 254 int64 partial scores never leave the slot).
VALIDATION_SLOT_BITS = 72

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
#: Training protocols (``protocols/specs/hetero_lr.md``): ``shared`` keeps every party's
#: weights as two additive shares (its own and the arbiter's) until the end, so no party
#: sees a gradient; ``reveal-gradients`` is the protocol of versions 1-4, in which every
#: party takes its plaintext gradient after every batch (a whole run of them tells a
#: curious host the labels and a curious guest the hosts' scores: issue 24).
PROTOCOLS = ("shared", "reveal-gradients")
#: Optimisers whose update is linear in the gradient: they run on shares.
SHARED_OPTIMIZERS = ("sgd", "momentum")
#: Momentum factor of the ``momentum`` optimiser, as the fraction the shares use exactly.
MOMENTUM = (9, 10)
#: Squares (shared protocol): the arbiter squares values ``x`` of magnitude below
#: ``2^SQUARE_VALUE_BITS`` (``x = s - g~``, clipped to ``±CURVATURE_CLIP`` first).
SQUARE_VALUE_BITS = 16
#: Training modes (``protocols/specs/hetero_lr.md``, "Accurate mode").
MODES = ("accurate", "taylor")
#: Accurate mode: each host clips its partial score to ``±CURVATURE_CLIP`` before squaring it
#: for the second-order term (an unclipped square diverged when the host's score dominates).
CURVATURE_CLIP = 3.0
#: Accurate mode: fractional bits of the guest's per-row factors ``4σ'(s_g)``, ``2σ''(s_g)``.
CURVATURE_FRAC_BITS = 16
#: Accurate mode: ``4(σ(s_g) − y)`` at ``2^(F+16)`` must stay below the encoder's 2^62.
MAX_ACCURATE_SCORE_FRAC_BITS = 43
PENALTIES = ("none", "l1", "l2")


def min_batch_size(max_party_columns: int) -> int:
    """Smallest batch allowed when the widest party has ``max_party_columns`` columns.

    A party that learns ``X_b^T d`` for its own ``b x k`` batch matrix could solve
    for the residuals ``d`` (and so the labels) when ``b <= k``. We require
    ``b >= max(64, 4 * k)``: the residuals then keep at least ``3/4`` of their
    degrees of freedom hidden in every batch. See ``protocols/specs/hetero_lr.md``.
    """
    return max(64, 4 * max_party_columns)


@message("lr.TrainConfig/4")
@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters of hetero logistic regression (set by the guest).

    Parameters
    ----------
    epochs : int
        Maximum passes over the intersection (default 30; with the default
        validation and patience a run stops when the validation figure has
        not improved for 5 epochs). Defaults measured in issue 10 on the demo and
        default_credit: at ``learning_rate`` 0.1 with ``decay`` 1 the
        validation AUC is within 0.001 of its plateau after 8-12 epochs and
        stays there; the former 0.05 took over 30 epochs on the demo.
    batch_size : int
        Rows per mini-batch; batches are reshuffled each epoch. ``0`` means
        the whole intersection in one batch.
    learning_rate : float
        Initial step size.
    decay : float
        Step size at epoch ``t`` is ``learning_rate / (1 + decay * t)``.
    optimizer : {"momentum", "sgd", "adam", "rmsprop"}
        ``"momentum"`` (the default: heavy ball, factor 9/10) and ``"sgd"`` are
        linear in the gradient and run on secret shares (protocol ``shared``);
        ``"adam"`` and ``"rmsprop"`` square the gradient and need protocol
        ``"reveal-gradients"``. Defaults measured in issue 24
        (``python -m benchmarks.shared_schedule``): momentum at
        ``learning_rate`` 0.4 with ``decay`` 0.5 is within 0.002 AUC and 1 %
        log-loss of the former default (Adam, 0.1, decay 1) on default_credit
        as given and swapped, breast and the host-dominant synthetic set.
    penalty : {"none", "l1", "l2"}
    alpha : float
        Penalty strength (the intercept is never penalised).
    tol : float
        Stop when the absolute change of the epoch loss is below ``tol``;
        ``0`` (the default) disables it: the mini-batch loss is noisy, and a
        ``tol`` of 1e-4 stopped default_credit after 5 epochs, 0.003 AUC short.
    fit_intercept : bool
        Fit an intercept (on the guest).
    seed : int
        Seed of the batch shuffling (shared by all parties; not a secret).
    key_bits : int
        Paillier modulus length chosen by the arbiter.
    allow_insecure_key_size : bool
        Allow keys below 2048 bits (tests only).
    score_frac_bits, feature_frac_bits : int
        Fixed-point precision of the partial scores and of the feature values.
    validation_fraction : float
        Share of the intersection held out (stratified by label, chosen by the
        guest) for per-epoch validation AUC/KS/log-loss/Brier, computed by the
        arbiter on shuffled joint scores (no per-row score reaches the guest),
        and for the Platt calibration of the kept epoch; 0 disables both.
        Default 0.2. Ignored when validation tables (or rows) are given.
    patience : int
        With validation: stop after this many epochs without a better
        validation figure — log-loss in the accurate mode (from epoch
        ``curvature_every`` on), AUC in the Taylor mode (:func:`selection_key`)
        — and restore the best epoch's weights;
        0 disables (default 5; without validation rows it has no effect).
    class_weight : str
        ``"none"``, ``"balanced"`` (each class weighs ``n / (2 n_c)``) or a
        number: the weight of defaults (label 1) relative to non-defaults.
        Weights are rescaled to mean 1 over the training rows, quantised to
        ``2**-8`` and applied by the guest to the encrypted residuals; hosts
        never see them. The convergence loss stays unweighted.
    mode : {"accurate", "taylor"}
        ``"accurate"`` (the default): the logistic loss expanded to second
        order around the guest's own score ``s_g`` instead of around 0: the
        guest forms ``4d = 4(σ(s_g) − y) + 4σ'(s_g)·h + 2σ''(s_g)·q`` from
        the hosts' encrypted scores ``h`` and clipped squares ``q``; on
        default_credit its AUC is within 0.002 of exact logistic regression.
        ``"taylor"``: the second-order expansion around 0 that FATE uses (a
        scaled least-squares fit). See ``hetero_lr.md``, "Accurate mode".
    curvature_every : int
        Accurate mode: each row's encrypted squares ``q`` are refreshed every
        ``curvature_every`` epochs, a share ``1/curvature_every`` of the rows
        in each epoch (:func:`squares_due`; the guest reuses the last ones in
        between; at convergence they are current, so the fixed point does
        not move). Default 4.
    protocol : {"shared", "reveal-gradients"}
        ``"shared"`` (the default): every party's weights exist during
        training only as two additive shares, its own and the arbiter's; the
        arbiter's answer to a masked gradient is its new share, encrypted, so
        no party ever sees a gradient; at the end the arbiter gives each party
        its share of that party's own weights. The accurate mode expands
        around the guest's own model, fitted alone before training; the guest
        learns the epoch losses (at most a quarter of the training rows in
        number). ``"reveal-gradients"``: the protocol of
        versions 1-4: every party sees its plaintext gradient after every
        batch, and a run's worth of them tells a curious host the labels and
        a curious guest the hosts' scores (issue 24). See ``hetero_lr.md``.

    Every value is checked when a config is made (:class:`ConfigError`
    naming the first bad one), so a ``TrainConfig`` is valid wherever it
    travels: locally once, and again by each receiver as the wire codec
    rebuilds it from a peer's bytes. Job options that are not hyper-parameters
    (WOE binning, training-row scoring) live in :class:`vfl.jobs.JobOptions`
    and never reach the arbiter.
    """

    epochs: int = 30
    batch_size: int = 2048
    learning_rate: float = 0.4
    decay: float = 0.5
    optimizer: str = "momentum"
    penalty: str = "none"
    alpha: float = 0.0
    tol: float = 0.0
    fit_intercept: bool = True
    seed: int = 0
    key_bits: int = 2048
    allow_insecure_key_size: bool = False
    score_frac_bits: int = 32
    feature_frac_bits: int = 20
    validation_fraction: float = 0.2
    patience: int = 5
    class_weight: str = "none"
    mode: str = "accurate"
    curvature_every: int = 4
    protocol: str = "shared"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TrainConfig:
        """Check every value; raise :class:`ConfigError` naming the first bad one.

        Runs when the config is made; calling it again is never needed.
        """

        def bad(name: str, want: str) -> ConfigError:
            return ConfigError(
                f"The {name!r} parameter must be {want}. Got {getattr(self, name)!r} instead."
            )

        for name in ("epochs",):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(name, "an int >= 1")
        if not isinstance(self.batch_size, int) or self.batch_size < 0:
            raise bad("batch_size", "an int >= 0 (0: full batch)")
        for name, lo in (("learning_rate", 0.0),):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v <= lo:
                raise bad(name, "a float in the range (0, inf)")
        for name in ("decay", "alpha", "tol"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise bad(name, "a float in the range [0, inf)")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", "one of " + ", ".join(OPTIMIZERS))
        if self.penalty not in PENALTIES:
            raise bad("penalty", "one of " + ", ".join(PENALTIES))
        if self.penalty != "none" and self.alpha == 0:
            raise ConfigError(f"penalty {self.penalty!r} needs alpha > 0 (with alpha 0 it does "
                              "nothing); set alpha, e.g. 0.01, or penalty 'none'.")
        for name in ("seed", "score_frac_bits", "feature_frac_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(name, "an int >= 0")
        for name in ("fit_intercept", "allow_insecure_key_size"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        if not 8 <= self.feature_frac_bits <= self.score_frac_bits <= 48:
            raise bad("feature_frac_bits", "between 8 and score_frac_bits (<= 48)")
        if not isinstance(self.validation_fraction, int | float) or not (
                0 <= self.validation_fraction < 0.9):
            raise bad("validation_fraction", "a float in the range [0, 0.9)")
        if self.mode not in MODES:
            raise bad("mode", "one of " + ", ".join(MODES))
        if self.mode == "accurate" and self.score_frac_bits > MAX_ACCURATE_SCORE_FRAC_BITS:
            raise ConfigError(
                f"The 'score_frac_bits' parameter must be at most {MAX_ACCURATE_SCORE_FRAC_BITS} "
                f"in the accurate mode (its residual carries {CURVATURE_FRAC_BITS} more "
                f"fractional bits and must fit 62 bits). Got {self.score_frac_bits} instead.")
        if (not isinstance(self.curvature_every, int) or isinstance(self.curvature_every, bool)
                or not 1 <= self.curvature_every <= 1000):
            raise bad("curvature_every", "an int in [1, 1000]")
        if self.protocol not in PROTOCOLS:
            raise bad("protocol", "one of " + ", ".join(PROTOCOLS))
        if self.protocol == "shared" and self.optimizer not in SHARED_OPTIMIZERS:
            raise ConfigError(
                f"optimizer {self.optimizer!r} squares or normalises the gradient, which no "
                "party sees under protocol 'shared'; use 'momentum' (the default) or 'sgd', or "
                "protocol 'reveal-gradients', which shows every party its gradients.")
        if self.protocol == "shared" and self.penalty == "l1":
            raise ConfigError("penalty 'l1' needs the sign of each weight, which no party "
                              "knows during training under protocol 'shared'; use 'l2'.")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise bad("patience", "an int >= 0")
        if self.class_weight not in ("none", "balanced"):
            try:
                cw = float(self.class_weight)
            except ValueError:
                cw = -1.0
            if not (math.isfinite(cw) and cw > 0):
                raise bad("class_weight", "'none', 'balanced' or a positive number")
        if not isinstance(self.key_bits, int) or not 256 <= self.key_bits <= 8192:
            raise bad("key_bits", "an int in [2048, 8192] (>= 256 with allow_insecure_key_size)")
        return self

    def replace(self, **changes: object) -> TrainConfig:
        """A copy with some fields changed."""
        data = asdict(self)
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"Unknown training parameters: {', '.join(sorted(unknown))}.")
        data.update(changes)
        return TrainConfig(**data)


WEIGHT_BITS = 8


def weight_frac_bits(config: TrainConfig) -> int:
    """Extra fixed-point bits the class weights add to the residual's scale."""
    return 0 if config.class_weight == "none" else WEIGHT_BITS


def squares_due(config: TrainConfig, epoch: int, rows: object) -> object:
    """Which of ``rows`` get fresh encrypted clipped squares in ``epoch`` (accurate mode).

    A boolean array, one per row. Row ``r`` (its position in the aligned
    order) gets them in epochs ``1 + (r mod R) + k R`` (``R =
    curvature_every``): every row every ``R`` epochs, and each epoch a share
    ``1/R`` of the rows, so every epoch costs the same. Epoch 0 sends none:
    the hosts' weights start at zero, so it runs on the first-order term
    alone while they move. The rule is public: both sides compute it; until
    its first squares a row has none (its second-order term is 0).
    """
    import numpy as np

    r = np.asarray(rows, dtype=np.int64)
    if config.mode != "accurate" or epoch < 1:
        return np.zeros(r.shape, dtype=bool)
    return (r - (epoch - 1)) % config.curvature_every == 0


def shared_squares_due(config: TrainConfig, epoch: int, rows: object) -> object:
    """Protocol ``shared``: which of ``rows`` the guest has squared with the arbiter in
    ``epoch`` (both modes; the Taylor mode uses them for its loss only): the accurate
    mode's rule of :func:`squares_due`, every ``curvature_every`` epochs from epoch 1."""
    import numpy as np

    r = np.asarray(rows, dtype=np.int64)
    if epoch < 1:
        return np.zeros(r.shape, dtype=bool)
    return (r - (epoch - 1)) % config.curvature_every == 0


def selection_key(config: TrainConfig, epoch: int, auc: float,
                  log_loss: float) -> tuple[bool, float]:
    """How the guest picks the kept epoch and counts patience: the largest key wins.

    ``(eligible, score)``. The score: accurate mode, the lowest validation
    log-loss (the objective it approximates; smoother than the AUC, which
    dipped for a few epochs after epoch 0 and stopped a run at epoch 0 in
    issue 11's measurements); Taylor mode, the highest validation AUC (its
    probabilities are biased, so its log-loss says little). The figures arrive
    rounded to 4 decimals; an epoch must beat the best so far after rounding
    (the first of equals is kept). Eligible: in
    the accurate mode only epochs from ``curvature_every`` on, when every row
    has had its squares (before that the model still lacks part of its
    second-order term); an earlier epoch is kept only if no later one is
    eligible (a run shorter than that). The arbiter applies the same rule to
    the epoch it calibrates.
    """
    if config.mode == "accurate":
        return epoch >= config.curvature_every, -log_loss
    return True, auc


def tol_applies(config: TrainConfig, epoch: int) -> bool:
    """Whether ``tol`` may stop the run after ``epoch``: in the accurate mode (and under
    protocol ``shared`` in both modes) not before epoch ``curvature_every``, while the
    squares still arrive and the loss rises."""
    # protocol shared: the Taylor mode's loss also uses stored squares (of the joint score)
    warm_up = config.mode == "accurate" or config.protocol == "shared"
    return not warm_up or epoch >= config.curvature_every


def score_scale_bits(config: TrainConfig) -> int:
    """Fractional bits of the encrypted partial scores: ``F``; under protocol ``shared``
    ``F + G`` (``F_s``: quantised features times weight shares at ``2^F``)."""
    if config.protocol == "shared":
        return config.score_frac_bits + config.feature_frac_bits
    return config.score_frac_bits


def square_slot_bits(config: TrainConfig) -> int:
    """Bits per packed slot of a squares request: ``x + 2^(F_s+16)`` with ``|x| < 2^(F_s+16)``
    (``x`` at ``2^F_s``, below ``2^SQUARE_VALUE_BITS`` in magnitude), one bit of headroom."""
    return score_scale_bits(config) + SQUARE_VALUE_BITS + 2


def loss_frac_bits(config: TrainConfig) -> int:
    """Fractional bits of the guest's encrypted epoch loss: ``F + 16`` (accurate mode) or
    ``2F`` (Taylor mode, 8 times the loss); protocol ``shared``: ``F_s + 16`` or ``F_s``."""
    accurate = config.mode == "accurate"
    if config.protocol == "shared":
        return score_scale_bits(config) + (CURVATURE_FRAC_BITS if accurate else 0)
    return config.score_frac_bits + (CURVATURE_FRAC_BITS if accurate else config.score_frac_bits)


def residual_frac_bits(config: TrainConfig) -> int:
    """Fractional bits of ``[[4d]]``: ``F``, plus the curvature factors' bits in accurate
    mode, plus the class weights' bits with class weights. Under protocol ``shared`` the
    scores are at ``2^F_s`` (``F_s = F + G``) instead of ``2^F``."""
    extra = CURVATURE_FRAC_BITS if config.mode == "accurate" else 0
    return score_scale_bits(config) + extra + weight_frac_bits(config)


def row_weights(y01: object, config: TrainConfig, train_rows: object) -> object:
    """Quantised per-row class weights (mean 1 over the training rows), or None (guest only)."""
    import numpy as np

    if config.class_weight == "none":
        return None
    y = np.asarray(y01).astype(np.int64)
    t = y[np.asarray(train_rows, dtype=np.int64)]
    n, n1 = len(t), int(t.sum())
    n0 = n - n1
    if config.class_weight == "balanced":
        w0, w1 = n / (2.0 * max(n0, 1)), n / (2.0 * max(n1, 1))
    else:
        w0, w1 = 1.0, float(config.class_weight)
    mean = (w0 * n0 + w1 * n1) / n
    w = np.where(y == 1, w1 / mean, w0 / mean)
    return np.rint(w * (1 << WEIGHT_BITS)).astype(np.int64)


def epoch_batches(n_rows: int, validation_rows: list[int], config: TrainConfig,
                  epoch: int) -> list[list[int]]:
    """Batches of ``epoch`` over the training rows (all rows not held out for validation)."""
    import numpy as np

    if not validation_rows:
        return batch_plan(n_rows, config.batch_size, config.seed, epoch)
    train = np.setdiff1d(np.arange(n_rows), np.asarray(validation_rows, dtype=np.int64))
    return [train[b].tolist() for b in batch_plan(len(train), config.batch_size, config.seed,
                                                     epoch)]


def validation_split(y: list[float] | object, fraction: float) -> list[int]:
    """Stratified hold-out rows (sorted), drawn by the guest with the OS CSPRNG.

    The draw is secret: it depends on the labels (stratification), so a draw
    from a public seed could be replayed by anyone who knows the seed to
    recover label counts and labels. With ``secrets`` the set a host sees is
    a uniformly random subset given the two class sizes; each row is in it
    with probability ``round(n_c * fraction) / n_c`` for its class ``c``,
    equal for both classes up to rounding (see ``hetero_lr.md``).
    """
    import numpy as np

    yy = np.asarray(y)
    if fraction <= 0:
        return []
    rng = secrets.SystemRandom()
    out: list[int] = []
    for cls in (0, 1):
        idx = np.flatnonzero(yy == cls).tolist()
        k = int(round(len(idx) * fraction))
        out.extend(rng.sample(idx, k))
    return sorted(out)


def max_batch_rows(n_train: int, batch_size: int) -> int:
    """The largest batch :func:`batch_plan` makes over ``n_train`` rows."""
    if batch_size == 0 or batch_size >= n_train:
        return n_train
    count = max(1, n_train // batch_size)
    return -(-n_train // count)


# ---------------------------------------------------------------- bounded masks
#: Statistical hiding parameter of the masks towards the arbiter (bits).
MASK_KAPPA = 80
#: Bit budget of a quantised feature's integer part: every |x| < 2**FEATURE_BITS.
FEATURE_BITS = 16
#: Bit budget of the residual's integer part: every |s - 2y| < 2**RESIDUAL_BITS.
RESIDUAL_BITS = 16
#: Bit budget of a class weight's integer part (weights < 2**CLASS_WEIGHT_BITS).
CLASS_WEIGHT_BITS = 16
#: Bound on one row's Taylor loss: ``l_i < 2**LOSS_ROW_BITS`` (|s| up to ~60).
LOSS_ROW_BITS = 9
#: The arbiter returns the mean loss rounded to ``2**-LOSS_GRID_BITS``.
LOSS_GRID_BITS = 32


@dataclass(frozen=True, slots=True)
class MaskBudget:
    """Widths of masked gradients (``protocols/specs/hetero_lr.md``, "Bounded masks").

    ``value_bits`` (ℓ) bounds every honest gradient entry: ``|g| < 2**ℓ``. A
    party sends ``[[g + 2**ℓ + r]]`` with ``r`` uniform on ``[0, 2**(ℓ+κ))``;
    the arbiter decrypts only values below ``2**masked_bits`` (``ℓ + κ + 1``)
    and refuses anything else, so one decrypted slot carries at most
    ``masked_bits`` bits, whatever a deviating sender packed into it, and the
    decrypted value is within statistical distance ``2**(1-κ)`` of a value
    independent of ``g``.
    """

    value_bits: int
    masked_bits: int

    @property
    def offset(self) -> int:
        """``2**ℓ``: shifts honest gradients to non-negative values."""
        return 1 << self.value_bits

    @property
    def width(self) -> int:
        """Bytes per decrypted value on the wire."""
        return (self.masked_bits + 7) // 8

    def draw_masks(self, count: int) -> list[int]:
        """``count`` secret masks, uniform on ``[0, 2**(ℓ+κ))``."""
        return [secrets.randbits(self.value_bits + MASK_KAPPA) for _ in range(count)]


#: Allowance for the envelope around a message's payload (header, field names, framing).
ENVELOPE_ALLOWANCE = 64 << 10


def ciphertext_width(config: TrainConfig) -> int:
    """Bytes of one ciphertext mod n^2 for the job's key size."""
    return (2 * config.key_bits + 7) // 8


#: Bytes of a ``CalibrationReport`` beyond the envelope (a few floats and 10 bands).
CALIBRATION_ALLOWANCE = 2048


def message_limits(config: TrainConfig, n_rows: int, n_train: int,
                   columns: list[int], n_validation: int = 0) -> dict[str, int]:
    """The largest message (encoded bytes) each kind of peer may send in this job.

    Keys: ``"host_to_guest"`` (``HostForward``: b+1 ciphertexts, 2b in accurate mode; ``PartialScores``:
    8 bytes per aligned row), ``"guest_to_host"`` (``Residual``: 2b ciphertexts),
    ``"party_to_arbiter"`` (``MaskedGradient`` of the widest party, ``EpochLoss``),
    ``"arbiter_to_party"`` (the public key, ``DecryptedGradient``, ``CalibrationReport``);
    with ``n_validation`` rows also ``ValidationScores`` (host → guest) and
    ``ValidationBatch`` (guest → arbiter): a ciphertext per row, one per packed slot group
    for the arbiter, and a label bit per row. Drivers pass
    them to :meth:`vfl.channel.Channel.limit_message_size` once the job is known.
    """
    w = ciphertext_width(config)
    b = max_batch_rows(n_train, config.batch_size)
    k = max(columns) if columns else 1
    budget = mask_budget(config, n_train)
    # the guest packs the validation scores (VALIDATION_SLOT_BITS-bit slots) for the arbiter
    # (the modulus may have one bit less than key_bits: count the slots of that one)
    packed = -(-n_validation // max(1, (config.key_bits - 3) // VALIDATION_SLOT_BITS))
    limits = {
        # accurate mode: b scores and, in some epochs, b squares; Taylor: b scores + 1 sum
        "host_to_guest": max(((2 * b) if config.mode == "accurate" else (b + 1)) * w,
                             8 * n_rows, n_validation * w) + ENVELOPE_ALLOWANCE,
        "guest_to_host": 2 * b * w + ENVELOPE_ALLOWANCE,
        "party_to_arbiter": max((k + 1) * w, packed * w + (n_validation + 7) // 8)
        + ENVELOPE_ALLOWANCE,
        "arbiter_to_party": k * budget.width + config.key_bits // 8 + CALIBRATION_ALLOWANCE
        + ENVELOPE_ALLOWANCE,
    }
    if config.protocol == "shared":
        # the guest's squares request: the batch rows due, packed; the arbiter's answer:
        # its share (k ciphertexts) and one fresh ciphertext per square
        n_bytes = (config.key_bits + 7) // 8
        slots = max(1, (config.key_bits - 3) // square_slot_bits(config))
        limits["party_to_arbiter"] = max(limits["party_to_arbiter"], (k + 1 + -(-b // slots)) * w
                                         + ENVELOPE_ALLOWANCE)
        limits["arbiter_to_party"] = max(limits["arbiter_to_party"], (k + 1 + b) * w
                                         + (k + 1) * n_bytes + ENVELOPE_ALLOWANCE)
    return limits


def mask_budget(config: TrainConfig, n_train: int) -> MaskBudget:
    """The mask widths every party derives from the job (the same on all of them).

    ``ℓ = bits(max batch) + (G + FEATURE_BITS) + (F + RESIDUAL_BITS)
    (+ weight bits + CLASS_WEIGHT_BITS with class weights)
    (+ CURVATURE_FRAC_BITS in accurate mode)``.
    """
    b = max(1, max_batch_rows(n_train, config.batch_size))
    # the residual's fractional bits: F (+ 16 accurate) (+ 8 class weights); shared: F_s or
    # 2 F_s (+ the same); the factors 4σ' ≤ 1 and |2σ''| < 1 add no integer bits
    ell = (b.bit_length() + config.feature_frac_bits + FEATURE_BITS
           + residual_frac_bits(config) + RESIDUAL_BITS)
    if weight_frac_bits(config):
        ell += CLASS_WEIGHT_BITS
    return MaskBudget(ell, ell + MASK_KAPPA + 1)


def batch_plan(n_rows: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Row indices of each mini-batch of ``epoch`` (identical on every party).

    The permutation only decides which aligned rows are processed together;
    it is not secret and is derived from the shared ``seed`` with numpy's
    PCG64, so every party computes the same plan without a message.
    All batches have at least ``batch_size`` rows (the remainder is spread).
    """
    import numpy as np

    if batch_size == 0 or batch_size >= n_rows:
        return [list(range(n_rows))]
    perm = np.random.default_rng([seed, epoch]).permutation(n_rows)
    count = max(1, n_rows // batch_size)
    return [chunk.tolist() for chunk in np.array_split(perm, count)]
