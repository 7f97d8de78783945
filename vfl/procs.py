"""A party's processes: worker pools that die with their party, and a clean stop on SIGTERM.

Every pool of worker processes a party starts (the ciphertext engine, the PSI
blinding, the binning's proofs) comes from :func:`worker_pool`. Its workers
are *spawned* (a fresh interpreter: safe beside the gRPC threads) and each
starts a watcher thread on the pipe :mod:`multiprocessing` keeps to its
parent (:func:`watch_parent`): when the party's process is gone — it exited,
crashed or was killed with SIGKILL — the pipe reaches end of file and the
worker exits at once (within milliseconds; a worker busy in one big-integer
operation notices when that operation returns). No orphan keeps its 370 MB of
fixed-base tables.

:func:`stop_on_signals` turns SIGTERM (what a supervisor, ``kill`` or
``docker stop`` sends) into a :class:`Terminated` exception in the main
thread, the way Python turns SIGINT (Ctrl-C) into ``KeyboardInterrupt``: the
party's ``finally`` blocks then run as on any other failure — the peers are
told the job stopped, pools close, temporary files go — and the CLI exits
with ``128 + signal`` (143 for SIGTERM, 130 for Ctrl-C).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = ["EXIT_PARENT_GONE", "EXIT_WATCHDOG_SECONDS", "Terminated", "exit_within",
           "hold_signals", "signals_held", "stop_on_signals", "stop_pool", "watch_parent",
           "worker_pool"]

#: Longest the interpreter's own shutdown may take after a failed or stopped command.
EXIT_WATCHDOG_SECONDS = 10.0

#: Exit status of a worker whose party process is gone.
EXIT_PARENT_GONE = 70


class Terminated(BaseException):
    """The process received SIGTERM (raised in the main thread by :func:`stop_on_signals`).

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except
    Exception`` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by this signal: 128 + its number."""
        return 128 + self.signum


def watch_parent() -> None:
    """In a spawned worker: exit (status :data:`EXIT_PARENT_GONE`) as soon as its parent is gone.

    Waits, in a daemon thread, on the read end of the pipe whose write end
    only the parent holds; no polling. Does nothing in a process that
    :mod:`multiprocessing` did not start.
    """
    parent = mp.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(EXIT_PARENT_GONE)  # no cleanup to run: a worker holds no files or peers

    threading.Thread(target=watch, name="vfl-parent-watch", daemon=True).start()


def _start_worker(init: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    watch_parent()
    # Ctrl-C in a terminal reaches the whole process group: the party handles it (and closes
    # the pool); a worker that raised KeyboardInterrupt mid-task would only add tracebacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if init is not None:
        init(*initargs)


def worker_pool(workers: int, init: Callable[..., None] | None = None,
                initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """``workers`` spawned processes that run ``init(*initargs)`` once and die with this one.

    Stop it with :func:`stop_pool`, not ``shutdown(wait=True)``: a chunk of
    a large job can run for minutes, and a party that is stopping must not
    wait for it.
    """
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=_start_worker, initargs=(init, initargs))


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool`` now: drop queued chunks and kill its workers (they hold no state to save).

    On the normal path every chunk is done and the workers are idle; on a
    failure or a stop the party does not wait for a running chunk.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.kill()
    for p in processes:
        p.join(timeout=5)
    # let the pool's manager thread finish closing its pipes now: left running, it races the
    # interpreter's exit hook, which then writes to a closed pipe ("Bad file descriptor")
    manager = getattr(pool, "_executor_manager_thread", None)
    if manager is not None:
        manager.join(timeout=5)


_held = 0  # depth of hold_signals blocks in the main thread
_pending: int | None = None  # a stop signal that arrived while held
_stopping = False  # a stop has begun: later SIGTERM / SIGINT are ignored


def _raise_for(signum: int) -> None:
    global _stopping
    _stopping = True
    # cleanup (aborting peers, closing pools, removing temp files) must not be cut short by a
    # second signal: Ctrl-C reaches every process of the terminal, and a supervisor may
    # follow up with SIGTERM; SIGKILL remains for one that will not wait
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _handler(signum: int, frame: Any) -> None:
    global _pending
    if _stopping:
        return
    if _held:
        _pending = signum  # raised when the held block ends
        return
    _raise_for(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within this block (main thread only), SIGTERM raises :class:`Terminated` in the main thread.

    SIGINT raises ``KeyboardInterrupt`` as usual. The first of either
    raises; every later one is ignored while the party shuts down (a
    supervisor that will not wait sends SIGKILL, and the workers still exit
    with the party). The previous handlers are restored on exit.
    """
    global _stopping, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}
    _stopping, _pending = False, None
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def hold_signals() -> Iterator[None]:
    """Within this block a stop signal waits: it is raised when the block ends.

    For writing a set of outputs that belong together (a model part and its
    report), so that SIGTERM or Ctrl-C cannot leave half of them. Only the
    main thread's blocks hold; elsewhere this does nothing.
    """
    global _held, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending is not None:
            signum, _pending = _pending, None
            _raise_for(signum)


def exit_within(code: int, seconds: float = EXIT_WATCHDOG_SECONDS) -> None:
    """Arm a watchdog: this process is gone ``seconds`` from now, whatever blocks its shutdown.

    Only for a process that is about to exit with ``code`` (the ``vfl``
    command, :func:`vfl.cli.entry`), after a failure or a stop whose own
    cleanup ran (peers told, pools stopped, temporary files removed): the
    interpreter's shutdown joins every non-daemon thread and executor, and a
    library thread stuck on a dead peer or a killed worker would otherwise
    keep the process alive. A daemon timer ends it with ``os._exit(code)``.
    Never from library code: it would end the caller's process.
    """
    timer = threading.Timer(seconds, os._exit, args=(code,))
    timer.daemon = True
    timer.start()


def signals_held(fn: _F) -> _F:
    """Decorator: ``fn`` runs inside :func:`hold_signals` (for functions that write outputs)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with hold_signals():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]
