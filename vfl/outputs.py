"""What a party writes after a job: one module, one naming scheme, every deployment.

The one-machine pipeline (``vfl fit``), the networked runner (``vfl run``)
and the demo all write a party's outputs through these functions, so the
files are the same wherever the job ran. ``<party>`` is the party's name:
``guest``, ``host1``, ... on one machine (where all parties share one
folder, so every per-party file carries the name), ``bank_a``, ... over the
network.

========================  ====================================================
``<party>.json``          guest and hosts: the model part (:class:`vfl.model.ModelPart`)
``<party>_points.csv``    guest and hosts: the party's scorecard points table (CSV)
``<party>_points.json``   guest and hosts: the same table as one JSON document
                          (format ``vfl.scorecard``) a decision engine can load
``report.json``           guest: the job's report; ``model_part`` names the guest's part
``train_scores.csv``      guest: id, label, joint probability of the evaluation rows
``iv.json``               guest, with WOE binning: the IV table of every party's columns
``<party>_run.json``      hosts and arbiter: rows, epochs, traffic of this party's run
``report/index.html``     guest (networked runs): the HTML report, when rows were evaluated
========================  ====================================================

Only the guest's report names the guest's files; nothing here writes another
party's data.

Tables are written through :func:`vfl.tableio.write_frame` (atomic, streamed
to the file). Their names, and so their format, are fixed: ``train_scores.csv``
is what ``vfl report`` reads, and the points tables are small files a
decision engine loads; the tables a user names (``vfl psi``'s aligned tables,
``vfl predict --out``) can be Parquet (:mod:`vfl.pipeline`).

Points tables (:mod:`vfl.scorecard`): integer points per bin of each of the
party's features (bins ``lower < x <= upper``, open-ended first and last
bins, one row for a missing value), plus the guest's base-points row; points
are rounded half away from zero once per bin. A customer's score is the
guest's table score plus every host's. They are written at fit with the
default scaling (600 points at odds 50:1, 20 points to double the odds) and
the guest's calibration: on one machine for every party; over a network a
host does not learn the calibration at fit, so its table records the
uncalibrated scale (slope null) until ``vfl predict --score`` sends it the
scale. ``vfl predict --score`` rewrites a party's tables when the scaling it
used differs from the saved one, so a party's folder always holds the table
of the points it last computed.

No silent overwrite: every run first calls :func:`prepare_output_dir` (or
:func:`prepare_output_file` for a scores file), before any work. A folder
that already holds a run's outputs is refused unless ``force``, and then
those outputs are removed first, so no stale file (an old HTML report, an
old party's points) is left beside the new model. The folder must be
writable, or the run stops before PSI.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from vfl.exceptions import ConfigError, DataError, OutputExistsError
from vfl.jobs import GuestOutcome, HostOutcome, JobOptions
from vfl.lr.config import TrainConfig
from vfl.lr.estimator import Arbiter
from vfl.model import ModelPart, atomic_write_text, load_model_part, save_model_part
from vfl.procs import signals_held
from vfl.roles import Role
from vfl.scorecard import (
    INTERVAL,
    ROUNDING,
    TABLE_FORMAT,
    PointsTable,
    Scorecard,
    approximation_gap,
    continuous_points,
    part_calibration,
    part_points_table,
)
from vfl.tableio import write_frame

__all__ = ["REPORT", "TRAIN_SCORES", "IV_TABLE", "model_part_file", "points_file",
           "points_json_file", "write_points", "refresh_points", "scorecard_summary",
           "run_file", "guest_report", "host_summary", "arbiter_summary",
           "write_guest_outputs", "write_host_outputs", "write_arbiter_outputs",
           "GuestOutputs", "read_guest_outputs", "existing_outputs", "prepare_output_dir",
           "prepare_output_file", "output_lock", "LOCK_FILE"]

#: The lock file a running party holds in its output folder, per party and activity
#: (``run``, ``serve``: a party may serve its current model while it trains the next one,
#: and parties may share a folder; the same party twice may not).
LOCK_FILE = ".vfl-{party}-{activity}.lock"
#: Output folders this process holds (the one-machine demo runs several parties in one
#: process, each in its own folder; a folder shared by parties of one process is allowed).
_HELD: dict[Path, int] = {}
_HELD_LOCK = threading.Lock()


@contextlib.contextmanager
def output_lock(folder: str | Path, party: str, activity: str = "run") -> Iterator[Path]:
    """Hold ``folder`` for ``party`` in this process while the block runs: a second
    process doing ``activity`` (``run`` or ``serve``) for the same party into the same
    folder (the party started twice) is refused at once, naming the process that holds
    it.

    Raises
    ------
    ConfigError
        If another process holds the folder, or it cannot be created.
    """
    folder = Path(folder).resolve()
    key = folder / LOCK_FILE.format(party=party, activity=activity)
    with _HELD_LOCK:
        if key in _HELD:
            _HELD[key] += 1
            fd = -1
        else:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ConfigError(f"Cannot use the output folder {folder}: {exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                os.close(fd)
                raise ConfigError(
                    f"{folder} is in use by another 'vfl {activity}' ({holder or 'unknown'}): "
                    f"is {party} already running? Stop it, or give this one another output "
                    "folder.") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, {party}".encode(), 0)
            _HELD[key] = 1
    try:
        yield folder
    finally:
        with _HELD_LOCK:
            _HELD[key] -= 1
            if _HELD[key] == 0:
                del _HELD[key]
                if fd >= 0:
                    os.close(fd)  # releases the lock

REPORT = "report.json"
TRAIN_SCORES = "train_scores.csv"
IV_TABLE = "iv.json"


def model_part_file(out_dir: str | Path, party: str) -> Path:
    """``<out_dir>/<party>.json``: the party's model part."""
    return Path(out_dir) / f"{party}.json"


def points_file(out_dir: str | Path, party: str) -> Path:
    """``<out_dir>/<party>_points.csv``: the party's scorecard points table."""
    return Path(out_dir) / f"{party}_points.csv"


def points_json_file(out_dir: str | Path, party: str) -> Path:
    """``<out_dir>/<party>_points.json``: the same table as one JSON document."""
    return Path(out_dir) / f"{party}_points.json"


@signals_held
def write_points(out_dir: str | Path, party: str, table: PointsTable) -> list[Path]:
    """Write ``table`` as ``<party>_points.csv`` and ``<party>_points.json``."""
    csv_path, json_path = points_file(out_dir, party), points_json_file(out_dir, party)
    atomic_write_text(csv_path, table.to_csv())
    atomic_write_text(json_path, table.to_json() + "\n")
    return [csv_path, json_path]


def _same_points(a: PointsTable, b: PointsTable) -> bool:
    return (a.features == b.features and a.base_points == b.base_points
            and a.scale is not None and b.scale is not None and a.scale == b.scale)


def refresh_points(out_dir: str | Path, party: str, table: PointsTable) -> list[Path]:
    """Rewrite the party's tables if ``table`` gives other points than the saved ones.

    Returns the files written (none when the saved table is the same, so a
    read-only model folder is not touched by a default-scaling ``--score``).
    """
    try:
        saved = PointsTable.from_json(points_json_file(out_dir, party).read_text(
            encoding="utf-8"))
        if _same_points(saved, table):
            return []
    except (OSError, ValueError):  # absent or unreadable (ConfigError is a ValueError)
        pass
    return write_points(out_dir, party, table)


def scorecard_summary(outcome: GuestOutcome, scorecard: Scorecard | None = None
                      ) -> dict[str, Any]:
    """The report's ``scorecard`` entry: the guest's scaling and its table's gap to the model.

    ``guest_gap`` compares the guest's integer table score with its continuous
    model points on its training rows (:func:`vfl.scorecard.approximation_gap`):
    within ``rounding_bound`` with WOE bins (the table is the model up to
    rounding); raw columns add the error of binning them.
    """
    sc = scorecard or Scorecard()
    part = outcome.part()
    try:
        table = part_points_table(part, sc)
    except ConfigError as exc:  # e.g. a calibration slope <= 0
        return {"error": str(exc)}
    slope, c = part_calibration(part)
    est = outcome.estimator
    base = sc.base_value(est.intercept_, slope, c)
    assert table.scale is not None
    cont = continuous_points(outcome.aligned.X, est.coef_, est.preprocessor_,
                             scale=table.scale, woe=outcome.woe, base=base)
    gap = approximation_gap(table, outcome.aligned.X, cont)
    return {"pdo": sc.pdo, "base_score": sc.base_score, "base_odds": sc.base_odds,
            "slope": slope, "scale": table.scale, "base_points": table.base_points,
            "bins": outcome.score_bins.source, "interval": INTERVAL, "rounding": ROUNDING,
            "guest_gap": gap.to_dict()}


def run_file(out_dir: str | Path, party: str) -> Path:
    """``<out_dir>/<party>_run.json``: a host's or the arbiter's run summary."""
    return Path(out_dir) / f"{party}_run.json"


def _json(path: Path, value: Any) -> Path:
    atomic_write_text(path, json.dumps(value, indent=2))
    return path


def guest_report(outcome: GuestOutcome, *, n_guest: int, hosts: list[str], config: TrainConfig,
                 options: JobOptions, traffic: dict[str, Any],
                 baseline: dict[str, float] | None = None) -> dict[str, Any]:
    """The content of the guest's ``report.json``."""
    est = outcome.estimator
    return {
        "model_id": est.model_id_,
        "party": outcome.party,
        "model_part": model_part_file(".", outcome.party).name,
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
        "psi_reused": outcome.psi_reused,
        "train_seconds": outcome.train_seconds,
        "loss_history": est.loss_history_,
        "validation_history": est.validation_history_,
        "best_epoch": est.best_epoch_,
        "traffic": traffic,
        "config": {f.name: getattr(config, f.name) for f in fields(config)},
        "options": {f.name: getattr(options, f.name) for f in fields(options)},
        "baseline": dict(baseline or {}),
        "leakage_check": outcome.leakage,
        "validation": validation_summary(outcome),
        "scorecard": scorecard_summary(outcome),
    }


def validation_summary(outcome: GuestOutcome) -> dict[str, Any] | None:
    """Out-of-sample figures at the kept epoch (None without validation rows).

    The headline of every display when present: the training-row figures
    (``auc``, ``ks``) are in-sample.
    """
    est = outcome.estimator
    if est.best_epoch_ is None or not est.validation_history_:
        return None
    best = est.validation_history_[est.best_epoch_]
    out: dict[str, Any] = {"rows": len(est.validation_rows_), "epoch": est.best_epoch_ + 1,
                           "auc": best["auc"], "ks": best["ks"], "log_loss": best["loss"],
                           "brier": best.get("brier")}
    cal = getattr(est, "calibration_", None)
    if cal is not None:
        # the calibrated model's figures (out of sample: cross-fitted on the validation rows)
        out.update(log_loss=cal["after"]["log_loss"], brier=cal["after"]["brier"],
                   calibration=cal)
    return out


def host_summary(outcome: HostOutcome, *, n_rows: int, traffic: dict[str, Any]
                 ) -> dict[str, Any]:
    """The content of a host's ``<party>_run.json``."""
    return {"party": outcome.party, "role": Role.HOST.value, "n_rows": n_rows,
            "n_intersection": outcome.aligned.n_rows, "epochs_run": outcome.estimator.n_iter_,
            "traffic": traffic}


def arbiter_summary(party: str, arbiter: Arbiter, *, traffic: dict[str, Any]) -> dict[str, Any]:
    """The content of the arbiter's ``<party>_run.json``."""
    return {"party": party, "role": Role.ARBITER.value, "epochs_run": arbiter.n_iter_,
            "loss_history": arbiter.loss_history_, "traffic": traffic}


def _write_part_and_points(out: Path, outcome: GuestOutcome | HostOutcome,
                           slope: float | None = None) -> list[Path]:
    """A party's model part and scorecard points tables (all stay with the party).

    ``slope``: a host's table at the guest's calibration slope (when this
    process knows it); see the module docstring.
    """
    part = outcome.part()
    path = save_model_part(part, model_part_file(out, outcome.party))
    try:
        table = part_points_table(part, slope=slope)
    except ConfigError as exc:  # e.g. a calibration slope <= 0: keep the trained model
        warnings.warn(f"{outcome.party}: no points table written: {exc}", stacklevel=3)
        return [path]
    return [path, *write_points(out, outcome.party, table)]


@signals_held
def write_guest_outputs(out_dir: str | Path, outcome: GuestOutcome, report: dict[str, Any], *,
                        html_report: bool = False) -> list[Path]:
    """Write the guest's model part, points, report, evaluation scores and IV table.

    With ``html_report`` (and evaluation rows) also ``report/index.html``;
    its path goes into ``report["html_report"]``. Returns the files written.
    """
    out = Path(out_dir)
    files = _write_part_and_points(out, outcome)
    if outcome.proba is not None and outcome.eval_ids is not None and outcome.eval_y is not None:
        df = pd.DataFrame({"id": outcome.eval_ids, "label": outcome.eval_y,
                           "probability": outcome.proba})
        files.append(write_frame(df, out / TRAIN_SCORES))
    if outcome.iv_table is not None:
        files.append(_json(out / IV_TABLE, outcome.iv_table))
    files.append(_json(out / REPORT, report))
    if html_report and report.get("auc") is not None:
        from vfl.report import write_report

        index = write_report(out, out / "report")
        report["html_report"] = str(index)
        _json(out / REPORT, report)
        files.append(index)
    return files


@signals_held
def write_host_outputs(out_dir: str | Path, outcome: HostOutcome,
                       summary: dict[str, Any], *, slope: float | None = None) -> list[Path]:
    """Write a host's model part, points tables and ``<party>_run.json``.

    ``slope``: the guest's calibration slope, if known here (one machine);
    without it the host's table has the uncalibrated scale until a
    ``vfl predict --score`` sends the scale.
    """
    out = Path(out_dir)
    files = _write_part_and_points(out, outcome, slope)
    summary = {**summary, "model_part": files[0].name}
    files.append(_json(run_file(out, outcome.party), summary))
    return files


@signals_held
def write_arbiter_outputs(out_dir: str | Path, party: str, summary: dict[str, Any]) -> list[Path]:
    """Write the arbiter's ``<party>_run.json`` (it holds no model part)."""
    return [_json(run_file(out_dir, party), summary)]


@dataclass
class GuestOutputs:
    """What :func:`read_guest_outputs` found in a guest's output folder."""

    folder: Path
    report: dict[str, Any]
    part: ModelPart
    train_scores: Path | None
    iv_table: Path | None


def read_guest_outputs(model_dir: str | Path) -> GuestOutputs:
    """Read a guest's output folder: ``report.json`` and the model part it names.

    Raises
    ------
    DataError
        If the folder holds no ``report.json``, or the report names no model
        part (folders written before vfl 0.2: re-run ``vfl fit``).
    """
    folder = Path(model_dir)
    rep_path = folder / REPORT
    if not rep_path.is_file():
        raise DataError(f"{folder} has no {REPORT}; run vfl fit (or vfl run on the guest) first.")
    report = json.loads(rep_path.read_text())
    name = report.get("model_part")
    if not isinstance(name, str) or Path(name).name != name:
        raise DataError(f"{rep_path} names no model part file (written by an older vfl?); "
                        "run vfl fit again.")
    part = load_model_part(folder / name)
    scores = folder / TRAIN_SCORES
    iv = folder / IV_TABLE
    return GuestOutputs(folder, report, part, scores if scores.is_file() else None,
                        iv if iv.is_file() else None)


def _is_points_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == TABLE_FORMAT


def _is_model_part(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "model_id" in data and "coef" in data


#: a run summary larger than this is not read to find its job id
_SUMMARY_MAX_BYTES = 64 << 20


def existing_outputs(folder: str | Path) -> list[Path]:
    """The files and folders of an earlier run that ``folder`` holds (what this module writes)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if path.is_dir():
            if name == "report" and (path / "index.html").exists():
                found.append(path)
        elif (name in (REPORT, TRAIN_SCORES, IV_TABLE) or name.endswith(("_points.csv",
                                                                          "_run.json"))
              or (name.endswith("_points.json") and _is_points_json(path))
              or (name.endswith(".json") and _is_model_part(path))):
            found.append(path)
    return found


def _earlier_model(found: list[Path]) -> str:
    for path in found:
        if path.suffix == ".json":
            try:
                model_id = json.loads(path.read_text(encoding="utf-8")).get("model_id")
            except (OSError, ValueError, AttributeError):
                continue
            if model_id:
                return f"model {model_id}"
    return "another run"


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".vfl-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"Cannot write to the output folder {folder}: "
                          f"{exc.strerror or exc}. Choose another --out.") from None


def _summary_job(found: list[Path]) -> str | None:
    """The one job id that every run summary among ``found`` names (``report.json``,
    ``*_run.json``), or None: no summary, a summary without a job id, two jobs, or a file
    that is not a regular file of at most 64 MiB."""
    jobs = set()
    for path in found:
        if path.name != REPORT and not path.name.endswith("_run.json"):
            continue
        try:
            if not path.is_file() or path.stat().st_size > _SUMMARY_MAX_BYTES:
                return None
            with open(path, "rb") as f:
                job = json.loads(f.read(_SUMMARY_MAX_BYTES + 1)).get("job")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(job, str):
            return None
        jobs.add(job)
    return jobs.pop() if len(jobs) == 1 else None


def prepare_output_dir(folder: str | Path, *, force: bool = False,
                       resume_job: str | None = None) -> Path:
    """Make ``folder`` ready for a run's outputs, before any work starts.

    ``resume_job``: the job a ``--resume`` run continues; outputs that an
    earlier run of that same job wrote (every run summary there names the
    job) are accepted and left in place until the resumed run overwrites
    them with its own at its end, so a resume refused later (another data
    set, another key) loses nothing.

    Raises
    ------
    OutputExistsError
        If it holds an earlier run's outputs and ``force`` is not given
        (with ``force`` they are removed first: no stale file stays).
    ConfigError
        If it cannot be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"The output folder {folder} is a file; choose another --out.")
    found = existing_outputs(folder)
    if found and not force and resume_job is not None and _summary_job(found) == resume_job:
        _check_writable(folder)
        return folder
    if found and not force:
        shown = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise OutputExistsError(
            f"{folder} already holds the outputs of {_earlier_model(found)} ({shown}); "
            "give --force to replace them (they are removed first), or choose another --out.")
    _check_writable(folder)
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return folder


def prepare_output_file(path: str | Path, *, force: bool = False) -> Path:
    """Check before any work that ``path`` can be written, and is new unless ``force``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name for --out.")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; give --force to replace it, or choose "
                                "another --out.")
    _check_writable(path.parent if str(path.parent) else Path("."))
    return path
