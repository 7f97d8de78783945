"""The ``vfl`` command line: one-machine runs of PSI, training, scoring and the demo."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from vfl import __version__
from vfl.data import PartyTable, load_table
from vfl.exceptions import VFLError
from vfl.jobs import JobOptions
from vfl.lr.config import OPTIMIZERS, PENALTIES, TrainConfig
from vfl.model import atomic_write_text
from vfl.pipeline import fit_local, host_names, predict_local, psi_local
from vfl.progress import ProgressHook

console = Console(stderr=True)
out_console = Console()


class RichProgress(ProgressHook):
    """Epoch/batch progress bar for the guest."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.n_batches = 1

    def on_start(self, n_epochs: int, n_batches: int) -> None:
        """Create the bar."""
        self.n_batches = n_batches
        self.task = self.progress.add_task("training", total=n_epochs * n_batches, loss="")

    def on_batch(self, epoch: int, batch: int, n_batches: int) -> None:
        """Advance one batch."""
        if self.task is None:
            self.on_start(1, n_batches)
        self.progress.update(self.task, advance=1,
                             description=f"training epoch {epoch + 1}")

    def on_epoch(self, epoch: int, loss: float | None) -> None:
        """Show the loss."""
        if loss is not None and self.task is not None:
            self.progress.update(self.task, loss=f"loss {loss:.5f}")

    def finish(self) -> None:
        """Fill the bar when training stopped early."""
        if self.task is not None:
            t = self.progress.tasks[self.task]
            self.progress.update(self.task, completed=t.completed, total=t.completed)


def _progress(quiet: bool) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                    TimeElapsedColumn(), console=console, disable=quiet, transient=False)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one-line errors with exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (VFLError, OSError, ValueError) as exc:
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _tables(guest: str, hosts: tuple[str, ...], id_column: str, label: str | None,
            lower_ids: bool, strip_ids: bool, require_label: bool
            ) -> tuple[PartyTable, list[PartyTable]]:
    if not hosts:
        raise click.UsageError("Give at least one --host table.")
    g = load_table(guest, id_column=id_column, label_column=label, lower_ids=lower_ids,
                   strip_ids=strip_ids, require_label=require_label)
    hs = [load_table(h, id_column=id_column, label_column=None, lower_ids=lower_ids,
                     strip_ids=strip_ids) for h in hosts]
    return g, hs


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
                      help="Host CSV; repeat for several hosts.")(fn)
    fn = click.option("--guest", required=True, type=click.Path(dir_okay=False),
                      help="Guest CSV (with the label).")(fn)
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
        click.option("--validation-fraction", default=0.0, show_default=True, type=float,
                     help="Hold out this share (stratified) for per-epoch validation."),
        click.option("--patience", default=0, show_default=True, type=click.IntRange(0),
                     help="Stop after N epochs without better validation AUC (keeps the best)."),
        click.option("--class-weight", default="none", show_default=True,
                     help="'none', 'balanced', or the weight of defaults (e.g. 3)."),
        click.option("--woe-bins", default=0, show_default=True, type=click.IntRange(0, 100),
                     help="WOE-encode every party's columns with N bins before training."),
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
        patience=kw["patience"], class_weight=kw["class_weight"],
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vfl")
def main() -> None:
    """vfl: vertical federated logistic regression (guest, hosts, arbiter).

    Start with `vfl demo`.
    """


def _train(guest: PartyTable, hosts: list[PartyTable], config: TrainConfig,
           out: Path | None, quiet: bool, guest_valid: PartyTable | None = None,
           hosts_valid: list[PartyTable] | None = None,
           options: JobOptions | None = None) -> dict[str, Any]:
    from vfl.crypto.paillier import check_key_size

    check_key_size(config.key_bits, allow_insecure_key_size=config.allow_insecure_key_size)
    with _progress(quiet) as progress:
        psi_task = progress.add_task("private set intersection", total=None, loss="")
        hook = RichProgress(progress)

        def psi_done(n: int) -> None:
            progress.update(psi_task, total=1, completed=1,
                            description=f"private set intersection: {n:,} shared")

        result = fit_local(guest, hosts, config, out_dir=out, progress=hook,
                           on_psi_done=psi_done, guest_valid=guest_valid,
                           hosts_valid=hosts_valid, options=options)
        hook.finish()
    return result.report


def _summary(report: dict[str, Any], title: str) -> Table:
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("")
    t.add_column("AUC", justify="right")
    t.add_column("KS", justify="right")
    t.add_row("joint federated model", f"{report['auc']:.4f}", f"{report['ks']:.4f}")
    b = report.get("baseline")
    if b and "centralized_auc" in b:
        t.add_row("centralised sklearn (pooled data)", f"{b['centralized_auc']:.4f}",
                  f"{b['centralized_ks']:.4f}")
    if b and "guest_only_auc" in b:
        t.add_row("guest-only model", f"{b['guest_only_auc']:.4f}", f"{b['guest_only_ks']:.4f}")
    return t


def _facts(report: dict[str, Any]) -> str:
    traffic = ", ".join(f"{n} {v['sent_bytes'] / 1e6:.1f} MB"
                        for n, v in report["traffic"].items())
    return (f"intersection {report['n_intersection']:,} of {report['n_guest']:,} guest rows; "
            f"{report['epochs_run']} epochs, PSI {report['psi_seconds']:.1f} s, "
            f"training {report['train_seconds']:.1f} s "
            f"({report['config']['key_bits']}-bit Paillier)\nsent: {traffic}")


@main.command()
@_training_tables
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the model parts and report.json.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option("--no-report", is_flag=True, help="Do not write the HTML report.")
@click.option("--guest-valid", type=click.Path(dir_okay=False),
              help="Guest validation CSV (same columns): per-epoch validation, aligned by PSI.")
@click.option("--host-valid", "hosts_valid", multiple=True, type=click.Path(dir_okay=False),
              help="Host validation CSV, one per --host, same order.")
@click.option("--iv", "iv_path", type=click.Path(dir_okay=False, exists=True),
              help="IV table from vfl iv: with --min-iv/--top-k, each party keeps its best columns.")
@click.option("--min-iv", type=float, default=None, help="Keep columns with IV at least this.")
@click.option("--top-k", type=click.IntRange(1), default=None,
              help="Keep the columns among the top K of all parties by IV.")
@_id_options
@_train_options
@friendly_errors
def fit(guest: str, hosts: tuple[str, ...], label: str, out: str, quiet: bool, no_report: bool,
        guest_valid: str | None, hosts_valid: tuple[str, ...],
        iv_path: str | None, min_iv: float | None, top_k: int | None,
        id_column: str, lower_ids: bool, no_strip_ids: bool, **kw: Any) -> None:
    """Align the tables by PSI and train a joint model (all parties on this machine)."""
    config = _config(kw)
    options = JobOptions(woe_bins=kw["woe_bins"])
    g, hs = _tables(guest, hosts, id_column, label, lower_ids, not no_strip_ids, True)
    if (min_iv is not None or top_k is not None) and not iv_path:
        raise click.UsageError("--min-iv/--top-k need --iv (the table written by vfl iv).")
    if iv_path:
        from vfl.binning.select import select_by_iv

        table = json.loads(Path(iv_path).read_text())
        g = g.select(select_by_iv(table, "guest", g.feature_names, min_iv=min_iv, top_k=top_k))
        hs = [h.select(select_by_iv(table, name, h.feature_names, min_iv=min_iv, top_k=top_k))
              for name, h in zip(host_names(len(hs)), hs, strict=True)]
        kept = ", ".join(f"{n}: {len(t.feature_names)}" for n, t in
                         zip(["guest", *host_names(len(hs))], [g, *hs], strict=True))
        console.print(f"columns kept by IV: {kept}")
    gv, hvs = None, None
    if guest_valid or hosts_valid:
        if not guest_valid or len(hosts_valid) != len(hs):
            raise click.UsageError("Give --guest-valid and one --host-valid per --host.")
        gv, hvs = _tables(guest_valid, hosts_valid, id_column, label, lower_ids,
                          not no_strip_ids, True)
        gv = gv.select(g.feature_names)
        hvs = [v.select(h.feature_names) for v, h in zip(hvs, hs, strict=True)]
    report = _train(g, hs, config, Path(out), quiet, gv, hvs, options)
    out_console.print(_summary(report, "vfl fit"))
    out_console.print(_facts(report))
    out_console.print(f"model parts and report.json written to {out}/")
    if not no_report:
        from vfl.report import write_report

        index = write_report(out, Path(out) / "report")
        out_console.print(f"report: {index}")


@main.command()
@click.option("--model", type=click.Path(file_okay=False, exists=True),
              help="Folder written by vfl fit (one-machine form).")
@click.option("--guest", type=click.Path(dir_okay=False), help="Guest scoring CSV (one-machine form).")
@click.option("--host", "hosts", multiple=True, type=click.Path(dir_okay=False),
              help="Host scoring CSV (one-machine form); repeat for several hosts.")
@click.option("--id", "id_column", default=None, help="ID column (one-machine form).")
@click.option("--lower-ids", is_flag=True, help="Compare IDs case-insensitively.")
@click.option("--no-strip-ids", is_flag=True, help="Keep leading/trailing spaces in IDs.")
@click.option("--label", default=None, help="Label column to ignore in the guest table, if any.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="This party's TOML (networked form; each party runs its own command).")
@click.option("--data", type=click.Path(dir_okay=False),
              help="This party's scoring CSV (networked form).")
@click.option("--job", default=None, help="Job id of the scoring run (networked; default <job>/predict).")
@click.option("--out", type=click.Path(dir_okay=False), help="Output CSV of scores (guest).")
@click.option("--score", "with_score", is_flag=True,
              help="Add scorecard points (column 'score') to the probabilities.")
@_scorecard_options
@friendly_errors
def predict(model: str | None, guest: str | None, hosts: tuple[str, ...], id_column: str | None,
            lower_ids: bool, no_strip_ids: bool, label: str | None, config_path: str | None,
            data: str | None, job: str | None, out: str | None, with_score: bool,
            base_score: float, base_odds: float, pdo: float) -> None:
    """Score the customers every bank has with a saved model.

    One machine:  vfl predict --model DIR --guest A.csv --host B.csv --id ID --out scores.csv

    Networked:    vfl predict --config bank_a.toml --data a_new.csv --out scores.csv  (guest)
                  vfl predict --config bank_b.toml --data b_new.csv                   (each host)
    """
    if config_path:
        from vfl.config import load_party_config
        from vfl.runner import run_predict

        if not data:
            raise click.UsageError("--config needs --data (this party's scoring CSV).")
        cfg = load_party_config(config_path)
        with console.status(f"{cfg.name}: private set intersection and scoring..."):
            summary = run_predict(cfg, data, out=out, job_id=job)
        if with_score and out and "scores" in summary:
            _add_scores(out, base_score, base_odds, pdo)
        if "scores" in summary:
            out_console.print(f"{summary['rows_scored']:,} shared customers scored; written to "
                              f"{summary['scores']}")
        else:
            out_console.print(f"{cfg.name}: sent partial scores for {summary['rows_scored']:,} "
                              "shared customers")
        return
    if not (model and guest and id_column and out):
        raise click.UsageError("Give --model, --guest, --host, --id and --out (or --config and --data).")
    g, hs = _tables(guest, hosts, id_column, label, lower_ids, not no_strip_ids, False)
    scores = predict_local(model, g, hs)
    atomic_write_text(out, scores.to_csv(index=False))
    if with_score:
        _add_scores(out, base_score, base_odds, pdo)
    out_console.print(f"{len(scores):,} shared customers scored; written to {out}")


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
@friendly_errors
def iv(guest: str, hosts: tuple[str, ...], label: str, out: str, bins: int, monotonic: bool,
       reveal_host_names: bool, key_bits: int, insecure_key_size: bool, id_column: str,
       lower_ids: bool, no_strip_ids: bool) -> None:
    """Information value of every feature of every bank (federated binning)."""
    from vfl.crypto.paillier import check_key_size
    from vfl.pipeline import iv_local

    check_key_size(key_bits, allow_insecure_key_size=insecure_key_size)
    g, hs = _tables(guest, hosts, id_column, label, lower_ids, not no_strip_ids, True)
    with console.status("private set intersection and federated binning..."):
        table = iv_local(g, hs, n_bins=bins, key_bits=key_bits,
                         allow_insecure_key_size=insecure_key_size,
                         reveal_host_names=reveal_host_names, monotonic=monotonic)
    atomic_write_text(out, json.dumps(table, indent=2))
    t = Table(title="information value", header_style="bold")
    t.add_column("party")
    t.add_column("feature")
    t.add_column("IV", justify="right")
    for row in table:
        t.add_row(row["party"], row["feature"], f"{row['iv']:.4f}")
    out_console.print(t)
    out_console.print(f"IV table written to {out}")


@main.command()
@click.option("--guest", required=True, type=click.Path(dir_okay=False))
@click.option("--host", "hosts", multiple=True, type=click.Path(dir_okay=False))
@click.option("--label", default=None, help="Label column of the guest table, kept in its output.")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@_id_options
@friendly_errors
def psi(guest: str, hosts: tuple[str, ...], label: str | None, out: str, id_column: str,
        lower_ids: bool, no_strip_ids: bool) -> None:
    """Private set intersection only: write each party's aligned table."""
    import pandas as pd

    g, hs = _tables(guest, hosts, id_column, label, lower_ids, not no_strip_ids, False)
    t0 = time.perf_counter()
    with console.status("private set intersection..."):
        g_al, h_al = psi_local(g, hs)
    dt = time.perf_counter() - t0
    out_dir = Path(out)
    for name, table in [("guest", g_al), *zip(host_names(len(hs)), h_al, strict=True)]:
        df = pd.DataFrame(table.X, columns=table.feature_names)
        df.insert(0, id_column, table.ids)
        if table.y is not None and label:
            df.insert(1, label, table.y)
        atomic_write_text(out_dir / f"{name}.csv", df.to_csv(index=False))
    out_console.print(f"intersection: {g_al.n_rows:,} customers ({dt:.1f} s); "
                      f"aligned tables written to {out_dir}/")


def _add_scores(path: str, base_score: float, base_odds: float, pdo: float) -> None:
    """Add scorecard points to a scores CSV (the sum of every party's points; see scorecard.py)."""
    import pandas as pd

    from vfl.scorecard import Scorecard

    df = pd.read_csv(path, dtype={"id": str})
    df["score"] = Scorecard(base_score, base_odds, pdo).from_probability(
        df["probability"].to_numpy()).round(2)
    atomic_write_text(path, df.to_csv(index=False))


class JsonStatus(ProgressHook):
    """Machine-readable progress: one JSON object per line on stdout."""

    def __init__(self, party: str) -> None:
        self.party = party
        self.n_epochs = 0

    def emit(self, **fields: Any) -> None:
        """Print one status line."""
        print(json.dumps({"party": self.party, **fields}), flush=True)

    def on_start(self, n_epochs: int, n_batches: int) -> None:
        """Training started."""
        self.n_epochs = n_epochs
        self.emit(stage="training", epoch=0, epochs=n_epochs, batch=0, batches=n_batches)

    def on_batch(self, epoch: int, batch: int, n_batches: int) -> None:
        """A batch finished."""
        self.emit(stage="training", epoch=epoch + 1, epochs=self.n_epochs, batch=batch + 1,
                  batches=n_batches)

    def on_epoch(self, epoch: int, loss: float | None) -> None:
        """An epoch finished."""
        self.emit(stage="epoch", epoch=epoch + 1, epochs=self.n_epochs, loss=loss)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="This party's TOML configuration.")
@click.option("--status-json", is_flag=True,
              help="Print progress as JSON lines on stdout (for supervisors such as vfl demo).")
@friendly_errors
def run(config_path: str, status_json: bool) -> None:
    """Run this party's role of a training job over gRPC with mutual TLS.

    Start the same command on every party (guest, hosts, arbiter), in any order,
    each with its own TOML; each writes its own model part under [job] output.
    """
    from vfl.config import load_party_config
    from vfl.runner import run_fit

    cfg = load_party_config(config_path)
    if status_json:
        hook = JsonStatus(cfg.name)
        hook.emit(stage="starting", role=cfg.role.value)
        summary = run_fit(cfg, progress=hook)
        hook.emit(stage="done", summary_file=str(cfg.output / (
            "report.json" if cfg.role.value == "guest" else "run.json")))
        return
    console.print(f"{cfg.name} ({cfg.role.value}) listening on {cfg.listen}, job {cfg.job_id!r}; "
                  f"peers: {', '.join(f'{p.name}@{p.address}' for p in cfg.peers)}")
    with _progress(False) as progress:
        hook2 = RichProgress(progress)
        summary = run_fit(cfg, progress=hook2)
        hook2.finish()
    if cfg.role.value == "guest":
        out_console.print(_summary(summary, f"vfl run: {cfg.name}"))
        out_console.print(f"intersection {summary['n_intersection']:,}; {summary['epochs_run']} epochs; "
                          f"training {summary['train_seconds']:.1f} s; report in {cfg.output}/report.json")
    else:
        out_console.print(f"{cfg.name}: done; sent {summary['traffic']['sent_bytes'] / 1e6:.1f} MB; "
                          f"output in {cfg.output}/")


@main.command()
@click.option("--model", required=True, type=click.Path(file_okay=False, exists=True),
              help="Model folder written by vfl fit (or the guest's output folder of vfl run).")
@click.option("--scores", type=click.Path(dir_okay=False, exists=True),
              help="Scores written by vfl predict: adds the stability index against training.")
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
              help="Folder for ca.pem and one key + certificate per party.")
@click.option("--parties", required=True, help="Comma-separated party names, e.g. bank_a,bank_b,arbiter.")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1))
@friendly_errors
def certs(out: str, parties: str, days: int) -> None:
    """Make a small CA and a key + certificate per party (for demos and tests)."""
    from vfl.certs import write_party_certs

    names = [p.strip() for p in parties.split(",") if p.strip()]
    paths = write_party_certs(out, names, days=days)
    out_console.print(f"CA and {len(names)} party certificates written to {out}/: "
                      + ", ".join(p.name for p in paths.values()))


@main.command()
@click.option("--rows", default=8000, show_default=True, type=click.IntRange(200),
              help="Customers per bank in the synthetic data.")
@click.option("--overlap", default=0.75, show_default=True, type=click.FloatRange(0.05, 1.0),
              help="Share of customers both banks have.")
@click.option("--workdir", "--out", "workdir", default="vfl-demo", show_default=True,
              type=click.Path(file_okay=False),
              help="Folder for data, certificates, configs, logs and outputs.")
@click.option("--epochs", default=6, show_default=True, type=click.IntRange(1))
@click.option("--key-bits", default=2048, show_default=True, type=int)
@click.option("--insecure-key-size", is_flag=True, help="Allow keys below 2048 bits.")
@click.option("--in-process", is_flag=True,
              help="Run all parties as threads of this process (no gRPC) instead of three processes.")
@click.option("--quiet", is_flag=True)
@friendly_errors
def demo(rows: int, overlap: float, workdir: str, epochs: int, key_bits: int,
         insecure_key_size: bool, in_process: bool, quiet: bool) -> None:
    """Two synthetic banks and an arbiter train one joint model, end to end.

    By default the three parties run as separate processes on this machine,
    talking gRPC with mutual TLS on loopback, exactly as on three machines.
    """
    from vfl.crypto.paillier import check_key_size
    from vfl.demo import write_demo_job

    check_key_size(key_bits, allow_insecure_key_size=insecure_key_size)
    job = write_demo_job(workdir, rows=rows, overlap=overlap, key_bits=key_bits,
                         insecure=insecure_key_size, epochs=epochs)
    console.print(f"bank A (guest): {rows:,} customers, label + 7 features -> {job.data['bank_a']}")
    console.print(f"bank B (host):  {rows:,} customers, 7 features -> {job.data['bank_b']}")
    g = load_table(job.data["bank_a"], id_column="customer_id", label_column="default",
                   require_label=True)
    h = load_table(job.data["bank_b"], id_column="customer_id")
    if in_process:
        config = TrainConfig(epochs=epochs, key_bits=key_bits, batch_size=512,
                             allow_insecure_key_size=insecure_key_size)
        t0 = time.perf_counter()
        report = _train(g, [h], config, job.workdir / "out" / "in-process", quiet)
        out_console.print(_summary(report, "vfl demo: two banks, one joint model"))
        out_console.print(_facts(report))
        out_console.print(f"total {time.perf_counter() - t0:.1f} s; outputs in "
                          f"{job.workdir / 'out' / 'in-process'}/")
        from vfl.report import write_report

        index = write_report(job.workdir / "out" / "in-process", job.workdir / "report")
        out_console.print(f"bank A's report: {index}")
        return
    _networked_demo(job, g, h, quiet)


def _networked_demo(job: Any, g: PartyTable, h: PartyTable, quiet: bool) -> None:
    from rich.live import Live

    from vfl.demo import run_demo_processes
    from vfl.pipeline import centralized_baselines, psi_local

    console.print(f"certificates: {job.workdir / 'certs'}/; configs: "
                  + ", ".join(str(p.name) for p in job.configs.values())
                  + f"; logs: {job.workdir / 'logs'}/")

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
        procs, wall = run_demo_processes(job, on_tick=(None if quiet else
                                                      lambda ps: live.update(table(ps))))
    console.print()
    failed = {n: p for n, p in procs.items() if p.proc.returncode != 0}
    if failed:
        for n, p in failed.items():
            click.echo(f"error: {n} exited with {p.proc.returncode}: {p.last_error()}", err=True)
        sys.exit(1)
    report = json.loads((job.outputs["bank_a"] / "report.json").read_text())
    traffic = {}
    for name, out in job.outputs.items():
        summary = json.loads((out / ("report.json" if name == "bank_a" else "run.json")).read_text())
        t = summary["traffic"]
        traffic[name] = t[name] if name in t else t
    report["traffic"] = traffic
    # pooled yardstick: only possible here because the demo generated both banks' data
    g_al, h_al = psi_local(g, [h])
    report["baseline"].update({k: v for k, v in centralized_baselines(g_al, h_al).items()
                               if k.startswith("centralized")})
    out_console.print(_summary(report, "vfl demo: two banks, one joint model"))
    out_console.print(_facts(report))
    out_console.print(f"wall time {wall:.1f} s for three processes; every party exited 0; "
                      f"outputs in {job.workdir / 'out'}/")
    out_console.print(f"bank A's report: {job.outputs['bank_a'] / 'report' / 'index.html'}")


if __name__ == "__main__":  # pragma: no cover
    main()
