"""One-machine orchestration: every party in its own thread, in-memory transport.

This is what ``vfl fit``, ``vfl predict``, ``vfl psi`` and ``vfl demo`` run. Each
party's thread only touches its own table and talks to the others through its
channel, exactly as separate processes would; the networked deployment runs the
same party functions over gRPC.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from vfl.data import PartyTable
from vfl.exceptions import DataError, TransportError, VFLError
from vfl.jobs import (
    GuestOutcome,
    HostOutcome,
    JobOptions,
    arbiter_fit_job,
    guest_fit_job,
    guest_predict_job,
    host_fit_job,
    host_predict_job,
    points_table,
)
from vfl.lr.config import TrainConfig
from vfl.lr.estimator import GuestLogisticRegression, HostLogisticRegression
from vfl.metrics import evaluate
from vfl.model import atomic_write_text, load_model_part, save_model_part
from vfl.policy import DEFAULT_POLICY
from vfl.preprocess import Standardizer
from vfl.progress import ProgressHook
from vfl.psi.driver import run_psi_guest, run_psi_host
from vfl.transport.base import Endpoint, abort_code
from vfl.transport.memory import InMemoryNetwork

__all__ = ["host_names", "run_threads", "psi_local", "fit_local", "predict_local", "FitResult"]

GUEST, ARBITER = "guest", "arbiter"


def host_names(count: int) -> list[str]:
    """Names of the hosts in a one-machine run: host1, host2, ..."""
    return [f"host{i + 1}" for i in range(count)]


def run_threads(network: InMemoryNetwork,
                targets: dict[str, Callable[[Endpoint], Any]]) -> dict[str, Any]:
    """Run each party's function in a thread; return their results.

    If a party fails, its endpoint is closed so its peers fail fast instead of
    waiting; the error re-raised is the one that started the failure.
    """
    results: dict[str, Any] = {}
    errors: list[tuple[float, str, BaseException]] = []

    def wrap(name: str, fn: Callable[[Endpoint], Any]) -> None:
        ep = network.endpoint(name)
        try:
            results[name] = fn(ep)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append((time.monotonic(), name, exc))
            ep.abort(abort_code(exc))
            ep.close()

    threads = [threading.Thread(target=wrap, args=(n, f), name=f"vfl-{n}", daemon=True)
               for n, f in targets.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        primary = [e for e in errors if not isinstance(e[2], TransportError)] or errors
        primary.sort(key=lambda e: e[0])
        raise primary[0][2]
    return results


def psi_local(guest: PartyTable, hosts: list[PartyTable]
              ) -> tuple[PartyTable, list[PartyTable]]:
    """Align the tables by PSI; each returned table holds the shared rows in one order."""
    names = host_names(len(hosts))
    net = InMemoryNetwork([GUEST, *names])
    targets: dict[str, Callable[[Endpoint], Any]] = {
        GUEST: lambda ch: run_psi_guest(ch, guest.ids, names)}
    for name, table in zip(names, hosts, strict=True):
        targets[name] = (lambda t: lambda ch: run_psi_host(ch, t.ids, GUEST))(table)
    rows = run_threads(net, targets)
    if len(rows[GUEST]) == 0:
        raise DataError("The intersection is empty: the tables share no customer IDs. Check "
                        "that all sides use the same ID column and normalisation (--lower-ids).")
    return guest.take(rows[GUEST]), [t.take(rows[n]) for n, t in zip(names, hosts, strict=True)]


@dataclass
class FitResult:
    """What a one-machine training run produced."""

    report: dict[str, Any]
    guest: GuestLogisticRegression
    hosts: list[HostLogisticRegression]
    aligned_guest: PartyTable
    aligned_hosts: list[PartyTable]
    proba: np.ndarray
    files: list[Path] = field(default_factory=list)


def centralized_baselines(guest: PartyTable, hosts: list[PartyTable]) -> dict[str, float]:
    """Centralised scikit-learn models on the pooled aligned table (local runs only)."""
    assert guest.y is not None
    Xg = Standardizer.fit(guest.X).transform(guest.X)
    Xall = np.hstack([Xg] + [Standardizer.fit(h.X).transform(h.X) for h in hosts])
    out = {}
    for key, X in (("centralized", Xall), ("guest_only", Xg)):
        clf = LogisticRegression(max_iter=2000).fit(X, guest.y)
        m = evaluate(guest.y, clf.predict_proba(X)[:, 1])
        out.update({f"{key}_auc": m["auc"], f"{key}_ks": m["ks"]})
    return out


def guest_report(outcome: GuestOutcome, *, n_guest: int, hosts: list[str], config: TrainConfig,
                 traffic: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The guest's ``report.json`` content."""
    est = outcome.estimator
    return {
        "model_id": est.model_id_,
        "n_guest": n_guest,
        "n_hosts": len(hosts),
        "hosts": hosts,
        "n_intersection": outcome.aligned.n_rows,
        "epochs_run": est.n_iter_,
        "auc": outcome.metrics.get("auc"),
        "ks": outcome.metrics.get("ks"),
        "gini": outcome.metrics.get("gini"),
        "ks_threshold": outcome.metrics.get("ks_threshold"),
        "accuracy": outcome.metrics.get("accuracy"),
        "evaluated_on": outcome.evaluated_on,
        "psi_seconds": outcome.psi_seconds,
        "train_seconds": outcome.train_seconds,
        "loss_history": est.loss_history_,
        "validation_history": est.validation_history_,
        "best_epoch": est.best_epoch_,
        "traffic": traffic,
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
    }


def write_train_scores(out: Path, outcome: GuestOutcome) -> Path | None:
    """The evaluation rows with label and joint probability (for the guest's report).

    ``train_scores.csv`` holds every training row when the hosts allowed
    training-row scoring, else the validation rows at the kept epoch; nothing
    is written when neither was available.
    """
    if outcome.proba is None or outcome.eval_ids is None or outcome.eval_y is None:
        return None
    df = pd.DataFrame({"id": outcome.eval_ids, "label": outcome.eval_y,
                       "probability": outcome.proba})
    path = out / "train_scores.csv"
    atomic_write_text(path, df.to_csv(index=False))
    return path


def fit_local(guest: PartyTable, hosts: list[PartyTable], config: TrainConfig, *,
              out_dir: str | Path | None = None, progress: ProgressHook | None = None,
              on_psi_done: Callable[[int], None] | None = None,
              baselines: bool = True, guest_valid: PartyTable | None = None,
              hosts_valid: list[PartyTable] | None = None,
              coef_init: np.ndarray | None = None,
              intercept_init: float | None = None,
              options: JobOptions | None = None) -> FitResult:
    """PSI, training and evaluation with all parties in this process.

    All tables are on this machine, so one data owner plays every role: the
    guest scores every training row for the report, and the hosts allow it
    (over a network each host decides that in its own policy).

    Parameters
    ----------
    guest : PartyTable with labels
    hosts : list of PartyTable
    config : TrainConfig
    out_dir : path, optional
        Where to write ``guest.json``, ``host<i>.json`` and ``report.json``.
    """
    if guest.y is None:
        raise DataError("The guest table needs a label column.")
    names = host_names(len(hosts))
    insecure = config.allow_insecure_key_size
    host_policy = DEFAULT_POLICY.replace(allow_insecure_key_size=insecure,
                                         allow_training_scores=True)
    net = InMemoryNetwork([GUEST, *names, ARBITER])
    targets: dict[str, Callable[[Endpoint], Any]] = {
        GUEST: lambda ch: guest_fit_job(ch, guest, config, hosts=names, arbiter=ARBITER,
                                        progress=progress, on_psi_done=on_psi_done,
                                        valid=guest_valid,
                                        options=replace(options or JobOptions(), score_training_rows=True),
                                        coef_init=coef_init, intercept_init=intercept_init),
        ARBITER: lambda ch: arbiter_fit_job(ch, guest=GUEST, allow_insecure_key_size=insecure),
    }
    if (guest_valid is None) != (hosts_valid is None) or (
            hosts_valid is not None and len(hosts_valid) != len(hosts)):
        raise DataError("Give a validation table for the guest and for every host, or none.")
    valids: list[PartyTable | None] = list(hosts_valid) if hosts_valid else [None] * len(hosts)
    for name, table, valid in zip(names, hosts, valids, strict=True):
        targets[name] = (lambda t, v: lambda ch: host_fit_job(
            ch, t, guest=GUEST, arbiter=ARBITER, valid=v, policy=host_policy))(table, valid)
    results = run_threads(net, targets)
    g: GuestOutcome = results[GUEST]
    h: list[HostOutcome] = [results[n] for n in names]
    traffic = {n: {"sent_bytes": net.endpoint(n).stats.total_sent,
                   "received_bytes": net.endpoint(n).stats.total_received}
               for n in [GUEST, *names, ARBITER]}
    report = guest_report(g, n_guest=guest.n_rows, hosts=names, config=config, traffic=traffic)
    report["n_host_rows"] = [t.n_rows for t in hosts]
    if baselines:
        report["baseline"] = centralized_baselines(g.aligned, [o.aligned for o in h])
    files: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir)
        files.append(save_model_part(g.part(), out / "guest.json"))
        for name, outcome in zip(names, h, strict=True):
            files.append(save_model_part(outcome.part(), out / f"{name}.json"))
        atomic_write_text(out / "report.json", json.dumps(report, indent=2))
        files.append(out / "report.json")
        scores_file = write_train_scores(out, g)
        if scores_file is not None:
            files.append(scores_file)
        if g.iv_table is not None:
            atomic_write_text(out / "iv.json", json.dumps(g.iv_table, indent=2))
            files.append(out / "iv.json")
        # each party's own scorecard points table (on one machine they share a folder)
        for name, est, al, woe in [(GUEST, g.estimator, g.aligned, g.woe)] + [
                (n, o.estimator, o.aligned, o.woe) for n, o in zip(names, h, strict=True)]:
            path = out / f"{name}_points.csv"
            atomic_write_text(path, points_table(est, al, woe).to_csv(index=False))
            files.append(path)
    assert g.proba is not None
    return FitResult(report, g.estimator, [o.estimator for o in h], g.aligned,
                     [o.aligned for o in h], g.proba, files)


def predict_local(model_dir: str | Path, guest: PartyTable, hosts: list[PartyTable]
                  ) -> pd.DataFrame:
    """Score the customers all parties share with a saved model (all parties local)."""
    model_dir = Path(model_dir)
    g_part = load_model_part(model_dir / "guest.json")
    names = host_names(len(hosts))
    if len(g_part.peers.get("hosts", [])) != len(hosts):
        raise DataError(
            f"The model in {model_dir} was trained with {len(g_part.peers.get('hosts', []))} "
            f"host(s); {len(hosts)} host table(s) given."
        )
    h_parts = [load_model_part(model_dir / f"{n}.json") for n in names]
    for n, part in zip(names, h_parts, strict=True):
        if part.model_id != g_part.model_id:
            raise DataError(f"{model_dir / (n + '.json')} belongs to another model.")
    net = InMemoryNetwork([GUEST, *names])
    targets: dict[str, Callable[[Endpoint], Any]] = {
        GUEST: lambda ch: guest_predict_job(ch, guest, g_part, hosts=names)}
    for name, part, table in zip(names, h_parts, hosts, strict=True):
        targets[name] = (lambda p, t: lambda ch: host_predict_job(ch, t, p, guest=GUEST))(
            part, table)
    return run_threads(net, targets)[GUEST]


def iv_local(guest: PartyTable, hosts: list[PartyTable], *, n_bins: int = 10,
             key_bits: int = 2048, allow_insecure_key_size: bool = False,
             reveal_host_names: bool = False, monotonic: bool = False) -> list[dict[str, Any]]:
    """PSI, then federated binning: the IV table of every party's features."""
    from vfl.binning import run_binning_guest, run_binning_host

    if guest.y is None:
        raise DataError("The guest table needs a label column.")
    g_al, h_al = psi_local(guest, hosts)
    labels = g_al.y if g_al.y is not None else np.zeros(0, dtype=np.int64)
    names = host_names(len(hosts))
    net = InMemoryNetwork([GUEST, *names])
    targets: dict[str, Callable[[Endpoint], Any]] = {
        GUEST: lambda ch: run_binning_guest(ch, g_al.X, g_al.feature_names, labels, hosts=names,
                                            n_bins=n_bins, key_bits=key_bits,
                                            allow_insecure_key_size=allow_insecure_key_size,
                                            monotonic=monotonic)}
    # each host's own policy (in-process: the caller's choice of test keys applies to all)
    host_policy = DEFAULT_POLICY.replace(allow_insecure_key_size=allow_insecure_key_size)
    for name, table in zip(names, h_al, strict=True):
        targets[name] = (lambda t: lambda ch: run_binning_host(
            ch, t.X, t.feature_names, guest=GUEST, reveal_names=reveal_host_names,
            policy=host_policy))(table)
    result: list[dict[str, Any]] = run_threads(net, targets)[GUEST]
    return result


def format_error(exc: BaseException) -> str:
    """One-line message for the CLI."""
    if isinstance(exc, VFLError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
