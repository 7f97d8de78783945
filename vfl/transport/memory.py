"""In-memory transport: parties in one process (threads), bytes over bounded inboxes.

Every message still goes through the wire codec, so what the in-memory run
exchanges is byte for byte what the networked transport would carry, and the
same limits apply: a message above the receiver's limit for its sender is
refused (the sender gets a :class:`~vfl.exceptions.TransportError`, the
receiver's next ``recv`` from that sender a
:class:`~vfl.exceptions.RemoteProtocolError`), and a sender that finds the
receiver's inbox full waits until the receiver catches up (back-pressure).
"""

from __future__ import annotations

import queue
import threading
import uuid

from vfl.exceptions import PeerTimeoutError, RemoteProtocolError, TransportError
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.transport.base import Endpoint, Inbox

__all__ = ["InMemoryNetwork", "InMemoryEndpoint"]

_ABORT_WAIT = 1.0


class InMemoryEndpoint(Endpoint):
    """One party's endpoint on an :class:`InMemoryNetwork`."""

    def __init__(self, network: InMemoryNetwork, party: str, default_timeout: float):
        super().__init__(party, [p for p in network.parties if p != party], network.job,
                         default_timeout, policy=network.policy)
        self._network = network
        # the receiving side of each link is shared with the network (senders put into it)
        self._inbox = {p: network._queues[(p, party)] for p in self.peers}

    def _deliver(self, to: str, seq: int, data: bytes) -> None:
        inbox = self._network._queues[(self.party, to)]
        limit = inbox.message_limit
        if len(data) > limit:
            inbox.fail(RemoteProtocolError,
                       f"{self.party} sent a message of {len(data)} bytes; {to} accepts at most "
                       f"{limit} bytes from {self.party} in this job, so it refused the message.")
            raise TransportError(
                f"{to} refused a message of {len(data)} bytes from {self.party}: its limit "
                f"for {self.party} is {limit} bytes."
            )
        inbox.put(data, timeout=_ABORT_WAIT if self._aborting else self._network.timeout)

    def _next_bytes(self, frm: str, timeout: float) -> bytes:
        try:
            return self._inbox[frm].get(timeout)
        except queue.Empty:
            raise PeerTimeoutError(
                f"{self.party} waited {timeout:.0f} s for a message from {frm}; none arrived."
            ) from None

    def close(self) -> None:
        """Tell every peer that this party is gone (their pending recv fails)."""
        for peer in self.peers:
            self._network._queues[(self.party, peer)].close()
            self._network._queues[(peer, self.party)].abandon()


class InMemoryNetwork:
    """A fully connected set of in-memory links between named parties.

    Parameters
    ----------
    parties : list of str
        Party names, e.g. ``["guest", "host", "arbiter"]``.
    job : str, optional
        Job id shared by all endpoints (random by default).
    timeout : float
        Default seconds a ``recv`` waits, and the longest a sender waits for
        room in a full inbox.
    policy : SecurityPolicy
        Limits every party applies: ``max_message_bytes`` (ceiling on one
        message) and ``max_inbox_messages`` (messages queued per link).
    max_message_bytes, max_inbox_messages : int, optional
        Override the policy's values (validated like the policy).

    Examples
    --------
    >>> net = InMemoryNetwork(["guest", "host"])
    >>> guest, host = net.endpoint("guest"), net.endpoint("host")
    """

    def __init__(self, parties: list[str], job: str | None = None, timeout: float = 600.0, *,
                 policy: SecurityPolicy = DEFAULT_POLICY, max_message_bytes: int | None = None,
                 max_inbox_messages: int | None = None):
        if len(set(parties)) != len(parties):
            raise ValueError("party names must be unique")
        self.parties = list(parties)
        self.job = job or uuid.uuid4().hex
        self.timeout = timeout
        overrides = {k: v for k, v in (("max_message_bytes", max_message_bytes),
                                       ("max_inbox_messages", max_inbox_messages))
                     if v is not None}
        self.policy = policy.replace(**overrides) if overrides else policy
        self._queues: dict[tuple[str, str], Inbox] = {
            (a, b): Inbox(b, a, self.policy.max_inbox_messages, self.policy.max_message_bytes)
            for a in parties for b in parties if a != b
        }
        self._endpoints: dict[str, InMemoryEndpoint] = {}
        self._lock = threading.Lock()

    def endpoint(self, party: str) -> InMemoryEndpoint:
        """The endpoint of ``party`` (created once)."""
        if party not in self.parties:
            raise ValueError(f"unknown party {party!r}")
        with self._lock:
            if party not in self._endpoints:
                self._endpoints[party] = InMemoryEndpoint(self, party, self.timeout)
            return self._endpoints[party]
