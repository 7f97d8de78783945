"""Progress hooks: how long-running work reports its progress.

Training calls a :class:`ProgressHook` at the start, after every batch and
after every epoch; the default does nothing. Two ready-made displays:
:class:`RichProgress` (a progress bar on a terminal, used by the CLI) and
:class:`JsonStatus` (one JSON object per line, for supervisors such as
``vfl demo``). A library user passes any subclass as ``progress=``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["ProgressHook", "RichProgress", "JsonStatus", "LineProgress", "progress_bar"]


class ProgressHook:
    """Callbacks for progress display; the default does nothing."""

    def on_start(self, n_epochs: int, n_batches: int) -> None:
        """Training is about to start."""

    def on_batch(self, epoch: int, batch: int, n_batches: int) -> None:
        """A batch finished."""

    def on_epoch(self, epoch: int, loss: float | None) -> None:
        """An epoch finished (the loss is known on the guest only)."""

    def on_psi(self, phase: str, done: int, total: int) -> None:
        """Large-set PSI progress: ``phase`` "hash" (IDs hashed into buckets) or "buckets"."""

    def on_stage(self, stage: str) -> None:
        """A step of the job begins: ``"psi"`` or ``"scoring"`` (training has on_start);
        ``"psi_reused"``: a resumed job took the intersection kept from its interrupted run."""

    def on_resume(self, epochs_done: int, batches_done: int) -> None:
        """Training resumes from a checkpoint (after :meth:`on_start`): ``epochs_done``
        epochs and ``batches_done`` batches of the next one are already done."""


def progress_bar(console: Console, *, quiet: bool = False) -> Progress:
    """A rich progress display with a loss column (for :class:`RichProgress`)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                    TimeElapsedColumn(), console=console, disable=quiet, transient=False)


class RichProgress(ProgressHook):
    """Epoch/batch progress bar on a :func:`progress_bar` display."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.n_batches = 1
        self.psi_tasks: dict[str, Any] = {}

    def on_psi(self, phase: str, done: int, total: int) -> None:
        """One bar per PSI phase: IDs hashed into buckets, then buckets exchanged."""
        if phase not in self.psi_tasks:
            label = "PSI: hashing IDs" if phase == "hash" else "PSI: buckets"
            self.psi_tasks[phase] = self.progress.add_task(label, total=total, loss="")
        self.progress.update(self.psi_tasks[phase], completed=done, total=total)

    def on_start(self, n_epochs: int, n_batches: int) -> None:
        """Create the bar."""
        self.n_batches = n_batches
        self.task = self.progress.add_task("training", total=n_epochs * n_batches, loss="")

    def on_resume(self, epochs_done: int, batches_done: int) -> None:
        """Start the bar where the checkpoint stands."""
        if self.task is not None:
            self.progress.update(self.task, completed=epochs_done * self.n_batches + batches_done,
                                 description=f"resumed at epoch {epochs_done + 1}")

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

    def on_psi(self, phase: str, done: int, total: int) -> None:
        """Large-set PSI progress."""
        self.emit(stage="psi", phase=phase, done=done, total=total)

    def on_resume(self, epochs_done: int, batches_done: int) -> None:
        """Training resumes from a checkpoint."""
        self.emit(stage="resumed", epoch=epochs_done, epochs=self.n_epochs, batch=batches_done)

    def on_stage(self, stage: str) -> None:
        """A step of the job begins."""
        self.emit(stage=stage)


class LineProgress(ProgressHook):
    """Progress as timestamped plain lines (or JSON lines), for a log file: what the CLI
    prints when stderr is not a terminal, where a progress bar would print nothing.

    A line per stage and per epoch, and at most one batch line every ``every``
    seconds. ``clock`` and ``wall`` are for tests.
    """

    def __init__(self, party: str, stream: Any = None, *, as_json: bool = False,
                 every: float = 30.0, clock: Any = None, wall: Any = None) -> None:
        import sys
        import time

        self.party = party
        self.stream = stream if stream is not None else sys.stderr
        self.as_json = as_json
        self.every = every
        self._clock = clock or time.monotonic
        self._wall = wall or (lambda: datetime.now(UTC))
        self._last = -float("inf")
        self.n_epochs = 0

    def line(self, text: str, **fields: Any) -> None:
        """Write one line, now."""
        stamp = self._wall().isoformat(timespec="seconds")
        if self.as_json:
            out = json.dumps({"time": stamp, "party": self.party, "event": text, **fields})
        else:
            out = f"{stamp} {self.party}: {text}"
        print(out, file=self.stream, flush=True)

    def on_stage(self, stage: str) -> None:
        """A step of the job begins."""
        self.line({"psi": "private set intersection", "scoring": "scoring",
                   "psi_reused": "intersection kept from the interrupted run"}.get(stage, stage),
                  stage=stage)

    def psi_done(self, n: int) -> None:
        """The intersection is known."""
        self.line(f"private set intersection: {n:,} shared", stage="psi_done", shared=n)

    def on_psi(self, phase: str, done: int, total: int) -> None:
        """Large-set PSI progress (throttled)."""
        now = self._clock()
        if done >= total or now - self._last >= self.every:
            self._last = now
            what = "hashing IDs" if phase == "hash" else "buckets"
            self.line(f"PSI {what}: {done:,}/{total:,}", stage="psi", phase=phase, done=done,
                      total=total)

    def on_start(self, n_epochs: int, n_batches: int) -> None:
        """Training starts."""
        self.n_epochs = n_epochs
        self._last = self._clock()
        self.line(f"training: up to {n_epochs} epochs of {n_batches} batches", stage="training",
                  epochs=n_epochs, batches=n_batches)

    def on_resume(self, epochs_done: int, batches_done: int) -> None:
        """Training resumes."""
        self.line(f"resumed at epoch {epochs_done + 1}, batch {batches_done + 1}",
                  stage="resumed", epoch=epochs_done, batch=batches_done)

    def on_batch(self, epoch: int, batch: int, n_batches: int) -> None:
        """A batch finished (a line at most every ``every`` seconds)."""
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            self.line(f"epoch {epoch + 1}, batch {batch + 1}/{n_batches}", stage="batch",
                      epoch=epoch + 1, batch=batch + 1, batches=n_batches)

    def on_epoch(self, epoch: int, loss: float | None) -> None:
        """An epoch finished."""
        text = f"epoch {epoch + 1}/{self.n_epochs} done"
        if loss is not None:
            text += f", loss {loss:.5f}"
        self.line(text, stage="epoch", epoch=epoch + 1, epochs=self.n_epochs, loss=loss)

