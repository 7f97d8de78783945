"""The ``vfl`` command line: argument parsing, progress display and exit codes only.

Every command is one call into the library (:mod:`vfl.pipeline` for
one-machine runs, :mod:`vfl.runner` for a party of a networked job,
:mod:`vfl.demo`, :mod:`vfl.report`, :mod:`vfl.certs`), so a library user can
do everything the CLI does. Expected failures end with a one-line error and
exit code 2.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from vfl import __version__
from vfl.exceptions import VFLError
from vfl.lr.config import MODES, OPTIMIZERS, PENALTIES, PROTOCOLS, TrainConfig
from vfl.procs import Terminated, exit_within, stop_on_signals
from vfl.progress import JsonStatus, LineProgress, RichProgress, progress_bar
from vfl.roles import Role

console = Console(stderr=True)
out_console = Console()

#: the file names a table argument accepts (vfl.tableio.SUFFIXES, spelled out so that
#: --help imports no pyarrow)
TABLE = "(.csv, .csv.gz, .parquet or .pq)"


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one-line errors with exit code 2.

    SIGTERM and Ctrl-C stop the command like any other failure (peers told,
    worker pools closed, temporary files removed; :mod:`vfl.procs`) and exit
    with 143 and 130.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>`: every thread's stack on stderr
            with contextlib.suppress(ValueError, OSError, AttributeError):  # no real stderr
                faulthandler.register(signal.SIGUSR1, all_threads=True)
        try:
            with stop_on_signals():
                return fn(*args, **kwargs)
        except (VFLError, OSError, ValueError) as exc:
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            sys.exit(2)
        except BrokenExecutor:
            click.echo("error: a worker process of this party died (killed from outside, or "
                       "out of memory); the job stopped.", err=True)
            sys.exit(2)
        except Terminated as exc:
            click.echo(f"error: {exc}; stopped (workers stopped, temporary files removed, "
                       "any peers told)", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted (Ctrl-C); stopped (workers stopped, temporary files "
                       "removed, any peers told)", err=True)
            sys.exit(130)

    return wrapper


def _columns(values: tuple[str, ...]) -> list[str]:
    """``--exclude a,b --exclude c`` -> ``[a, b, c]``."""
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def _column_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--exclude", "exclude", multiple=True, metavar="COLS",
                      help="Leave these columns out, in every table that has them "
                           "(comma-separated or repeated).")(fn)
    fn = click.option("--features", "features", multiple=True, metavar="COLS",
                      help="Use only these columns, each table those it has "
                           "(comma-separated or repeated; default: all but ID and label).")(fn)
    return fn


def _id_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--id", "id_column", required=True, help="ID column (same name in every table).")(fn)
    fn = click.option("--lower-ids", is_flag=True, help="Compare IDs case-insensitively.")(fn)
    fn = click.option("--no-strip-ids", is_flag=True,
                      help="Keep leading/trailing spaces in IDs.")(fn)
    return fn


def _training_tables(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--guest (with --label) and one or more --host tables."""
    fn = click.option("--label", required=True, help="Label column of the guest table (0/1).")(fn)
    fn = click.option("--host", "hosts", multiple=True, type=click.Path(dir_okay=False),
                      help=f"Host CSV or Parquet file {TABLE}; repeat for several hosts.")(fn)
    fn = click.option("--guest", required=True, type=click.Path(dir_okay=False),
                      help=f"Guest CSV or Parquet file {TABLE}, with the label.")(fn)
    return fn


def _train_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    d = TrainConfig()
    opts = [
        click.option("--epochs", default=d.epochs, show_default=True, type=click.IntRange(1)),
        click.option("--batch-size", default=d.batch_size, show_default=True,
                     type=click.IntRange(0), help="Rows per batch (0 = full batch)."),
        click.option("--learning-rate", default=d.learning_rate, show_default=True, type=float),
        click.option("--decay", default=d.decay, show_default=True, type=float,
                     help="lr / (1 + decay * epoch)."),
        click.option("--optimizer", default=d.optimizer, show_default=True,
                     type=click.Choice(OPTIMIZERS)),
        click.option("--penalty", default=d.penalty, show_default=True,
                     type=click.Choice(PENALTIES)),
        click.option("--alpha", default=d.alpha, show_default=True, type=float,
                     help="Penalty strength."),
        click.option("--tol", default=d.tol, show_default=True, type=float,
                     help="Stop when the epoch loss changes less (0: never)."),
        click.option("--key-bits", default=d.key_bits, show_default=True, type=int,
                     help="Paillier key size."),
        click.option("--insecure-key-size", is_flag=True,
                     help="Allow keys below 2048 bits (testing only)."),
        click.option("--seed", default=d.seed, show_default=True, type=int,
                     help="Batch shuffling seed."),
        click.option("--no-intercept", is_flag=True, help="Fit no intercept."),
        click.option("--validation-fraction", default=d.validation_fraction, show_default=True, type=float,
                     help="Hold out this share (stratified) for per-epoch validation."),
        click.option("--patience", default=d.patience, show_default=True, type=click.IntRange(0),
                     help="Stop after N epochs without a better validation log-loss (AUC with "
                          "--mode taylor); keeps the best epoch."),
        click.option("--class-weight", default="none", show_default=True,
                     help="'none', 'balanced', or the weight of defaults (e.g. 3)."),
        click.option("--mode", default=d.mode, show_default=True, type=click.Choice(MODES),
                     help="'accurate': logistic loss expanded around the guest's own score "
                          "(near-exact logistic regression); 'taylor': around 0, as FATE."),
        click.option("--protocol", default=d.protocol, show_default=True,
                     type=click.Choice(PROTOCOLS),
                     help="'shared': weights kept as secret shares with the arbiter, so no "
                          "party sees a gradient; 'reveal-gradients': every party sees its "
                          "gradient after every batch (a run's worth reveals labels and "
                          "scores; needed for --optimizer adam or rmsprop)."),
        click.option("--woe-bins", default=0, show_default=True, type=click.IntRange(0, 100),
                     help="WOE-encode every party's columns with N bins before training."),
        click.option("--iv-bins", default=10, show_default=True, type=click.IntRange(0, 100),
                     help="Federated IV table of every column with N bins, for the report and "
                          "the leakage check of host columns (0: skip; implied by --woe-bins)."),
        click.option("--allow-suspicious", is_flag=True,
                     help="Train even if one column alone predicts the label almost perfectly "
                          "(target leakage check)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _scorecard_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--pdo", default=20.0, show_default=True, type=float,
                      help="Scorecard: points to double the odds.")(fn)
    fn = click.option("--base-odds", default=50.0, show_default=True, type=float,
                      help="Scorecard: good:bad odds at the base score.")(fn)
    fn = click.option("--base-score", default=600.0, show_default=True, type=float,
                      help="Scorecard: points at the base odds.")(fn)
    return fn


def _config(kw: dict[str, Any]) -> TrainConfig:
    return TrainConfig(
        epochs=kw["epochs"], batch_size=kw["batch_size"], learning_rate=kw["learning_rate"],
        decay=kw["decay"], optimizer=kw["optimizer"], penalty=kw["penalty"],
        alpha=kw["alpha"], tol=kw["tol"], key_bits=kw["key_bits"],
        allow_insecure_key_size=kw["insecure_key_size"], seed=kw["seed"],
        fit_intercept=not kw["no_intercept"], validation_fraction=kw["validation_fraction"],
        patience=kw["patience"], class_weight=kw["class_weight"], mode=kw["mode"],
        protocol=kw["protocol"],
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vfl")
def main() -> None:
    """vfl: vertical federated logistic regression (guest, hosts, arbiter).

    Start with `vfl demo`. Tables are CSV (.csv, .csv.gz) or Parquet (.parquet,
    .pq), told by the file name; tables written take the format of their name.
    """


def _plain_progress() -> LineProgress | None:
    """Timestamped lines instead of a bar when stderr is not a terminal (a log file, a
    service manager); JSON lines with ``VFL_PROGRESS=json``."""
    mode = os.environ.get("VFL_PROGRESS", "")
    if console.is_terminal and mode not in ("lines", "json"):
        return None
    return LineProgress("vfl", as_json=mode == "json")


def _with_progress(quiet: bool, work: Callable[[Any, Callable[[int], None]], Any]) -> Any:
    """Run ``work(progress_hook, on_psi_done)`` under a PSI spinner and a training bar (or
    timestamped lines when stderr is not a terminal)."""
    lines = None if quiet else _plain_progress()
    if lines is not None:
        lines.on_stage("psi")
        return work(lines, lines.psi_done)
    with progress_bar(console, quiet=quiet) as progress:
        psi_task = progress.add_task("private set intersection", total=None, loss="")
        hook = RichProgress(progress)

        def psi_done(n: int) -> None:
            progress.update(psi_task, total=1, completed=1,
                            description=f"private set intersection: {n:,} shared")

        result = work(hook, psi_done)
        hook.finish()
    return result


def _scored_line(scored: int, rows: int, out: str) -> str:
    line = f"{scored:,} of {rows:,} customers scored; written to {out} (in the file's order)"
    if scored < rows:
        line += (f"; {rows - scored:,} are not at every bank: no joint score (probability "
                 "empty, matched = False)")
    return line


def _status(text: str, quiet: bool) -> Any:
    """A spinner on stderr while ``text`` runs (nothing with ``quiet``)."""
    import contextlib

    return contextlib.nullcontext() if quiet else console.status(text)


def _summary(report: dict[str, Any], title: str) -> Table:
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("")
    t.add_column("AUC", justify="right")
    t.add_column("KS", justify="right")
    v = report.get("validation")
    if v:
        t.add_row(f"joint model, validation ({v['rows']:,} rows, epoch {v['epoch']})",
                  f"{v['auc']:.4f}", f"{v['ks']:.4f}")
    if report.get("auc") is not None and not (
            v and str(report.get("evaluated_on", "")).startswith("validation")):
        where = ("training rows, in-sample" if report.get("evaluated_on") ==
                 "training intersection" else str(report.get("evaluated_on")))
        t.add_row(f"joint federated model ({where})" if v else "joint federated model",
                  f"{report['auc']:.4f}", f"{report['ks']:.4f}")
    b = report.get("baseline")
    if b and "centralized_auc" in b:
        t.add_row("centralised sklearn (pooled data)", f"{b['centralized_auc']:.4f}",
                  f"{b['centralized_ks']:.4f}")
    if b and "guest_only_auc" in b:
        t.add_row("guest-only model", f"{b['guest_only_auc']:.4f}", f"{b['guest_only_ks']:.4f}")
    return t


def _calibration(report: dict[str, Any]) -> str:
    """One line: the validation rows' calibration figures before and after Platt scaling."""
    cal = (report.get("validation") or {}).get("calibration")
    if not cal:
        return ""
    b, a = cal["before"], cal["after"]
    return (f"calibration on the validation rows (before → after Platt, out of sample): "
            f"Brier {b['brier']:.4f} → {a['brier']:.4f}, mean PD − observed "
            f"{b['calibration_in_the_large']:+.4f} → {a['calibration_in_the_large']:+.4f}, "
            f"slope {b['calibration_slope']:.3f} → {a['calibration_slope']:.3f}\n")


def _facts(report: dict[str, Any]) -> str:
    traffic = ", ".join(f"{n} {v['sent_bytes'] / 1e6:.1f} MB"
                        for n, v in report["traffic"].items())
    return (f"{_calibration(report)}"
            f"intersection {report['n_intersection']:,} of {report['n_guest']:,} guest rows; "
            f"{report['epochs_run']} epochs, PSI {report['psi_seconds']:.1f} s"
            f"{' (intersection kept from the interrupted run)' if report.get('psi_reused') else ''}, "
            f"training {report['train_seconds']:.1f} s "
            f"({report['config']['key_bits']}-bit Paillier)\nsent: {traffic}")


@main.command()
@_training_tables
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the model parts and report.json.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option("--no-report", is_flag=True, help="Do not write the HTML report.")
@click.option("--force", is_flag=True,
              help="Replace the outputs of an earlier run in --out (they are removed first).")
@click.option("--guest-valid", type=click.Path(dir_okay=False),
              help="Guest validation CSV or Parquet file (same columns): per-epoch "
                   "validation, aligned by PSI.")
@click.option("--host-valid", "hosts_valid", multiple=True, type=click.Path(dir_okay=False),
              help="Host validation CSV or Parquet file, one per --host, same order.")
@click.option("--iv", "iv_path", type=click.Path(dir_okay=False, exists=True),
              help="IV table from vfl iv: with --min-iv/--top-k, each party keeps its best columns.")
@click.option("--min-iv", type=float, default=None, help="Keep columns with IV at least this.")
@click.option("--top-k", type=click.IntRange(1), default=None,
              help="Keep the columns among the top K of all parties by IV.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              help="Write every party's checkpoint there after every epoch (needs "
                   "VFL_CHECKPOINT_PASSPHRASE: it seals the arbiter's key pair).")
@click.option("--resume", is_flag=True,
              help="Continue the fit that stopped from its newest checkpoint in "
                   "--checkpoint-dir (same tables and options): the model is the one the "
                   "uninterrupted fit would have made.")
@click.option("--checkpoint-every-batches", type=click.IntRange(0, 1 << 24), default=0,
              show_default=True,
              help="Also checkpoint after every N batches within an epoch (long epochs; "
                   "0: at epoch ends only). Needs --checkpoint-dir.")
@_id_options
@_column_options
@_train_options
@friendly_errors
def fit(guest: str, hosts: tuple[str, ...], label: str, out: str, quiet: bool, no_report: bool,
        force: bool, checkpoint_dir: str | None, resume: bool, checkpoint_every_batches: int,
        guest_valid: str | None, hosts_valid: tuple[str, ...],
        iv_path: str | None, min_iv: float | None, top_k: int | None,
        id_column: str, lower_ids: bool, no_strip_ids: bool,
        features: tuple[str, ...], exclude: tuple[str, ...], **kw: Any) -> None:
    """Align the tables by PSI and train a joint model (all parties on this machine)."""
    from vfl.jobs import JobOptions
    from vfl.pipeline import fit_files

    config = _config(kw)
    if kw["iv_bins"] == 1:
        raise click.BadParameter("needs at least 2 bins (or 0 to skip)", param_hint="--iv-bins")
    options = JobOptions(woe_bins=kw["woe_bins"], iv_bins=kw["iv_bins"],
                         allow_suspicious=kw["allow_suspicious"])
    if not hosts:
        raise click.UsageError("Give at least one --host table.")
    if (min_iv is not None or top_k is not None) and not iv_path:
        raise click.UsageError("--min-iv/--top-k need --iv (the table written by vfl iv).")
    if (guest_valid or hosts_valid) and (not guest_valid or len(hosts_valid) != len(hosts)):
        raise click.UsageError("Give --guest-valid and one --host-valid per --host.")
    if resume and not checkpoint_dir:
        raise click.UsageError("--resume needs the --checkpoint-dir of the fit that stopped.")
    if checkpoint_every_batches and not checkpoint_dir:
        raise click.UsageError("--checkpoint-every-batches needs --checkpoint-dir.")
    result = _with_progress(quiet, lambda hook, psi_done: fit_files(
        guest, hosts, id_column=id_column, label=label, out_dir=out, config=config,
        options=options, guest_valid=guest_valid, hosts_valid=hosts_valid, iv_table=iv_path,
        min_iv=min_iv, top_k=top_k, lower_ids=lower_ids, strip_ids=not no_strip_ids,
        progress=hook, on_psi_done=psi_done, html_report=not no_report, force=force,
        features=_columns(features) or None, exclude=_columns(exclude),
        checkpoints=checkpoint_dir, resume=resume, checkpoint_every=checkpoint_every_batches))
    if result.kept_columns is not None:
        console.print("columns kept by IV: " + ", ".join(
            f"{n}: {len(c)}" for n, c in result.kept_columns.items()))
    report = result.report
    if not quiet:
        out_console.print(_summary(report, "vfl fit"))
        out_console.print(_facts(report))
    out_console.print(f"model parts and report.json written to {out}/")
    if report.get("html_report"):
        out_console.print(f"report: {report['html_report']}")


@main.command()
@click.option("--model", type=click.Path(file_okay=False, exists=True),
              help="Folder written by vfl fit (one-machine form).")
@click.option("--guest", type=click.Path(dir_okay=False),
              help=f"Guest scoring CSV or Parquet file {TABLE}; one-machine form.")
@click.option("--host", "hosts", multiple=True, type=click.Path(dir_okay=False),
              help=f"Host scoring CSV or Parquet file {TABLE}; one-machine form; repeat for "
                   "several hosts.")
@click.option("--id", "id_column", default=None, help="ID column (one-machine form).")
@click.option("--lower-ids", is_flag=True, help="Compare IDs case-insensitively.")
@click.option("--no-strip-ids", is_flag=True, help="Keep leading/trailing spaces in IDs.")
@click.option("--label", default=None, help="Label column to ignore in the guest table, if any.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="This party's TOML (networked form; each party runs its own command).")
@click.option("--data", type=click.Path(dir_okay=False),
              help=f"This party's scoring CSV or Parquet file {TABLE}; networked form.")
@click.option("--job", default=None, help="Job id of the scoring run (networked; default <job>/predict).")
@click.option("--out", type=click.Path(dir_okay=False),
              help=f"Scores file (guest), written in the format of its name {TABLE}.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option("--score", "with_score", is_flag=True,
              help="Add the columns 'score' and 'points'. 'score' is the probability's "
                   "integer score through the points-to-odds mapping (--pdo, --base-score, "
                   "--base-odds), so the two always agree. 'points' is the scorecard's: the "
                   "guest's points table (base points included) plus each host's points from "
                   "its own table, the tables every party wrote at fit as "
                   "<party>_points.csv/.json (bins lower < x <= upper, open-ended first and "
                   "last bins, a missing-value row; points rounded half away from zero per "
                   "bin). They reproduce 'points' exactly. With --woe-bins at fit the tables "
                   "are the model up to that rounding; on raw columns they bin each column "
                   "(10 quantile bins), so 'points' approximates 'score'. "
                   "A party's tables are rewritten if this scaling changes its points. "
                   "Models saved before vfl had points tables must be retrained.")
@_column_options
@_scorecard_options
@click.option("--force", is_flag=True,
              help="Replace --out if it exists.")
@click.option("--range-policy", type=click.Choice(["refuse", "clip", "flag"]), default="refuse",
              show_default=True,
              help="A row with one of the guest's features outside its training range: not "
                   "scored, scored at the range's end, or scored as given; named in the "
                   "column out_of_range either way.")
@friendly_errors
def predict(model: str | None, guest: str | None, hosts: tuple[str, ...], id_column: str | None,
            lower_ids: bool, no_strip_ids: bool, label: str | None, config_path: str | None,
            data: str | None, job: str | None, out: str | None, with_score: bool,
            base_score: float, base_odds: float, pdo: float, force: bool, quiet: bool,
        features: tuple[str, ...], exclude: tuple[str, ...], range_policy: str) -> None:
    """Score the customers every bank has with a saved model.

    One machine:  vfl predict --model DIR --guest A.csv --host B.csv --id ID --out scores.csv

    Networked:    vfl predict --config bank_a.toml --data a_new.csv --out scores.csv  (guest)
                  vfl predict --config bank_b.toml --data b_new.csv                   (each host)

    Input tables may be Parquet (A.parquet); the one-machine form writes Parquet
    scores for --out scores.parquet.
    """
    from vfl.scorecard import Scorecard

    scorecard = Scorecard(base_score, base_odds, pdo) if with_score else None
    if config_path:
        from vfl.config import load_party_config
        from vfl.runner import run_predict

        if not data:
            raise click.UsageError("--config needs --data (this party's scoring table).")
        cfg = load_party_config(config_path)
        with _status(f"{cfg.name}: private set intersection and scoring...", quiet):
            summary = run_predict(cfg, data, out=out, job_id=job, scorecard=scorecard,
                                  force=force, range_policy=range_policy)  # type: ignore[arg-type]
        if "scores" in summary:
            out_console.print(_scored_line(summary["rows_scored"], summary["rows_in_file"],
                                           summary["scores"]))
            _range_line(summary.get("out_of_range"))
        else:
            out_console.print(f"{cfg.name}: sent partial scores for {summary['rows_scored']:,} "
                              "shared customers")
        return
    if not (model and guest and id_column and out and hosts):
        raise click.UsageError("Give --model, --guest, --host, --id and --out (or --config and --data).")
    from vfl.pipeline import predict_files

    with _status("private set intersection and scoring...", quiet):
        scores = predict_files(model, guest, hosts, id_column=id_column, out=out, label=label,
                               lower_ids=lower_ids, strip_ids=not no_strip_ids,
                               scorecard=scorecard, force=force,
                               features=_columns(features) or None, exclude=_columns(exclude),
                               range_policy=range_policy)  # type: ignore[arg-type]
    out_console.print(_scored_line(int(scores["matched"].sum()), len(scores), out))
    _range_line(scores.attrs.get("out_of_range"))


def _range_line(summary: dict[str, Any] | None) -> None:
    """What the range policy did to the scoring rows, if anything."""
    if not summary or not summary.get("rows"):
        return
    what = {"refuse": f"not scored ({summary['not_scored']:,})", "clip": "scored at the "
            "range's end", "flag": "scored as given"}[summary["policy"]]
    out_console.print(f"{summary['rows']:,} row(s) had a feature outside its training range: "
                      f"{what} (--range-policy {summary['policy']}; see column out_of_range)")


@main.command()
@_training_tables
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="IV table (JSON).")
@click.option("--bins", default=10, show_default=True, type=click.IntRange(2, 100),
              help="Equal-frequency bins (the fine bins with --monotonic).")
@click.option("--monotonic", is_flag=True,
              help="Merge bins until the default rate is monotonic (each bin >= 5 % of rows).")
@click.option("--reveal-host-names", is_flag=True,
              help="Hosts send their feature names (default: aliases host1_f0, ...).")
@click.option("--key-bits", default=2048, show_default=True, type=int,
              help="The guest's own Paillier key for the labels.")
@click.option("--insecure-key-size", is_flag=True, help="Allow keys below 2048 bits.")
@_id_options
@_column_options
@click.option("--force", is_flag=True,
              help="Replace --out if it exists.")
@friendly_errors
def iv(guest: str, hosts: tuple[str, ...], label: str, out: str, bins: int, monotonic: bool,
       reveal_host_names: bool, key_bits: int, insecure_key_size: bool, id_column: str,
       lower_ids: bool, no_strip_ids: bool, force: bool,
        features: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    """Information value of every feature of every bank (federated binning)."""
    from vfl.pipeline import iv_files

    if not hosts:
        raise click.UsageError("Give at least one --host table.")
    with console.status("private set intersection and federated binning..."):
        table = iv_files(guest, hosts, id_column=id_column, label=label, out=out, n_bins=bins,
                         key_bits=key_bits, allow_insecure_key_size=insecure_key_size,
                         reveal_host_names=reveal_host_names, monotonic=monotonic,
                         lower_ids=lower_ids, strip_ids=not no_strip_ids, force=force,
                         features=_columns(features) or None, exclude=_columns(exclude))
    t = Table(title="information value", header_style="bold")
    t.add_column("party")
    t.add_column("feature")
    t.add_column("IV", justify="right")
    for row in table:
        t.add_row(row["party"], row["feature"], f"{row['iv']:.4f}")
    out_console.print(t)
    out_console.print(f"IV table written to {out}")


@main.command()
@click.option("--guest", required=True, type=click.Path(dir_okay=False),
              help=f"Guest CSV or Parquet file {TABLE}, the bank with the label.")
@click.option("--host", "hosts", multiple=True, type=click.Path(dir_okay=False),
              help=f"Host CSV or Parquet file {TABLE}; repeat for several hosts.")
@click.option("--label", default=None, help="Label column of the guest table, kept in its output.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the aligned tables (guest.csv, host1.csv, ... or .parquet).")
@click.option("--format", "out_format", default="csv", show_default=True,
              type=click.Choice(["csv", "parquet"]),
              help="Format of the aligned tables written.")
@_id_options
@_column_options
@click.option("--force", is_flag=True,
              help="Replace aligned tables already in --out.")
@friendly_errors
def psi(guest: str, hosts: tuple[str, ...], label: str | None, out: str, out_format: str,
        id_column: str, lower_ids: bool, no_strip_ids: bool, force: bool,
        features: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    """Private set intersection only: write each party's aligned table."""
    from vfl.pipeline import psi_files

    if not hosts:
        raise click.UsageError("Give at least one --host table.")
    t0 = time.perf_counter()
    with console.status("private set intersection..."):
        n, _ = psi_files(guest, hosts, id_column=id_column, out_dir=out, label=label,
                         lower_ids=lower_ids, strip_ids=not no_strip_ids, force=force,
                         features=_columns(features) or None, exclude=_columns(exclude),
                         out_format="parquet" if out_format == "parquet" else "csv")
    from vfl.crypto.mb import backend_name

    out_console.print(f"intersection: {n:,} customers ({time.perf_counter() - t0:.1f} s, "
                      f"X25519 on {backend_name()}); "
                      f"aligned tables written to {Path(out)}/")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="This party's TOML configuration (with a [serve] section).")
@friendly_errors
def serve(config_path: str) -> None:
    """Serve online scoring: a host's partial scores, or the guest's HTTP scoring API.

    A host answers its guest over gRPC with mutual TLS at [serve] listen, from
    its model part and its [data] table, within its own limits, and logs every
    request (protocols/specs/serving.md). The guest serves POST /v1/score (and
    /v1/score:batch, /healthz, /readyz, /metrics; docs at /docs) at [serve]
    listen, asking each host at its [[peers]] serve_address. SIGHUP reloads the
    model: hosts first, then the guest (it switches once every host serves it).
    """
    from vfl.config import load_party_config
    from vfl.serving.service import serve_forever

    serve_forever(load_party_config(config_path),
                  say=lambda line: console.print(line, markup=False, highlight=False))


@main.command("serve-key")
@click.option("--clients", required=True, type=click.Path(dir_okay=False),
              help="The guest's API clients file ([serve] clients); created if absent.")
@click.option("--name", required=True, help="The client (e.g. decision-engine).")
@click.option("--requests-per-second", type=float, default=50.0, show_default=True)
@click.option("--burst", type=int, default=100, show_default=True)
@click.option("--daily-applicants", type=int, default=100_000, show_default=True)
@friendly_errors
def serve_key(clients: str, name: str, requests_per_second: float, burst: int,
              daily_applicants: int) -> None:
    """Make an API key for a client of the guest's scoring API.

    The key is printed once and stored nowhere: the clients file keeps its
    SHA-256 with the client's quota. Revoke a client with revoked = true in
    the file and SIGHUP to vfl serve.
    """
    from vfl.serving.auth import add_client

    key = add_client(clients, name, requests_per_second=requests_per_second, burst=burst,
                     daily_applicants=daily_applicants)
    click.echo(key)
    console.print(f"client {name!r} added to {clients}; the key above is shown only now: "
                      "send it as 'Authorization: Bearer <key>'")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="This party's TOML configuration.")
@click.option("--status-json", is_flag=True,
              help="Print progress as JSON lines on stdout (for supervisors such as vfl demo).")
@click.option("--force", is_flag=True,
              help="Replace an earlier run's outputs in [job] output (they are removed first).")
@click.option("--resume", is_flag=True,
              help="Continue a stopped job from the newest epoch every party holds a "
                   "checkpoint of (start every party with --resume).")
@friendly_errors
def run(config_path: str, status_json: bool, force: bool, resume: bool) -> None:
    """Run this party's role of a training job over gRPC with mutual TLS.

    Start the same command on every party (guest, hosts, arbiter), in any order,
    each with its own TOML; each writes its own model part under [job] output,
    and a checkpoint after every epoch ([checkpoint]; --resume continues from it).
    """
    from vfl.config import load_party_config
    from vfl.runner import run_fit

    cfg = load_party_config(config_path)
    if status_json:
        hook = JsonStatus(cfg.name)
        hook.emit(stage="starting", role=cfg.role.value)
        run_fit(cfg, progress=hook, force=force, resume=resume)
        hook.emit(stage="done", summary_file=str(
            cfg.output / ("report.json" if cfg.role == Role.GUEST else f"{cfg.name}_run.json")))
        return
    from vfl.crypto.mb import backend_name

    console.print(f"{cfg.name} ({cfg.role.value}) listening on {cfg.listen}, job {cfg.job_id!r}; "
                  f"peers: {', '.join(f'{p.name}@{p.address}' for p in cfg.peers)}; "
                  f"crypto: {backend_name()}")
    lines = _plain_progress()
    if lines is not None:
        lines.party = cfg.name
        summary = run_fit(cfg, progress=lines, force=force, resume=resume)
        lines.line("done")
    else:
        with progress_bar(console) as progress:
            hook2 = RichProgress(progress)
            summary = run_fit(cfg, progress=hook2, force=force, resume=resume)
            hook2.finish()
    if cfg.role == Role.GUEST:
        out_console.print(_summary(summary, f"vfl run: {cfg.name}"))
        if _calibration(summary):
            out_console.print(_calibration(summary).rstrip())
        out_console.print(f"intersection {summary['n_intersection']:,}; {summary['epochs_run']} epochs; "
                          f"training {summary['train_seconds']:.1f} s; report in {cfg.output}/report.json")
    else:
        out_console.print(f"{cfg.name}: done; sent {summary['traffic']['sent_bytes'] / 1e6:.1f} MB; "
                          f"output in {cfg.output}/")


@main.command()
@click.option("--model", required=True, type=click.Path(file_okay=False, exists=True),
              help="Model folder written by vfl fit (or the guest's output folder of vfl run).")
@click.option("--scores", type=click.Path(dir_okay=False, exists=True),
              help="Scores (CSV or Parquet) written by vfl predict: adds the stability index against "
                   "training.")
@click.option("--iv", "iv_path", type=click.Path(dir_okay=False, exists=True),
              help="IV table written by vfl iv (default: MODEL/iv.json if present).")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@_scorecard_options
@friendly_errors
def report(model: str, scores: str | None, iv_path: str | None, out: str, base_score: float,
           base_odds: float, pdo: float) -> None:
    """Write an HTML report with PNG charts (ROC, KS, scores, loss, lift, calibration, IV)."""
    from vfl.report import write_report
    from vfl.scorecard import Scorecard

    index = write_report(model, out, scores=scores, iv=iv_path,
                         scorecard=Scorecard(base_score, base_odds, pdo))
    out_console.print(f"report written to {index} (and PNGs beside it)")


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for ca.pem and one key + certificate per party (with --compute: "
                   "the party's own compute CA and its Dask certificates).")
@click.option("--parties", default=None,
              help="Comma-separated party names, e.g. bank_a,bank_b,arbiter.")
@click.option("--compute", "compute_party", default=None, metavar="PARTY",
              help="Instead: certificates for PARTY's own Dask cluster (scheduler, worker, "
                   "client) from a compute CA of its own, kept in --out (reused when present, "
                   "so more can be issued later). Never use the federation CA for it.")
@click.option("--names", default=None,
              help="With --compute: comma-separated certificate names "
                   "(default scheduler,worker,client).")
@click.option("--hostnames", default="",
              help="With --compute: comma-separated DNS names or IPs of the cluster's machines "
                   "(localhost and 127.0.0.1 are always included).")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1))
@friendly_errors
def certs(out: str, parties: str | None, compute_party: str | None, names: str | None,
          hostnames: str, days: int) -> None:
    """Make a small CA and a key + certificate per party (for demos and tests).

    With --compute PARTY: the certificates of that party's own Dask cluster
    (``[compute] engine = "dask"``), from a compute CA that only this party holds.
    """
    from vfl.certs import COMPUTE_CERT_NAMES, write_compute_certs, write_party_certs

    def split(text: str) -> list[str]:
        return [p.strip() for p in text.split(",") if p.strip()]

    if compute_party is not None:
        if parties:
            raise click.UsageError("Give either --parties (federation) or --compute PARTY.")
        wanted = split(names) if names else list(COMPUTE_CERT_NAMES)
        paths = write_compute_certs(out, compute_party, names=wanted,
                                    hostnames=split(hostnames), days=days)
        out_console.print(f"{compute_party}'s compute CA and {len(wanted)} Dask certificates "
                          f"in {out}/: " + ", ".join(p.name for p in paths.values()))
        return
    if not parties:
        raise click.UsageError("Missing --parties (or --compute PARTY for a Dask cluster).")
    if names or hostnames:
        raise click.UsageError("--names and --hostnames go with --compute.")
    party_names = split(parties)
    party_paths = write_party_certs(out, party_names, days=days)
    out_console.print(f"CA and {len(party_names)} party certificates written to {out}/: "
                      + ", ".join(p.name for p in party_paths.values()))


@main.command()
@click.option("--rows", default=8000, show_default=True, type=click.IntRange(200),
              help="Customers per bank in the synthetic data.")
@click.option("--overlap", default=0.75, show_default=True, type=click.FloatRange(0.05, 1.0),
              help="Share of customers both banks have.")
@click.option("--workdir", "--out", "workdir", default="vfl-demo", show_default=True,
              type=click.Path(file_okay=False),
              help="Folder for data, certificates, configs, logs and outputs.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1))
@click.option("--key-bits", default=2048, show_default=True, type=int)
@click.option("--insecure-key-size", is_flag=True, help="Allow keys below 2048 bits.")
@click.option("--in-process", is_flag=True,
              help="Run all parties as threads of this process (no gRPC) instead of three processes.")
@click.option("--quiet", is_flag=True)
@click.option("--serve", "serve_after", is_flag=True,
              help="Then start vfl serve for both banks, score a few applicants over HTTP, and "
                   "keep serving until Ctrl-C (see --serve-for).")
@click.option("--serve-for", type=click.FloatRange(0), default=None,
              help="With --serve: stop serving after this many seconds.")
@friendly_errors
def demo(rows: int, overlap: float, workdir: str, epochs: int, key_bits: int,
         insecure_key_size: bool, in_process: bool, quiet: bool, serve_after: bool,
         serve_for: float | None) -> None:
    """Two synthetic banks and an arbiter train one joint model, end to end.

    By default the three parties run as separate processes on this machine,
    talking gRPC with mutual TLS on loopback, exactly as on three machines.
    """
    from vfl.demo import DemoPartyError, run_demo, serve_demo

    if serve_after and in_process:
        raise click.UsageError("--serve runs the banks' services as processes with mutual TLS; "
                               "leave out --in-process.")
    earlier = Path(workdir) / "out" / "bank_a" / "report.json"
    if earlier.is_file():
        console.print(f"retraining: the demo already in {workdir}/ is replaced (new data, keys "
                      "and model; give another --workdir to keep it)")
    console.print(f"bank A (guest): {rows:,} customers, label + 7 features; "
                  f"bank B (host): {rows:,} customers, 7 features; data in {Path(workdir) / 'data'}/")
    try:
        if in_process:
            result = _with_progress(quiet, lambda hook, psi_done: run_demo(
                workdir, rows=rows, overlap=overlap, epochs=epochs, key_bits=key_bits,
                insecure=insecure_key_size, in_process=True, progress=hook,
                on_psi_done=psi_done))
        else:
            result = _networked_demo(workdir, rows=rows, overlap=overlap, epochs=epochs,
                                     key_bits=key_bits, insecure=insecure_key_size, quiet=quiet)
    except DemoPartyError as exc:
        for name, (code, line) in exc.failures.items():
            click.echo(f"error: {name} exited with {code}: {line}", err=True)
        sys.exit(1)
    report = result.report
    out_console.print(_summary(report, "vfl demo: two banks, one joint model"))
    out_console.print(_facts(report))
    if in_process:
        out_console.print(f"total {result.wall_seconds:.1f} s; outputs in {result.guest_output}/")
    else:
        out_console.print(f"wall time {result.wall_seconds:.1f} s for three processes; every party "
                          f"exited 0; outputs in {result.job.workdir / 'out'}/")
    if result.html_report is not None:
        out_console.print(f"bank A's report: {result.html_report}")
    if serve_after:
        out_console.print("online scoring: vfl serve for bank B (gRPC, mutual TLS), then bank A "
                          "(HTTP):")
        serve_demo(result.job, seconds=serve_for,
                   say=lambda line: out_console.print(line, markup=False, highlight=False,
                                                      soft_wrap=True))


def _networked_demo(workdir: str, *, rows: int, overlap: float, epochs: int, key_bits: int,
                    insecure: bool, quiet: bool) -> Any:
    """The demo's three processes, with a live table of their progress."""
    from rich.live import Live

    from vfl.demo import run_demo

    def table(procs: dict[str, Any]) -> Table:
        t = Table(title="three parties, gRPC + mutual TLS on loopback", header_style="bold")
        for col in ("party", "pid", "stage", "progress", "loss"):
            t.add_column(col)
        for name, p in procs.items():
            st = p.status
            code = p.proc.poll()
            stage = st.get("stage", "starting")
            if code is not None:
                stage = "finished" if code == 0 else f"failed (exit {code})"
            prog = ""
            if "epoch" in st and st.get("epochs"):
                prog = f"epoch {st['epoch']}/{st['epochs']}"
                if st.get("batches"):
                    prog += f", batch {st.get('batch', 0)}/{st['batches']}"
            loss = st.get("loss")
            t.add_row(name, str(p.proc.pid), stage, prog,
                      f"{loss:.5f}" if isinstance(loss, float) else "")
        return t

    with Live(table({}), console=console, refresh_per_second=4, transient=False,
              redirect_stdout=False) as live:
        result = run_demo(workdir, rows=rows, overlap=overlap, epochs=epochs, key_bits=key_bits,
                          insecure=insecure, on_tick=(None if quiet else
                                                      lambda ps: live.update(table(ps))))
    console.print()
    console.print(f"certificates: {result.job.workdir / 'certs'}/; configs: "
                  + ", ".join(str(p.name) for p in result.job.configs.values())
                  + f"; logs: {result.job.workdir / 'logs'}/")
    return result


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A library warning as one ``warning: …`` line on stderr (no source location)."""
    kind = "" if category is UserWarning else f"{category.__name__}: "
    click.echo(f"warning: {kind}{' '.join(str(message).split())}", err=True)


def entry() -> None:
    """The ``vfl`` command (and ``python -m vfl.cli``): :func:`main`, with warnings as one
    ``warning:`` line each, and on a failure or a stop a watchdog that ends the process if its
    shutdown hangs (:func:`vfl.procs.exit_within`)."""
    import warnings

    warnings.showwarning = _show_warning
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            exit_within(exc.code if isinstance(exc.code, int) else 1)
        raise


if __name__ == "__main__":  # pragma: no cover
    entry()
