"""Shared envelope handling for every transport.

A transport only moves bytes (``_deliver`` / ``_next_bytes``); this base class
wraps every message in an :class:`~vfl.codec.Envelope`, encodes it with the one
wire codec, and on receipt checks the job id, the sender, the receiver, the
per-link sequence number and the expected message type, so a stray, replayed
or reordered message is refused with an error that names the peer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TypeVar

from vfl.codec import Envelope, decode_envelope, encode_envelope, message, type_name_of
from vfl.exceptions import LocalProtocolError, RemoteProtocolError, TransportError, VFLError

__all__ = ["Abort", "Endpoint", "TrafficStats"]

M = TypeVar("M")


@message("control.Abort/1")
@dataclass(frozen=True, slots=True)
class Abort:
    """Any party → its peers: this party stopped the job because of an error.

    ``reason`` is the one-line error message (vfl's messages never contain
    data values, keys or IDs).
    """

    reason: str


@dataclass
class TrafficStats:
    """Bytes and messages a party sent and received, per peer."""

    sent_bytes: dict[str, int] = field(default_factory=dict)
    recv_bytes: dict[str, int] = field(default_factory=dict)
    sent_messages: dict[str, int] = field(default_factory=dict)
    sent_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def total_sent(self) -> int:
        """All bytes this party sent."""
        return sum(self.sent_bytes.values())

    @property
    def total_received(self) -> int:
        """All bytes this party received."""
        return sum(self.recv_bytes.values())


class Endpoint:
    """Base class of a party's channel: envelopes, sequence numbers, checks.

    Parameters
    ----------
    party : str
        This party's name.
    peers : iterable of str
        The only parties this endpoint talks to.
    job : str
        Job id; messages of another job are refused.
    default_timeout : float
        Seconds :meth:`recv` waits when no timeout is given.
    """

    def __init__(self, party: str, peers: list[str], job: str, default_timeout: float = 600.0):
        self.party = party
        self.peers = list(peers)
        self.job = job
        self.default_timeout = default_timeout
        self.stats = TrafficStats()
        self._send_seq = dict.fromkeys(self.peers, 0)
        self._recv_seq = dict.fromkeys(self.peers, 0)
        self._lock = threading.Lock()
        self.transcript: list[tuple[str, str, bytes]] | None = None
        self._aborting = False

    def record_transcript(self) -> list[tuple[str, str, bytes]]:
        """Start keeping every (direction, peer, bytes) this endpoint handles (for audits)."""
        self.transcript = []
        return self.transcript

    def _check_peer(self, peer: str) -> None:
        if peer not in self._send_seq:
            raise LocalProtocolError(
                f"{self.party} has no channel to {peer!r}; known peers: {', '.join(self.peers)}."
            )

    def send(self, to: str, message: object) -> None:
        """Encode and deliver ``message`` to peer ``to``."""
        self._check_peer(to)
        with self._lock:
            seq = self._send_seq[to]
            self._send_seq[to] = seq + 1
        data = encode_envelope(Envelope(self.job, seq, self.party, to, message))
        self.stats.sent_bytes[to] = self.stats.sent_bytes.get(to, 0) + len(data)
        self.stats.sent_messages[to] = self.stats.sent_messages.get(to, 0) + 1
        kind = type_name_of(message)
        self.stats.sent_by_type[kind] = self.stats.sent_by_type.get(kind, 0) + len(data)
        if self.transcript is not None:
            self.transcript.append(("sent", to, data))
        self._deliver(to, seq, data)

    def recv(self, frm: str, expected: type[M], timeout: float | None = None) -> M:
        """Receive the next message from ``frm``, which must be an ``expected``."""
        self._check_peer(frm)
        data = self._next_bytes(frm, self.default_timeout if timeout is None else timeout)
        self.stats.recv_bytes[frm] = self.stats.recv_bytes.get(frm, 0) + len(data)
        if self.transcript is not None:
            self.transcript.append(("received", frm, data))
        env = decode_envelope(data, peer=frm)
        if env.job != self.job:
            raise RemoteProtocolError(
                f"Message from {frm} belongs to job {env.job!r}, not this job {self.job!r}."
            )
        if env.sender != frm or env.receiver != self.party:
            raise RemoteProtocolError(
                f"Message on the link from {frm} claims to be from {env.sender!r} "
                f"to {env.receiver!r}."
            )
        want = self._recv_seq[frm]
        if env.seq != want:
            raise RemoteProtocolError(
                f"Message from {frm} has sequence number {env.seq}; expected {want} "
                "(replayed, lost or reordered message)."
            )
        self._recv_seq[frm] = want + 1
        if isinstance(env.body, Abort):
            raise TransportError(f"{frm} stopped the job: {env.body.reason[:500]}")
        if not isinstance(env.body, expected):
            raise RemoteProtocolError(
                f"Received {type_name_of(env.body)} from {frm}; expected {type_name_of(expected)}."
            )
        return env.body

    def abort(self, reason: str) -> None:
        """Tell every peer, best effort, that this party stopped because of ``reason``."""
        self._aborting = True
        for peer in self.peers:
            try:
                self.send(peer, Abort(reason))
            except VFLError:
                pass

    # transports implement these two
    def _deliver(self, to: str, seq: int, data: bytes) -> None:
        raise NotImplementedError

    def _next_bytes(self, frm: str, timeout: float) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release transport resources (no-op by default)."""
