"""Bulk ciphertext work, in this process or spread over a process pool.

``CipherEngine`` does the heavy operations of a training batch —
encrypting a vector, re-randomising a vector, ``X^T [[d]]`` and the per-row
short scalar products of the accurate mode — in the calling process.
``PoolEngine`` splits each of them into contiguous chunks handled by worker
processes (sized to the machine's cores by default, so the same code uses
every core of a many-core party). Workers receive and return only
fixed-width ciphertext bytes and int64 arrays; each builds its
own fixed-base randomiser table once and, between batches, stocks fresh
random n-th residues ahead of time (:meth:`PoolEngine.prefill`), so the
expensive part of encryption happens while the party waits for its peers.
Residues never leave the worker that made them, and each is used once.

The pool is local to one party: nothing here crosses a party boundary, and
no byte received from a peer is handed to the executor (its own IPC carries only what
this party produced).

``DaskEngine`` (:mod:`vfl.crypto.dask_engine`) runs the same chunk functions
as tasks on the party's own Dask cluster, so a party can use the cores of
several of its machines. :class:`ComputeConfig` (a party's ``[compute]``
TOML section) says which engine a party uses; :func:`make_engine` builds it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import gmpy2
import numpy as np
import numpy.typing as npt

from vfl.crypto.encoding import to_residues
from vfl.crypto.paillier import PaillierPublicKey, Randomizer
from vfl.crypto.vector import EncryptedVector, matvec_t, multiexp, row_multiexps
from vfl.exceptions import ConfigError
from vfl.procs import stop_pool, worker_pool

__all__ = ["CipherEngine", "PoolEngine", "ComputeConfig", "make_engine", "compute_context",
           "current_compute"]

T_co = TypeVar("T_co", covariant=True)


class CipherEngine:
    """Ciphertext bulk operations in the calling process."""

    def __init__(self, public_key: PaillierPublicKey, randomizer: Randomizer | None = None,
                 exponent_bits: int | None = None):
        self.public_key = public_key
        self.randomizer = randomizer or Randomizer(public_key, exponent_bits)

    def encrypt(self, values: npt.NDArray[np.int64], frac_bits: int) -> EncryptedVector:
        """Encrypt int64 values already scaled by ``2**frac_bits``."""
        return EncryptedVector.encrypt(self.public_key, values, frac_bits, self.randomizer)

    def rerandomize(self, vec: EncryptedVector) -> EncryptedVector:
        """Multiply every ciphertext by a fresh random n-th residue."""
        return vec.rerandomize(self.randomizer)

    def matvec_t(self, x_offset: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64],
                 vec: EncryptedVector, x_frac_bits: int) -> EncryptedVector:
        """``[[X^T d]]`` (see :func:`vfl.crypto.vector.matvec_t`)."""
        return self.matvec_t_and_sum(x_offset, offsets, vec, x_frac_bits)[0]

    def matvec_t_and_sum(self, x_offset: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64],
                         vec: EncryptedVector, x_frac_bits: int
                         ) -> tuple[EncryptedVector, EncryptedVector]:
        """``[[X^T d]]`` and ``[[sum d]]`` (one pass over the ciphertexts for both)."""
        total = vec.sum()
        return matvec_t(x_offset, offsets, vec, x_frac_bits, total.ciphertexts[0]), total

    def project(self, x_offset: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64],
                vec: EncryptedVector, x_frac_bits: int) -> EncryptedVector:
        """``[[X v]]``: per row ``i``, ``[[sum_j (x_offset[i, j] - offsets[j]) v_j]]``.

        ``x_offset`` (rows x k, non-negative) are the quantised features shifted by
        their column offsets; ``vec`` holds ``k`` ciphertexts (an encrypted weight
        share). The result is a deterministic function of ``vec``: add fresh
        randomness before it leaves the party.
        """
        bases, corr = _projection_parts(x_offset, offsets, vec)
        n2 = self.public_key.nsquare
        cts = [c * corr % n2 for c in row_multiexps(bases, x_offset.tolist(), n2)]
        return EncryptedVector(self.public_key, cts, vec.frac_bits + x_frac_bits)

    def combine_rows(self, vectors: list[EncryptedVector],
                     factors: list[npt.NDArray[np.int64]], frac_bits: int) -> EncryptedVector:
        """``[[sum_j k_j,i a_j,i]]`` per row ``i``, read at scale ``2**frac_bits``.

        ``factors[j]`` are signed integers (short: the accurate mode's
        quantised ``4σ'(s_g)`` and ``2σ''(s_g)``, 16 bits plus class weights).
        """
        _check_combination(vectors, factors)
        n2 = self.public_key.nsquare
        cts = [_combine(row, [int(k[i]) for k in factors], n2)
               for i, row in enumerate(zip(*(v.ciphertexts for v in vectors), strict=True))]
        return EncryptedVector(self.public_key, cts, frac_bits)

    def prefill(self, count: int) -> None:
        """Hint that ``count`` randomisers will be needed soon (no-op in-process)."""

    def close(self) -> None:
        """Release resources."""


def _projection_parts(x_offset: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64],
                      vec: EncryptedVector) -> tuple[list[gmpy2.mpz], gmpy2.mpz]:
    """The bases of ``[[X v]]`` and the correction ``prod_j v_j^(-offsets_j)``."""
    if x_offset.ndim != 2 or x_offset.shape[1] != len(vec) or len(offsets) != len(vec):
        raise ValueError("project needs one column and one offset per ciphertext.")
    n2 = vec.public_key.nsquare
    bases = list(vec.ciphertexts)
    corr = gmpy2.mpz(1)
    if np.any(offsets):
        corr = gmpy2.invert(multiexp(bases, [int(o) for o in offsets], n2), n2)
    return bases, corr


def project_chunk(pub: PaillierPublicKey, draw: Draw, bases: bytes, x: bytes, cols: int,
                  corr: bytes) -> bytes:
    """``[[X v]]`` for this chunk of rows (see :meth:`CipherEngine.project`)."""
    n2, width = pub.nsquare, pub.ciphertext_bytes
    bs = [gmpy2.mpz.from_bytes(bases[i:i + width], "big") for i in range(0, len(bases), width)]
    c = gmpy2.mpz.from_bytes(corr, "big")
    mat = np.frombuffer(x, dtype=np.int64).reshape(-1, cols).tolist()
    return b"".join((m * c % n2).to_bytes(width, "big") for m in row_multiexps(bs, mat, n2))


def _check_combination(vectors: list[EncryptedVector],
                       factors: list[npt.NDArray[np.int64]]) -> None:
    if not vectors or len(vectors) != len(factors):
        raise ValueError("combine_rows needs one factor vector per ciphertext vector.")
    if any(len(v) != len(vectors[0]) or len(k) != len(vectors[0])
           for v, k in zip(vectors, factors, strict=True)):
        raise ValueError("combine_rows needs vectors and factors of one length.")


def _combine(cts: tuple[gmpy2.mpz, ...], ks: list[int], n2: gmpy2.mpz) -> gmpy2.mpz:
    """``prod_j c_j^k_j mod n^2`` for signed ``k_j`` (a negative power inverts first)."""
    out = gmpy2.mpz(1)
    for c, k in zip(cts, ks, strict=True):
        if k:
            out = out * gmpy2.powmod(c, k, n2) % n2  # gmpy2 inverts for k < 0
    return out


# ------------------------------------------------------------ chunk functions
# Each runs in a worker (a pool process or a Dask worker) on one contiguous chunk,
# given the worker's own copy of the public key and its own randomiser: bytes and
# int64 arrays in, fixed-width ciphertext bytes out.
Draw = Callable[[], gmpy2.mpz]


def encrypt_chunk(pub: PaillierPublicKey, draw: Draw, values: bytes) -> bytes:
    """``(1 + m n) ρ mod n^2`` for each int64 of ``values`` (ρ from ``draw``)."""
    n, n2 = pub.n, pub.nsquare
    width = pub.ciphertext_bytes
    residues = to_residues(np.frombuffer(values, dtype=np.int64), n)
    return b"".join(((1 + m * n) * draw() % n2).to_bytes(width, "big") for m in residues)


def rerandomize_chunk(pub: PaillierPublicKey, draw: Draw, data: bytes) -> bytes:
    """Each ciphertext of ``data`` times a fresh random n-th residue."""
    n2, width = pub.nsquare, pub.ciphertext_bytes
    return b"".join((gmpy2.mpz.from_bytes(data[i:i + width], "big") * draw() % n2)
                    .to_bytes(width, "big") for i in range(0, len(data), width))


def matvec_chunk(pub: PaillierPublicKey, draw: Draw, data: bytes, x: bytes, cols: int) -> bytes:
    """Per-column products over this chunk, plus the chunk's product of all ciphertexts."""
    n2, width = pub.nsquare, pub.ciphertext_bytes
    cts = [gmpy2.mpz.from_bytes(data[i:i + width], "big") for i in range(0, len(data), width)]
    mat = np.frombuffer(x, dtype=np.int64).reshape(len(cts), cols)
    out = [multiexp(cts, mat[:, j].tolist(), n2) for j in range(cols)]
    total = gmpy2.mpz(1)
    for c in cts:
        total = total * c % n2
    out.append(total)
    return b"".join(c.to_bytes(width, "big") for c in out)


def combine_chunk(pub: PaillierPublicKey, draw: Draw, blobs: list[bytes], factors: bytes,
                  count: int) -> bytes:
    """Per-row ``prod_j c_j^k_j`` over this chunk (``factors``: int64, row-major ``count x j``)."""
    n2, width = pub.nsquare, pub.ciphertext_bytes
    ks = np.frombuffer(factors, dtype=np.int64).reshape(count, len(blobs)).tolist()
    out = []
    for i in range(count):
        row = tuple(gmpy2.mpz.from_bytes(b[i * width:(i + 1) * width], "big") for b in blobs)
        out.append(_combine(row, ks[i], n2).to_bytes(width, "big"))
    return b"".join(out)


# ---------------------------------------------------------------- pool workers
_PUB: PaillierPublicKey | None = None
_RND: Randomizer | None = None


def _init_worker(n_bytes: bytes, exponent_bits: int | None) -> None:
    global _PUB, _RND
    _PUB = PaillierPublicKey.from_bytes(n_bytes)
    _RND = Randomizer(_PUB, exponent_bits)


def _in_pool(fn: Callable[..., bytes], *args: Any) -> bytes:
    """Run chunk function ``fn`` with this pool worker's key and randomiser."""
    assert _PUB is not None and _RND is not None
    return fn(_PUB, _RND.draw, *args)


def _w_prefill(count: int) -> int:
    assert _RND is not None
    _RND.prefill(count)
    return _RND.stocked


class _Pending(Protocol[T_co]):
    """A submitted chunk (``concurrent.futures.Future`` or ``distributed.Future``)."""

    def result(self) -> T_co: ...


class ChunkedEngine(CipherEngine):
    """The client side of an engine that hands contiguous chunks to workers.

    Splitting the rows, reassembling the answers and the final
    exponentiations of ``X^T [[d]]`` are the same whatever runs the chunks;
    subclasses say how a chunk function is submitted (:meth:`_submit`) and
    how many workers share the work (:meth:`_parallelism`). Deterministic
    operations give exactly :class:`CipherEngine`'s ciphertexts (products mod
    ``n^2`` do not depend on how the rows are grouped).
    """

    def _submit(self, fn: Callable[..., bytes], *args: Any) -> _Pending[bytes]:
        raise NotImplementedError

    def _parallelism(self) -> int:
        raise NotImplementedError

    def _split(self, count: int) -> list[tuple[int, int]]:
        parts = min(self._parallelism(), max(1, count // 64))
        edges = np.linspace(0, count, parts + 1).astype(int)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]

    def _vector(self, blobs: list[bytes], frac_bits: int) -> EncryptedVector:
        width = self.public_key.ciphertext_bytes
        data = b"".join(blobs)
        cts = [gmpy2.mpz.from_bytes(data[i:i + width], "big") for i in range(0, len(data), width)]
        return EncryptedVector(self.public_key, cts, frac_bits, data)

    def encrypt(self, values: npt.NDArray[np.int64], frac_bits: int) -> EncryptedVector:
        """Encrypt int64 values in parallel chunks."""
        arr = np.ascontiguousarray(values, dtype=np.int64)
        futures = [self._submit(encrypt_chunk, arr[a:b].tobytes())
                   for a, b in self._split(len(arr))]
        return self._vector([f.result() for f in futures], frac_bits)

    def rerandomize(self, vec: EncryptedVector) -> EncryptedVector:
        """Re-randomise in parallel chunks."""
        data = vec.to_bytes()
        width = self.public_key.ciphertext_bytes
        futures = [self._submit(rerandomize_chunk, data[a * width:b * width])
                   for a, b in self._split(len(vec))]
        return self._vector([f.result() for f in futures], vec.frac_bits)

    def matvec_t_and_sum(self, x_offset: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64],
                         vec: EncryptedVector, x_frac_bits: int
                         ) -> tuple[EncryptedVector, EncryptedVector]:
        """``[[X^T d]]`` and ``[[sum d]]``, rows split over the workers."""
        rows, cols = x_offset.shape
        data = vec.to_bytes()
        width = self.public_key.ciphertext_bytes
        mat = np.ascontiguousarray(x_offset, dtype=np.int64)
        futures = [self._submit(matvec_chunk, data[a * width:b * width], mat[a:b].tobytes(),
                                cols) for a, b in self._split(rows)]
        n2 = self.public_key.nsquare
        acc = [gmpy2.mpz(1)] * (cols + 1)
        for f in futures:
            blob = f.result()
            part = [gmpy2.mpz.from_bytes(blob[i:i + width], "big")
                    for i in range(0, len(blob), width)]
            acc = [a * p % n2 for a, p in zip(acc, part, strict=True)]
        total_inv = gmpy2.invert(acc[-1], n2) if np.any(offsets) else None
        out = []
        for j in range(cols):
            c = acc[j]
            if offsets[j]:
                c = c * gmpy2.powmod(total_inv, int(offsets[j]), n2) % n2
            out.append(c)
        return (EncryptedVector(self.public_key, out, vec.frac_bits + x_frac_bits),
                EncryptedVector(self.public_key, [acc[-1]], vec.frac_bits))

    def project(self, x_offset: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64],
                vec: EncryptedVector, x_frac_bits: int) -> EncryptedVector:
        """``[[X v]]``, rows split over the workers."""
        _, corr = _projection_parts(x_offset, offsets, vec)
        width = self.public_key.ciphertext_bytes
        mat = np.ascontiguousarray(x_offset, dtype=np.int64)
        bases, cbytes = vec.to_bytes(), int(corr).to_bytes(width, "big")
        futures = [self._submit(project_chunk, bases, mat[a:b].tobytes(), mat.shape[1], cbytes)
                   for a, b in self._split(mat.shape[0])]
        return self._vector([f.result() for f in futures], vec.frac_bits + x_frac_bits)

    def combine_rows(self, vectors: list[EncryptedVector],
                     factors: list[npt.NDArray[np.int64]], frac_bits: int) -> EncryptedVector:
        """``[[sum_j k_j,i a_j,i]]`` per row, rows split over the workers."""
        _check_combination(vectors, factors)
        width = self.public_key.ciphertext_bytes
        data = [v.to_bytes() for v in vectors]
        ks = np.ascontiguousarray(np.stack([np.asarray(k, dtype=np.int64) for k in factors],
                                           axis=1))
        futures = [self._submit(combine_chunk, [d[a * width:b * width] for d in data],
                                ks[a:b].tobytes(), b - a)
                   for a, b in self._split(len(vectors[0]))]
        return self._vector([f.result() for f in futures], frac_bits)


class PoolEngine(ChunkedEngine):
    """Ciphertext bulk operations spread over ``workers`` processes.

    Parameters
    ----------
    public_key : PaillierPublicKey
    workers : int
        Worker processes (>= 2).
    """

    def __init__(self, public_key: PaillierPublicKey, workers: int,
                 exponent_bits: int | None = None) -> None:
        super().__init__(public_key, Randomizer(public_key, exponent_bits, window_bits=8))
        self.workers = workers
        # spawned (safe with the gRPC threads of this process); they die with this process
        self._pool = worker_pool(workers, _init_worker, (public_key.to_bytes(), exponent_bits))
        self._prefills: list[Future[int]] = []
        # start the workers and build their tables now, in parallel
        for f in [self._pool.submit(_w_prefill, 0) for _ in range(workers)]:
            f.result()

    def _submit(self, fn: Callable[..., bytes], *args: Any) -> Future[bytes]:
        return self._pool.submit(_in_pool, fn, *args)

    def _parallelism(self) -> int:
        return self.workers

    def prefill(self, count: int) -> None:
        """Let idle workers stock about ``count`` randomisers for the next batch."""
        self._prefills = [f for f in self._prefills if not f.done()]
        if self._prefills:
            return
        per = max(1, count // self.workers)
        self._prefills = [self._pool.submit(_w_prefill, per) for _ in range(self.workers)]

    def close(self) -> None:
        """Stop the workers now (a prefill still running is dropped)."""
        stop_pool(self._pool)


# ------------------------------------------------------------ choosing an engine
_ENGINES = ("local", "dask")
_SCHEMES = ("tls://", "tcp://")


@dataclass(frozen=True)
class ComputeConfig:
    """Where a party's ciphertext work runs (its ``[compute]`` TOML section).

    Checked when made, like :class:`~vfl.lr.TrainConfig`.

    Parameters
    ----------
    engine : {"local", "dask"}
        ``"local"`` (default): this process, or a pool of ``workers``
        processes on this machine. ``"dask"``: tasks on the party's own Dask
        cluster at ``scheduler`` (:class:`~vfl.crypto.dask_engine.DaskEngine`).
    workers : int or None
        Local engine only: pool processes (None: the machine's cores for jobs
        of 2,000 rows or more; 1: in this process). A Dask cluster's size is
        set by the ``dask worker`` processes that join it.
    scheduler : str or None
        Dask engine: the scheduler's address, ``"tls://host:port"``.
    ca, cert, key : Path or None
        Dask engine: the party's own compute CA and this process's client
        certificate and key (:func:`vfl.certs.write_compute_certs`); required
        with ``tls://``.
    allow_plain_tcp : bool
        Accept a ``tcp://`` scheduler (no encryption, no authentication:
        whoever reaches it can run code on the workers). Tests on one
        machine only.
    connect_timeout : float
        Seconds to wait for the scheduler, and for its first worker, before
        failing with an error naming the address (default 10).
    """

    engine: str = "local"
    workers: int | None = None
    scheduler: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    allow_plain_tcp: bool = False
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.engine not in _ENGINES:
            raise ConfigError(f"engine must be \"local\" or \"dask\", got {self.engine!r}.")
        w = self.workers
        if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
            raise ConfigError(f"workers must be a whole number >= 1, got {w!r}.")
        t = self.connect_timeout
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 3600:
            raise ConfigError(f"connect_timeout_seconds must be a number in (0, 3600], got {t!r}.")
        dask_keys = [k for k in ("scheduler", "ca", "cert", "key") if getattr(self, k) is not None]
        if self.engine == "local":
            if dask_keys or self.allow_plain_tcp:
                used = ", ".join(dask_keys or ["allow_plain_tcp"])
                raise ConfigError(f"{used} only apply with engine = \"dask\" (the engine is "
                                  "\"local\"); set engine = \"dask\" or remove them.")
            return
        if w is not None:
            raise ConfigError("workers sizes the local pool; a Dask cluster's size is set by "
                              "the `dask worker` processes that join it. Remove workers.")
        if not self.scheduler:
            raise ConfigError("engine = \"dask\" needs scheduler = \"tls://host:port\", the "
                              "address of this party's own Dask scheduler.")
        address = self.scheduler
        if not address.startswith(_SCHEMES):
            raise ConfigError(f"scheduler must be tls://host:port, got {address!r}.")
        host, sep, port = address.split("://", 1)[1].rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"scheduler must be tls://host:port, got {address!r}.")
        if address.startswith("tcp://"):
            if not self.allow_plain_tcp:
                raise ConfigError(
                    f"scheduler {address} is plain tcp: no encryption and no authentication, "
                    "so whoever reaches it can run code on this party's workers. Use tls:// "
                    "with the party's own compute certificates, or set allow_plain_tcp = true "
                    "(tests on one machine only).")
            if any(getattr(self, k) is not None for k in ("ca", "cert", "key")):
                raise ConfigError("ca, cert and key are for a tls:// scheduler; the scheduler "
                                  f"{address} is tcp://.")
            return
        missing = [k for k in ("ca", "cert", "key") if getattr(self, k) is None]
        if missing:
            raise ConfigError(f"a tls:// scheduler needs ca, cert and key (the party's own "
                              f"compute CA and this process's client certificate); missing: "
                              f"{', '.join(missing)}.")

    @property
    def uses_dask(self) -> bool:
        """True for the Dask engine."""
        return self.engine == "dask"


_COMPUTE: contextvars.ContextVar[ComputeConfig | None] = contextvars.ContextVar(
    "vfl_compute", default=None)


@contextlib.contextmanager
def compute_context(compute: ComputeConfig | None) -> Iterator[None]:
    """Within this block, :func:`make_engine` (in this thread) uses ``compute``.

    How an estimator's ``compute`` parameter reaches the engine its party
    makes deep inside the protocol driver, without the pure protocol code
    carrying deployment settings (as ``joblib.parallel_config`` chooses a
    backend for scikit-learn's ``n_jobs``). ``None`` leaves the current
    choice in place.
    """
    if compute is None:
        yield
        return
    token = _COMPUTE.set(compute)
    try:
        yield
    finally:
        _COMPUTE.reset(token)


def current_compute() -> ComputeConfig | None:
    """The :class:`ComputeConfig` set by the innermost :func:`compute_context`, if any."""
    return _COMPUTE.get()


def make_engine(public_key: PaillierPublicKey, workers: int | None, n_rows: int,
                exponent_bits: int | None = None, *,
                compute: ComputeConfig | None = None) -> CipherEngine:
    """The engine for a party: its Dask cluster, a pool of ``workers`` processes, or in-process.

    ``compute`` (default: :func:`current_compute`) with ``engine="dask"``
    connects to the party's Dask scheduler
    (:meth:`~vfl.crypto.dask_engine.DaskEngine.connect`); a local one's
    ``workers``, when set, replaces ``workers``. ``workers=None`` picks the
    number of cores when the job is big enough to gain from it (at least
    2,000 rows), else in-process; ``workers<=1`` is always in-process.

    Raises
    ------
    ConfigError
        If the Dask scheduler cannot be reached, or has no worker, within
        ``compute.connect_timeout`` (the error names the address), or
        ``distributed`` is not installed.
    """
    compute = compute or current_compute()
    if compute is not None and compute.uses_dask:
        try:
            from vfl.crypto.dask_engine import DaskEngine
        except ImportError:
            raise ConfigError("[compute] engine = \"dask\" needs the dask extra "
                              "(pip install 'vfl[dask]').") from None
        return DaskEngine.connect(public_key, compute, exponent_bits)
    if compute is not None and compute.workers is not None:
        workers = compute.workers
    if workers is None:
        workers = (os.cpu_count() or 1) if n_rows >= 2000 else 1
    if workers <= 1:
        return CipherEngine(public_key, exponent_bits=exponent_bits)
    return PoolEngine(public_key, workers, exponent_bits)
