"""One-machine runs: every party in its own thread, over the in-memory transport.

Each party's thread only touches its own table and talks to the others
through its channel, exactly as separate processes would; the networked
runner (:mod:`vfl.runner`) runs the same job functions (:mod:`vfl.jobs`)
over gRPC, and both write their outputs through :mod:`vfl.outputs`.

Two levels, so that everything the CLI does is one call:

* tables in memory: :func:`psi_local`, :func:`fit_local`,
  :func:`predict_local`, :func:`iv_local`;
* table files (CSV or Parquet, :mod:`vfl.tableio`), as ``vfl psi / fit /
  predict / iv`` take them: :func:`psi_files`, :func:`fit_files`,
  :func:`predict_files`, :func:`iv_files`. Tables written (aligned tables,
  scores) are in the format of their file name's suffix.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vfl.baselines import centralized_baselines
from vfl.binning import run_binning_guest, run_binning_host
from vfl.binning.select import select_by_iv
from vfl.checkpoint import PASSPHRASE_ENV, CheckpointStore, read_passphrase
from vfl.crypto.paillier import check_key_size
from vfl.data import PartyTable, load_table
from vfl.exceptions import ConfigError, DataError, TransportError
from vfl.jobs import (
    GuestOutcome,
    HostOutcome,
    JobOptions,
    arbiter_fit_job,
    guest_fit_job,
    guest_predict_job,
    host_fit_job,
    host_predict_job,
)
from vfl.lr.config import TrainConfig
from vfl.lr.estimator import Arbiter, GuestLogisticRegression, HostLogisticRegression
from vfl.model import ModelPart, atomic_write_text, load_model_part
from vfl.outputs import (
    REPORT,
    arbiter_summary,
    guest_report,
    host_summary,
    model_part_file,
    prepare_output_dir,
    prepare_output_file,
    read_guest_outputs,
    refresh_points,
    write_arbiter_outputs,
    write_guest_outputs,
    write_host_outputs,
)
from vfl.policy import DEFAULT_POLICY
from vfl.preprocess import RangePolicy
from vfl.progress import ProgressHook
from vfl.psi.buckets import BUCKET_ROWS
from vfl.psi.driver import run_psi_guest, run_psi_host
from vfl.roles import Role
from vfl.scorecard import PointsTable, Scorecard, part_calibration, part_points_table
from vfl.tableio import TableFormat, column_names, count_rows, table_format, write_frame
from vfl.transport.base import Endpoint, abort_code
from vfl.transport.memory import InMemoryNetwork

__all__ = ["host_names", "run_threads", "psi_local", "fit_local", "predict_local", "iv_local",
           "FitResult", "load_tables", "select_columns", "psi_files", "fit_files",
           "predict_files", "iv_files"]

GUEST, ARBITER = Role.GUEST.value, Role.ARBITER.value


def host_names(count: int) -> list[str]:
    """Names of the hosts in a one-machine run: host1, host2, ..."""
    return [f"{Role.HOST.value}{i + 1}" for i in range(count)]


#: Seconds the party threads get to clean up after the main thread is stopped.
STOP_GRACE_SECONDS = 10.0


def run_threads(network: InMemoryNetwork,
                targets: dict[str, Callable[[Endpoint], Any]]) -> dict[str, Any]:
    """Run each party's function in a thread; return their results.

    If a party fails, its endpoint is closed so its peers fail fast instead of
    waiting; the error re-raised is the one that started the failure. If the
    main thread is stopped while it waits (SIGTERM, Ctrl-C), every party's
    endpoint is aborted and the threads get a few seconds to close their
    pools and temporary files before the stop is re-raised.
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
    try:
        for t in threads:
            t.join()
    except BaseException as exc:  # a signal in the main thread: stop every party
        for name in targets:
            ep = network.endpoint(name)
            ep.abort(abort_code(exc))
            ep.close()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        raise
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
    #: per party, the columns kept by IV selection (``fit_files`` with an IV table)
    kept_columns: dict[str, list[str]] | None = None


def fit_local(guest: PartyTable, hosts: list[PartyTable], config: TrainConfig, *,
              options: JobOptions | None = None,
              out_dir: str | Path | None = None, progress: ProgressHook | None = None,
              on_psi_done: Callable[[int], None] | None = None,
              baselines: bool = True, guest_valid: PartyTable | None = None,
              hosts_valid: list[PartyTable] | None = None,
              coef_init: np.ndarray | None = None,
              intercept_init: float | None = None,
              html_report: bool = False, force: bool = False,
              checkpoints: str | Path | None = None, resume: bool = False,
              checkpoint_every: int = 0) -> FitResult:
    """PSI, training and evaluation with all parties in this process.

    All tables are on this machine, so one data owner plays every role: the
    guest scores every training row for the report, and the hosts allow it
    (over a network each host decides that in its own policy).

    Parameters
    ----------
    guest : PartyTable with labels
    hosts : list of PartyTable
    config : TrainConfig
    options : JobOptions, optional
        WOE binning (training-row scoring is always on here).
    out_dir : path, optional
        Where to write every party's outputs (:mod:`vfl.outputs`); with
        ``html_report`` also ``report/index.html``. Checked before any work:
        a folder holding an earlier run's outputs is refused unless ``force``
        (which removes them first).
    baselines : bool
        Add the pooled-data and guest-only scikit-learn yardsticks to the report.
    guest_valid, hosts_valid : PartyTable, optional
        Validation tables for every party (aligned by a second PSI), or none.
    coef_init, intercept_init : optional
        Replay a run's start (default: a fresh secret random start).
    checkpoints : path, optional
        Folder where every party writes its checkpoint after every epoch, as
        over a network (the arbiter's sealed with ``VFL_CHECKPOINT_PASSPHRASE``,
        which must be set). Default: no checkpoints.
    resume : bool
        Continue the fit that stopped from the newest epoch in ``checkpoints``;
        the model equals the one the uninterrupted fit would have made.
    checkpoint_every : int
        Also checkpoint after every ``checkpoint_every`` batches within an
        epoch (0: at epoch ends only).
    """
    if guest.y is None:
        raise DataError("The guest table needs a label column.")
    if (guest_valid is None) != (hosts_valid is None) or (
            hosts_valid is not None and len(hosts_valid) != len(hosts)):
        raise DataError("Give a validation table for the guest and for every host, or none.")
    check_key_size(config.key_bits, allow_insecure_key_size=config.allow_insecure_key_size)
    if out_dir is not None:
        prepare_output_dir(out_dir, force=force)
    # one data owner plays every role: training rows are scored, the label's name is known
    options = replace(options or JobOptions(), score_training_rows=True, announce_label=True)
    names = host_names(len(hosts))
    insecure = config.allow_insecure_key_size
    host_policy = DEFAULT_POLICY.replace(allow_insecure_key_size=insecure,
                                         allow_training_scores=True)
    stores = _local_checkpoints(checkpoints, names, resume, checkpoint_every)
    net = InMemoryNetwork([GUEST, *names, ARBITER])
    targets: dict[str, Callable[[Endpoint], Any]] = {
        GUEST: lambda ch: guest_fit_job(ch, guest, config, hosts=names, arbiter=ARBITER,
                                        progress=progress, on_psi_done=on_psi_done,
                                        valid=guest_valid, options=options,
                                        coef_init=coef_init, intercept_init=intercept_init,
                                        checkpoints=stores.get(GUEST)),
        ARBITER: lambda ch: arbiter_fit_job(ch, guest=GUEST, allow_insecure_key_size=insecure,
                                            checkpoints=stores.get(ARBITER)),
    }
    valids: list[PartyTable | None] = list(hosts_valid) if hosts_valid else [None] * len(hosts)
    for name, table, valid in zip(names, hosts, valids, strict=True):
        targets[name] = (lambda n, t, v: lambda ch: host_fit_job(
            ch, t, guest=GUEST, arbiter=ARBITER, valid=v, policy=host_policy,
            checkpoints=stores.get(n)))(name, table, valid)
    results = run_threads(net, targets)
    g: GuestOutcome = results[GUEST]
    h: list[HostOutcome] = [results[n] for n in names]
    arbiter: Arbiter = results[ARBITER]

    def traffic(name: str) -> dict[str, int]:
        stats = net.endpoint(name).stats
        return {"sent_bytes": stats.total_sent, "received_bytes": stats.total_received}

    report = guest_report(
        g, n_guest=guest.n_rows, hosts=names, config=config, options=options,
        traffic={n: traffic(n) for n in [GUEST, *names, ARBITER]},
        baseline=centralized_baselines(g.aligned, [o.aligned for o in h]) if baselines else None)
    report["n_host_rows"] = [t.n_rows for t in hosts]
    files: list[Path] = []
    if out_dir is not None:
        files += write_guest_outputs(out_dir, g, report, html_report=html_report)
        # one data owner: the hosts' points tables get the guest's calibration slope too
        slope = part_calibration(g.part())[0]
        for table, outcome in zip(hosts, h, strict=True):
            files += write_host_outputs(out_dir, outcome, host_summary(
                outcome, n_rows=table.n_rows, traffic=traffic(outcome.party)), slope=slope)
        files += write_arbiter_outputs(out_dir, ARBITER, arbiter_summary(
            ARBITER, arbiter, traffic=traffic(ARBITER)))
    assert g.proba is not None
    return FitResult(report, g.estimator, [o.estimator for o in h], g.aligned,
                     [o.aligned for o in h], g.proba, files)


#: the job id of a one-machine fit's checkpoints (the data and setup digests tell fits apart)
LOCAL_FIT_JOB = "vfl-fit"


def _local_checkpoints(folder: str | Path | None, hosts: list[str],
                       resume: bool, every: int = 0) -> dict[str, CheckpointStore]:
    """Every party's checkpoint store in ``folder`` for a one-machine fit (none: {})."""
    if folder is None:
        if resume or every:
            raise ConfigError(f"{'Resuming' if resume else 'A checkpoint interval'} needs a "
                              "checkpoint folder (--checkpoint-dir).")
        return {}
    passphrase = read_passphrase(None)
    if passphrase is None:
        raise ConfigError(f"Checkpoints hold the arbiter's key pair, sealed with a passphrase: "
                          f"set {PASSPHRASE_ENV} (the same when you resume).")
    roles = {GUEST: Role.GUEST, **dict.fromkeys(hosts, Role.HOST), ARBITER: Role.ARBITER}
    return {name: CheckpointStore(folder, party=name, role=role.value, job=LOCAL_FIT_JOB,
                                  passphrase=passphrase if role == Role.ARBITER else None,
                                  resume=resume, every_batches=every if role == Role.GUEST else 0)
            for name, role in roles.items()}


def _model_parts(model_dir: Path) -> tuple[tuple[ModelPart, Path], list[tuple[ModelPart, Path]]]:
    """The guest's part and its hosts' parts, wherever ``fit``, ``run`` or the demo put them.

    ``model_dir`` is the guest's output folder (``report.json`` names its
    part; else ``guest.json``) or the folder above one folder per party (the
    demo's ``out/``). Host parts are ``<host>.json`` beside the guest's, or in
    ``../<host>/``. Each part comes with the folder it is in.
    """
    if (model_dir / REPORT).is_file():
        g_dir, g_part = model_dir, read_guest_outputs(model_dir).part
    elif model_part_file(model_dir, GUEST).is_file():
        g_dir, g_part = model_dir, load_model_part(model_part_file(model_dir, GUEST))
    else:
        found = [d for d in sorted(model_dir.iterdir()) if (d / REPORT).is_file()] \
            if model_dir.is_dir() else []
        if len(found) != 1:
            raise DataError(f"{model_dir} holds no guest model (no report.json or guest.json, "
                            "nor one party folder with a report.json).")
        g_dir, g_part = found[0], read_guest_outputs(found[0]).part
    h_parts = []
    for name in g_part.peers.get("hosts", []):
        places = [model_part_file(g_dir, name), model_part_file(g_dir.parent / name, name)]
        path = next((p for p in places if p.is_file()), None)
        if path is None:
            raise DataError(
                f"The part of host {name!r} is not in {places[0].parent} nor {places[1].parent}; "
                "over a network each host keeps its own part: score with "
                "vfl predict --config on every party.")
        part = load_model_part(path)
        if part.model_id != g_part.model_id:
            raise DataError(f"{path} belongs to another model ({part.model_id}, not "
                            f"{g_part.model_id}).")
        h_parts.append((part, path.parent))
    return (g_part, g_dir), h_parts


def predict_local(model_dir: str | Path, guest: PartyTable, hosts: list[PartyTable], *,
                  scorecard: Scorecard | None = None,
                  range_policy: RangePolicy = "refuse") -> pd.DataFrame:
    """Score with a saved model, all parties on this machine (see ``guest_predict_job``).

    ``model_dir``: what ``vfl fit``, ``vfl run`` (the guest's output folder,
    with the hosts' folders beside it) or the demo wrote; host tables in the
    model's host order.

    With ``scorecard`` the scores get the integer ``score`` column: the sum of
    every party's points table score. Every part must hold score bins (parts
    saved before deployable scorecards are refused before PSI). A party's
    ``<party>_points.csv``/``.json`` beside its part is rewritten when this
    scaling gives other points than the saved table (a non-default pdo, base
    score or odds), so the files always reproduce the scores.
    """
    (g_part, g_dir), h_found = _model_parts(Path(model_dir))
    h_parts = [p for p, _ in h_found]
    names = [p.party for p in h_parts]
    if len(h_parts) != len(hosts):
        raise DataError(
            f"The model in {model_dir} was trained with {len(h_parts)} host(s) "
            f"({', '.join(names)}); {len(hosts)} host table(s) given.")
    tables: list[tuple[Path, str, PointsTable]] = []
    if scorecard is not None:  # every part's tables first: an old part fails before PSI
        slope = part_calibration(g_part)[0]
        tables = [(g_dir, g_part.party, part_points_table(g_part, scorecard))]
        tables += [(d, p.party, part_points_table(p, scorecard, slope=slope)) for p, d in h_found]
    guest_name = g_part.party if g_part.party not in names else GUEST
    net = InMemoryNetwork([guest_name, *names])
    targets: dict[str, Callable[[Endpoint], Any]] = {
        guest_name: lambda ch: guest_predict_job(ch, guest, g_part, hosts=names,
                                                 scorecard=scorecard,
                                                 range_policy=range_policy)}
    for name, part, table in zip(names, h_parts, hosts, strict=True):
        targets[name] = (lambda p, t: lambda ch: host_predict_job(ch, t, p, guest=guest_name))(
            part, table)
    scores: pd.DataFrame = run_threads(net, targets)[guest_name]
    for folder, party, points in tables:
        refresh_points(folder, party, points)
    return scores


def iv_local(guest: PartyTable, hosts: list[PartyTable], *, n_bins: int = 10,
             key_bits: int = 2048, allow_insecure_key_size: bool = False,
             reveal_host_names: bool = False, monotonic: bool = False) -> list[dict[str, Any]]:
    """PSI, then federated binning: the IV table of every party's features."""
    if guest.y is None:
        raise DataError("The guest table needs a label column.")
    check_key_size(key_bits, allow_insecure_key_size=allow_insecure_key_size)
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


# ------------------------------------------------------------------ table files
def _header(path: str | Path) -> list[str]:
    try:
        return column_names(path)
    except DataError:  # load_table reports a missing or unreadable file with its name
        return []


def load_tables(guest: str | Path, hosts: Sequence[str | Path], *, id_column: str,
                label: str | None, require_label: bool, lower_ids: bool = False,
                strip_ids: bool = True, features: Sequence[str] | None = None,
                exclude: Sequence[str] = ()) -> tuple[PartyTable, list[PartyTable]]:
    """The guest's table (with ``label``) and the hosts' tables, read from CSV or Parquet.

    ``features``: keep only these columns (each table those it has);
    ``exclude``: leave these out wherever they are. Every name must be a
    column of some table. A host column named like the guest's ``label`` is
    refused (target leakage) unless excluded.
    """
    if not hosts:
        raise ConfigError("Give at least one host table.")
    headers = [_header(p) for p in [guest, *hosts]]
    for what, names in (("--features", features or ()), ("--exclude", exclude)):
        everywhere = {c for h in headers for c in h}
        unknown = [n for n in names if n not in everywhere]
        if unknown:
            raise ConfigError(f"{what}: column(s) {', '.join(map(repr, unknown))} are in no "
                              "table given.")
    g = load_table(guest, id_column=id_column, label_column=label, lower_ids=lower_ids,
                   strip_ids=strip_ids, require_label=require_label, exclude=exclude)
    hs = [load_table(h, id_column=id_column, label_column=None, lower_ids=lower_ids,
                     strip_ids=strip_ids, exclude=exclude) for h in hosts]
    if label is not None and require_label:
        for h in hs:
            if label in h.feature_names:
                raise DataError(
                    f"{h.source}: a host column is named like the guest's label {label!r}: "
                    "target leakage (the model would learn the answer). Leave it out with "
                    f"--exclude {label} (or rename it if it is something else).")
    if features is not None:
        tables = []
        for t in [g, *hs]:
            keep = [f for f in features if f in t.feature_names]
            if not keep:
                raise ConfigError(f"{t.source}: none of its columns is among --features; "
                                  "every bank needs at least one.")
            tables.append(t.select(keep))
        g, hs = tables[0], tables[1:]
    return g, hs


def select_columns(guest: PartyTable, hosts: list[PartyTable], iv_table: list[dict[str, Any]],
                   *, min_iv: float | None = None, top_k: int | None = None
                   ) -> tuple[PartyTable, list[PartyTable], dict[str, list[str]]]:
    """Each party keeps its own best columns by IV (see :func:`vfl.binning.select.select_by_iv`).

    Returns the narrowed tables and, per party, the columns kept.
    """
    names = [GUEST, *host_names(len(hosts))]
    tables = [guest, *hosts]
    kept = {n: select_by_iv(iv_table, n, t.feature_names, min_iv=min_iv, top_k=top_k)
            for n, t in zip(names, tables, strict=True)}
    narrowed = [t.select(kept[n]) for n, t in zip(names, tables, strict=True)]
    return narrowed[0], narrowed[1:], kept


def fit_files(guest: str | Path, hosts: Sequence[str | Path], *, id_column: str, label: str,
              out_dir: str | Path, config: TrainConfig, options: JobOptions | None = None,
              guest_valid: str | Path | None = None, hosts_valid: Sequence[str | Path] = (),
              iv_table: str | Path | None = None, min_iv: float | None = None,
              top_k: int | None = None, lower_ids: bool = False, strip_ids: bool = True,
              progress: ProgressHook | None = None,
              on_psi_done: Callable[[int], None] | None = None,
              html_report: bool = True, force: bool = False,
              features: Sequence[str] | None = None,
              exclude: Sequence[str] = (), coef_init: np.ndarray | None = None,
              intercept_init: float | None = None, checkpoints: str | Path | None = None,
              resume: bool = False, checkpoint_every: int = 0) -> FitResult:
    """``vfl fit`` as one call: read the tables, select columns, train, write the outputs.

    Tables are CSV or Parquet files (by suffix, :mod:`vfl.tableio`); the
    same data in either format trains the same model. ``iv_table`` (written
    by :func:`iv_files`) with ``min_iv``/``top_k``: each party keeps its best
    columns first. ``guest_valid``/``hosts_valid``: validation tables for
    every party (same columns), aligned by a second PSI. ``force``: replace
    the outputs of an earlier run in ``out_dir``. ``coef_init``/
    ``intercept_init``: replay a run's start; ``checkpoints``/``resume``/
    ``checkpoint_every``: checkpoints after every epoch (and every N batches),
    and continuing a fit that stopped (see :func:`fit_local`).
    """
    prepare_output_dir(out_dir, force=force)
    if (min_iv is not None or top_k is not None) and iv_table is None:
        raise ConfigError("min_iv/top_k need an IV table (the file written by vfl iv).")
    if (guest_valid is None) != (not hosts_valid) or (
            hosts_valid and len(hosts_valid) != len(hosts)):
        raise ConfigError("Give a guest validation table and one host validation table per "
                          "host, or none.")
    g, hs = load_tables(guest, hosts, id_column=id_column, label=label, require_label=True,
                        lower_ids=lower_ids, strip_ids=strip_ids, features=features,
                        exclude=exclude)
    kept = None
    if iv_table is not None:
        table = json.loads(Path(iv_table).read_text())
        g, hs, kept = select_columns(g, hs, table, min_iv=min_iv, top_k=top_k)
    gv, hvs = None, None
    if guest_valid is not None:
        gv, hvs = load_tables(guest_valid, hosts_valid, id_column=id_column, label=label,
                              require_label=True, lower_ids=lower_ids, strip_ids=strip_ids,
                              exclude=exclude)
        gv = gv.select(g.feature_names)
        hvs = [v.select(h.feature_names) for v, h in zip(hvs, hs, strict=True)]
    result = fit_local(g, hs, config, options=options, out_dir=out_dir, progress=progress,
                       on_psi_done=on_psi_done, guest_valid=gv, hosts_valid=hvs,
                       html_report=html_report, force=True,  # checked above, before reading
                       coef_init=coef_init, intercept_init=intercept_init,
                       checkpoints=checkpoints, resume=resume,
                       checkpoint_every=checkpoint_every)
    result.kept_columns = kept
    return result


def predict_files(model_dir: str | Path, guest: str | Path, hosts: Sequence[str | Path], *,
                  id_column: str, out: str | Path, label: str | None = None,
                  lower_ids: bool = False, strip_ids: bool = True,
                  scorecard: Scorecard | None = None, force: bool = False,
                  features: Sequence[str] | None = None,
                  exclude: Sequence[str] = (),
                  range_policy: RangePolicy = "refuse") -> pd.DataFrame:
    """``vfl predict`` as one call: score the shared customers, write ``out``.

    ``out`` is written in the format of its suffix (``.csv``, ``.csv.gz``,
    ``.parquet``, ``.pq``). With ``scorecard`` the scores get a ``score``
    column: integer points, the sum of every party's points table score (see
    :func:`predict_local`). An existing ``out`` is refused unless ``force``.
    """
    table_format(out)  # an unknown suffix fails before any work
    prepare_output_file(out, force=force)
    g, hs = load_tables(guest, hosts, id_column=id_column, label=label, require_label=False,
                        lower_ids=lower_ids, strip_ids=strip_ids, features=features,
                        exclude=exclude)
    scores = predict_local(model_dir, g, hs, scorecard=scorecard, range_policy=range_policy)
    write_frame(scores, out)
    return scores


def psi_files(guest: str | Path, hosts: Sequence[str | Path], *, id_column: str,
              out_dir: str | Path, label: str | None = None, lower_ids: bool = False,
              strip_ids: bool = True, force: bool = False,
              features: Sequence[str] | None = None,
              exclude: Sequence[str] = (),
              out_format: TableFormat = "csv", stream_rows: int = BUCKET_ROWS,
              progress: ProgressHook | None = None) -> tuple[int, list[Path]]:
    """``vfl psi`` as one call: write each party's aligned table as ``<party>.csv``.

    ``out_format="parquet"`` writes ``<party>.parquet`` instead (the same
    columns and values). Returns the number of shared customers and the
    files written. Existing aligned tables in ``out_dir`` are refused unless
    ``force``.

    Tables of more than ``stream_rows`` rows are streamed (:func:`_psi_files_streamed`):
    no party holds more than one chunk of its raw input at once.
    """
    if out_format not in ("csv", "parquet"):
        raise ConfigError(f"out_format must be 'csv' or 'parquet'; got {out_format!r}.")
    names = [GUEST, *host_names(len(hosts))]
    targets = [Path(out_dir) / f"{name}.{out_format}" for name in names]
    for target in targets:
        prepare_output_file(target, force=force)
    if not hosts:
        raise ConfigError("Give at least one host table.")
    if max(count_rows(t) for t in [guest, *hosts]) > stream_rows:
        return _psi_files_streamed(guest, list(hosts), targets, id_column=id_column, label=label,
                                   lower_ids=lower_ids, strip_ids=strip_ids, features=features,
                                   exclude=exclude, progress=progress)
    g, hs = load_tables(guest, hosts, id_column=id_column, label=label, require_label=False,
                        lower_ids=lower_ids, strip_ids=strip_ids, features=features,
                        exclude=exclude)
    g_al, h_al = psi_local(g, hs)
    for target, table in zip(targets, [g_al, *h_al], strict=True):
        df = pd.DataFrame(table.X, columns=table.feature_names)
        df.insert(0, id_column, table.ids)
        if table.y is not None and label:
            df.insert(1, label, table.y)
        write_frame(df, target)
    return g_al.n_rows, targets


def _stream_columns(path: str | Path, id_column: str, label: str | None,
                    features: Sequence[str] | None, exclude: Sequence[str]) -> list[str]:
    """A streamed table's feature columns, chosen as :func:`load_tables` chooses them."""
    names = column_names(path)
    if id_column not in names:
        raise DataError(f"{path}: ID column {id_column!r} not found; columns are: "
                        f"{', '.join(names[:20])}")
    left_out = {id_column, *exclude} | ({label} if label else set())
    cols = [c for c in names if c not in left_out]
    if features is not None:
        cols = [f for f in features if f in cols]
    if not cols:
        raise ConfigError(f"{path}: no feature column to keep (see --features/--exclude).")
    return cols


def _gather(path: str | Path, rows: np.ndarray, *, id_column: str, label: str | None,
            features: list[str], strip_ids: bool, lower_ids: bool) -> pd.DataFrame:
    """The aligned table: ``rows`` of ``path`` in that order, read one chunk at a time.

    Holds one chunk of raw input (65,536 rows), an int64 position per input
    row, and the aligned columns being filled (8 bytes per cell).
    """
    from vfl.data import MAX_ABS_FEATURE
    from vfl.tableio import iter_batches, normalize_ids, row_location, table_format

    n_in = count_rows(path)
    where = np.full(n_in, -1, dtype=np.int64)
    where[rows] = np.arange(len(rows), dtype=np.int64)
    ids = np.empty(len(rows), dtype=object)
    X = np.empty((len(rows), len(features)), dtype=np.float64)
    y = np.empty(len(rows), dtype=np.int64) if label else None
    fmt = table_format(path)
    cols = [id_column, *([label] if label else []), *features]
    for frame in iter_batches(path, cols, id_column=id_column):
        pos = where[frame.index.to_numpy()]
        keep = pos >= 0
        if not keep.any():
            continue
        sub, at = frame[keep], pos[keep]
        ids[at] = normalize_ids(sub[id_column], strip=strip_ids, lower=lower_ids).to_numpy()
        lines = sub.index.to_numpy()
        for j, name in enumerate(features):
            num = pd.to_numeric(sub[name], errors="coerce")
            bad = (num.isna() & sub[name].notna()).to_numpy()
            if bad.any():
                raise DataError(f"{path}: feature column {name!r} is not numeric "
                                f"({row_location(lines[bad], fmt)}); encode categories as "
                                "numbers or leave the column out.")
            values = num.to_numpy(dtype=np.float64)
            with np.errstate(invalid="ignore"):
                extreme = ~(np.abs(values) <= MAX_ABS_FEATURE) & ~np.isnan(values)
            if extreme.any():
                raise DataError(f"{path}: feature column {name!r} has values beyond "
                                f"+-{MAX_ABS_FEATURE:.0e} or infinite "
                                f"({row_location(lines[extreme], fmt)}).")
            X[at, j] = values
        if y is not None and label:
            lab = pd.to_numeric(sub[label], errors="coerce")
            bad = ~lab.isin([0, 1]).to_numpy()
            if bad.any():
                raise DataError(f"{path}: label column {label!r} must be 0 or 1; other values "
                                f"({row_location(lines[bad], fmt)}).")
            y[at] = lab.to_numpy().astype(np.int64)
    df = pd.DataFrame(X, columns=features)
    df.insert(0, id_column, list(ids))
    if y is not None and label:
        df.insert(1, label, y)
    return df


def _psi_files_streamed(guest: str | Path, hosts: list[str | Path], targets: list[Path], *,
                        id_column: str, label: str | None, lower_ids: bool, strip_ids: bool,
                        features: Sequence[str] | None, exclude: Sequence[str],
                        progress: ProgressHook | None) -> tuple[int, list[Path]]:
    """``vfl psi`` for large tables: IDs streamed into the bucketed PSI, outputs gathered in chunks.

    Same files as the in-memory path (same rows, order, columns and values);
    the checks of the feature and label columns apply to the shared rows.
    """
    from vfl.psi.spill import IdSource

    paths = [guest, *hosts]
    names = [GUEST, *host_names(len(hosts))]
    headers = [column_names(pth) for pth in paths]
    for what, wanted in (("--features", features or ()), ("--exclude", exclude)):
        unknown = [c for c in wanted if not any(c in h for h in headers)]
        if unknown:
            raise ConfigError(f"{what}: column(s) {', '.join(map(repr, unknown))} are in no "
                              "table given.")
    g_label = label if label and label in headers[0] else None
    cols = {n: _stream_columns(pth, id_column, g_label if n == GUEST else None, features,
                               exclude) for n, pth in zip(names, paths, strict=True)}
    sources = {n: IdSource.from_file(pth, id_column, strip=strip_ids, lower=lower_ids)
               for n, pth in zip(names, paths, strict=True)}
    show = None if progress is None else progress.on_psi
    net = InMemoryNetwork([GUEST, *names[1:]], timeout=24 * 3600)
    targets_fn: dict[str, Callable[[Endpoint], Any]] = {
        GUEST: lambda ch: run_psi_guest(ch, sources[GUEST], names[1:], progress=show)}
    for name in names[1:]:
        targets_fn[name] = (lambda n: lambda ch: run_psi_host(ch, sources[n], GUEST))(name)
    rows = run_threads(net, targets_fn)
    if len(rows[GUEST]) == 0:
        raise DataError("The intersection is empty: the tables share no customer IDs. Check "
                        "that all sides use the same ID column and normalisation (--lower-ids).")
    # every party's table is gathered (and checked) before any file is written
    frames = [_gather(pth, rows[name], id_column=id_column,
                      label=g_label if name == GUEST else None, features=cols[name],
                      strip_ids=strip_ids, lower_ids=lower_ids)
              for name, pth in zip(names, paths, strict=True)]
    for pth, df in zip(paths[1:], frames[1:], strict=True):
        # the files are read twice (PSI, then the rows): refuse one that changed in between
        if not np.array_equal(df[id_column].to_numpy(), frames[0][id_column].to_numpy()):
            raise DataError(f"{guest} or {pth} changed while vfl psi read it: the rows gathered "
                            "after the intersection no longer hold the shared IDs. Run again.")
    if g_label is not None and frames[0][g_label].nunique() < 2:
        raise DataError(f"{guest}: the shared customers' label {g_label!r} has one class only.")
    for df, target in zip(frames, targets, strict=True):
        write_frame(df, target)
    return len(rows[GUEST]), targets


def iv_files(guest: str | Path, hosts: Sequence[str | Path], *, id_column: str, label: str,
             out: str | Path, n_bins: int = 10, key_bits: int = 2048,
             allow_insecure_key_size: bool = False, reveal_host_names: bool = False,
             monotonic: bool = False, lower_ids: bool = False,
             strip_ids: bool = True, force: bool = False,
             features: Sequence[str] | None = None,
             exclude: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``vfl iv`` as one call: the IV table of every party's columns, written to ``out``."""
    prepare_output_file(out, force=force)
    check_key_size(key_bits, allow_insecure_key_size=allow_insecure_key_size)
    g, hs = load_tables(guest, hosts, id_column=id_column, label=label, require_label=True,
                        lower_ids=lower_ids, strip_ids=strip_ids, features=features,
                        exclude=exclude)
    table = iv_local(g, hs, n_bins=n_bins, key_bits=key_bits,
                     allow_insecure_key_size=allow_insecure_key_size,
                     reveal_host_names=reveal_host_names, monotonic=monotonic)
    atomic_write_text(out, json.dumps(table, indent=2))
    return table
