"""X25519 primitives for ECDH private set intersection.

Hash to the curve
-----------------
An ID ``x`` (UTF-8 bytes) is mapped to the Montgomery u-coordinate
``u = SHA-512("vfl/psi/v1/x25519" || len(x) || x) mod p`` with
``p = 2^255 - 19``. RFC 7748 defines X25519 for every u, and the Montgomery
ladder computes scalar multiplication on Curve25519 when u is on the curve
and on its quadratic twist otherwise; both groups have a large prime-order
subgroup (2^252 + ... on the curve, ~2^253 on the twist; Curve25519 was
designed to be twist-secure), and X25519's clamped scalars are multiples of
the cofactor 8, so every blinded value lies in one of the two prime-order
subgroups. The map is therefore a random oracle onto curve-or-twist points;
which of the two a point is on is a public function of the ID and reveals
nothing to someone who does not already hold the ID. See
``protocols/specs/psi.md`` for the full argument.

Blinding is ``X25519(k, u)`` with a per-run secret scalar ``k`` drawn from the
operating system CSPRNG. Because both parties' scalars are applied to the same
point, ``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from vfl.exceptions import RemoteProtocolError
from vfl.procs import stop_pool, worker_pool

__all__ = ["POINT_BYTES", "hash_to_point", "order_key", "BlindingKey", "BlindingPool", "Blinder",
           "split_points"]

POINT_BYTES = 32
_P = 2**255 - 19
_DST = b"vfl/psi/v1/x25519"


def hash_to_point(identifier: str) -> bytes:
    """Map an ID to a 32-byte X25519 u-coordinate (little-endian)."""
    data = identifier.encode("utf-8")
    digest = hashlib.sha512(_DST + len(data).to_bytes(4, "big") + data).digest()
    return (int.from_bytes(digest, "little") % _P).to_bytes(POINT_BYTES, "little")


_ORDER_DST = b"vfl/psi/v1/order\x00"


def order_key(identifier: str) -> bytes:
    """The public 32-byte key both parties sort the intersection by (and bucket large sets by)."""
    return hashlib.sha256(_ORDER_DST + identifier.encode("utf-8")).digest()


def split_points(data: bytes, *, peer: str, what: str, expected: int | None = None) -> list[bytes]:
    """Split concatenated 32-byte points, checking the length and count."""
    if len(data) % POINT_BYTES:
        raise RemoteProtocolError(
            f"{what} from {peer} is {len(data)} bytes, not a multiple of {POINT_BYTES}."
        )
    count = len(data) // POINT_BYTES
    if expected is not None and count != expected:
        raise RemoteProtocolError(f"{what} from {peer} has {count} points; expected {expected}.")
    return [data[i : i + POINT_BYTES] for i in range(0, len(data), POINT_BYTES)]


PARALLEL_MIN = 20_000


def _blind_chunk(key_bytes: bytes, points: list[bytes], peer: str, offset: int) -> list[bytes]:
    return _blind_with(X25519PrivateKey.from_private_bytes(key_bytes), points, peer, offset)


def _hash_blind_chunk(key_bytes: bytes, ids: list[str]) -> list[bytes]:
    return _blind_with(X25519PrivateKey.from_private_bytes(key_bytes),
                       [hash_to_point(x) for x in ids], "self", 0)


def _blind_with(key: X25519PrivateKey, points: Iterable[bytes], peer: str,
                offset: int) -> list[bytes]:
    from vfl.crypto.mb import backend

    if backend() is not None:  # eight points per call on AVX-512 IFMA, the same results
        data = _blind_bytes(key.private_bytes_raw(), b"".join(points), peer, offset)
        return [data[i:i + POINT_BYTES] for i in range(0, len(data), POINT_BYTES)]
    out = []
    for i, point in enumerate(points):
        try:
            out.append(key.exchange(X25519PublicKey.from_public_bytes(point)))
        except ValueError:
            raise RemoteProtocolError(
                f"Point {offset + i} from {peer} is of small order; refusing to blind it."
            ) from None
    return out


class BlindingKey:
    """A per-run secret X25519 scalar (from the OS CSPRNG).

    Large inputs (at least 20,000 points) are blinded by a pool of worker
    processes of this party, one per core by default (``workers``); the
    scalar is handed only to those local workers.
    """

    def __init__(self, workers: int | None = None) -> None:
        self._key = X25519PrivateKey.generate()
        self.workers = workers if workers is not None else (os.cpu_count() or 1)

    def _parallel(self, fn: Any, items: Sequence[Any], *extra: Any) -> list[bytes]:
        key_bytes = self._key.private_bytes_raw()
        parts = self.workers * 4
        edges = [len(items) * i // parts for i in range(parts + 1)]
        pool = worker_pool(self.workers)
        try:
            futures = [pool.submit(fn, key_bytes, list(items[a:b]), *extra,
                                   *([a] if extra else []))
                       for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
            out: list[bytes] = []
            for f in futures:
                out.extend(f.result())
        finally:
            stop_pool(pool)
        return out

    def blind(self, points: Iterable[bytes], *, peer: str = "self") -> list[bytes]:
        """Multiply every point by the secret scalar.

        Raises
        ------
        RemoteProtocolError
            If a point is of small order (the result would be all zeros),
            which never happens for hashed IDs and so marks a malicious peer.
        """
        pts = list(points)
        if self.workers > 1 and len(pts) >= PARALLEL_MIN:
            return self._parallel(_blind_chunk, pts, peer)
        return _blind_with(self._key, pts, peer, 0)

    def blind_ids(self, ids: Sequence[str]) -> list[bytes]:
        """Hash IDs to points and blind them."""
        if self.workers > 1 and len(ids) >= PARALLEL_MIN:
            return self._parallel(_hash_blind_chunk, ids)
        return _blind_with(self._key, (hash_to_point(x) for x in ids), "self", 0)


# --------------------------------------------------------------- a persistent pool (large sets)
# The pool blinds with libsodium's X25519 (PyNaCl's crypto_scalarmult: the same RFC 7748
# function as OpenSSL's, about 7 % faster here, and no key object per point); it equals
# cryptography's result bit for bit (tests/psi/test_bucketed.py).
_POOL_SCALAR: bytes | None = None


def _pool_init(scalar: bytes) -> None:
    global _POOL_SCALAR
    _POOL_SCALAR = scalar


def _hash_ids(ids: Sequence[str]) -> tuple[bytes, bytes]:
    return (b"".join(order_key(x) for x in ids), b"".join(hash_to_point(x) for x in ids))


def _blind_bytes(scalar: bytes, data: bytes, peer: str, offset: int) -> bytes:
    from nacl.bindings import crypto_scalarmult
    from nacl.exceptions import CryptoError

    from vfl.crypto.mb import SmallOrderPoint, backend

    mb = backend()
    if mb is not None:  # crypto_mb: eight points per call, bit for bit libsodium's results
        try:
            return mb.x25519(scalar, data)
        except SmallOrderPoint as exc:
            raise RemoteProtocolError(
                f"Point {offset + exc.index} from {peer} is of small order; refusing to "
                "blind it.") from None
    out = []
    for i in range(0, len(data), POINT_BYTES):
        try:
            out.append(crypto_scalarmult(scalar, data[i:i + POINT_BYTES]))
        except CryptoError:  # libsodium refuses an all-zero result: a small-order point
            raise RemoteProtocolError(
                f"Point {offset + i // POINT_BYTES} from {peer} is of small order; refusing to "
                "blind it.") from None
    return b"".join(out)


def _pool_blind(data: bytes, peer: str, offset: int) -> bytes:
    assert _POOL_SCALAR is not None
    return _blind_bytes(_POOL_SCALAR, data, peer, offset)


def chunk_spans(count: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, end)`` spans of ``range(count)`` (one below 4,096 items)."""
    parts = 1 if count < 4096 else max(1, parts)
    edges = [count * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


class Blinder(Protocol):
    """What the bucketed PSI needs from a party's compute: a secret scalar and the hashing.

    :class:`BlindingPool` (this machine's processes) and
    :class:`vfl.crypto.dask_engine.DaskBlinder` (the party's own Dask cluster)
    implement it.
    """

    workers: int

    def hash_ids(self, ids: Sequence[str]) -> tuple[bytes, bytes]:
        """``(order keys, points)``: 32 bytes per ID each."""
        ...

    def blind(self, points: bytes, *, peer: str = "self") -> bytes:
        """Every 32-byte point times the secret scalar (small-order points refused)."""
        ...

    def close(self) -> None:
        """Release the workers."""
        ...


def hash_id_chunk(ids: Sequence[str]) -> tuple[bytes, bytes]:
    """Task: ``(order keys, points)`` of a chunk of IDs (any compute engine runs it)."""
    return _hash_ids(ids)


def blind_chunk(scalar: bytes, data: bytes, peer: str, offset: int) -> bytes:
    """Task: blind a chunk of concatenated points with ``scalar`` (any compute engine runs it)."""
    return _blind_bytes(scalar, data, peer, offset)


class BlindingPool:
    """A per-run secret X25519 scalar and the worker processes that apply it, kept for a whole run.

    The bucketed PSI blinds one bucket at a time, so the pool is started once
    (not once per call, as :class:`BlindingKey` does for its single call) and
    its workers keep the scalar. The scalar comes from the OS CSPRNG and goes
    only to this party's own worker processes. Points travel as concatenated
    32-byte strings, not one Python object each.

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: one per core); ``1`` works in-process.
    """

    def __init__(self, workers: int | None = None) -> None:
        self._scalar = secrets.token_bytes(32)  # clamped by X25519 itself (RFC 7748)
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None
        if self.workers > 1:
            self._pool = worker_pool(self.workers, _pool_init, (self._scalar,))

    def _edges(self, count: int) -> list[tuple[int, int]]:
        return chunk_spans(count, 1 if self._pool is None else self.workers * 2)

    def hash_ids(self, ids: Sequence[str]) -> tuple[bytes, bytes]:
        """``(order keys, points)``: 32 bytes per ID each, in the order of ``ids``."""
        spans = self._edges(len(ids))
        if self._pool is None or len(spans) == 1:
            return _hash_ids(ids)
        parts = [f.result() for f in [self._pool.submit(_hash_ids, list(ids[a:b]))
                                      for a, b in spans]]
        return b"".join(k for k, _ in parts), b"".join(p for _, p in parts)

    def blind(self, points: bytes, *, peer: str = "self") -> bytes:
        """Multiply every 32-byte point of ``points`` by the secret scalar.

        Raises
        ------
        RemoteProtocolError
            If a point is of small order (never the case for hashed IDs).
        """
        if len(points) % POINT_BYTES:
            raise ValueError("points must be a multiple of 32 bytes")
        spans = self._edges(len(points) // POINT_BYTES)
        if self._pool is None or len(spans) == 1:
            return _blind_bytes(self._scalar, points, peer, 0)
        futures = [self._pool.submit(_pool_blind, points[a * POINT_BYTES:b * POINT_BYTES], peer, a)
                   for a, b in spans]
        return b"".join(f.result() for f in futures)

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            stop_pool(self._pool)
            self._pool = None

    def __enter__(self) -> BlindingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
