"""The I/O loops that run the PSI roles over any :class:`~vfl.channel.Channel`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vfl.channel import Channel
from vfl.psi.client import PsiClient
from vfl.psi.messages import PsiRequest, PsiResponse, PsiResult
from vfl.psi.server import PsiServer

__all__ = ["run_psi_guest", "run_psi_host"]


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
    return client.rows


def run_psi_host(channel: Channel, ids: Sequence[str], guest: str) -> np.ndarray:
    """Run PSI as a server for ``guest``; returns this party's aligned rows."""
    server = PsiServer(ids, guest)
    channel.send(guest, server.on_request(channel.recv(guest, PsiRequest)))
    return server.on_result(channel.recv(guest, PsiResult))
