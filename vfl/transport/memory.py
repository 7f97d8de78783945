"""In-memory transport: parties in one process (threads), bytes over queues.

Every message still goes through the wire codec, so what the in-memory run
exchanges is byte for byte what the networked transport would carry.
"""

from __future__ import annotations

import queue
import uuid

from vfl.exceptions import PeerTimeoutError, TransportError
from vfl.transport.base import Endpoint

__all__ = ["InMemoryNetwork", "InMemoryEndpoint"]

_CLOSED = b""


class InMemoryEndpoint(Endpoint):
    """One party's endpoint on an :class:`InMemoryNetwork`."""

    def __init__(self, network: InMemoryNetwork, party: str, default_timeout: float):
        super().__init__(party, [p for p in network.parties if p != party], network.job,
                         default_timeout)
        self._network = network

    def _deliver(self, to: str, seq: int, data: bytes) -> None:
        self._network._queues[(self.party, to)].put(data)

    def _next_bytes(self, frm: str, timeout: float) -> bytes:
        try:
            data = self._network._queues[(frm, self.party)].get(timeout=timeout)
        except queue.Empty:
            raise PeerTimeoutError(
                f"{self.party} waited {timeout:.0f} s for a message from {frm}; none arrived."
            ) from None
        if data is _CLOSED:
            raise TransportError(f"{frm} stopped before sending the message {self.party} expected.")
        return data

    def close(self) -> None:
        """Tell every peer that this party is gone (their pending recv fails)."""
        for peer in self.peers:
            self._network._queues[(self.party, peer)].put(_CLOSED)


class InMemoryNetwork:
    """A fully connected set of in-memory links between named parties.

    Parameters
    ----------
    parties : list of str
        Party names, e.g. ``["guest", "host", "arbiter"]``.
    job : str, optional
        Job id shared by all endpoints (random by default).
    timeout : float
        Default seconds a ``recv`` waits.

    Examples
    --------
    >>> net = InMemoryNetwork(["guest", "host"])
    >>> guest, host = net.endpoint("guest"), net.endpoint("host")
    """

    def __init__(self, parties: list[str], job: str | None = None, timeout: float = 600.0):
        if len(set(parties)) != len(parties):
            raise ValueError("party names must be unique")
        self.parties = list(parties)
        self.job = job or uuid.uuid4().hex
        self.timeout = timeout
        self._queues: dict[tuple[str, str], queue.Queue[bytes]] = {
            (a, b): queue.Queue() for a in parties for b in parties if a != b
        }
        self._endpoints: dict[str, InMemoryEndpoint] = {}

    def endpoint(self, party: str) -> InMemoryEndpoint:
        """The endpoint of ``party`` (created once)."""
        if party not in self.parties:
            raise ValueError(f"unknown party {party!r}")
        if party not in self._endpoints:
            self._endpoints[party] = InMemoryEndpoint(self, party, self.timeout)
        return self._endpoints[party]
