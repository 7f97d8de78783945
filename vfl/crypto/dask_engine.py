"""Bulk ciphertext work as tasks on a party's own Dask cluster (``[compute] engine = "dask"``).

:class:`DaskEngine` does what :class:`~vfl.crypto.engine.PoolEngine` does —
encryption, re-randomisation, ``X^T [[d]]`` and the accurate mode's
``combine_rows`` — but hands each contiguous chunk to a task on the party's
Dask cluster (``client.submit(..., pure=False)``), so one party can use the
cores of several of its machines. The chunk functions are the pool's
(:func:`~vfl.crypto.engine.encrypt_chunk` & co.), and the party's own process
splits the rows and reassembles the answers exactly as the pool does: the
deterministic operations give :class:`~vfl.crypto.engine.CipherEngine`'s
ciphertexts bit for bit, and encryptions decrypt to the same values.

Trust boundary
--------------
The cluster belongs to one party and stays inside it. Dask runs whatever a
connected client submits, and its mutual TLS admits *any* certificate issued
by the CA it is given, so the scheduler, every worker and the party's process
hold certificates from the party's **own** compute CA
(:func:`vfl.certs.write_compute_certs`), never from the federation's CA (a
peer's certificate would then open the cluster to that peer; the runner
refuses that setup, :func:`vfl.certs.check_compute_tls`). ``tcp://``
schedulers are refused unless explicitly allowed for tests.

What the tasks see
------------------
Only this party's own data, as bytes: the public key's modulus, fixed-width
ciphertext bytes, and int64 arrays (values to encrypt, the party's quantised
feature columns, the accurate mode's per-row factors). Results are
fixed-width ciphertext bytes. The federated binning's one-off steps
(:class:`DaskTasks`) also see, on the guest's cluster, its labels (0/1), its
proof base and the proofs' secret exponents (handed back for the responding
chunk, wrapped so that no log shows them), and on a host's cluster the
guest's label ciphertexts and proofs and the host's bin index per row (not
its feature values); ``protocols/specs/compute.md`` has the table.
Ciphertexts that came from a peer were parsed and range-checked by the party's process first
(:meth:`~vfl.crypto.vector.EncryptedVector.from_bytes`) and travel to the
workers as an opaque ``bytes`` object inside Dask's own messages: Dask's
serialisation (which can rebuild arbitrary objects, so it is only ever fed by
this party) carries this party's data between this party's machines only,
and no byte received from a peer is ever decoded by it into anything but a
``bytes`` object. Functions travel by reference (module path), so every
worker needs the same vfl installed.

Secrets stay where they are made: each worker draws its own secret randomiser
base and every secret exponent with ``secrets`` (:class:`Randomizer`), and
its stocked residues never leave it; the gradient masks are drawn in the
party's own process; no private key ever reaches a worker (the arbiter's
decryption runs in its own process).

Fixed-base tables
-----------------
A :class:`RandomizerPlugin` registered with ``client.register_plugin`` builds
each worker's randomiser table once, in parallel on all workers, when the
engine starts (and on any worker that joins later); tasks find it in a
per-worker cache keyed by the key's fingerprint, the exponent length and the
engine, so no task rebuilds it. Closing the engine unregisters the plugin,
which frees the tables. (:class:`DaskTasks` keeps a proof's tables on a
worker until another key's chunks replace them.)
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from distributed import Client, Future, WorkerPlugin, get_worker
from distributed.security import Security

from vfl.crypto.engine import ChunkedEngine, ComputeConfig
from vfl.crypto.paillier import PaillierPublicKey, Randomizer, exponent_bits_for
from vfl.exceptions import ConfigError, RemoteProtocolError

__all__ = ["DaskEngine", "DaskBlinder", "DaskTasks", "RandomizerPlugin", "client_security",
           "cluster_security", "open_client"]


T = TypeVar("T")


# ------------------------------------------------------------------ worker side
@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a worker needs to serve an engine: a cache tag, the modulus, the exponent length."""

    tag: str
    n: bytes
    exponent_bits: int | None


class _WorkerState:
    """A worker's copy of the public key and its own randomiser (secret base, table)."""

    __slots__ = ("public_key", "randomizer")

    def __init__(self, spec: KeySpec) -> None:
        self.public_key = PaillierPublicKey.from_bytes(spec.n)
        self.randomizer = Randomizer(self.public_key, spec.exponent_bits)


#: Seconds the engine reuses its count of the cluster's worker threads.
_THREADS_TTL = 5.0

#: Per worker process: (engine tag, worker id) -> state. A worker runs one task at a
#: time (``--nthreads 1``, checked), so a state is never used by two threads at once.
_STATES: dict[tuple[str, str], _WorkerState] = {}


def _worker_id(worker: Any | None = None) -> str:
    if worker is None:
        try:
            worker = get_worker()
        except ValueError:  # not inside a Dask worker (a direct call)
            return ""
    nthreads = int(worker.state.nthreads)
    if nthreads != 1:
        raise ConfigError(
            f"Dask worker {worker.address} runs {nthreads} threads; vfl needs one thread per "
            "worker process (dask worker --nthreads 1 --nworkers <cores>): the big-integer "
            "work holds the GIL, and a worker's randomiser serves one task at a time.")
    return str(worker.id)


def _state(spec: KeySpec, worker: Any | None = None) -> _WorkerState:
    """This worker's state for ``spec``, built on first use (normally by the plugin)."""
    key = (spec.tag, _worker_id(worker))
    state = _STATES.get(key)
    if state is None:
        state = _STATES[key] = _WorkerState(spec)
    return state


def _in_dask(spec: KeySpec, fn: Callable[..., bytes], *args: Any) -> bytes:
    """Task: run chunk function ``fn`` with this worker's key and randomiser."""
    state = _state(spec)
    return fn(state.public_key, state.randomizer.draw, *args)


def _prefill(spec: KeySpec, count: int) -> int:
    """Task: stock ``count`` fresh residues on this worker (they never leave it)."""
    rnd = _state(spec).randomizer
    rnd.prefill(count)
    return rnd.stocked


class RandomizerPlugin(WorkerPlugin):
    """Builds a worker's randomiser table once, when registered or when the worker joins.

    Carries only public values (the modulus and the exponent length); the
    secret base and exponents are drawn on the worker itself.
    """

    idempotent = False

    def __init__(self, spec: KeySpec) -> None:
        self.spec = spec
        self.name = spec.tag

    def setup(self, worker: Any) -> None:
        """Build this worker's randomiser (secret base and fixed-base table)."""
        _state(self.spec, worker)

    def teardown(self, worker: Any) -> None:
        """Free the table and any stocked residues."""
        _STATES.pop((self.spec.tag, str(worker.id)), None)


# ------------------------------------------------------------------ client side
def client_security(ca: str | Path, cert: str | Path, key: str | Path) -> Security:
    """Dask ``Security`` for the party's process (a client of its own cluster): mutual TLS."""
    return Security(tls_ca_file=str(ca), tls_client_cert=str(cert), tls_client_key=str(key),
                    require_encryption=True)


def cluster_security(folder: str | Path) -> Security:
    """Dask ``Security`` for every role, from a folder :func:`vfl.certs.write_compute_certs` wrote.

    For a ``distributed.LocalCluster`` (tests, benchmarks, one machine): it
    reads ``ca.pem`` and the ``scheduler``, ``worker`` and ``client``
    certificates and keys. A cluster over several machines is started with
    the ``dask scheduler`` / ``dask worker`` commands and their ``--tls-*``
    options instead (``examples/dask_party/``).
    """
    d = Path(folder)
    files = {f"tls_{role}_{part}": str(d / f"{role}.{ext}")
             for role in ("scheduler", "worker", "client")
             for part, ext in (("cert", "pem"), ("key", "key"))}
    missing = [p for p in [str(d / "ca.pem"), *files.values()] if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"Compute certificates missing in {d}: {', '.join(missing)} "
                          "(vfl.certs.write_compute_certs writes them).")
    return Security(tls_ca_file=str(d / "ca.pem"), require_encryption=True, **files)


def open_client(compute: ComputeConfig) -> Client:
    """A client of the party's Dask scheduler, with at least one worker; fails fast.

    Raises
    ------
    ConfigError
        Naming the address, if the scheduler cannot be reached (or refuses
        this process's certificate) within ``compute.connect_timeout``
        seconds, or if no worker has joined it by then.
    """
    address = compute.scheduler
    if not compute.uses_dask or address is None:
        raise ConfigError("open_client needs a ComputeConfig with engine=\"dask\" and a scheduler.")
    security = None
    if address.startswith("tls://"):
        assert compute.ca is not None and compute.cert is not None and compute.key is not None
        security = client_security(compute.ca, compute.cert, compute.key)
    timeout = compute.connect_timeout
    try:
        client = Client(address, security=security, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(
            f"Cannot reach the Dask scheduler {address} ([compute] scheduler) within "
            f"{timeout:g} s: {exc}. Start it (dask scheduler --protocol tls ...) or fix the "
            "address; if it runs, check that its certificates and [compute] ca/cert/key come "
            "from the same compute CA.") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError):
        client.close()
        raise ConfigError(
            f"The Dask scheduler {address} has no worker (none joined within {timeout:g} s); "
            f"start workers with `dask worker {address} --nthreads 1 --tls-ca-file ... "
            "--tls-cert ... --tls-key ...` on the party's machines.") from None
    return client


def _on_new_client(compute: ComputeConfig, build: Callable[[Client], T]) -> T:
    """``build(client)`` on a new client of ``compute``'s scheduler; the client is closed if
    ``build`` fails (the object built owns it otherwise)."""
    client = open_client(compute)
    try:
        return build(client)
    except BaseException:
        client.close()
        raise


class DaskEngine(ChunkedEngine):
    """Ciphertext bulk operations as tasks on the party's own Dask cluster.

    Parameters
    ----------
    public_key : PaillierPublicKey
    client : distributed.Client
        A client of the party's own cluster (see :func:`open_client`).
    exponent_bits : int, optional
        Length of the secret randomiser exponents (default ``|n|/2``).
    close_client : bool
        Close ``client`` in :meth:`close` (when the engine opened it).

    Notes
    -----
    Chunks are as many as the cluster has workers (each at least 64 rows).
    Run one worker process per core with one thread each (``dask worker
    --nworkers <cores> --nthreads 1``; a worker with more threads is refused
    with an error saying so): the big-integer arithmetic holds the GIL, and
    a worker's randomiser serves one task at a time.
    """

    def __init__(self, public_key: PaillierPublicKey, client: Client,
                 exponent_bits: int | None = None, *, close_client: bool = False) -> None:
        super().__init__(public_key, Randomizer(public_key, exponent_bits, window_bits=8))
        bits = exponent_bits_for(public_key, exponent_bits, "randomiser")
        self.client = client
        self._close_client = close_client
        self._spec = KeySpec(f"vfl-randomizer-{public_key.fingerprint.hex()}-{bits}-"
                             f"{secrets.token_hex(6)}", public_key.to_bytes(), exponent_bits)
        self._prefills: list[tuple[str, Future]] = []
        self._threads: list[str] = []
        self._threads_at = 0.0
        self._turn = -1
        # every worker builds its table now, in parallel (and any worker that joins later)
        client.register_plugin(RandomizerPlugin(self._spec), name=self._spec.tag)

    @classmethod
    def connect(cls, public_key: PaillierPublicKey, compute: ComputeConfig,
                exponent_bits: int | None = None) -> DaskEngine:
        """Open a client of ``compute.scheduler`` (:func:`open_client`) and an engine on it."""
        return _on_new_client(compute, lambda c: cls(public_key, c, exponent_bits,
                                                     close_client=True))

    def _submit(self, fn: Callable[..., bytes], *args: Any) -> Future:
        # the chunks of one operation go to the workers in turn (a loose restriction: the
        # scheduler may still move one if its worker is gone); left to itself the scheduler
        # can queue both chunks of a 2-worker cluster behind the same worker's prefill
        workers = self._workers()
        self._turn = (self._turn + 1) % len(workers)
        return self.client.submit(_in_dask, self._spec, fn, *args, pure=False,
                                  workers=[workers[self._turn]], allow_other_workers=True)

    def _workers(self) -> list[str]:
        """The cluster's worker addresses, one entry per thread (asked at most every 5 s)."""
        # one scheduler round trip per few seconds, not per operation (workers that join or
        # leave in between only change how the next chunks are cut; Dask places them)
        now = time.monotonic()
        if self._threads and now - self._threads_at < _THREADS_TTL:
            return self._threads
        threads = [w for w, k in sorted(self.client.nthreads().items()) for _ in range(int(k))]
        if not threads:
            try:  # every worker left: wait briefly for one to come back
                self.client.wait_for_workers(1, timeout=30)
            except (OSError, TimeoutError):
                raise ConfigError(f"The Dask cluster at {self.client.scheduler.address} has no "
                                  "worker left; restart its workers.") from None
            threads = [w for w, k in sorted(self.client.nthreads().items())
                       for _ in range(max(1, int(k)))]
        self._threads, self._threads_at = threads, now
        return threads

    def _parallelism(self) -> int:
        return len(self._workers())

    def prefill(self, count: int) -> None:
        """Let each worker stock about its share of ``count`` randomisers for the next batch."""
        workers = set(self.client.nthreads())  # now, not the cached list: one may have left
        for w, f in self._prefills:
            if w not in workers:  # pinned to a worker that left: it would never run
                f.cancel()
        self._prefills = [(w, f) for w, f in self._prefills if w in workers and not f.done()]
        if self._prefills or not workers:
            return
        per = max(1, count // len(workers))
        self._prefills = [(w, self.client.submit(_prefill, self._spec, per, workers=[w],
                                                 allow_other_workers=False, pure=False))
                          for w in sorted(workers)]

    def close(self) -> None:
        """Drop pending prefills, free the workers' tables, close the client if owned."""
        with contextlib.suppress(Exception):  # the cluster may already be gone
            for _, f in self._prefills:
                f.cancel()
            self._prefills = []
            self.client.unregister_worker_plugin(self._spec.tag)
        if self._close_client:
            with contextlib.suppress(Exception):
                self.client.close()


# ------------------------------------------------------------------ PSI blinding
class _HiddenScalar:
    """The PSI scalar as the cluster holds it: its repr (in any log or dashboard) hides it."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret PSI scalar>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_HiddenScalar, (self.value,))


def _blind_task(scalar: _HiddenScalar, data: bytes, offset: int) -> bytes | int:
    """Task: the chunk blinded, or the index of its first small-order point.

    Never raises on a peer's bad point, so no failed-task report (which some
    Dask versions log with the task's arguments) can carry the scalar.
    """
    from vfl.exceptions import RemoteProtocolError as _Bad
    from vfl.psi.ecdh import POINT_BYTES, blind_chunk

    try:
        return blind_chunk(scalar.value, data, "peer", offset)
    except _Bad:
        from nacl.bindings import crypto_scalarmult
        from nacl.exceptions import CryptoError

        for i in range(0, len(data), POINT_BYTES):
            try:
                crypto_scalarmult(scalar.value, data[i:i + POINT_BYTES])
            except CryptoError:
                return offset + i // POINT_BYTES
        return offset


class DaskBlinder:
    """The bucketed PSI's hashing and blinding as tasks on the party's own Dask cluster.

    Implements :class:`vfl.psi.ecdh.Blinder`. The secret X25519 scalar is
    drawn here, in the party's process, with ``secrets``, and broadcast once
    to the party's own workers (``client.scatter``), inside the cluster's
    mutual TLS; tasks refer to it, so it is not sent again with every chunk.
    Tasks see this party's IDs (hashing) or points (blinding: its own hashed
    IDs, or the peer's blinded points, which are opaque group elements), and
    return concatenated 32-byte points. Small-order points from a peer are
    refused on the worker and the error reaches the party's process.

    Parameters
    ----------
    client : distributed.Client
        A client of the party's own cluster (:func:`open_client`).
    close_client : bool
        Close ``client`` in :meth:`close`.
    """

    def __init__(self, client: Client, *, close_client: bool = False) -> None:
        self.client = client
        self._close_client = close_client
        self.workers = max(1, int(sum(client.nthreads().values())))
        self._scalar = client.scatter(_HiddenScalar(secrets.token_bytes(32)), broadcast=True,
                                      hash=False)

    @classmethod
    def connect(cls, compute: ComputeConfig) -> DaskBlinder:
        """Open a client of ``compute.scheduler`` (:func:`open_client`) and a blinder on it."""
        return _on_new_client(compute, lambda c: cls(c, close_client=True))

    def _spans(self, count: int) -> list[tuple[int, int]]:
        from vfl.psi.ecdh import chunk_spans

        return chunk_spans(count, self.workers * 2)

    def hash_ids(self, ids: Sequence[str]) -> tuple[bytes, bytes]:
        """``(order keys, points)`` of ``ids``, in chunks on the workers."""
        from vfl.psi.ecdh import hash_id_chunk

        futures = [self.client.submit(hash_id_chunk, list(ids[a:b]), pure=False)
                   for a, b in self._spans(len(ids))]
        parts = self.client.gather(futures)
        return b"".join(k for k, _ in parts), b"".join(p for _, p in parts)

    def blind(self, points: bytes, *, peer: str = "self") -> bytes:
        """Every 32-byte point of ``points`` times the secret scalar, in chunks on the workers."""
        from vfl.psi.ecdh import POINT_BYTES

        if len(points) % POINT_BYTES:
            raise ValueError("points must be a multiple of 32 bytes")
        futures = [self.client.submit(_blind_task, self._scalar,
                                      points[a * POINT_BYTES:b * POINT_BYTES], a, pure=False)
                   for a, b in self._spans(len(points) // POINT_BYTES)]
        out = self.client.gather(futures)
        bad = [r for r in out if isinstance(r, int)]
        if bad:
            raise RemoteProtocolError(
                f"Point {min(bad)} from {peer} is of small order; refusing to blind it.")
        return b"".join(out)

    def close(self) -> None:
        """Forget the scalar on the workers; close the client if owned."""
        with contextlib.suppress(Exception):
            self.client.cancel([self._scalar], force=True)
        if self._close_client:
            with contextlib.suppress(Exception):
                self.client.close()

    def __enter__(self) -> DaskBlinder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ one-off steps
#: Per worker process: (init function, worker id) -> the initargs it last ran with.
_INITS: dict[tuple[str, str], tuple[Any, ...]] = {}


def _with_init(init: Callable[..., None], initargs: tuple[Any, ...],
               fn: Callable[..., Any], *args: Any) -> Any:
    """Task: ``fn(*args)`` after ``init(*initargs)``, which runs once per worker and state."""
    key = (f"{init.__module__}.{init.__qualname__}", _worker_id())  # refuses >1 thread
    if _INITS.get(key) != initargs:
        _INITS.pop(key, None)  # an init that fails half-way leaves no stale entry
        init(*initargs)
        _INITS[key] = initargs
    return fn(*args)


class DaskTasks:
    """A :class:`~vfl.crypto.tasks.TaskRunner` on the party's own Dask cluster.

    Each task carries ``init``'s arguments (a modulus; for the guest's 0/1
    proofs also its proof base ``γ``, secret to the guest and sent only to its
    own workers); a worker runs ``init`` the first time it sees them and
    keeps the state it builds (fixed-base tables) for the following chunks,
    until another key's chunks arrive. Secret values a chunk needs
    (encryption exponents, batch weights) are drawn on the worker with
    ``secrets``, inside the chunk function. Chunks go to the workers in
    turn.
    """

    def __init__(self, client: Client, init: Callable[..., None], initargs: tuple[Any, ...],
                 *, close_client: bool = False) -> None:
        self.client = client
        self._init, self._initargs = init, initargs
        self._close_client = close_client
        self._slots = [w for w, k in sorted(client.nthreads().items()) for _ in range(int(k))]
        self.parallelism = max(1, len(self._slots))
        self._turn = -1

    @classmethod
    def connect(cls, compute: ComputeConfig, init: Callable[..., None],
                initargs: tuple[Any, ...]) -> DaskTasks:
        """Open a client of ``compute.scheduler`` (:func:`open_client`) and a runner on it."""
        return _on_new_client(compute, lambda c: cls(c, init, initargs, close_client=True))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        if not self._slots:
            return self.client.submit(_with_init, self._init, self._initargs, fn, *args,
                                      pure=False)
        self._turn = (self._turn + 1) % len(self._slots)
        return self.client.submit(_with_init, self._init, self._initargs, fn, *args, pure=False,
                                  workers=[self._slots[self._turn]], allow_other_workers=True)

    def close(self) -> None:
        """Close the client if this runner opened it.

        The workers keep the last state ``init`` built (for the proofs: the
        tables of the guest's base ``γ``) until another key's chunks replace
        it; the cluster belongs to the party.
        """
        if self._close_client:
            with contextlib.suppress(Exception):
                self.client.close()
