"""The I/O loops that run the PSI roles over any :class:`~vfl.channel.Channel`."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vfl.channel import Channel
from vfl.exceptions import RemoteProtocolError
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.psi._bounds import checked_set_size
from vfl.psi.buckets import (
    BUCKET_ROWS,
    WINDOW,
    BucketClient,
    BucketPlan,
    BucketServer,
    bucket_plan,
    check_bucket_count,
    check_padded_total,
    check_plan,
)
from vfl.psi.cache import DIGEST_BYTES, ReuseOffer
from vfl.psi.client import PsiClient
from vfl.psi.ecdh import POINT_BYTES, Blinder, BlindingPool, order_key
from vfl.psi.messages import (
    PsiBucketRequest,
    PsiBucketResponse,
    PsiBucketResult,
    PsiBuckets,
    PsiHello,
    PsiRequest,
    PsiResponse,
    PsiResult,
    PsiReuse,
)
from vfl.psi.server import PsiServer
from vfl.psi.spill import IdSource, SpilledSet

__all__ = ["run_psi_guest", "run_psi_host", "canonical_order", "PsiProgress"]

#: ``progress(phase, done, total)``: phase "hash" counts IDs hashed into buckets, "buckets"
#: buckets exchanged (bucketed PSI only; sets of one bucket report nothing)
PsiProgress = Callable[[str, int, int], None]

#: Room for the envelope (job id, party names, type and field names) around the points.
ENVELOPE_MARGIN = 1 << 16


def canonical_order(ids: Sequence[str], rows: np.ndarray) -> np.ndarray:
    """Reorder aligned rows by ``SHA-256("vfl/psi/v1/order" || id)``.

    Both parties know the IDs of the intersection (that is PSI's output), so
    this order reveals nothing new; it is pseudo-random (unrelated to either
    party's row order) and the same in every run, so training with a fixed
    seed is reproducible across runs and transports.
    """
    keys = [order_key(ids[int(r)]) for r in rows]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return np.asarray(rows, dtype=np.int64)[order]


def _limit(channel: Channel, peer: str, n_points: int, policy: SecurityPolicy) -> None:
    """Cap the next messages from ``peer`` at what ``n_points`` points need, if the channel can.

    The byte limit only spares memory: the roles count the points of every
    message exactly, whatever the transport does.
    """
    limit = getattr(channel, "limit_message_size", None)
    if limit is not None:
        limit(peer, min(POINT_BYTES * n_points + ENVELOPE_MARGIN, policy.max_message_bytes))


def _unlimit(channel: Channel, peer: str, policy: SecurityPolicy) -> None:
    limit = getattr(channel, "limit_message_size", None)
    if limit is not None:
        limit(peer, policy.max_message_bytes)


@contextlib.contextmanager
def _blinder(given: Blinder | None, workers: int | None) -> Iterator[Blinder]:
    """The caller's blinder (left open), or a local pool for this run (closed after it)."""
    if given is not None:
        yield given
        return
    with BlindingPool(workers) as pool:
        yield pool


def _source(ids: Sequence[str] | IdSource) -> IdSource:
    return ids if isinstance(ids, IdSource) else IdSource.from_sequence(ids)


def run_psi_guest(channel: Channel, ids: Sequence[str] | IdSource, hosts: Sequence[str], *,
                  policy: SecurityPolicy = DEFAULT_POLICY, bucket_rows: int = BUCKET_ROWS,
                  workers: int | None = None, workdir: str | Path | None = None,
                  progress: PsiProgress | None = None,
                  blinder: Blinder | None = None,
                  reuse: ReuseOffer | None = None) -> npt.NDArray[np.int64]:
    """Run PSI as the client against every host; returns this party's aligned rows.

    ``reuse``: the intersection this party kept from the interrupted run of
    this job (:mod:`vfl.psi.cache`); it is offered to every host, and taken
    (``reuse.used``) only if every host echoes it: then no point is exchanged.

    Every host's set size is checked against ``policy.max_psi_set_size``
    before this party blinds or sends any point. When this party's set or a
    host's is larger than ``bucket_rows`` (both parties must use the same
    value; the default is a protocol constant), every host runs the bucketed
    protocol, with the bucket bits of the largest pair: this party's IDs are
    streamed from ``ids`` (a list, or an :class:`~vfl.psi.spill.IdSource`
    reading a file in chunks) into bucket files under ``workdir`` and never
    held in memory at once. Its blinding runs on ``blinder`` if given (e.g.
    the party's Dask cluster, :class:`vfl.crypto.dask_engine.DaskBlinder`; the
    caller closes it), else on ``workers`` local processes.
    """
    source = _source(ids)
    hello = PsiHello(source.count, reuse.digest if reuse is not None else b"")
    for host in hosts:
        channel.send(host, hello)
    hellos = {host: channel.recv(host, PsiHello) for host in hosts}
    sizes = {host: check_bucket_count(checked_set_size(hellos[host], peer=host, policy=policy),
                                      bucket_rows, peer=host)
             for host in hosts}
    if reuse is not None and _every_host_echoes(hellos, reuse.digest):
        for host in hosts:
            channel.send(host, PsiReuse(reuse.digest))
        reuse.used = True
        return reuse.rows
    for host, h in hellos.items():
        if h.reuse and reuse is None:
            raise RemoteProtocolError(f"PsiHello from {host} echoes an intersection digest the "
                                      "guest did not offer.")
    pair = [bucket_plan(source.count, n, bucket_rows) for n in sizes.values()]
    if all(p is None for p in pair):
        return _guest_single(channel, source.to_list(), hosts, sizes, policy)
    bits = max(p.bits for p in pair if p is not None)
    plans: dict[str, BucketPlan] = {}
    for host, n in sizes.items():
        plan = bucket_plan(source.count, n, bucket_rows, bits=bits)
        assert plan is not None
        # each of the host's padded slots is a point this party blinds and answers for
        check_padded_total(plan.buckets * plan.server_cap, policy.max_psi_set_size, peer=host)
        plans[host] = plan
    for host in hosts:
        # every later message of a host is one bucket's response (or an abort)
        _limit(channel, host, plans[host].client_cap + plans[host].server_cap, policy)
        channel.send(host, plans[host].message())
    try:
        return _guest_bucketed(channel, source, plans, workers, workdir, progress, blinder)
    finally:
        for host in hosts:
            _unlimit(channel, host, policy)


def _every_host_echoes(hellos: dict[str, PsiHello], digest: bytes) -> bool:
    """Whether every host echoed ``digest`` (a host may withhold it; another value is refused)."""
    for host, h in hellos.items():
        if h.reuse and not hmac.compare_digest(h.reuse, digest):
            raise RemoteProtocolError(f"PsiHello from {host} echoes another intersection digest "
                                      "than the guest offered.")
    return all(h.reuse for h in hellos.values())


def _guest_single(channel: Channel, ids: list[str], hosts: Sequence[str], sizes: dict[str, int],
                  policy: SecurityPolicy) -> npt.NDArray[np.int64]:
    """The single-message exchange with every host (hellos already traded)."""
    client = PsiClient(ids, hosts, policy=policy)
    for host in hosts:
        client.on_hello(host, PsiHello(sizes[host]))
        # The response carries one point per guest ID and one per announced host ID.
        _limit(channel, host, len(ids) + sizes[host], policy)
    request = client.request()
    for host in hosts:
        channel.send(host, request)
    for host in hosts:
        client.on_response(host, channel.recv(host, PsiResponse))
        _unlimit(channel, host, policy)  # the host sends nothing more until it has our result
    for host, result in client.finish().items():
        channel.send(host, result)
    return canonical_order(ids, client.rows)


def _guest_bucketed(channel: Channel, source: IdSource, plans: dict[str, BucketPlan],
                    workers: int | None, workdir: str | Path | None,
                    progress: PsiProgress | None,
                    blinder: Blinder | None) -> npt.NDArray[np.int64]:
    plan = next(iter(plans.values()))
    hosts = list(plans)
    parts: list[npt.NDArray[np.int64]] = []
    with _blinder(blinder, workers) as pool, \
            SpilledSet(source, plan.bits, pool, cap=plan.client_cap, workdir=workdir,
                       progress=None if progress is None else
                       (lambda done, total: progress("hash", done, total))) as spilled:
        client = BucketClient(spilled, plans, pool)
        for _ in range(min(WINDOW, plan.buckets)):
            request = client.request()
            for host in hosts:
                channel.send(host, request)
        for b in range(plan.buckets):
            for host in hosts:
                client.on_response(host, channel.recv(host, PsiBucketResponse))
            results, kept = client.finish()
            for host, result in results.items():
                channel.send(host, result)
            parts.append(kept)
            if b + WINDOW < plan.buckets:
                request = client.request()
                for host in hosts:
                    channel.send(host, request)
            if progress is not None:
                progress("buckets", b + 1, plan.buckets)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def run_psi_host(channel: Channel, ids: Sequence[str] | IdSource, guest: str, *,
                 policy: SecurityPolicy = DEFAULT_POLICY, bucket_rows: int = BUCKET_ROWS,
                 workers: int | None = None, workdir: str | Path | None = None,
                 progress: PsiProgress | None = None,
                 blinder: Blinder | None = None,
                 reuse: ReuseOffer | None = None) -> npt.NDArray[np.int64]:
    """Run PSI as a server for ``guest``; returns this party's aligned rows.

    ``reuse``: the intersection this host kept from the interrupted run of
    this job, its IDs unchanged since (:mod:`vfl.psi.cache`). The host
    echoes its digest if the guest offers the same one, and then takes it
    (``reuse.used``) if the guest answers ``PsiReuse``.

    The guest's set size is checked against ``policy.max_psi_set_size``
    before any of its points is received or blinded; in the bucketed
    protocol, so are its bucket plan and padded total
    (:func:`~vfl.psi.buckets.check_plan`). A host whose own pair fits one
    bucket accepts either protocol (the guest buckets every host when another
    pair needs it).
    """
    source = _source(ids)
    announced = channel.recv(guest, PsiHello)
    n_guest = check_bucket_count(checked_set_size(announced, peer=guest, policy=policy),
                                 bucket_rows, peer=guest)
    if len(announced.reuse) not in (0, DIGEST_BYTES):
        raise RemoteProtocolError(f"PsiHello from {guest} offers an intersection digest of "
                                  f"{len(announced.reuse)} bytes; expected {DIGEST_BYTES}.")
    echo = (reuse is not None and bool(announced.reuse)
            and hmac.compare_digest(announced.reuse, reuse.digest))
    own = bucket_plan(n_guest, source.count, bucket_rows)
    # before the guest may send anything more: a single-message request (only if our pair fits
    # one bucket) or the small bucket plan
    _limit(channel, guest, n_guest if own is None else 0, policy)
    channel.send(guest, PsiHello(source.count, announced.reuse if echo else b""))
    kinds: tuple[type[object], ...] = (PsiRequest, PsiBuckets) if own is None else (PsiBuckets,)
    first: object = channel.recv(guest, (*kinds, PsiReuse) if echo else kinds)
    if isinstance(first, PsiReuse):  # only accepted after this host echoed the digest
        assert reuse is not None
        if not hmac.compare_digest(first.digest, reuse.digest):
            raise RemoteProtocolError(f"PsiReuse from {guest} names another intersection than "
                                      "it offered.")
        _unlimit(channel, guest, policy)
        reuse.used = True
        return reuse.rows
    if isinstance(first, PsiRequest):
        own_ids = source.to_list()
        server = PsiServer(own_ids, guest, policy=policy)
        server.on_hello(announced)
        _unlimit(channel, guest, policy)  # the guest sends nothing more until it has our response
        channel.send(guest, server.on_request(first))
        return canonical_order(own_ids, server.on_result(channel.recv(guest, PsiResult)))
    assert isinstance(first, PsiBuckets)
    plan = check_plan(first, n_guest, source.count, peer=guest, bucket_rows=bucket_rows,
                      max_points=policy.max_psi_set_size)
    _limit(channel, guest, plan.client_cap, policy)  # every later message: one bucket's worth
    parts: list[npt.NDArray[np.int64]] = []
    try:
        with _blinder(blinder, workers) as pool, \
                SpilledSet(source, plan.bits, pool, cap=plan.server_cap, workdir=workdir,
                           progress=None if progress is None else
                           (lambda done, total: progress("hash", done, total))) as spilled:
            role = BucketServer(spilled, plan, pool, guest)
            for b in range(plan.buckets):
                channel.send(guest, role.on_request(channel.recv(guest, PsiBucketRequest)))
                if b >= WINDOW - 1:
                    parts.append(role.on_result(channel.recv(guest, PsiBucketResult)))
                if progress is not None:
                    progress("buckets", b + 1, plan.buckets)
            for _ in range(len(parts), plan.buckets):
                parts.append(role.on_result(channel.recv(guest, PsiBucketResult)))
    finally:
        _unlimit(channel, guest, policy)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
