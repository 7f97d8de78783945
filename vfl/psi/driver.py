"""The I/O loops that run the PSI roles over any :class:`~vfl.channel.Channel`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from vfl.channel import Channel
from vfl.psi.client import PsiClient
from vfl.psi.messages import PsiRequest, PsiResponse, PsiResult
from vfl.psi.server import PsiServer

__all__ = ["run_psi_guest", "run_psi_host", "canonical_order"]


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


def run_psi_guest(channel: Channel, ids: Sequence[str], hosts: Sequence[str]) -> np.ndarray:
    """Run PSI as the client against every host; returns this party's aligned rows."""
    client = PsiClient(ids, hosts)
    request = client.request()
    for host in hosts:
        channel.send(host, request)
    for host in hosts:
        client.on_response(host, channel.recv(host, PsiResponse))
    for host, result in client.finish().items():
        channel.send(host, result)
    return canonical_order(ids, client.rows)


def run_psi_host(channel: Channel, ids: Sequence[str], guest: str) -> np.ndarray:
    """Run PSI as a server for ``guest``; returns this party's aligned rows."""
    server = PsiServer(ids, guest)
    channel.send(guest, server.on_request(channel.recv(guest, PsiRequest)))
    return canonical_order(ids, server.on_result(channel.recv(guest, PsiResult)))
