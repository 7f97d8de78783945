"""The ``vfl`` command line: one-machine runs of PSI, training, scoring and the demo."""

from __future__ import annotations

import functools
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
from vfl.lr._party import ProgressHook
from vfl.lr.config import OPTIMIZERS, PENALTIES, TrainConfig
from vfl.model import atomic_write_text
from vfl.pipeline import fit_local, host_names, predict_local, psi_local

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
        self.progress.update(self.task, advance=1,
                             description=f"training epoch {epoch + 1}")

    def on_epoch(self, epoch: int, loss: float | None) -> None:
        """Show the loss."""
        if loss is not None:
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
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _config(kw: dict[str, Any]) -> TrainConfig:
    return TrainConfig(
        epochs=kw["epochs"], batch_size=kw["batch_size"], learning_rate=kw["learning_rate"],
        decay=kw["decay"], optimizer=kw["optimizer"], penalty=kw["penalty"],
        alpha=kw["alpha"], tol=kw["tol"], key_bits=kw["key_bits"],
        allow_insecure_key_size=kw["insecure_key_size"], seed=kw["seed"],
        fit_intercept=not kw["no_intercept"],
    ).validate()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vfl")
def main() -> None:
    """vfl: vertical federated logistic regression (guest, hosts, arbiter).

    Start with `vfl demo`.
    """


def _train(guest: PartyTable, hosts: list[PartyTable], config: TrainConfig,
           out: Path | None, quiet: bool) -> dict[str, Any]:
    from vfl.crypto.paillier import check_key_size

    check_key_size(config.key_bits, allow_insecure_key_size=config.allow_insecure_key_size)
    with _progress(quiet) as progress:
        psi_task = progress.add_task("private set intersection", total=None, loss="")
        hook = RichProgress(progress)

        def psi_done(n: int) -> None:
            progress.update(psi_task, total=1, completed=1,
                            description=f"private set intersection: {n:,} shared")

        result = fit_local(guest, hosts, config, out_dir=out, progress=hook,
                           on_psi_done=psi_done)
        hook.finish()
    return result.report


def _summary(report: dict[str, Any], title: str) -> Table:
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("")
    t.add_column("AUC", justify="right")
    t.add_column("KS", justify="right")
    t.add_row("joint federated model", f"{report['auc']:.4f}", f"{report['ks']:.4f}")
    b = report.get("baseline")
    if b:
        t.add_row("centralised sklearn (pooled data)", f"{b['centralized_auc']:.4f}",
                  f"{b['centralized_ks']:.4f}")
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
@click.option("--guest", required=True, type=click.Path(dir_okay=False),
              help="Guest CSV (with the label).")
@click.option("--host", "hosts", multiple=True, type=click.Path(dir_okay=False),
              help="Host CSV; repeat for several hosts.")
@click.option("--label", required=True, help="Label column of the guest table (0/1).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the model parts and report.json.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@_id_options
@_train_options
@friendly_errors
def fit(guest: str, hosts: tuple[str, ...], label: str, out: str, quiet: bool, id_column: str,
        lower_ids: bool, no_strip_ids: bool, **kw: Any) -> None:
    """Align the tables by PSI and train a joint model (all parties on this machine)."""
    config = _config(kw)
    g, hs = _tables(guest, hosts, id_column, label, lower_ids, not no_strip_ids, True)
    report = _train(g, hs, config, Path(out), quiet)
    out_console.print(_summary(report, "vfl fit"))
    out_console.print(_facts(report))
    out_console.print(f"model parts and report.json written to {out}/")


@main.command()
@click.option("--model", required=True, type=click.Path(file_okay=False, exists=True),
              help="Folder written by vfl fit.")
@click.option("--guest", required=True, type=click.Path(dir_okay=False))
@click.option("--host", "hosts", multiple=True, type=click.Path(dir_okay=False))
@click.option("--label", default=None, help="Label column to drop from the guest table, if any.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output CSV.")
@_id_options
@friendly_errors
def predict(model: str, guest: str, hosts: tuple[str, ...], label: str | None, out: str,
            id_column: str, lower_ids: bool, no_strip_ids: bool) -> None:
    """Score the customers every bank has with a saved model."""
    g, hs = _tables(guest, hosts, id_column, label, lower_ids, not no_strip_ids, False)
    scores = predict_local(model, g, hs)
    atomic_write_text(out, scores.to_csv(index=False))
    out_console.print(f"{len(scores):,} shared customers scored; written to {out}")


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


@main.command()
@click.option("--rows", default=8000, show_default=True, type=click.IntRange(200),
              help="Customers per bank in the synthetic data.")
@click.option("--overlap", default=0.75, show_default=True, type=click.FloatRange(0.05, 1.0),
              help="Share of customers both banks have.")
@click.option("--out", default="vfl-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the generated data, model parts and report.")
@click.option("--epochs", default=6, show_default=True, type=click.IntRange(1))
@click.option("--key-bits", default=2048, show_default=True, type=int)
@click.option("--insecure-key-size", is_flag=True, help="Allow keys below 2048 bits.")
@click.option("--quiet", is_flag=True)
@friendly_errors
def demo(rows: int, overlap: float, out: str, epochs: int, key_bits: int,
         insecure_key_size: bool, quiet: bool) -> None:
    """Generate two banks' data and train a joint model on them, end to end."""
    from vfl.synthetic import make_two_banks

    out_dir = Path(out)
    g_df, h_df = make_two_banks(rows, overlap)
    atomic_write_text(out_dir / "bank_a_guest.csv", g_df.to_csv(index=False))
    atomic_write_text(out_dir / "bank_b_host.csv", h_df.to_csv(index=False))
    console.print(f"bank A (guest): {len(g_df):,} customers, label + {g_df.shape[1] - 2} "
                  f"features -> {out_dir / 'bank_a_guest.csv'}")
    console.print(f"bank B (host):  {len(h_df):,} customers, {h_df.shape[1] - 1} features "
                  f"-> {out_dir / 'bank_b_host.csv'}")
    g = load_table(out_dir / "bank_a_guest.csv", id_column="customer_id",
                   label_column="default", require_label=True)
    h = load_table(out_dir / "bank_b_host.csv", id_column="customer_id")
    config = TrainConfig(epochs=epochs, key_bits=key_bits, batch_size=512,
                         allow_insecure_key_size=insecure_key_size).validate()
    t0 = time.perf_counter()
    report = _train(g, [h], config, out_dir / "model", quiet)
    out_console.print(_summary(report, "vfl demo: two banks, one joint model"))
    out_console.print(_facts(report))
    out_console.print(f"total {time.perf_counter() - t0:.1f} s; model parts in "
                      f"{out_dir / 'model'}/")


if __name__ == "__main__":  # pragma: no cover
    main()
