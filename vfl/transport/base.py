"""Shared envelope handling for every transport.

A transport only moves bytes (``_deliver`` / ``_next_bytes``); this base class
wraps every message in an :class:`~vfl.codec.Envelope`, encodes it with the one
wire codec, and on receipt checks the job id, the sender, the receiver, the
per-link sequence number and the expected message type, so a stray, replayed
or reordered message is refused with an error that names the peer.

It also bounds what a peer can make this party hold (``protocols/specs/wire.md``,
"Limits"): every incoming link has an :class:`Inbox` with a message size limit
(the smaller of the configured ceiling and the job-derived limit a driver sets
with :meth:`Endpoint.limit_message_size`), a bound on queued messages and a
bound on queued bytes; a sender that finds the inbox full waits (back-pressure)
and is then refused.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from vfl.codec import Envelope, decode_envelope, encode_envelope, message, type_name_of
from vfl.exceptions import (
    ConfigError,
    CryptoError,
    DataError,
    LocalProtocolError,
    NotFittedError,
    OutputExistsError,
    PeerTimeoutError,
    ProtocolError,
    RemoteProtocolError,
    TransportError,
    VFLError,
)
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.procs import Terminated

__all__ = ["ABORT_CODES", "Abort", "Endpoint", "Inbox", "LINK_GRACE", "MIN_MESSAGE_LIMIT", "RELAYED_CODE",
           "TrafficStats", "abort_code", "envelope_limit", "job_mismatch_text"]

M = TypeVar("M")

#: The only reasons an :class:`Abort` may carry. Fixed and value-free: the
#: detailed error stays in the aborting party's own log.
ABORT_CODES = ("protocol", "crypto", "config", "data", "transport", "timeout", "internal",
               "interrupted")

#: Default seconds a dropped link to a peer is re-dialled before the job stops
#: (``[job] link_grace_seconds``; see :class:`vfl.transport.grpc.GrpcEndpoint`).
LINK_GRACE = 30.0

#: The code of a party that stopped because a peer stopped or a link failed.
RELAYED_CODE = "transport"

#: A per-peer message limit never goes below this, so control messages
#: (aborts, announcements) always fit.
MIN_MESSAGE_LIMIT = 1 << 16

_ENVELOPE_HEADER = 4096


def envelope_limit(payload_bytes: int, items: int = 0) -> int:
    """Message size limit for an envelope carrying ``payload_bytes`` of payload.

    The limit a transport enforces counts the whole encoded envelope: the
    header (job id, party names, type name), field names and msgpack's own
    framing. This adds a fixed 4 KiB for the header and field names plus 9
    bytes per list element (the largest msgpack header of one ``bytes``,
    ``int`` or ``float`` item), so a driver can pass e.g.
    ``envelope_limit(batch * ciphertext_width, items=batch)``.

    Parameters
    ----------
    payload_bytes : int
        Bytes of payload (ciphertexts, array data) the largest message may carry.
    items : int
        Number of separately framed list elements in it (0 if the payload is
        one ``bytes`` value or one array).

    Returns
    -------
    int
        The limit to pass to :meth:`Endpoint.limit_message_size`.
    """
    if payload_bytes < 0 or items < 0:
        raise ValueError("payload_bytes and items must be non-negative")
    return payload_bytes + 9 * items + _ENVELOPE_HEADER


def job_mismatch_text(party: str, job: str, peer: str, peer_job: str) -> str:
    """The error text when ``peer`` turns out to run job ``peer_job``, not this ``job``.

    The peer's job id is shortened and quoted (``repr``), so a long or odd id
    cannot flood or forge a log line.
    """
    theirs = peer_job if len(peer_job) <= 80 else peer_job[:80] + "..."
    return (f"{peer} is running job {theirs!r}, {party} runs job {job!r}: the job id does not "
            f"match, so {party} stopped. Fix: give every party's TOML the same [job] id and "
            "start each party again.")


def abort_code(exc: BaseException) -> str:
    """The value-free :data:`ABORT_CODES` entry that describes ``exc``.

    Only the class of the error is used, never its text.
    """
    classes: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
        (PeerTimeoutError, "timeout"),
        (TransportError, "transport"),
        (ProtocolError, "protocol"),
        (CryptoError, "crypto"),
        ((ConfigError, OutputExistsError), "config"),
        (DataError, "data"),
        (NotFittedError, "config"),
        ((KeyboardInterrupt, SystemExit, Terminated), "interrupted"),
    )
    for cls, code in classes:
        if isinstance(exc, cls):
            return code
    return "internal"


@message("control.Abort/2")
@dataclass(frozen=True, slots=True)
class Abort:
    """Any party → its peers: this party stopped the job because of an error.

    ``code`` is one of :data:`ABORT_CODES` (see :func:`abort_code`); nothing
    else about the error is sent. A receiver refuses any other code.
    """

    code: str


class Inbox:
    """Messages from one peer waiting to be received, with bounds and back-pressure.

    Holds at most ``max_messages`` messages and at most ``2 × message_limit``
    bytes (queued plus reserved by messages still arriving); one message always
    fits an empty inbox. :meth:`reserve` waits for room (back-pressure) and
    reports failure when its time is up; :meth:`get` hands out messages in
    order, then raises the terminal error set by :meth:`fail` or :meth:`close`.

    Parameters
    ----------
    owner : str
        The receiving party.
    peer : str
        The sending party.
    max_messages : int
        Most messages queued (or arriving) at once.
    ceiling : int
        Configured ceiling on one message's size in bytes.
    """

    def __init__(self, owner: str, peer: str, max_messages: int, ceiling: int) -> None:
        self.owner = owner
        self.peer = peer
        self.max_messages = max_messages
        self.ceiling = ceiling
        self.message_limit = max(MIN_MESSAGE_LIMIT, ceiling)
        self._items: deque[bytes] = deque()
        self._slots = 0          # queued messages + messages still arriving
        self._used = 0           # queued bytes + bytes reserved by arriving messages
        self.peak_bytes = 0
        self.peak_messages = 0
        self._error: tuple[type[VFLError], str] | None = None
        self._owner_gone = False
        self._cond = threading.Condition()

    # ------------------------------------------------------------ limits
    def set_limit(self, max_bytes: int) -> None:
        """Set the job-derived message limit (effective: min with the ceiling)."""
        with self._cond:
            self.message_limit = max(MIN_MESSAGE_LIMIT, min(self.ceiling, max_bytes))
            self._cond.notify_all()

    @property
    def max_bytes(self) -> int:
        """Most bytes held at once: twice the message limit."""
        return 2 * self.message_limit

    @property
    def queued_messages(self) -> int:
        """Messages waiting to be received."""
        with self._cond:
            return len(self._items)

    @property
    def held_bytes(self) -> int:
        """Bytes queued or reserved right now."""
        with self._cond:
            return self._used

    @property
    def failed(self) -> bool:
        """Whether the link is closed (peer gone or refused)."""
        with self._cond:
            return self._error is not None

    # ------------------------------------------------------------ sending side
    def _fits(self, nbytes: int) -> bool:
        if self._slots >= self.max_messages:
            return False
        return self._used == 0 or self._used + nbytes <= self.max_bytes

    def reserve(self, nbytes: int, timeout: float | None,
                active: Callable[[], bool] | None = None) -> bool:
        """Wait until a message of up to ``nbytes`` fits; reserve room for it.

        Returns False if it did not fit within ``timeout`` seconds (None: no
        limit), if ``active()`` turned False while waiting, if the inbox was
        closed, or if the receiving party is gone and the inbox is full.
        """
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._fits(nbytes):
                if self._error is not None or self._owner_gone:
                    return False
                if active is not None and not active():
                    return False
                wait = 0.5 if end is None else min(0.5, end - time.monotonic())
                if wait <= 0:
                    return False
                self._cond.wait(wait)
            if self._error is not None:
                return False
            self._slots += 1
            self._used += nbytes
            self.peak_bytes = max(self.peak_bytes, self._used)
            self.peak_messages = max(self.peak_messages, self._slots)
            return True

    def commit(self, data: bytes, reserved: int) -> None:
        """Queue a message for which :meth:`reserve` made room."""
        with self._cond:
            self._used += len(data) - reserved
            self._items.append(data)
            self._cond.notify_all()

    def cancel(self, reserved: int) -> None:
        """Give back room reserved for a message that did not arrive."""
        with self._cond:
            self._slots -= 1
            self._used -= reserved
            self._cond.notify_all()

    def put(self, data: bytes, timeout: float | None = None) -> None:
        """Reserve room for ``data`` and queue it (in-process senders).

        Raises
        ------
        TransportError
            If the inbox stays full for ``timeout`` seconds, or its owner is gone.
        """
        if not self.reserve(len(data), timeout):
            if self.failed:
                raise TransportError(
                    f"{self.owner} no longer accepts messages from {self.peer} (the link was "
                    "closed or refused earlier)."
                )
            if self._owner_gone:
                raise TransportError(
                    f"{self.owner} stopped; its inbox from {self.peer} is full, so the message "
                    "cannot be delivered."
                )
            raise TransportError(self.full_message(timeout))
        self.commit(data, len(data))

    def full_message(self, waited: float | None) -> str:
        """The error text for a sender refused because the inbox stayed full."""
        return (f"{self.owner} did not take messages from {self.peer} for "
                f"{waited or 0:.0f} s: its inbox holds the most it buffers "
                f"({self.max_messages} messages, {self.max_bytes} bytes); refused (back-pressure).")

    # ------------------------------------------------------------ receiving side
    def get(self, timeout: float) -> bytes:
        """The next message; ``queue.Empty`` after ``timeout`` seconds.

        Raises the terminal error once the queued messages are drained.
        """
        end = time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._error is not None:
                    cls, text = self._error
                    raise cls(text)
                left = end - time.monotonic()
                if left <= 0:
                    raise queue.Empty
                self._cond.wait(left)
            data = self._items.popleft()
            self._slots -= 1
            self._used -= len(data)
            self._cond.notify_all()
            return data

    def fail(self, cls: type[VFLError], text: str) -> None:
        """Close the link: after the queued messages, :meth:`get` raises ``cls(text)``.

        The first failure wins; later senders are refused.
        """
        with self._cond:
            if self._error is None:
                self._error = (cls, text)
            self._cond.notify_all()

    def close(self) -> None:
        """The sending party is gone."""
        self.fail(TransportError,
                  f"{self.peer} stopped before sending the message {self.owner} expected.")

    def abandon(self) -> None:
        """The receiving party is gone: a sender waiting for room stops waiting."""
        with self._cond:
            self._owner_gone = True
            self._cond.notify_all()


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
    """Base class of a party's channel: envelopes, sequence numbers, checks, bounds.

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
    policy : SecurityPolicy
        This party's limits: ``max_message_bytes`` (ceiling on one message from
        a peer) and ``max_inbox_messages`` (messages queued per peer).
    """

    def __init__(self, party: str, peers: list[str], job: str, default_timeout: float = 600.0,
                 *, policy: SecurityPolicy = DEFAULT_POLICY):
        self.party = party
        self.peers = list(peers)
        self.job = job
        self.default_timeout = default_timeout
        self.policy = policy
        self.max_message_bytes = policy.max_message_bytes
        self.stats = TrafficStats()
        self._send_seq = dict.fromkeys(self.peers, 0)
        self._recv_seq = dict.fromkeys(self.peers, 0)
        self._lock = threading.Lock()
        self.transcript: list[tuple[str, str, bytes]] | None = None
        self._aborting = False
        #: peers that told this party they stopped, with their value-free reason code, in the
        #: order their aborts arrived (see _reported_cause)
        self._aborted_by: dict[str, str] = {}
        self._inbox: dict[str, Inbox] = {
            p: Inbox(party, p, policy.max_inbox_messages, policy.max_message_bytes)
            for p in self.peers
        }

    def record_transcript(self) -> list[tuple[str, str, bytes]]:
        """Start keeping every (direction, peer, bytes) this endpoint handles (for audits)."""
        self.transcript = []
        return self.transcript

    def _check_peer(self, peer: str) -> None:
        if peer not in self._send_seq:
            raise LocalProtocolError(
                f"{self.party} has no channel to {peer!r}; known peers: {', '.join(self.peers)}."
            )

    def limit_message_size(self, peer: str, max_bytes: int) -> None:
        """Accept messages of at most ``max_bytes`` from ``peer`` from now on.

        Drivers call this once the job fixes the largest message a peer may
        send (see :func:`envelope_limit`). The effective limit is the smaller
        of this and the configured ceiling ``max_message_bytes``, and never
        below :data:`MIN_MESSAGE_LIMIT`; the latest call wins.
        """
        self._check_peer(peer)
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
            raise LocalProtocolError(
                f"The message size limit for {peer} must be a positive int. Got {max_bytes!r}."
            )
        self._inbox[peer].set_limit(max_bytes)

    def message_limit(self, peer: str) -> int:
        """The largest message, in encoded bytes, this party accepts from ``peer`` now."""
        self._check_peer(peer)
        return self._inbox[peer].message_limit

    def send(self, to: str, message: object) -> None:
        """Encode and deliver ``message`` to peer ``to``."""
        self._check_peer(to)
        with self._lock:
            seq = self._send_seq[to]
            self._send_seq[to] = seq + 1
        data = encode_envelope(Envelope(self.job, seq, self.party, to, message))
        kind = type_name_of(message)
        with self._lock:  # aborts go to every peer at once (see _broadcast)
            self.stats.sent_bytes[to] = self.stats.sent_bytes.get(to, 0) + len(data)
            self.stats.sent_messages[to] = self.stats.sent_messages.get(to, 0) + 1
            self.stats.sent_by_type[kind] = self.stats.sent_by_type.get(kind, 0) + len(data)
        if self.transcript is not None:
            self.transcript.append(("sent", to, data))
        self._deliver(to, seq, data)

    def recv(self, frm: str, expected: type[M] | tuple[type[M], ...],
             timeout: float | None = None) -> M:
        """Receive the next message from ``frm``, which must be an ``expected`` (or one of them)."""
        self._check_peer(frm)
        data = self._next_bytes(frm, self.default_timeout if timeout is None else timeout)
        self.stats.recv_bytes[frm] = self.stats.recv_bytes.get(frm, 0) + len(data)
        if self.transcript is not None:
            self.transcript.append(("received", frm, data))
        limit = self._inbox[frm].message_limit
        if len(data) > limit:
            raise RemoteProtocolError(
                f"Message from {frm} is {len(data)} bytes; {self.party} accepts at most {limit} "
                f"bytes from {frm} in this job."
            )
        env = decode_envelope(data, peer=frm)
        if env.job != self.job:
            raise RemoteProtocolError(job_mismatch_text(self.party, self.job, frm, env.job))
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
            if env.body.code not in ABORT_CODES:
                raise RemoteProtocolError(
                    f"{frm} sent an abort with an unknown reason code; expected one of "
                    f"{', '.join(ABORT_CODES)}."
                )
            self._aborted_by.setdefault(frm, env.body.code)
            first, code = self._reported_cause() or (frm, env.body.code)
            also = "" if first == frm else f" ({frm} stopped too)"
            raise TransportError(
                f"{first} stopped the job ({code} error); see its log for details{also}."
            )
        if not isinstance(env.body, expected):
            wanted = (" or ".join(type_name_of(t) for t in expected) if isinstance(expected, tuple)
                      else type_name_of(expected))
            raise RemoteProtocolError(
                f"Received {type_name_of(env.body)} from {frm}; expected {wanted}."
            )
        return env.body

    def _stop_cause(self) -> tuple[str, str] | None:
        """The peer (and its code) whose abort explains why the job stopped, or None.

        A party that stops because a peer stopped (or a link failed) sends
        ``transport``; so the first abort with another code is the cause, and
        a ``transport`` abort only if no other arrived.
        """
        items = list(self._aborted_by.items())  # a copy: transports may add from other threads
        for peer, code in items:
            if code != RELAYED_CODE:
                return peer, code
        return items[0] if items else None

    def _reported_cause(self) -> tuple[str, str] | None:
        """The cause an error reports now (transports may wait briefly for a better one)."""
        return self._stop_cause()

    def abort(self, code: str) -> None:
        """Tell every peer, best effort, that this party stopped; send only ``code``.

        ``code`` is one of :data:`ABORT_CODES` (use :func:`abort_code` on the
        exception); anything else is sent as ``"internal"``, so free text (which
        may hold data values) never leaves this party.
        """
        self._aborting = True
        self._broadcast(Abort(code if code in ABORT_CODES else "internal"))

    def _broadcast(self, body: Abort) -> None:
        """Send ``body`` to every peer, best effort (a transport may do it in parallel)."""
        for peer in self.peers:
            self._send_quietly(peer, body)

    def _send_quietly(self, peer: str, body: Abort) -> None:
        try:
            self.send(peer, body)
        except VFLError:
            pass

    # transports implement these two
    def _deliver(self, to: str, seq: int, data: bytes) -> None:
        raise NotImplementedError

    def _next_bytes(self, frm: str, timeout: float) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release transport resources (no-op by default)."""
