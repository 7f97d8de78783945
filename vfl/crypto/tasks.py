"""Where a party's one-off bulk work runs: this process, a local pool, or its Dask cluster.

The training engines (:mod:`vfl.crypto.engine`) keep their workers for a
whole fit. The binning's 0/1 proofs, their verification and the per-bin sums
are one-off jobs over all rows; they hand contiguous chunks to a
:class:`TaskRunner` that lives for one protocol step. Every chunk function is
a module-level function of bytes and ints (so it travels by reference to a
spawned process or a Dask worker) and finds its per-process state (the key,
a prover's fixed-base tables) where ``init(*initargs)`` put it: the pool runs
``init`` once per process, :class:`InlineTasks` once in this process, and
:class:`~vfl.crypto.dask_engine.DaskTasks` once per worker and state (a
per-worker cache), so no chunk rebuilds a table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import gmpy2
import numpy as np
import numpy.typing as npt

from vfl.crypto.engine import ComputeConfig, current_compute
from vfl.crypto.paillier import PaillierPublicKey
from vfl.crypto.vector import EncryptedVector, group_products
from vfl.exceptions import ConfigError
from vfl.procs import stop_pool, worker_pool

__all__ = ["TaskRunner", "InlineTasks", "PoolTasks", "SecretBytes", "open_tasks", "split",
           "sum_by_groups"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class SecretBytes:
    """Secret bytes a chunk hands back for a later chunk (a proof's exponents).

    Its repr hides the value, so no task log, failed-task report or
    dashboard of the party's own cluster shows it.
    """

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<{len(self.value)} secret bytes>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (SecretBytes, (self.value,))


class Pending(Protocol[T_co]):
    """A submitted chunk (``concurrent.futures.Future`` or ``distributed.Future``)."""

    def result(self) -> T_co: ...


class TaskRunner(Protocol):
    """Runs chunk functions after a per-process ``init(*initargs)``."""

    parallelism: int

    def submit(self, fn: Callable[..., T], *args: Any) -> Pending[T]: ...

    def close(self) -> None: ...


class InlineTasks:
    """Chunks run in this process, at submission (``init`` runs before the first one)."""

    parallelism = 1

    def __init__(self, init: Callable[..., None], initargs: tuple[Any, ...]) -> None:
        self._init: tuple[Callable[..., None], tuple[Any, ...]] | None = (init, initargs)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self._init is not None:
            init, initargs = self._init
            init(*initargs)
            self._init = None
        done: Future[T] = Future()
        done.set_result(fn(*args))
        return done

    def close(self) -> None:
        """Nothing to stop."""


class PoolTasks:
    """Chunks on ``workers`` spawned processes of this machine."""

    def __init__(self, workers: int, init: Callable[..., None],
                 initargs: tuple[Any, ...]) -> None:
        self.parallelism = workers
        self._pool = worker_pool(workers, init, initargs)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        """Stop the workers now (on a failure, queued and running chunks are dropped)."""
        stop_pool(self._pool)


def split(count: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, non-empty ``[a, b)`` spans covering ``range(count)``."""
    edges = [count * k // parts for k in range(parts + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


@contextmanager
def open_tasks(init: Callable[..., None], initargs: tuple[Any, ...], *, count: int,
               threshold: int, workers: int | None = None,
               compute: ComputeConfig | None = None) -> Iterator[TaskRunner]:
    """A runner for one step over ``count`` rows; closed (workers stopped) on exit.

    ``compute`` with ``engine="dask"`` runs the chunks on the party's cluster
    whatever ``count``; a local one's ``workers``, when set, replaces
    ``workers``. Without ``compute``, the current
    :func:`~vfl.crypto.engine.compute_context` applies unless ``workers`` is
    given. ``workers=None`` uses the machine's cores from ``threshold`` rows
    on, else this process; at most one process per 64 rows.

    Raises
    ------
    ConfigError
        If the Dask scheduler cannot be reached or has no worker (naming it).
    """
    if compute is None and workers is None:
        compute = current_compute()
    runner: TaskRunner
    if compute is not None and compute.uses_dask:
        try:
            from vfl.crypto.dask_engine import DaskTasks
        except ImportError:
            raise ConfigError("[compute] engine = \"dask\" needs the dask extra "
                              "(pip install 'vfl[dask]').") from None
        runner = DaskTasks.connect(compute, init, initargs)
    else:
        if compute is not None and compute.workers is not None:
            workers = compute.workers
        if workers is None:
            workers = (os.cpu_count() or 1) if count >= threshold else 1
        workers = max(1, min(workers, count // 64 or 1))
        runner = (InlineTasks(init, initargs) if workers <= 1
                  else PoolTasks(workers, init, initargs))
    try:
        yield runner
    finally:
        runner.close()


def sum_by_groups(public_key: PaillierPublicKey, data: bytes, groups: npt.NDArray[np.int32],
                  sizes: list[int], tasks: TaskRunner) -> EncryptedVector:
    """``[[sum per group]]`` for each column of ``groups``, rows split over ``tasks``.

    ``data``: ``rows`` fixed-width ciphertexts (already range-checked);
    ``groups``: ``rows x len(sizes)`` group indices in ``0 .. sizes[j] - 1``.
    Returns the groups' sums column after column: the same ciphertexts as
    :meth:`~vfl.crypto.vector.EncryptedVector.sum_by_group` per column (``1``,
    an unrandomised zero, for an empty group: re-randomise before sending).
    """
    rows = groups.shape[0]
    width, n2 = public_key.ciphertext_bytes, public_key.nsquare
    if len(data) != rows * width or groups.shape[1] != len(sizes):
        raise ValueError("sum_by_groups: data, groups and sizes do not match.")
    idx = np.ascontiguousarray(groups, dtype=np.int32)
    if rows and (idx.min(initial=0) < 0 or np.any(idx.max(axis=0) >= np.asarray(sizes))):
        raise ValueError("sum_by_groups: a group index is outside 0 .. sizes[j] - 1.")
    futures = [tasks.submit(group_products, public_key.to_bytes(), data[a * width:b * width],
                            idx[a:b].tobytes(), tuple(sizes))
               for a, b in split(rows, tasks.parallelism)]
    acc = [gmpy2.mpz(1)] * sum(sizes)
    for f in futures:
        blob = f.result()
        acc = [a * gmpy2.mpz.from_bytes(blob[i * width:(i + 1) * width], "big") % n2
               for i, a in enumerate(acc)]
    return EncryptedVector(public_key, acc, 0)
