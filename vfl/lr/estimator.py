"""scikit-learn-flavoured estimators, one class per role.

Examples
--------
All three roles in one process, over the in-memory transport:

>>> import threading, numpy as np
>>> from vfl import (GuestLogisticRegression, HostLogisticRegression, Arbiter,
...                  InMemoryNetwork)
>>> rng = np.random.default_rng(0)
>>> Xg, Xh = rng.normal(size=(300, 2)), rng.normal(size=(300, 3))
>>> y = (Xg[:, 0] + Xh[:, 0] + rng.normal(size=300) > 0).astype(int)
>>> net = InMemoryNetwork(["guest", "host", "arbiter"])
>>> host = HostLogisticRegression(allow_insecure_key_size=True)
>>> arbiter = Arbiter(allow_insecure_key_size=True)
>>> threads = [
...     threading.Thread(target=host.fit, args=(Xh,), kwargs={"channel": net.endpoint("host")}),
...     threading.Thread(target=arbiter.run, kwargs={"channel": net.endpoint("arbiter")}),
... ]
>>> for t in threads: t.start()
>>> guest = GuestLogisticRegression(epochs=5, batch_size=100, key_bits=512,
...                                 allow_insecure_key_size=True)
>>> guest = guest.fit(Xg, y, channel=net.endpoint("guest"), hosts=["host"])
>>> for t in threads: t.join()
>>> guest.coef_.shape, host.coef_.shape
((2,), (3,))
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from vfl.calibration import FIGURES
from vfl.channel import Channel
from vfl.checkpoint import CheckpointStore
from vfl.crypto.engine import ComputeConfig, compute_context
from vfl.exceptions import ConfigError, DataError, NotFittedError
from vfl.lr.config import TrainConfig
from vfl.lr.driver import (
    run_arbiter,
    run_guest_scoring,
    run_guest_training,
    run_host_scoring,
    run_host_training,
)
from vfl.lr.guest import MIN_START_SPREAD
from vfl.lr.messages import CalibrationReport
from vfl.model import ModelPart
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.preprocess import Standardizer
from vfl.progress import ProgressHook
from vfl.types import FloatArray

__all__ = ["GuestLogisticRegression", "HostLogisticRegression", "Arbiter", "CONFIG_PARAMS"]

#: The guest estimator's parameter for every :class:`TrainConfig` field (the one
#: place the two names are paired; all other parameters are party-local).
CONFIG_PARAMS: dict[str, str] = {
    f.name: ("random_state" if f.name == "seed" else f.name) for f in fields(TrainConfig)}


def _plain(value: Any) -> Any:
    """A numpy scalar parameter (``random_state=np.int64(3)``) as the Python value."""
    return value.item() if isinstance(value, np.generic) else value


def _check_X(X: Any, name: str) -> FloatArray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name} must be 2-D (n_samples, n_features); got shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {arr.shape}).")
    if np.isinf(arr).any():
        raise DataError(f"{name} contains infinite values.")
    return arr


def _part_preprocessor(part: ModelPart) -> Standardizer | None:
    """The part's scaling; None if the model was trained without (``standardize=False``).

    The part's ``preprocessing`` also holds the party's WOE encoding and score
    bins (``woe``, ``score_bins``): only its ``kind`` says scaling was fitted.
    """
    pre = part.preprocessing
    if not isinstance(pre, dict):
        raise DataError(f"{part.party}'s model part: 'preprocessing' must be an object.")
    scaling = set(pre) - {"woe", "score_bins"}
    return Standardizer.from_dict(pre) if scaling else None


def _check_fitted(est: Any) -> None:
    if not hasattr(est, "coef_"):
        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet. Call 'fit' first."
        )


def _prepared(est: Any, X: Any) -> FloatArray:
    """Check a fitted estimator's input and apply its party's preprocessing."""
    _check_fitted(est)
    X = _check_X(X, "X")
    if X.shape[1] != est.n_features_in_:
        raise DataError(f"X has {X.shape[1]} features; the model has {est.n_features_in_}.")
    out: FloatArray = est.preprocessor_.transform(X) if est.preprocessor_ else np.nan_to_num(X)
    return out


class GuestLogisticRegression(BaseEstimator):
    """The guest's part of hetero logistic regression (it holds the label).

    What the guest learns: its own weights and intercept, its own gradients,
    the epoch losses, and at scoring time the hosts' partial scores of the
    scored rows. See ``protocols/specs/hetero_lr.md``.

    Parameters
    ----------
    epochs, batch_size, learning_rate, decay, optimizer, penalty, alpha, tol,
    fit_intercept, key_bits, allow_insecure_key_size, score_frac_bits,
    feature_frac_bits, class_weight, curvature_every :
        See :class:`vfl.lr.TrainConfig` (:meth:`from_config` builds the
        estimator from one).
    random_state : int
        Seed of the batch shuffling (``TrainConfig.seed``).
    standardize : bool
        Impute and standardise the guest's columns locally before training.
    n_jobs : int or None
        Worker processes for ciphertext work (None: all cores for jobs of at
        least 2,000 rows; 1: in this process).
    compute : ComputeConfig or None
        Where the ciphertext work runs (a party's ``[compute]`` TOML
        section). None: the local pool of ``n_jobs``. ``engine="dask"``:
        tasks on the party's own Dask cluster (:mod:`vfl.crypto.dask_engine`;
        ``n_jobs`` is then unused); a local one's ``workers``, when set,
        replaces ``n_jobs``. Party-local, like ``n_jobs``: the weights are
        the same whatever runs the work.
    validation_fraction : float
        Hold out this share of the intersection (stratified, drawn secretly
        with ``secrets``) for per-epoch validation AUC/KS/loss; the best
        epoch's weights are kept. Each host refuses more than its own
        ``max_validation_share`` (default 0.3).
    init_score_std : float
        Spread of the secret random part of the guest's starting weights, as
        the standard deviation of its initial scores (default 0.5). It keeps
        the first batch's residuals from taking two values, which would let a
        host solve its first gradient for the labels.
    patience : int
        Stop after this many epochs without a better validation log-loss
        (AUC in the Taylor mode) (0: never).
    class_weight : str
        ``"none"``, ``"balanced"`` or the weight of defaults as a number.
    mode : {"accurate", "taylor"}
        ``"accurate"`` (default): the logistic loss expanded to second order
        around the guest's own score, within 0.002 AUC of exact logistic
        regression on default_credit; ``"taylor"``: the expansion around 0
        that FATE uses. See ``protocols/specs/hetero_lr.md``, "Accurate mode".
    protocol : {"shared", "reveal-gradients"}
        ``"shared"``: every party's weights exist during training only as two
        additive shares, its own and the arbiter's, so no party sees a
        gradient; each party learns its own final weights (and the guest the
        epoch losses: ``hetero_lr.md``, "Secret-shared training").
        ``"reveal-gradients"``: the protocol of
        versions 1-4, in which every party sees its plaintext gradient after
        every batch; a whole run of them tells a curious host the labels and a
        curious guest the hosts' scores.
    randomizer_bits : int or None
        Length of this party's secret encryption exponents (None: half the
        key length, the conservative default; at least 448; see
        ``protocols/specs/paillier.md``). A party-local choice.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        The guest's slice of the weights only (on the standardised columns).
    intercept_ : float
    n_features_in_ : int
    n_iter_ : int
        Epochs run.
    classes_ : ndarray, [0, 1]
    loss_history_ : list of float
    validation_history_ : list of dict
        Per epoch: validation ``auc``, ``ks``, ``loss`` (empty without validation).
    best_epoch_ : int or None
        The epoch whose weights were kept (with validation).
    coef_init_, intercept_init_ : ndarray, float
        The secret start this run used (pass them to ``fit`` to replay it).
    validation_rows_ : list of int
        The held-out rows (indices into ``X``, then ``X_val``).
    calibration_ : dict or None
        Platt scaling of the joint score fitted out of the guest's sight on the
        validation rows (``slope``, ``intercept``), with the arbiter's figures
        before and after it; applied by :meth:`predict_proba`. None without
        validation rows.
    model_id_ : str
    preprocessor_ : Standardizer or None
    """

    def __init__(self, *, epochs: int = 30, batch_size: int = 2048, learning_rate: float = 0.4,
                 decay: float = 0.5, optimizer: str = "momentum", penalty: str = "none",
                 alpha: float = 0.0, tol: float = 0.0, fit_intercept: bool = True,
                 random_state: int = 0, key_bits: int = 2048,
                 allow_insecure_key_size: bool = False, standardize: bool = True,
                 n_jobs: int | None = None, randomizer_bits: int | None = None,
                 compute: ComputeConfig | None = None,
                 validation_fraction: float = 0.2, patience: int = 5,
                 class_weight: str = "none", init_score_std: float = 0.5,
                 score_frac_bits: int = 32, feature_frac_bits: int = 20,
                 mode: str = "accurate", curvature_every: int = 4,
                 protocol: str = "shared") -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.decay = decay
        self.optimizer = optimizer
        self.penalty = penalty
        self.alpha = alpha
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.random_state = random_state
        self.key_bits = key_bits
        self.allow_insecure_key_size = allow_insecure_key_size
        self.standardize = standardize
        self.n_jobs = n_jobs
        self.randomizer_bits = randomizer_bits
        self.compute = compute
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.class_weight = class_weight
        self.init_score_std = init_score_std
        self.score_frac_bits = score_frac_bits
        self.feature_frac_bits = feature_frac_bits
        self.mode = mode
        self.curvature_every = curvature_every
        self.protocol = protocol

    @classmethod
    def from_config(cls, config: TrainConfig, **params: Any) -> GuestLogisticRegression:
        """An estimator with ``config``'s hyper-parameters and party-local ``params``.

        ``params`` are the parameters that are not :class:`TrainConfig`
        fields (``standardize``, ``n_jobs``, ``randomizer_bits``, ``compute``,
        ``init_score_std``).
        """
        clash = sorted(set(params) & set(CONFIG_PARAMS.values()))
        if clash:
            raise ConfigError(f"{', '.join(clash)} come(s) from the TrainConfig; set it there.")
        est = cls(**{p: getattr(config, f) for f, p in CONFIG_PARAMS.items()}, **params)
        est._source_config = config  # already checked: fit uses it unless a parameter changed
        return est

    def _config(self) -> TrainConfig:
        """This estimator's hyper-parameters as a :class:`TrainConfig` (checked once).

        The config :meth:`from_config` was given, while the parameters still
        equal it; otherwise a new one made (and so checked) from the parameters.
        """
        values = {f: _plain(getattr(self, p)) for f, p in CONFIG_PARAMS.items()}
        source: TrainConfig | None = getattr(self, "_source_config", None)
        if source is not None and all(
                type(getattr(source, f)) is type(v) and getattr(source, f) == v
                for f, v in values.items()):
            return source
        try:
            return TrainConfig(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"GuestLogisticRegression: {exc}") from None

    def fit(self, X: Any, y: Any, *, channel: Channel, hosts: list[str],
            arbiter: str = "arbiter", progress: ProgressHook | None = None,
            model_id: str | None = None, X_val: Any = None,
            y_val: Any = None, coef_init: Any = None,
            intercept_init: float | None = None,
            checkpoints: CheckpointStore | None = None) -> GuestLogisticRegression:
        """Train jointly with ``hosts``; rows must already be PSI-aligned.

        ``X_val``/``y_val``: a separate validation table (aligned with the
        hosts' validation tables) instead of ``validation_fraction``.
        ``coef_init``/``intercept_init`` (as scikit-learn's ``SGDClassifier``):
        the guest's starting weights on the standardised columns, e.g. the
        ``coef_init_``/``intercept_init_`` of an earlier run to replay it.
        Default: a fresh secret random start (``init_score_std``), which keeps
        the first batch from leaking labels to the hosts; a fixed start must
        itself be secret and random. ``checkpoints``: the guest's checkpoint
        folder (:class:`vfl.checkpoint.CheckpointStore`; written after every
        epoch, and resumed from when opened with ``resume=True``).

        Returns
        -------
        self
        """
        config = self._config()
        if X_val is not None:  # validation tables replace the held-out share
            config = config.replace(validation_fraction=0.0)
        X = _check_X(X, "X")
        y = np.asarray(y).ravel()
        if y.shape[0] != X.shape[0]:
            raise DataError(f"X has {X.shape[0]} rows but y has {y.shape[0]}.")
        if not np.isin(y, [0, 1]).all() or len(np.unique(y)) != 2:
            raise DataError("y must contain both classes 0 and 1 and nothing else.")
        if not hosts:
            raise ConfigError("At least one host is needed for hetero logistic regression.")
        self.preprocessor_ = Standardizer.fit(X) if self.standardize else None
        Xp = self.preprocessor_.transform(X) if self.preprocessor_ else np.nan_to_num(X)
        val_rows = None
        if X_val is not None:
            Xv = _check_X(X_val, "X_val")
            yv = np.asarray(y_val).ravel()
            if Xv.shape[1] != X.shape[1] or yv.shape[0] != Xv.shape[0]:
                raise DataError("X_val/y_val do not match X in columns or rows.")
            val_rows = list(range(len(y), len(y) + len(yv)))
            Xp = np.vstack([Xp, self.preprocessor_.transform(Xv) if self.preprocessor_
                            else np.nan_to_num(Xv)])
            y = np.concatenate([y, yv])
        init = None
        if coef_init is not None:
            init = np.asarray(coef_init, dtype=np.float64).ravel()
            if init.shape != (X.shape[1],) or not np.all(np.isfinite(init)):
                raise ConfigError(f"coef_init must hold {X.shape[1]} finite numbers.")
            spread = float(np.std(Xp[: X.shape[0]] @ init))
            if spread < MIN_START_SPREAD:
                raise ConfigError(
                    f"coef_init gives initial guest scores of spread {spread:.3g}, below "
                    f"{MIN_START_SPREAD}: the first batch's residuals would let a host solve "
                    "for the labels. Use a secret random start (the default) or an earlier "
                    "run's coef_init_."
                )
            if config.fit_intercept:
                init = np.append(init, 0.0 if intercept_init is None else float(intercept_init))
        with compute_context(self.compute):
            party, epochs = run_guest_training(channel, channel.party, Xp, y.astype(float),
                                               config, hosts=list(hosts), arbiter=arbiter,
                                               progress=progress, model_id=model_id,
                                               workers=self.n_jobs,
                                               exponent_bits=self.randomizer_bits,
                                               validation_rows=val_rows,
                                               initial_coef=init,
                                               init_score_std=float(self.init_score_std),
                                               checkpoints=checkpoints)
        k = X.shape[1]
        self.coef_init_ = party.initial_coef[:k].copy()
        self.intercept_init_ = float(party.initial_coef[k]) if config.fit_intercept else 0.0
        self.validation_rows_ = list(party.validation_rows)
        self.calibration_ = calibration_dict(party.calibration)
        self.coef_ = party.coef[:k].copy()
        self.intercept_ = float(party.coef[k]) if config.fit_intercept else 0.0
        self.n_features_in_ = k
        self.n_iter_ = epochs
        self.classes_ = np.array([0, 1])
        self.loss_history_ = list(party.loss_history)
        self.validation_history_ = list(party.validation_history)
        self.best_epoch_ = party.best_epoch
        self.model_id_ = party.model_id
        self.hosts_ = list(hosts)
        return self

    def partial_score(self, X: Any) -> FloatArray:
        """This party's share of the linear score, ``x_g . w_g + b``."""
        return _prepared(self, X) @ self.coef_ + self.intercept_

    def predict_proba(self, X: Any, *, channel: Channel, hosts: list[str] | None = None
                      ) -> FloatArray:
        """Joint probabilities for PSI-aligned rows; shape ``(n, 2)``."""
        cal = getattr(self, "calibration_", None)
        p1 = run_guest_scoring(channel, self.partial_score(X), self.model_id_,
                               hosts=list(hosts or self.hosts_),
                               calibration=None if cal is None else (cal["slope"],
                                                                     cal["intercept"]))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: Any, *, channel: Channel, hosts: list[str] | None = None
                ) -> np.ndarray:
        """Class labels at the 0.5 threshold."""
        return (self.predict_proba(X, channel=channel, hosts=hosts)[:, 1] >= 0.5).astype(int)

    def to_part(self, party: str, features: list[str], training: dict[str, Any]) -> ModelPart:
        """This party's saveable model part."""
        _check_fitted(self)
        return ModelPart(self.model_id_, "guest", party, list(features), self.coef_.tolist(),
                         self.intercept_,
                         self.preprocessor_.to_dict() if self.preprocessor_ else {},
                         training, {"hosts": self.hosts_},
                         calibration=None if self.calibration_ is None else {
                             k: self.calibration_[k] for k in ("method", "slope", "intercept")})

    @classmethod
    def from_part(cls, part: ModelPart) -> GuestLogisticRegression:
        """Rebuild a fitted guest estimator from its saved part."""
        est = cls()
        est.coef_ = np.asarray(part.coef, dtype=float)
        est.intercept_ = float(part.intercept or 0.0)
        est.n_features_in_ = len(part.coef)
        est.classes_ = np.array([0, 1])
        est.model_id_ = part.model_id
        est.hosts_ = list(part.peers.get("hosts", []))
        est.preprocessor_ = _part_preprocessor(part)
        est.n_iter_ = int(part.training.get("epochs_run", 0))
        est.loss_history_ = list(part.training.get("loss_history", []))
        est.calibration_ = None if part.calibration is None else dict(part.calibration)
        return est


def calibration_dict(report: CalibrationReport | None) -> dict[str, Any] | None:
    """The arbiter's calibration report as the estimator keeps it (None: uncalibrated)."""
    if report is None:
        return None
    names = FIGURES
    return {
        "method": "platt", "slope": report.slope, "intercept": report.intercept,
        "epoch": report.best_epoch,
        "before": dict(zip(names, report.before.tolist(), strict=True)),
        "after": dict(zip(names, report.after.tolist(), strict=True)),
        "bands": [{"band": i + 1, "rows": int(r), "defaults": int(d),
                   "observed_rate": round(int(d) / int(r), 4) if r else 0.0,
                   "mean_pd_before": float(b), "mean_pd_after": float(a)}
                  for i, (r, d, b, a) in enumerate(zip(
                      report.band_rows.tolist(), report.band_defaults.tolist(),
                      report.band_pd_before.tolist(), report.band_pd_after.tolist(),
                      strict=True))],
    }


class HostLogisticRegression(BaseEstimator):
    """A host's part of hetero logistic regression (features only).

    What the host learns: the job's hyper-parameters, its own weights and
    gradients, and when training stops. Never the labels, the guest's
    features or the other hosts' features.

    Parameters
    ----------
    allow_insecure_key_size : bool
        Accept Paillier keys below 2048 bits from the arbiter (tests only).
    standardize : bool
        Impute and standardise this host's columns locally.
    n_jobs, randomizer_bits : int or None
        As for the guest (party-local choices).
    compute : ComputeConfig or None
        As for the guest: where this host's ciphertext work runs.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        This host's slice of the weights only.
    n_features_in_, n_iter_, model_id_, preprocessor_
    """

    def __init__(self, *, allow_insecure_key_size: bool = False, standardize: bool = True,
                 n_jobs: int | None = None, randomizer_bits: int | None = None,
                 compute: ComputeConfig | None = None) -> None:
        self.allow_insecure_key_size = allow_insecure_key_size
        self.standardize = standardize
        self.n_jobs = n_jobs
        self.randomizer_bits = randomizer_bits
        self.compute = compute

    def fit(self, X: Any, *, channel: Channel, guest: str = "guest", arbiter: str = "arbiter",
            progress: ProgressHook | None = None, X_val: Any = None,
            policy: SecurityPolicy | None = None,
            checkpoints: CheckpointStore | None = None) -> HostLogisticRegression:
        """Train with the guest's job; rows must already be PSI-aligned.

        ``X_val``: this host's validation table when the guest uses one.
        ``policy``: this host's own limits (default: the safe defaults, with
        ``allow_insecure_key_size`` from this estimator). ``checkpoints``: this
        host's checkpoint folder (:class:`vfl.checkpoint.CheckpointStore`).
        """
        if policy is None:
            policy = DEFAULT_POLICY.replace(allow_insecure_key_size=self.allow_insecure_key_size)
        X = _check_X(X, "X")
        self.preprocessor_ = Standardizer.fit(X) if self.standardize else None
        Xp = self.preprocessor_.transform(X) if self.preprocessor_ else np.nan_to_num(X)
        if X_val is not None:
            Xv = _check_X(X_val, "X_val")
            Xp = np.vstack([Xp, self.preprocessor_.transform(Xv) if self.preprocessor_
                            else np.nan_to_num(Xv)])
        with compute_context(self.compute):
            party, epochs = run_host_training(channel, channel.party, Xp, guest=guest,
                                              arbiter=arbiter,
                                              progress=progress, workers=self.n_jobs,
                                              exponent_bits=self.randomizer_bits, policy=policy,
                                              checkpoints=checkpoints)
        self.coef_ = party.coef.copy()
        self.n_features_in_ = X.shape[1]
        self.n_iter_ = epochs
        self.model_id_ = party.model_id
        self.guest_ = guest
        self.config_ = party.config
        return self

    def partial_score(self, X: Any) -> FloatArray:
        """This host's share of the linear score, ``x_h . w_h``."""
        return _prepared(self, X) @ self.coef_

    def serve_scores(self, X: Any, *, channel: Channel, guest: str | None = None) -> None:
        """Send this host's partial scores of PSI-aligned rows to the guest."""
        run_host_scoring(channel, self.partial_score(X), self.model_id_,
                         guest=guest or self.guest_)

    def to_part(self, party: str, features: list[str], training: dict[str, Any]) -> ModelPart:
        """This party's saveable model part."""
        _check_fitted(self)
        return ModelPart(self.model_id_, "host", party, list(features), self.coef_.tolist(),
                         None, self.preprocessor_.to_dict() if self.preprocessor_ else {},
                         training, {"guest": self.guest_})

    @classmethod
    def from_part(cls, part: ModelPart) -> HostLogisticRegression:
        """Rebuild a fitted host estimator from its saved part."""
        est = cls()
        est.coef_ = np.asarray(part.coef, dtype=float)
        est.n_features_in_ = len(part.coef)
        est.model_id_ = part.model_id
        est.guest_ = str(part.peers.get("guest", "guest"))
        est.preprocessor_ = _part_preprocessor(part)
        est.n_iter_ = int(part.training.get("epochs_run", 0))
        return est


class Arbiter(BaseEstimator):
    """The arbiter: generates the Paillier key pair and decrypts masked values only.

    What the arbiter learns: the job's shapes and hyper-parameters and the
    epoch losses; every gradient it decrypts is statistically hidden by a
    mask of ``ℓ + κ`` bits, and it refuses to decrypt anything outside the
    masked range (it is no decryption oracle; ``protocols/specs/hetero_lr.md``).

    Parameters
    ----------
    allow_insecure_key_size : bool
        Accept a job asking for keys below 2048 bits (tests only).

    Attributes
    ----------
    loss_history_ : list of float
    """

    def __init__(self, *, allow_insecure_key_size: bool = False) -> None:
        self.allow_insecure_key_size = allow_insecure_key_size

    def run(self, *, channel: Channel, guest: str = "guest",
            progress: ProgressHook | None = None,
            policy: SecurityPolicy | None = None,
            checkpoints: CheckpointStore | None = None) -> Arbiter:
        """Serve one training job of ``guest`` (``policy``: the arbiter's own limits;
        ``checkpoints``: its checkpoint folder, with the passphrase that seals its key)."""
        party = run_arbiter(channel, guest=guest,
                            allow_insecure_key_size=self.allow_insecure_key_size,
                            progress=progress, policy=policy, checkpoints=checkpoints)
        self.loss_history_ = list(party.loss_history)
        self.n_iter_ = len(party.loss_history)
        return self
