"""What each party does in a job, over any channel: PSI, then training or scoring.

The same functions run in threads over the in-memory transport (one-machine
CLI, tests) and in separate processes over gRPC (``vfl run``), so both give
identical models for the same data and seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from vfl.binning import run_binning_guest, run_binning_host
from vfl.binning.woe import WoeEncoder
from vfl.channel import Channel
from vfl.checkpoint import CheckpointStore
from vfl.crypto.engine import ComputeConfig
from vfl.data import PartyTable
from vfl.exceptions import ConfigError, DataError, RemoteProtocolError
from vfl.lr.config import TrainConfig
from vfl.lr.driver import run_guest_scoring_with_points, run_host_scoring
from vfl.lr.estimator import Arbiter, GuestLogisticRegression, HostLogisticRegression
from vfl.messages import Prepare
from vfl.metrics import evaluate
from vfl.model import ModelPart
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.preprocess import FeatureRanges, RangePolicy
from vfl.progress import ProgressHook
from vfl.psi.cache import ReuseOffer
from vfl.psi.driver import run_psi_guest, run_psi_host
from vfl.scorecard import (
    SCORE_BINS_KEY,
    PointsTable,
    ScoreBins,
    Scorecard,
    part_points_table,
)


@dataclass(frozen=True)
class JobOptions:
    """The optional steps of a training job, around logistic regression (set by the guest).

    The hosts learn them in ``job.Prepare/2`` right after PSI (each checks
    them against its own policy); the arbiter never sees them. Checked when
    made, like :class:`TrainConfig`.

    Parameters
    ----------
    woe_bins : int
        Before training, WOE-encode every party's columns with this many
        equal-frequency bins (federated binning for host columns; see
        ``protocols/specs/binning.md``); 0 keeps the raw columns.
    iv_bins : int
        Without WOE encoding: run the federated binning for the information
        value table only (the report's IV chart, and the leakage check of the
        hosts' columns) with this many bins; 0: off. Each host learns nothing;
        the guest learns the event count per host bin (``binning.md``).
    score_training_rows : bool
        After training, ask every host to score all training rows so the
        guest can evaluate on them (each host must allow it: it reveals its
        partial score of every training customer). Without it the guest
        evaluates the validation rows, if any.
    allow_suspicious : bool
        Train even if a single column predicts the label almost perfectly
        (:func:`leakage_check`; the guest's own columns, and the hosts'
        through the federated IV table when WOE binning runs). Guest-local:
        never sent to a peer.
    announce_label : bool
        Tell the hosts the label column's name, so each refuses a column of
        that name (a leaked label). Off by default: the name is the guest's.
    """

    woe_bins: int = 0
    iv_bins: int = 0
    score_training_rows: bool = False
    allow_suspicious: bool = False
    announce_label: bool = False

    def __post_init__(self) -> None:
        for name in ("woe_bins", "iv_bins"):
            v = getattr(self, name)
            if v != 0 and not (isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 100):
                raise ConfigError(f"The {name!r} option must be 0 (off) or an int in [2, 100]. "
                                  f"Got {v!r} instead.")
        for name in ("score_training_rows", "allow_suspicious", "announce_label"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"The {name!r} option must be true or false.")


#: A single column with univariate AUC (either direction) or IV (10 bins) at least
#: this is suspicious. Measured: a copy of the label has AUC 1.000 and IV 12.6
#: (breast, 569 rows) / 20.2 (default_credit, 30,000 rows); the strongest real
#: column of the breast-cancer set has AUC 0.975 and IV 6.3, default_credit's
#: AUC 0.61 and IV 0.29 (credit columns rarely pass IV 0.5).
LEAKAGE_AUC = 0.99
LEAKAGE_IV = 10.0


def leakage_check(aligned: PartyTable, party: str,
                  iv_table: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Columns that predict the label almost perfectly (a sign of target leakage).

    The guest's own columns by univariate AUC and IV (computed in the clear on
    its aligned rows); the hosts' columns by the federated IV table, when one
    was computed. Returns ``{"checked": ..., "suspicious": [{party, feature,
    auc?, iv}]}`` for the report.
    """
    from sklearn.metrics import roc_auc_score

    from vfl.binning.core import bin_stats_clear, woe_iv

    assert aligned.y is not None
    y = aligned.y
    suspicious: list[dict[str, Any]] = []
    for j, name in enumerate(aligned.feature_names):
        col = aligned.X[:, j]
        filled = np.where(np.isnan(col), np.nanmedian(col) if (~np.isnan(col)).any() else 0.0,
                          col)
        auc = float(roc_auc_score(y, filled)) if np.ptp(filled) > 0 else 0.5
        stats = bin_stats_clear(name, col, y, 10)
        iv = woe_iv(stats.counts, stats.events, int(y.sum()), len(y))[1]
        if max(auc, 1 - auc) >= LEAKAGE_AUC or iv >= LEAKAGE_IV:
            suspicious.append({"party": party, "feature": name, "auc": max(auc, 1 - auc),
                               "iv": iv})
    check = {"checked": [f"{party}: univariate AUC and IV of {len(aligned.feature_names)} "
                         "column(s)"],
             "auc_threshold": LEAKAGE_AUC, "iv_threshold": LEAKAGE_IV, "suspicious": suspicious}
    return check if iv_table is None else with_host_iv(check, iv_table, party)


def with_host_iv(check: dict[str, Any], iv_table: list[dict[str, Any]],
                 party: str) -> dict[str, Any]:
    """``check`` extended with the hosts' columns of the federated IV table."""
    hosts = [r for r in iv_table if r["party"] != party]
    return {**check, "checked": [*check["checked"], f"hosts: federated IV of {len(hosts)} "
                                                    "column(s)"],
            "suspicious": [*check["suspicious"], *(
                {"party": r["party"], "feature": r["feature"], "iv": r["iv"]}
                for r in hosts if r["iv"] >= LEAKAGE_IV)]}


def _stop_on_leakage(check: dict[str, Any]) -> None:
    if not check["suspicious"]:
        return
    shown = "; ".join(
        f"{s['party']}'s {s['feature']!r} ("
        + (f"AUC {s['auc']:.3f}, " if "auc" in s else "") + f"IV {s['iv']:.2f})"
        for s in check["suspicious"][:5])
    raise DataError(
        f"Target leakage? These columns alone predict the label almost perfectly: {shown}. "
        "Leave them out (--exclude / [data] exclude), or train anyway with "
        "--allow-suspicious ([train] allow_suspicious = true).")


__all__ = [
    "JobOptions",
    "encode_for_part",
    "part_ranges",
    "RANGES_KEY",
    "GuestOutcome",
    "HostOutcome",
    "guest_fit_job",
    "host_fit_job",
    "arbiter_fit_job",
    "guest_predict_job",
    "host_predict_job",
]



@contextlib.contextmanager
def psi_compute(compute: ComputeConfig | None,
                progress: ProgressHook | None = None) -> Iterator[dict[str, Any]]:
    """Where a PSI's blinding runs: the party's Dask cluster, or ``workers`` local processes.

    Yields the keyword arguments for :func:`~vfl.psi.driver.run_psi_guest` /
    :func:`~vfl.psi.driver.run_psi_host` (only the bucketed protocol, for sets
    above one bucket, uses them).
    """
    shown = {} if progress is None else {"progress": progress.on_psi}
    if compute is None or not compute.uses_dask:
        yield {"workers": None if compute is None else compute.workers, **shown}
        return
    from vfl.crypto.dask_engine import DaskBlinder

    with DaskBlinder.connect(compute) as blinder:
        yield {"blinder": blinder, **shown}

#: Where a part keeps its raw features' training ranges (:class:`vfl.preprocess.FeatureRanges`).
RANGES_KEY = "ranges"


def part_ranges(part: ModelPart) -> FeatureRanges | None:
    """The training ranges a part keeps (None: saved before vfl kept them)."""
    data = part.preprocessing.get(RANGES_KEY)
    return FeatureRanges.from_dict(data) if data else None


def encode_for_part(part: ModelPart, X: np.ndarray) -> np.ndarray:
    """Apply the part's WOE encoding, if it was trained on WOE columns."""
    woe = part.preprocessing.get("woe")
    return WoeEncoder.from_dict(woe).transform(X) if woe else X


def _check_intersection(n: int, who: str) -> None:
    if n == 0:
        raise DataError(
            f"The intersection is empty: {who} shares no customer IDs with the other bank(s). "
            "Check that all sides use the same ID column and normalisation (--lower-ids)."
        )


def _check_training_rows(aligned: PartyTable, who: str) -> None:
    """The shared rows can train a model: both classes (guest), a value in every column."""
    n = aligned.n_rows
    if aligned.y is not None and len(np.unique(aligned.y)) < 2:
        raise DataError(
            f"The {n:,} customer(s) {who} shares with the other bank(s) are all "
            f"{'defaults (1)' if int(aligned.y[0]) else 'non-defaults (0)'}: a model needs both. "
            "Check the ID columns and normalisation, or use a larger extract.")
    empty = np.all(np.isnan(aligned.X), axis=0)
    if empty.any():
        names = [aligned.feature_names[j] for j in np.flatnonzero(empty)]
        raise DataError(
            f"{aligned.source}: column(s) {', '.join(repr(c) for c in names[:5])} have no values "
            f"among the {n:,} shared customers; leave them out (--exclude / [data] features).")


@dataclass
class GuestOutcome:
    """The guest's result of a training job.

    ``proba`` are the joint probabilities of the evaluation rows
    (``eval_ids``/``eval_y``) when the hosts allowed training-row scoring.
    Otherwise ``metrics`` are the arbiter's figures of the validation rows at
    the kept epoch (the guest never sees their per-row joint scores), or
    empty (``evaluated_on`` says which).
    """

    estimator: GuestLogisticRegression
    aligned: PartyTable
    proba: np.ndarray | None
    metrics: dict[str, float]
    psi_seconds: float
    train_seconds: float
    party: str
    woe: WoeEncoder | None = None
    iv_table: list[dict[str, Any]] | None = None
    evaluated_on: str = "training intersection"
    eval_ids: list[str] | None = None
    eval_y: np.ndarray | None = None
    #: :func:`leakage_check` of this job (shown in the report)
    leakage: dict[str, Any] | None = None
    #: a resumed job took the intersection kept from its interrupted run (no PSI ran)
    psi_reused: bool = False

    def part(self) -> ModelPart:
        """The guest's model part."""
        est = self.estimator
        training = {"epochs_run": est.n_iter_, "loss_history": est.loss_history_,
                    "config": dict(est.get_params()), "n_intersection": self.aligned.n_rows,
                    "coef_init": est.coef_init_.tolist(), "intercept_init": est.intercept_init_}
        part = est.to_part(self.party, self.aligned.feature_names, training)
        if self.woe is not None:
            part.preprocessing["woe"] = self.woe.to_dict()
        part.preprocessing[SCORE_BINS_KEY] = self.score_bins.to_dict()
        part.preprocessing[RANGES_KEY] = FeatureRanges.fit(self.aligned.X).to_dict()
        return part

    @cached_property
    def score_bins(self) -> ScoreBins:
        """The guest's scorecard bins of its training rows (saved in its part)."""
        return _score_bins(self.aligned, self.estimator, self.woe)


@dataclass
class HostOutcome:
    """A host's result of a training job."""

    estimator: HostLogisticRegression
    aligned: PartyTable
    party: str
    woe: WoeEncoder | None = None

    def part(self) -> ModelPart:
        """This host's model part."""
        est = self.estimator
        part = est.to_part(self.party, self.aligned.feature_names,
                           {"epochs_run": est.n_iter_, "n_intersection": self.aligned.n_rows})
        if self.woe is not None:
            part.preprocessing["woe"] = self.woe.to_dict()
        part.preprocessing[SCORE_BINS_KEY] = self.score_bins.to_dict()
        part.preprocessing[RANGES_KEY] = FeatureRanges.fit(self.aligned.X).to_dict()
        return part

    @cached_property
    def score_bins(self) -> ScoreBins:
        """This host's scorecard bins of its training rows (saved in its part)."""
        return _score_bins(self.aligned, self.estimator, self.woe)


def _score_bins(aligned: PartyTable,
                est: GuestLogisticRegression | HostLogisticRegression,
                woe: WoeEncoder | None) -> ScoreBins:
    """A party's bins for its points table: its WOE bins, else quantile bins of its raw rows."""
    return ScoreBins.fit(aligned.feature_names, aligned.X, est.preprocessor_, woe)


def _kept_psi(store: CheckpointStore | None, tag: str, ids: list[str],
              peers: list[str]) -> ReuseOffer | None:
    """The intersection this party kept from the interrupted run of its job (resuming)."""
    return store.kept_psi(tag, ids, peers) if store is not None else None


def _after_psi(store: CheckpointStore | None, tag: str, ids: list[str], peers: list[str],
               rows: np.ndarray, offer: ReuseOffer | None,
               progress: ProgressHook | None) -> bool:
    """Keep a fresh PSI result for a resume; whether the kept one was reused."""
    if offer is not None and offer.used:
        if progress is not None:
            progress.on_stage("psi_reused")
        return True
    if store is not None:
        store.keep_psi(tag, ids, rows, peers)
    return False


def guest_fit_job(channel: Channel, table: PartyTable, config: TrainConfig, *,
                  hosts: list[str], arbiter: str, progress: ProgressHook | None = None,
                  on_psi_done: Callable[[int], None] | None = None,
                  valid: PartyTable | None = None, options: JobOptions = JobOptions(),
                  coef_init: np.ndarray | None = None, intercept_init: float | None = None,
                  policy: SecurityPolicy = DEFAULT_POLICY,
                  compute: ComputeConfig | None = None,
                  checkpoints: CheckpointStore | None = None) -> GuestOutcome:
    """PSI with the hosts, training, then the joint evaluation for the report.

    ``valid``: a separate validation table, aligned by a second PSI.
    ``options``: WOE binning and training-row scoring (:class:`JobOptions`).
    ``coef_init``/``intercept_init``: replay a run's start (default: a fresh
    secret random start). ``compute``: where the guest's ciphertext work
    runs (its ``[compute]`` section; default the local process pool).
    """
    if table.y is None:
        raise DataError("The guest table needs a label column.")
    t0 = time.perf_counter()
    if progress is not None:
        progress.on_stage("psi")
    offer = _kept_psi(checkpoints, "train", table.ids, hosts)
    with psi_compute(compute, progress) as where:
        rows = run_psi_guest(channel, table.ids, hosts, policy=policy, reuse=offer, **where)
    psi_reused = _after_psi(checkpoints, "train", table.ids, hosts, rows, offer, progress)
    psi_seconds = time.perf_counter() - t0
    _check_intersection(len(rows), "the guest")
    aligned = table.take(rows)
    _check_training_rows(aligned, "the guest")
    leakage = leakage_check(aligned, channel.party)
    if not options.allow_suspicious:
        _stop_on_leakage(leakage)  # before any protocol step beyond PSI
    if on_psi_done:
        on_psi_done(aligned.n_rows)
    cfg = config
    for h in hosts:
        channel.send(h, Prepare(options.woe_bins, 0 if options.woe_bins else options.iv_bins,
                                valid is not None, options.score_training_rows,
                                (table.label_column or "") if options.announce_label else ""))
    val_aligned = None
    if valid is not None:
        if valid.y is None:
            raise DataError("The guest's validation table needs the label column.")
        offer = _kept_psi(checkpoints, "valid", valid.ids, hosts)
        with psi_compute(compute, progress) as where:
            vrows = run_psi_guest(channel, valid.ids, hosts, policy=policy, reuse=offer, **where)
        _after_psi(checkpoints, "valid", valid.ids, hosts, vrows, offer, progress)
        _check_intersection(len(vrows), "the guest's validation table")
        val_aligned = valid.take(vrows).select(aligned.feature_names)
    X_train, woe, iv_table = aligned.X, None, None
    if options.woe_bins:
        assert aligned.y is not None
        woe = WoeEncoder.fit(aligned.X, aligned.y, options.woe_bins)
        iv_table = run_binning_guest(channel, aligned.X, aligned.feature_names, aligned.y,
                                     hosts=hosts, n_bins=options.woe_bins, key_bits=cfg.key_bits,
                                     allow_insecure_key_size=cfg.allow_insecure_key_size,
                                     send_woe=True, policy=policy, compute=compute)
        X_train = woe.transform(aligned.X)
    elif options.iv_bins:
        assert aligned.y is not None
        iv_table = run_binning_guest(channel, aligned.X, aligned.feature_names, aligned.y,
                                     hosts=hosts, n_bins=options.iv_bins, key_bits=cfg.key_bits,
                                     allow_insecure_key_size=cfg.allow_insecure_key_size,
                                     policy=policy, compute=compute)
    if iv_table is not None:
        leakage = with_host_iv(leakage, iv_table, channel.party)  # own columns: done above
        if not options.allow_suspicious:
            _stop_on_leakage(leakage)
    est = GuestLogisticRegression.from_config(cfg, compute=compute)
    X_val = None
    if val_aligned is not None:
        X_val = woe.transform(val_aligned.X) if woe is not None else val_aligned.X
    t1 = time.perf_counter()
    est.fit(X_train, aligned.y, channel=channel, hosts=hosts, arbiter=arbiter,
            progress=progress, X_val=X_val,
            y_val=None if val_aligned is None else val_aligned.y,
            coef_init=coef_init, intercept_init=intercept_init, checkpoints=checkpoints)
    train_seconds = time.perf_counter() - t1
    assert aligned.y is not None
    if options.score_training_rows:
        if progress is not None:
            progress.on_stage("scoring")
        proba = est.predict_proba(X_train, channel=channel)[:, 1]
        return GuestOutcome(est, aligned, proba, evaluate(aligned.y, proba), psi_seconds,
                            train_seconds, channel.party, woe, iv_table,
                            "training intersection", list(aligned.ids), aligned.y, leakage,
                            psi_reused)
    if est.best_epoch_ is not None and est.validation_history_:
        # the arbiter's figures: no per-row validation score reaches the guest
        best = est.validation_history_[est.best_epoch_]
        figures = {"auc": best["auc"], "gini": round(2 * best["auc"] - 1, 4), "ks": best["ks"]}
        return GuestOutcome(est, aligned, None, figures, psi_seconds, train_seconds,
                            channel.party, woe, iv_table,
                            f"validation rows at the kept epoch ({len(est.validation_rows_)} "
                            "rows)", leakage=leakage, psi_reused=psi_reused)
    return GuestOutcome(est, aligned, None, {}, psi_seconds, train_seconds, channel.party, woe,
                        iv_table, "nothing (no validation rows, no training-row scoring)",
                        leakage=leakage, psi_reused=psi_reused)


def host_fit_job(channel: Channel, table: PartyTable, *, guest: str, arbiter: str,
                 allow_insecure_key_size: bool = False,
                 progress: ProgressHook | None = None,
                 valid: PartyTable | None = None,
                 policy: SecurityPolicy | None = None,
                 compute: ComputeConfig | None = None,
                 checkpoints: CheckpointStore | None = None) -> HostOutcome:
    """PSI with the guest, training, then (if this host's policy allows) training-row scoring.

    ``policy``: this host's own limits; default the safe defaults with
    ``allow_insecure_key_size`` as given. ``compute``: where this host's
    ciphertext work runs (its ``[compute]`` section; default the local pool).
    """
    if policy is None:
        policy = DEFAULT_POLICY.replace(allow_insecure_key_size=allow_insecure_key_size)
    if progress is not None:
        progress.on_stage("psi")
    offer = _kept_psi(checkpoints, "train", table.ids, [guest])
    with psi_compute(compute, progress) as where:
        rows = run_psi_host(channel, table.ids, guest, policy=policy, reuse=offer, **where)
    _after_psi(checkpoints, "train", table.ids, [guest], rows, offer, progress)
    _check_intersection(len(rows), channel.party)
    aligned = table.take(rows)
    _check_training_rows(aligned, channel.party)
    prepare = channel.recv(guest, Prepare)
    if prepare.label_name and prepare.label_name in table.feature_names:
        raise DataError(
            f"{table.source}: column {prepare.label_name!r} is named like {guest}'s label: "
            f"target leakage? {channel.party} refuses to train on it; leave it out "
            "([data] exclude), or rename it if it is something else.")
    if prepare.score_training_rows and not policy.allow_training_scores:
        raise RemoteProtocolError(
            f"{guest} asks {channel.party} to score every training row after training, which "
            f"reveals {channel.party}'s partial score of every shared customer; its policy does "
            "not allow it (set [security] allow_training_scores = true to allow)."
        )
    if prepare.validation_table != (valid is not None):
        raise RemoteProtocolError(
            f"{guest} {'uses' if prepare.validation_table else 'does not use'} a validation "
            f"table but {channel.party} was {'not ' if valid is None else ''}given one; "
            "give every party its validation table, or none."
        )
    val_aligned = None
    if valid is not None:
        offer = _kept_psi(checkpoints, "valid", valid.ids, [guest])
        with psi_compute(compute, progress) as where:
            vrows = run_psi_host(channel, valid.ids, guest, policy=policy, reuse=offer, **where)
        _after_psi(checkpoints, "valid", valid.ids, [guest], vrows, offer, progress)
        _check_intersection(len(vrows), f"{channel.party}'s validation table")
        val_aligned = valid.take(vrows).select(aligned.feature_names)
    X_train, woe = aligned.X, None
    if prepare.woe_bins:
        woe = run_binning_host(channel, aligned.X, aligned.feature_names, guest=guest,
                               policy=policy, compute=compute).encoder
        if woe is None:
            raise DataError(f"{guest} asked for WOE encoding but sent no WOE values.")
        X_train = woe.transform(aligned.X)
    elif prepare.iv_bins:
        if run_binning_host(channel, aligned.X, aligned.feature_names, guest=guest,
                            policy=policy, compute=compute).encoder is not None:
            raise RemoteProtocolError(f"{guest} announced binning for the IV table only but "
                                      "sent WOE values.")
    X_val = None
    if val_aligned is not None:
        X_val = woe.transform(val_aligned.X) if woe is not None else val_aligned.X
    est = HostLogisticRegression(allow_insecure_key_size=policy.allow_insecure_key_size,
                                 compute=compute)
    est.fit(X_train, channel=channel, guest=guest, arbiter=arbiter, progress=progress,
            X_val=X_val, policy=policy, checkpoints=checkpoints)
    if prepare.score_training_rows:
        est.serve_scores(X_train, channel=channel, guest=guest)
    return HostOutcome(est, aligned, channel.party, woe)


def arbiter_fit_job(channel: Channel, *, guest: str, allow_insecure_key_size: bool = False,
                    progress: ProgressHook | None = None,
                    policy: SecurityPolicy | None = None,
                    checkpoints: CheckpointStore | None = None) -> Arbiter:
    """Serve one training job (``policy``: the arbiter's own limits; ``checkpoints``: its
    checkpoint folder)."""
    if policy is None:
        policy = DEFAULT_POLICY.replace(allow_insecure_key_size=allow_insecure_key_size)
    return Arbiter(allow_insecure_key_size=policy.allow_insecure_key_size).run(
        channel=channel, guest=guest, progress=progress, policy=policy,
        checkpoints=checkpoints)


def guest_predict_job(channel: Channel, table: PartyTable, part: ModelPart, *,
                      hosts: list[str], policy: SecurityPolicy = DEFAULT_POLICY,
                      scorecard: Scorecard | None = None,
                      range_policy: RangePolicy = "refuse") -> pd.DataFrame:
    """PSI on the scoring tables, then joint scores of the shared customers.

    Returns every row of the guest's table, in its order and with its IDs as
    written in the file: ``id``, ``probability`` (empty for a customer some
    host does not have: a joint score needs every bank's part) and
    ``matched`` (whether every host has the customer).

    With ``scorecard`` also ``score``, the probability's score
    (:meth:`Scorecard.decision_score`: the two always agree through the
    points-to-odds mapping), and ``points``: the guest's points table score
    (base row included) plus every host's points from its own table, which
    each host computes at the scale the guest sends (``pdo / ln 2`` times the
    calibration slope); the deployable tables reproduce ``points`` exactly. A
    part saved before deployable scorecards is refused before PSI.

    ``range_policy``: what a row with one of the guest's features outside its
    training range gets (:class:`vfl.preprocess.FeatureRanges`): ``refuse``, no
    probability and no score; ``clip``, scored at the range's end; ``flag``,
    scored as given. Such rows are named in the column ``out_of_range`` (the
    features, ``;``-separated), and ``attrs["out_of_range"]`` counts them.
    """
    guest_table = part_points_table(part, scorecard) if scorecard is not None else None
    table = table.select(part.features)
    ranges = part_ranges(part)
    if ranges is None and range_policy != "flag":
        raise ConfigError(f"Model part {part.model_id} keeps no training ranges (trained before "
                          "vfl kept them): retrain it, or score with range policy 'flag'.")
    rows = run_psi_guest(channel, table.ids, hosts, policy=policy)
    _check_intersection(len(rows), "the guest")
    aligned = table.take(rows)
    flags: list[list[str]] = [[] for _ in range(aligned.n_rows)]
    if ranges is not None:
        policy_for_rows: RangePolicy = "flag" if range_policy == "refuse" else range_policy
        X_checked, flags = ranges.check_ranges(aligned.X, list(part.features), policy_for_rows)
        aligned = dataclasses.replace(aligned, X=X_checked)
    est = GuestLogisticRegression.from_part(part)
    cal = est.calibration_
    proba, host_points = run_guest_scoring_with_points(
        channel, est.partial_score(encode_for_part(part, aligned.X)), est.model_id_,
        hosts=list(hosts or est.hosts_),
        calibration=None if cal is None else (float(cal["slope"]), float(cal["intercept"])),
        scale=0.0 if guest_table is None or guest_table.scale is None else guest_table.scale)
    refused = np.array([bool(f) for f in flags], dtype=bool) & (range_policy == "refuse")
    full = np.full(table.n_rows, np.nan)
    at = np.asarray(rows, dtype=np.int64)
    matched = np.zeros(table.n_rows, dtype=bool)
    matched[at] = True
    full[at] = np.where(refused, np.nan, proba)
    ids = table.original_ids if table.original_ids is not None else table.ids
    out = pd.DataFrame({"id": ids, "probability": full, "matched": matched})
    if guest_table is not None:
        assert scorecard is not None
        scored_at = at[~refused]
        score = pd.array([pd.NA] * table.n_rows, dtype="Int64")
        score[scored_at] = pd.array(scorecard.decision_score(full[scored_at]), dtype="Int64")
        out["score"] = score
        points = pd.array([pd.NA] * table.n_rows, dtype="Int64")
        total = guest_table.score(aligned.X) + host_points
        points[scored_at] = pd.array(total[~refused], dtype="Int64")
        out["points"] = points
    touched = [i for i, f in enumerate(flags) if f]
    if touched:
        col = [""] * table.n_rows
        for i in touched:
            col[int(at[i])] = ";".join(flags[i])
        out["out_of_range"] = col
    out.attrs["out_of_range"] = {"rows": len(touched), "policy": range_policy,
                                 "not_scored": int(refused.sum())}
    return out


def host_predict_job(channel: Channel, table: PartyTable, part: ModelPart, *,
                     guest: str, policy: SecurityPolicy = DEFAULT_POLICY,
                     on_points_table: Callable[[PointsTable], None] | None = None) -> int:
    """PSI on the scoring tables, then this host's partial scores; returns rows scored.

    If the guest asks for scorecard points, this host scores its rows with its
    own points table at the guest's scale (bins from its model part) and
    passes that table to ``on_points_table``.
    """
    table = table.select(part.features)
    rows = run_psi_host(channel, table.ids, guest, policy=policy)
    _check_intersection(len(rows), channel.party)
    aligned = table.take(rows)
    est = HostLogisticRegression.from_part(part)
    used: list[PointsTable] = []

    def points(scale: float) -> np.ndarray:
        tab = part_points_table(part, scale=scale)
        used.append(tab)
        return tab.score(aligned.X)

    run_host_scoring(channel, est.partial_score(encode_for_part(part, aligned.X)),
                     est.model_id_, guest=guest, points=points)
    if used and on_points_table is not None:
        on_points_table(used[-1])
    return aligned.n_rows
