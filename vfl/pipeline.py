"""One-machine orchestration: every party in its own thread, in-memory transport.

This is what ``vfl fit``, ``vfl predict``, ``vfl psi`` and ``vfl demo`` run. Each
party's thread only touches its own table and talks to the others through its
channel, exactly as separate processes would; the networked deployment runs the
same party functions over gRPC.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from vfl.data import PartyTable
from vfl.exceptions import DataError, TransportError, VFLError
from vfl.lr._party import ProgressHook
from vfl.lr.config import TrainConfig
from vfl.lr.estimator import Arbiter, GuestLogisticRegression, HostLogisticRegression
from vfl.metrics import evaluate
from vfl.model import atomic_write_text, load_model_part, save_model_part
from vfl.preprocess import Standardizer
from vfl.psi.driver import run_psi_guest, run_psi_host
from vfl.transport.base import Endpoint
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


def _check_intersection(rows: np.ndarray, party: str) -> None:
    if len(rows) == 0:
        raise DataError(
            f"The intersection is empty: {party} shares no customer IDs with the other bank(s). "
            "Check that both sides use the same ID column and normalisation (--lower-ids)."
        )


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
    _check_intersection(rows[GUEST], "the guest")
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


def _baselines(guest: PartyTable, hosts: list[PartyTable]) -> dict[str, float]:
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


def fit_local(guest: PartyTable, hosts: list[PartyTable], config: TrainConfig, *,
              out_dir: str | Path | None = None, progress: ProgressHook | None = None,
              on_psi_done: Callable[[int], None] | None = None,
              baselines: bool = True) -> FitResult:
    """PSI, then training with all parties in this process, then evaluation.

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
    config = config.validate()
    names = host_names(len(hosts))
    t0 = time.perf_counter()
    g_al, h_al = psi_local(guest, hosts)
    psi_seconds = time.perf_counter() - t0
    if on_psi_done:
        on_psi_done(g_al.n_rows)

    est_kwargs = dict(epochs=config.epochs, batch_size=config.batch_size,
                      learning_rate=config.learning_rate, decay=config.decay,
                      optimizer=config.optimizer, penalty=config.penalty, alpha=config.alpha,
                      tol=config.tol, fit_intercept=config.fit_intercept,
                      random_state=config.seed, key_bits=config.key_bits,
                      allow_insecure_key_size=config.allow_insecure_key_size)
    insecure = config.allow_insecure_key_size
    net = InMemoryNetwork([GUEST, *names, ARBITER])

    def guest_job(ch: Endpoint) -> tuple[GuestLogisticRegression, np.ndarray]:
        est = GuestLogisticRegression(**est_kwargs).fit(  # type: ignore[arg-type]
            g_al.X, g_al.y, channel=ch, hosts=names, progress=progress)
        return est, est.predict_proba(g_al.X, channel=ch)[:, 1]

    def host_job(table: PartyTable) -> Callable[[Endpoint], HostLogisticRegression]:
        def run(ch: Endpoint) -> HostLogisticRegression:
            est = HostLogisticRegression(allow_insecure_key_size=insecure).fit(table.X, channel=ch)
            est.serve_scores(table.X, channel=ch)
            return est
        return run

    targets: dict[str, Callable[[Endpoint], Any]] = {GUEST: guest_job}
    for name, table in zip(names, h_al, strict=True):
        targets[name] = host_job(table)
    targets[ARBITER] = lambda ch: Arbiter(allow_insecure_key_size=insecure).run(channel=ch)
    t1 = time.perf_counter()
    results = run_threads(net, targets)
    train_seconds = time.perf_counter() - t1
    g_est, proba = results[GUEST]
    h_ests = [results[n] for n in names]
    assert g_al.y is not None
    metrics = evaluate(g_al.y, proba)
    traffic = {n: {"sent_bytes": net.endpoint(n).stats.total_sent,
                   "received_bytes": net.endpoint(n).stats.total_received}
               for n in [GUEST, *names, ARBITER]}
    report: dict[str, Any] = {
        "model_id": g_est.model_id_,
        "n_guest": guest.n_rows,
        "n_hosts": len(hosts),
        "n_host_rows": [h.n_rows for h in hosts],
        "n_intersection": g_al.n_rows,
        "epochs_run": g_est.n_iter_,
        "auc": metrics["auc"],
        "ks": metrics["ks"],
        "accuracy": metrics["accuracy"],
        "evaluated_on": "training intersection",
        "psi_seconds": psi_seconds,
        "train_seconds": train_seconds,
        "loss_history": g_est.loss_history_,
        "traffic": traffic,
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
    }
    if baselines:
        report["baseline"] = _baselines(g_al, h_al)
    training = {"epochs_run": g_est.n_iter_, "loss_history": g_est.loss_history_,
                "config": report["config"], "n_intersection": g_al.n_rows}
    files: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir)
        files.append(save_model_part(g_est.to_part(GUEST, guest.feature_names, training),
                                     out / "guest.json"))
        for name, est, table in zip(names, h_ests, hosts, strict=True):
            files.append(save_model_part(est.to_part(name, table.feature_names,
                                                     {"epochs_run": est.n_iter_}),
                                         out / f"{name}.json"))
        import json
        atomic_write_text(out / "report.json", json.dumps(report, indent=2))
        files.append(out / "report.json")
    return FitResult(report, g_est, h_ests, g_al, h_al, proba, files)


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
    # each party scores with exactly the columns its model part was trained on
    guest = guest.select(g_part.features)
    hosts = [t.select(p.features) for t, p in zip(hosts, h_parts, strict=True)]
    g_al, h_al = psi_local(guest, hosts)
    g_est = GuestLogisticRegression.from_part(g_part)
    h_ests = [HostLogisticRegression.from_part(p) for p in h_parts]
    net = InMemoryNetwork([GUEST, *names])
    targets: dict[str, Callable[[Endpoint], Any]] = {
        GUEST: lambda ch: g_est.predict_proba(g_al.X, channel=ch, hosts=names)[:, 1]}
    for name, est, table in zip(names, h_ests, h_al, strict=True):
        targets[name] = (lambda e, t: lambda ch: e.serve_scores(t.X, channel=ch))(est, table)
    proba = run_threads(net, targets)[GUEST]
    return pd.DataFrame({"id": g_al.ids, "probability": proba})


def format_error(exc: BaseException) -> str:
    """One-line message for the CLI."""
    if isinstance(exc, VFLError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
