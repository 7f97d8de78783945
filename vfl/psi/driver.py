"""The I/O loops that run the PSI roles over any :class:`~vfl.channel.Channel`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from vfl.channel import Channel
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.psi.client import PsiClient
from vfl.psi.ecdh import POINT_BYTES
from vfl.psi.messages import PsiHello, PsiRequest, PsiResponse, PsiResult
from vfl.psi.server import PsiServer

__all__ = ["run_psi_guest", "run_psi_host", "canonical_order"]

#: Room for the envelope (job id, party names, type and field names) around the points.
ENVELOPE_MARGIN = 1 << 16


def canonical_order(ids: Sequence[str], rows: np.ndarray) -> np.ndarray:
    """Reorder aligned rows by ``SHA-256("vfl/psi/v1/order" || id)``.

    Both parties know the IDs of the intersection (that is PSI's output), so
    this order reveals nothing new; it is pseudo-random (unrelated to either
    party's row order) and the same in every run, so training with a fixed
    seed is reproducible across runs and transports.
    """
    keys = [hashlib.sha256(b"vfl/psi/v1/order\x00" + ids[int(r)].encode()).digest() for r in rows]
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


def run_psi_guest(channel: Channel, ids: Sequence[str], hosts: Sequence[str], *,
                  policy: SecurityPolicy = DEFAULT_POLICY) -> np.ndarray:
    """Run PSI as the client against every host; returns this party's aligned rows.

    Every host's set size is checked against ``policy.max_psi_set_size``
    before this party blinds or sends any point.
    """
    client = PsiClient(ids, hosts, policy=policy)
    hello = client.hello()
    for host in hosts:
        channel.send(host, hello)
    for host in hosts:
        client.on_hello(host, channel.recv(host, PsiHello))
    for host in hosts:
        # The response carries one point per guest ID and one per announced host ID.
        _limit(channel, host, len(ids) + client.server_size(host), policy)
    request = client.request()
    for host in hosts:
        channel.send(host, request)
    for host in hosts:
        client.on_response(host, channel.recv(host, PsiResponse))
        _unlimit(channel, host, policy)  # the host sends nothing more until it has our result
    for host, result in client.finish().items():
        channel.send(host, result)
    return canonical_order(ids, client.rows)


def run_psi_host(channel: Channel, ids: Sequence[str], guest: str, *,
                 policy: SecurityPolicy = DEFAULT_POLICY) -> np.ndarray:
    """Run PSI as a server for ``guest``; returns this party's aligned rows.

    The guest's set size is checked against ``policy.max_psi_set_size``
    before any of its points is received or blinded.
    """
    server = PsiServer(ids, guest, policy=policy)
    announced = channel.recv(guest, PsiHello)
    hello = server.on_hello(announced)  # refuses a size above this party's limit
    _limit(channel, guest, announced.set_size, policy)  # before the guest may send its request
    channel.send(guest, hello)
    request = channel.recv(guest, PsiRequest)
    _unlimit(channel, guest, policy)  # the guest sends nothing more until it has our response
    channel.send(guest, server.on_request(request))
    return canonical_order(ids, server.on_result(channel.recv(guest, PsiResult)))
