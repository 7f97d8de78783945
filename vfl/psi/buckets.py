"""Bucketed ECDH PSI for large sets: pure protocol logic, one bucket at a time, no I/O.

Both parties split their IDs by the top ``bits`` bits of the public order key
``SHA-256("vfl/psi/v1/order\\0" || id)`` (:mod:`vfl.psi.spill`) and run the
two-message DH exchange of ``protocols/specs/psi.md`` once per bucket. Every
bucket is padded with random points to a cap fixed by the announced set
sizes alone, so the bucket histogram of neither party's IDs is disclosed.
Inside a bucket the client keeps the IDs every server holds, sorted by order
key; since the bucket is a prefix of that key, the buckets in turn give
exactly the order of the single-message protocol (:func:`vfl.psi.driver.canonical_order`).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vfl.exceptions import ConfigError, LocalProtocolError, RemoteProtocolError
from vfl.psi.ecdh import POINT_BYTES, Blinder, split_points
from vfl.psi.messages import PsiBucketRequest, PsiBucketResponse, PsiBucketResult, PsiBuckets
from vfl.psi.spill import SpilledSet

__all__ = ["BUCKET_ROWS", "MAX_BUCKET_BITS", "WINDOW", "BucketPlan", "bucket_plan", "padded_cap",
           "secret_permutation", "BucketClient", "BucketServer", "check_plan", "check_padded_total"]

#: the most IDs (on average, before padding) a bucket holds: sets up to this size use the
#: single-message protocol; larger ones are split into 2**bits buckets of at most this mean size
BUCKET_ROWS = 1 << 17
MAX_BUCKET_BITS = 16
#: buckets the client keeps in flight, so that both parties work at once
WINDOW = 2
#: padding margin, in standard deviations of a bucket's count (plus a constant for small buckets)
_SIGMAS, _EXTRA = 8, 8


def padded_cap(n: int, buckets: int) -> int:
    """The padded size of every bucket of a set of ``n`` IDs split into ``buckets`` buckets.

    ``n/B + 8 sqrt(n/B) + 8``, at most ``n``: a bucket's count is binomial
    ``(n, 1/B)``, and exceeding the cap has probability below 1e-15 per
    bucket (checked in ``tests/psi/test_bucketed.py``). It depends on the
    announced sizes only.
    """
    if buckets == 1:
        return n
    mean = n / buckets
    return min(n, math.ceil(mean + _SIGMAS * math.sqrt(mean) + _EXTRA))


@dataclass(frozen=True)
class BucketPlan:
    """How one client-server pair splits its sets: ``2**bits`` buckets and each side's cap."""

    bits: int
    client_cap: int
    server_cap: int

    @property
    def buckets(self) -> int:
        """Number of buckets."""
        return 1 << self.bits

    def message(self) -> PsiBuckets:
        """The plan as the client announces it."""
        return PsiBuckets(self.bits, self.client_cap, self.server_cap)


def _bits_for(largest: int, bucket_rows: int) -> int:
    bits = 0
    while largest > bucket_rows << bits:
        bits += 1
    return bits


def check_bucket_count(n_peer: int, bucket_rows: int, *, peer: str) -> int:
    """``n_peer``, refused if ``peer``'s announced set needs more than 2^MAX_BUCKET_BITS buckets.

    Unreachable with the default bucket size (2^33 IDs), but a party that runs
    with smaller buckets must refuse such a peer as the peer's fault.
    """
    if _bits_for(n_peer, bucket_rows) > MAX_BUCKET_BITS:
        raise RemoteProtocolError(
            f"{peer} announced {n_peer:,} IDs: more than 2^{MAX_BUCKET_BITS} buckets of "
            f"{bucket_rows:,} IDs, this party's bucket size; PSI refused.")
    return n_peer


def bucket_plan(n_client: int, n_server: int, bucket_rows: int = BUCKET_ROWS, *,
                bits: int | None = None) -> BucketPlan | None:
    """The pair's plan, or ``None`` when both sets fit one bucket (single-message protocol).

    ``bits`` overrides the number of bucket bits (a client with several
    servers uses the largest pair's, so that all pairs share buckets).
    """
    if bucket_rows < 1:
        raise ValueError("bucket_rows must be positive")
    own = _bits_for(max(n_client, n_server), bucket_rows)
    if bits is None:
        if own == 0:
            return None
        bits = own
    if bits > MAX_BUCKET_BITS:
        raise ConfigError(
            f"A PSI of {max(n_client, n_server):,} IDs needs more than 2^{MAX_BUCKET_BITS} "
            "buckets; raise the bucket size.")
    buckets = 1 << bits
    return BucketPlan(bits, padded_cap(n_client, buckets), padded_cap(n_server, buckets))


def check_plan(announced: PsiBuckets, n_client: int, n_server: int, *, peer: str,
               max_points: int, bucket_rows: int = BUCKET_ROWS) -> BucketPlan:
    """The server's check of the client's plan; returns the plan it accepts.

    The client may choose more bucket bits than this pair needs (it shares
    buckets with its other servers), but no fewer (each bucket must fit this
    party's memory), and not so many that padding more than triples the work;
    the caps must be exactly the ones the announced sizes give. Every padded
    slot of the client's is a point this party blinds and answers for, i.e. a
    guess, so the padded total ``buckets x client_cap`` must stay within
    ``max_points`` (this party's ``max_psi_set_size``), as an announced set does.

    Raises
    ------
    RemoteProtocolError
        Naming ``peer`` and what differs.
    """
    own = _bits_for(max(n_client, n_server), bucket_rows)
    bits = announced.bucket_bits
    if not own <= bits <= MAX_BUCKET_BITS or bits == 0:
        raise RemoteProtocolError(
            f"{peer} proposed 2^{bits} PSI buckets; this party needs 2^{max(own, 1)} to "
            f"2^{MAX_BUCKET_BITS} for {n_client:,} x {n_server:,} IDs (bucket size "
            f"{bucket_rows:,}; do both parties run the same vfl version?).")
    plan = bucket_plan(n_client, n_server, bucket_rows, bits=bits)
    assert plan is not None
    if (announced.client_cap, announced.server_cap) != (plan.client_cap, plan.server_cap):
        raise RemoteProtocolError(
            f"{peer} proposed PSI bucket caps {announced.client_cap:,}/{announced.server_cap:,}; "
            f"the announced sizes give {plan.client_cap:,}/{plan.server_cap:,}.")
    if plan.buckets * (plan.client_cap + plan.server_cap) > 3 * (n_client + n_server) + 64:
        raise RemoteProtocolError(
            f"{peer} proposed 2^{bits} PSI buckets, whose padding would more than triple the "
            "work; refusing.")
    check_padded_total(plan.buckets * plan.client_cap, max_points, peer=peer)
    return plan


def check_padded_total(points: int, max_points: int, *, peer: str) -> None:
    """Refuse a peer whose padded buckets would hold more points than this party's limit.

    Raises
    ------
    RemoteProtocolError
        If ``points`` (buckets x the peer's cap: every one a membership
        question this party answers) exceeds ``max_points`` (``max_psi_set_size``).
    """
    if points > max_points:
        raise RemoteProtocolError(
            f"{peer}'s PSI buckets would hold {points:,} points with their padding, above this "
            f"party's limit of {max_points:,} (max_psi_set_size); refusing before any point "
            "is exchanged.")


def secret_permutation(n: int) -> npt.NDArray[np.int64]:
    """A uniformly random permutation of ``range(n)`` from the OS CSPRNG.

    Sorting ``n`` random 64-bit keys: ties (which would bias the order)
    happen with probability below ``n^2 / 2^65``.
    """
    keys = np.frombuffer(secrets.token_bytes(8 * n), dtype=np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


def _padded_points(records: npt.NDArray[np.void], cap: int,
                   perm: npt.NDArray[np.int64]) -> bytes:
    """The bucket's points plus random ones up to ``cap``, in the order of ``perm``.

    Padding points are uniformly random u-coordinates below ``2^255`` (as
    ``H`` gives, up to a bias of ``19/2^255``), drawn with ``secrets``: after
    blinding they look like any blinded ID and match nothing. ``cap`` of them
    are drawn for every bucket whatever its count, so the work (and time) of
    a bucket does not depend on how many IDs it holds.
    """
    n = len(records)
    drawn = np.frombuffer(secrets.token_bytes(POINT_BYTES * cap), dtype=np.uint8)
    pad = drawn.reshape(cap, POINT_BYTES).copy()
    pad[:, -1] &= 0x7F  # little-endian u: the top bit is ignored by X25519 anyway
    points = np.concatenate([np.ascontiguousarray(records["point"]).reshape(n, POINT_BYTES),
                             pad[:cap - n]])
    return points[perm].tobytes()


def _key_order(records: npt.NDArray[np.void], idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``idx`` sorted by the records' order keys."""
    keys = np.ascontiguousarray(records["key"][idx]).view(np.dtype((np.void, 32))).ravel()
    return idx[np.argsort(keys, kind="stable")]


class BucketClient:
    """Client side (the guest) of the bucketed PSI with one or more servers.

    Per bucket: :meth:`request` (the same to every server), :meth:`on_response`
    (from every server), :meth:`finish` (the results to send and this
    party's aligned rows of the bucket). Buckets go in order; up to
    :data:`WINDOW` may be requested before the oldest is finished.

    Parameters
    ----------
    spilled : SpilledSet
        This party's IDs, split with the plans' bucket bits.
    plans : dict
        Each server's :class:`BucketPlan` (all with the same bits and client cap).
    pool : Blinder
        This party's secret scalar and workers.
    """

    def __init__(self, spilled: SpilledSet, plans: dict[str, BucketPlan],
                 pool: Blinder) -> None:
        if not plans or len({(p.bits, p.client_cap) for p in plans.values()}) != 1:
            raise LocalProtocolError("All servers' bucket plans must share bits and client cap.")
        self._spilled, self._plans, self._pool = spilled, dict(plans), pool
        first = next(iter(plans.values()))
        self.buckets, self._cap = first.buckets, first.client_cap
        if spilled.bits != first.bits or spilled.cap != self._cap:
            raise LocalProtocolError("The spilled set was split for another plan.")
        self._next_request = 0
        self._next_response = dict.fromkeys(plans, 0)
        self._pending: dict[int, tuple[npt.NDArray[np.void], npt.NDArray[np.int64]]] = {}
        self._matches: dict[int, dict[str, npt.NDArray[np.int64]]] = {}

    def request(self) -> PsiBucketRequest:
        """The next bucket's blinded points ``B_a(H(a))``, padded and shuffled."""
        b = self._next_request
        if b >= self.buckets:
            raise LocalProtocolError("Every PSI bucket was already requested.")
        records = self._spilled.load(b)
        perm = secret_permutation(self._cap)
        blinded = self._pool.blind(_padded_points(records, self._cap, perm))
        self._pending[b], self._matches[b] = (records, perm), {}
        self._next_request += 1
        return PsiBucketRequest(b, blinded)

    def on_response(self, server: str, response: PsiBucketResponse) -> None:
        """Match ``B_b(B_a(H(a)))`` against ``B_a(B_b(H(b)))`` for the server's next bucket.

        The bucket number and both point counts are checked before anything
        is blinded.
        """
        if server not in self._plans:
            raise LocalProtocolError(f"{server!r} is not a PSI server of this run.")
        b = self._next_response[server]
        if b not in self._pending:
            raise RemoteProtocolError(
                f"PSI bucket response from {server} for bucket {response.bucket}, which was not "
                "requested yet.")
        if response.bucket != b:
            raise RemoteProtocolError(
                f"PSI bucket response from {server} is for bucket {response.bucket}; expected {b}.")
        plan = self._plans[server]
        double = split_points(response.double_blinded, peer=server, what="PSI bucket response",
                              expected=self._cap)
        if len(set(double)) != len(double):
            # distinct points blinded by one scalar stay distinct: repeats mean a server that
            # would make several of this party's IDs match one of its own
            raise RemoteProtocolError(
                f"PSI bucket response from {server} repeats double-blinded points.")
        split_points(response.blinded, peer=server, what="PSI bucket server set",
                     expected=plan.server_cap)
        theirs = self._pool.blind(response.blinded, peer=server)
        position_of = {theirs[i:i + POINT_BYTES]: j
                       for j, i in enumerate(range(0, len(theirs), POINT_BYTES))}
        if len(position_of) != plan.server_cap:
            raise RemoteProtocolError(f"PSI bucket {b} from {server} contains repeated points.")
        records, perm = self._pending[b]
        n = len(records)
        matches = np.full(n, -1, dtype=np.int64)
        for k, item in enumerate(perm.tolist()):
            if item < n:
                j = position_of.get(double[k])
                if j is not None:
                    matches[item] = j
        self._matches[b][server] = matches
        self._next_response[server] = b + 1

    def finish(self, allowed: npt.NDArray[np.bool_] | None = None
               ) -> tuple[dict[str, PsiBucketResult], npt.NDArray[np.int64]]:
        """Close the oldest open bucket once every server answered it.

        Parameters
        ----------
        allowed : bool array, optional
            Per record of the bucket (in file order), whether it may be kept
            (the client's other, single-message servers' matches).

        Returns
        -------
        results : dict
            The :class:`PsiBucketResult` to send to each server: positions in
            its shuffled bucket list of the IDs every server holds, in order-key order.
        rows : int64 array
            This party's rows of those IDs, in the same order.
        """
        if not self._pending:
            raise LocalProtocolError("No PSI bucket is open.")
        b = min(self._pending)
        missing = [s for s in self._plans if s not in self._matches[b]]
        if missing:
            raise LocalProtocolError(f"No PSI response for bucket {b} yet from {', '.join(missing)}.")
        records, _ = self._pending.pop(b)
        matches = self._matches.pop(b)
        keep = np.ones(len(records), dtype=bool) if allowed is None else allowed.copy()
        for m in matches.values():
            keep &= m >= 0
        idx = _key_order(records, np.flatnonzero(keep))
        results = {s: PsiBucketResult(b, np.ascontiguousarray(m[idx], dtype=np.int64))
                   for s, m in matches.items()}
        return results, np.asarray(records["row"][idx], dtype=np.int64)


class BucketServer:
    """Server side (a host) of the bucketed PSI.

    Per bucket: :meth:`on_request` (returns the response), later
    :meth:`on_result` (returns this party's aligned rows of that bucket).
    Requests and results must come in bucket order.
    """

    def __init__(self, spilled: SpilledSet, plan: BucketPlan, pool: Blinder,
                 client: str = "guest") -> None:
        if spilled.bits != plan.bits or spilled.cap != plan.server_cap:
            raise LocalProtocolError("The spilled set was split for another plan.")
        self._spilled, self._plan, self._pool, self._client = spilled, plan, pool, client
        self._next_request = 0
        self._next_result = 0
        self._pending: dict[int, tuple[npt.NDArray[np.void], npt.NDArray[np.int64]]] = {}

    def on_request(self, request: PsiBucketRequest) -> PsiBucketResponse:
        """Blind the client's bucket again and send this party's own, padded and shuffled.

        The bucket number and the point count are checked before any point is blinded.
        """
        b = self._next_request
        if request.bucket != b or b >= self._plan.buckets:
            raise RemoteProtocolError(
                f"PSI bucket request from {self._client} is for bucket {request.bucket}; "
                f"expected {b} of {self._plan.buckets}.")
        split_points(request.blinded, peer=self._client, what="PSI bucket request",
                     expected=self._plan.client_cap)
        double = self._pool.blind(request.blinded, peer=self._client)
        records = self._spilled.load(b)
        perm = secret_permutation(self._plan.server_cap)
        mine = self._pool.blind(_padded_points(records, self._plan.server_cap, perm))
        self._pending[b] = (records, perm)
        self._next_request += 1
        return PsiBucketResponse(b, double, mine)

    def on_result(self, result: PsiBucketResult) -> npt.NDArray[np.int64]:
        """Map the client's positions back to this party's rows, in order-key order.

        Refuses positions that are out of range, repeated, or point at a
        padding entry (an honest client never matches one).
        """
        b = self._next_result
        if result.bucket != b or b not in self._pending:
            raise RemoteProtocolError(
                f"PSI bucket result from {self._client} is for bucket {result.bucket}; "
                f"expected {b}.")
        pos = np.asarray(result.positions)
        if pos.ndim != 1 or pos.dtype != np.int64:
            raise RemoteProtocolError(
                f"PSI bucket result from {self._client} is not a 1-D int64 array.")
        records, perm = self._pending.pop(b)
        cap = self._plan.server_cap
        if pos.size > min(cap, self._plan.client_cap):
            raise RemoteProtocolError(
                f"PSI bucket result from {self._client} has {pos.size} positions; at most "
                f"{min(cap, self._plan.client_cap)} are possible.")
        if pos.size and (pos.min() < 0 or pos.max() >= cap):
            raise RemoteProtocolError(
                f"PSI bucket result from {self._client} has positions out of range.")
        if len(np.unique(pos)) != pos.size:
            raise RemoteProtocolError(f"PSI bucket result from {self._client} repeats positions.")
        items = perm[pos]
        if np.any(items >= len(records)):
            raise RemoteProtocolError(
                f"PSI bucket result from {self._client} keeps a padding entry, which no honest "
                "client can match.")
        self._next_result += 1
        return np.asarray(records["row"][_key_order(records, items)], dtype=np.int64)
