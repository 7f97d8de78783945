"""gRPC transport with mutual TLS (``protocols/proto/vfl/v1/transport.proto``).

Every party runs one ``Party`` server on its listen address. Sending a message
calls ``Deliver`` on the receiver's server, the envelope split into 1 MiB
frames; the call returns once the receiver has queued the whole envelope, so
messages on a link arrive in order and a finished sender can exit safely.

Security: both sides present certificates issued by the configured CA. The
client checks the server's certificate for the peer's configured name; the
server takes the caller's identity from the verified certificate's common
name (never from a message field), refuses callers that are not configured
peers, and refuses frames whose ``sender``, ``receiver`` or ``job`` do not
match. A peer's exact certificate can be pinned: inbound, the caller's
certificate must equal it; outbound, the pinned certificate is the *only*
trust anchor of the channel to that peer, so the TLS stack refuses any other
server certificate on every (re)connection, before a byte of a message is
sent (``protocols/specs/wire.md``, "Certificate pinning").

Bounds: a stream is refused (``RESOURCE_EXHAUSTED``) as soon as its declared
frame count or the bytes received so far pass the limit for its sender, before
more is buffered; each sender has a bounded inbox, and a stream that finds it
full waits for room (back-pressure) until its deadline, then is refused; the
log of refused callers keeps the latest entries only.

Liveness: while waiting for a message, the receiver pings the peer every few
seconds; a peer that stops answering after it was reached once is reported
as gone (with its name and address) once it has been silent for the link
grace, instead of waiting for the full timeout. A peer that never came up is
reported after the connect timeout, saying whether anything listens at its
address at all.

Transient faults: a link to a peer reached before that drops (connection
reset, refused, stalled past a call's deadline) is re-dialled and the message
in flight sent again, for up to ``link_grace`` seconds from the failure; only
a longer outage stops the job. Every message keeps its sequence number, and
the receiver remembers the digests of the last messages it queued per peer,
so a message that did arrive but whose reply was lost is acknowledged again
and not queued twice (``protocols/specs/wire.md``, "Transient faults").

Failing fast: a peer's ``Abort`` is noted as it arrives, and the first peer
that stopped is the cause every later send or receive reports, at once. A
peer found to run another job id (from its ``Ping`` reply at first contact,
or from the job of its ``Ping`` or frames, but only once its certificate
name is verified) stops this party at once, naming both job ids. An abort
goes to every peer in parallel; a peer never reached yet is given a few
seconds to come up and receive it, so a party that fails during start-up
still tells peers that are starting.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import queue
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from vfl.codec import decode_envelope, type_name_of
from vfl.exceptions import (
    ConfigError,
    PeerTimeoutError,
    RemoteProtocolError,
    TransportError,
    VFLError,
)
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.transport._proto import transport_pb2 as pb
from vfl.transport._proto import transport_pb2_grpc as pb_grpc
from vfl.transport.base import (
    ABORT_CODES,
    LINK_GRACE,
    RELAYED_CODE,
    Abort,
    Endpoint,
    job_mismatch_text,
)

__all__ = ["CHUNK", "GrpcEndpoint", "LINK_GRACE", "LinkEvent", "PeerAddress", "TlsFiles",
           "REJECTED_LOG_SIZE"]

CHUNK = 1 << 20
_MAX_FRAME = CHUNK + (64 << 10)
_PING_EVERY = 2.0
_PING_FAILURES = 3
#: Refused callers remembered (oldest dropped first).
REJECTED_LOG_SIZE = 256
_ABORT_DEADLINE = 3.0
#: how long an abort waits for a peer never reached yet to come up (it may still be starting)
_ABORT_WAIT_FOR_PEER = 5.0
#: how long an error waits for the real cause when only relayed aborts arrived (see
#: Endpoint._stop_cause)
_CAUSE_GRACE = 1.0
#: first and longest pause (ms) between attempts to connect to a peer that is not up
_RECONNECT_MS = (500, 2000)
#: how often a send that waits for its peer looks whether that peer has stopped
_ABORT_POLL = 0.25
#: messages up to this size are peeked at on arrival for an Abort (an Abort is ~100 bytes)
_ABORT_PEEK_BYTES = 512
_ABORT_TYPE = type_name_of(Abort(ABORT_CODES[0])).encode()
#: gRPC status codes of a call that failed because the link failed, not because the peer
#: refused it: such a call is sent again while the link grace lasts
_LINK_FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
#: per peer, the digests of this many latest queued messages are kept to spot a resent one
_DELIVERED_KEPT = 8
#: first and longest pause (s) before a message is sent again over a link that came back
_RETRY_PAUSE, _RETRY_PAUSE_MAX = 0.5, 4.0


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of this party's TLS identity and the trusted CA."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """Read the three files (errors name the file)."""
        out = []
        for what, path in (("CA certificate", self.ca), ("certificate", self.cert),
                           ("private key", self.key)):
            try:
                out.append(Path(path).read_bytes())
            except OSError as exc:
                raise TransportError(f"Cannot read the {what} {path}: {exc.strerror}.") from None
        return out[0], out[1], out[2]


@dataclass(frozen=True)
class LinkEvent:
    """A link to ``peer`` dropped (``restored`` False) or came back after ``seconds``."""

    peer: str
    restored: bool
    seconds: float

    def text(self, party: str, grace: float) -> str:
        """One line for a log or a terminal."""
        if self.restored:
            return (f"{party}: the link to {self.peer} is back after {self.seconds:.1f} s; "
                    "the job goes on")
        return (f"{party}: the link to {self.peer} dropped; re-dialling for up to {grace:.0f} s "
                "([job] link_grace_seconds) before the job stops")


@dataclass(frozen=True)
class PeerAddress:
    """Where a peer listens, and optionally its exact certificate (pinning)."""

    name: str
    address: str
    pinned_cert: bytes | None = None


def _pinned_leaf(peer: str, pem: bytes, ca_pem: bytes) -> x509.Certificate:
    """The pinned certificate of ``peer`` (first in ``pem``), checked against our CA.

    With the pin as the only trust anchor of the outbound channel, the CA is
    not consulted for that peer; so the pin must itself be a currently valid
    certificate for ``peer`` issued by a CA we trust, or pinning would widen
    trust instead of narrowing it.
    """
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError):
        raise ConfigError(f"The pinned certificate for {peer} is not a PEM certificate.") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != peer:
        raise ConfigError(f"The pinned certificate for {peer} is not issued to {peer!r} "
                          "(its common name differs).")
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError(f"The pinned certificate for {peer} is not valid now (expired or "
                          "not yet valid).")
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        cas = []
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return cert
        except (InvalidSignature, ValueError, TypeError):
            continue
    raise ConfigError(f"The pinned certificate for {peer} was not issued by the configured CA.")


def _der(pem: bytes) -> bytes | None:
    try:
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    except ValueError:
        return None


def _presented_certificate(address: str, server_name: str, tls: TlsFiles,
                           timeout: float = 2.0) -> bytes | None:
    """DER of the certificate the server at ``address`` presents (diagnostics only).

    Used when the pinned channel does not come up, to tell "presents another
    certificate" from "not running". Presents our client certificate, sends no
    application data, trusts nothing it sees. None if no handshake completed.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        with socket.create_connection((host, int(port)), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=server_name) as conn:
            return conn.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None


def _accepts_connections(address: str, timeout: float = 1.0) -> bool:
    """Whether anything accepts TCP connections at ``address`` (diagnostics only).

    Tells "nothing listens there" (the peer is not running, or stopped before
    it listened) from "something listens but TLS fails". Sends no data.
    """
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class _Servicer(pb_grpc.PartyServicer):
    def __init__(self, endpoint: GrpcEndpoint) -> None:
        self.ep = endpoint

    def _refuse(self, context: grpc.ServicerContext, caller: str, code: grpc.StatusCode,
                reason: str, detail: str) -> NoReturn:
        self.ep.rejected.append((caller[:64], reason))
        context.abort(code, detail)
        raise AssertionError("unreachable: abort raises")

    def _caller(self, context: grpc.ServicerContext) -> str:
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        caller = names[0].decode(errors="replace") if names else ""
        peer = self.ep.peer_info.get(caller)
        if peer is None:
            self._refuse(context, caller or "<no certificate name>", grpc.StatusCode.PERMISSION_DENIED,
                         "not a configured peer",
                         f"{self.ep.party} does not accept messages from {caller[:64] or 'unknown'!r}")
        pinned = self.ep._pinned_der.get(caller)
        if pinned is not None:
            pem = (auth.get("x509_pem_cert") or [b""])[0]
            if _der(pem) != pinned:
                self._refuse(context, caller, grpc.StatusCode.PERMISSION_DENIED,
                             "certificate differs from the pinned one",
                             f"certificate of {caller!r} is not the one {self.ep.party} pinned")
        return caller

    def Deliver(self, request_iterator: Iterator[pb.Frame],  # noqa: N802 - gRPC name
                context: grpc.ServicerContext) -> pb.DeliverReply:
        ep = self.ep
        caller = self._caller(context)
        inbox = ep._inbox[caller]
        exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
        if inbox.failed:
            self._refuse(context, caller, grpc.StatusCode.FAILED_PRECONDITION, "link closed",
                         f"{ep.party} no longer accepts messages from {caller} in this job")
        limit = inbox.message_limit
        parts: list[bytes] = []
        size = reserved = 0
        resend = False  # a copy of a queued message (see GrpcEndpoint._claim_resend)
        seq = total = None

        def too_large(what: str) -> NoReturn:
            text = (f"{caller} sent a message {what}; {ep.party} accepts at most {limit} bytes "
                    f"from {caller} in this job, so it refused the message.")
            inbox.fail(RemoteProtocolError, text)
            self._refuse(context, caller, exhausted, f"message above the {limit}-byte limit",
                         f"{ep.party} accepts messages of at most {limit} bytes from {caller}; "
                         f"refused one {what}")

        try:
            for frame in request_iterator:
                if frame.sender != caller or frame.receiver != ep.party:
                    self._refuse(context, caller, grpc.StatusCode.PERMISSION_DENIED,
                                 "frame header does not match the session",
                                 "frame sender/receiver/job does not match the authenticated "
                                 "session")
                if frame.job != ep.job:
                    # caller is the verified certificate name of a configured peer, so
                    # only an authenticated peer can stop this party this way
                    ep._note_job_mismatch(caller, frame.job)
                    self._refuse(context, caller, grpc.StatusCode.PERMISSION_DENIED,
                                 "job id differs",
                                 f"frame job does not match: {ep.party} runs another job "
                                 f"than {caller}")
                if seq is None or total is None:
                    seq, total = frame.seq, frame.total
                    if total < 1:
                        self._refuse(context, caller, grpc.StatusCode.INVALID_ARGUMENT,
                                     "no frame count", "a message must declare its frame count")
                    if (total - 1) * CHUNK + 1 > limit:
                        too_large(f"declaring {total} frames of {CHUNK} bytes")
                    want = min(total * CHUNK, limit)
                    if ep._claim_resend(caller, seq):
                        # a copy of a message already queued (its reply was lost): it takes
                        # no room in the inbox, whose owner may be behind; one at a time
                        resend = True
                    else:
                        wait = ep.inbox_wait
                        remaining = context.time_remaining()
                        if remaining is not None:
                            wait = max(0.0, min(wait, remaining - 1.0))
                        if not inbox.reserve(want, wait, context.is_active):
                            self._refuse(context, caller, exhausted, "inbox full",
                                         inbox.full_message(wait))
                        reserved = want
                if frame.seq != seq or frame.total != total or frame.index != len(parts) \
                        or len(parts) >= total:
                    self._refuse(context, caller, grpc.StatusCode.INVALID_ARGUMENT,
                                 "frames out of order", "frames out of order")
                n = len(frame.data)
                if not 0 < n <= CHUNK or (frame.index < total - 1 and n != CHUNK):
                    self._refuse(context, caller, grpc.StatusCode.INVALID_ARGUMENT, "bad frame size",
                                 f"every frame but the last must hold exactly {CHUNK} bytes, "
                                 "the last 1 to that many")
                size += n
                if size > limit:
                    too_large(f"of more than {limit} bytes")
                parts.append(frame.data)
            if total is None or len(parts) != total:
                self._refuse(context, caller, grpc.StatusCode.INVALID_ARGUMENT,
                             "incomplete message", "incomplete message")
            data = b"".join(parts)
            parts.clear()
            if resend and seq is not None:
                if not ep._same_as_queued(caller, seq, data):
                    text = (f"{caller} sent a message under sequence number {seq}, which "
                            f"{ep.party} had already received with other content (a replayed "
                            "or forged message); refused.")
                    inbox.fail(RemoteProtocolError, text)
                    self._refuse(context, caller, grpc.StatusCode.INVALID_ARGUMENT,
                                 "other content under a used sequence number", text)
                ep._contacted.add(caller)
                return pb.DeliverReply(bytes=len(data))
            queued = ep._queue_once(caller, seq, data, reserved)
            reserved = 0  # committed or given back by _queue_once
            if queued and len(data) <= _ABORT_PEEK_BYTES:
                ep._note_abort(caller, data)
        finally:
            if reserved:
                inbox.cancel(reserved)
            if resend and seq is not None:
                ep._release_resend(caller)
        ep._contacted.add(caller)
        return pb.DeliverReply(bytes=len(data))

    def Ping(self, request: pb.PingRequest, context: grpc.ServicerContext  # noqa: N802
             ) -> pb.PingReply:
        caller = self._caller(context)
        self.ep._contacted.add(caller)
        if request.job and request.sender == caller and request.job != self.ep.job:
            self.ep._note_job_mismatch(caller, request.job)  # authenticated: see _caller
        return pb.PingReply(party=self.ep.party, job=self.ep.job)


class GrpcEndpoint(Endpoint):
    """A party's channel over gRPC with mutual TLS.

    Parameters
    ----------
    party : str
        This party's name; must be the common name of its certificate.
    listen : str
        ``host:port`` to serve on.
    peers : list of PeerAddress
    job : str
    tls : TlsFiles
    connect_timeout : float
        Seconds to wait for a peer to come up (parties may start in any order).
    default_timeout : float
        Seconds a ``recv`` waits for the next message.
    policy : SecurityPolicy
        This party's limits (``max_message_bytes``, ``max_inbox_messages``).
    max_message_bytes, max_inbox_messages : int, optional
        Override the policy's values (validated like the policy).
    inbox_wait : float
        Longest a peer's stream waits for room in a full inbox (also bounded by
        the stream's deadline) before it is refused.
    link_grace : float
        Seconds a dropped or silent link to a peer reached before is re-dialled
        (the message in flight sent again) before the job stops.
    on_link_event : callable, optional
        Called with a :class:`LinkEvent` when a link drops and when it is back.

    Attributes
    ----------
    rejected : collections.deque of (str, str)
        The latest :data:`REJECTED_LOG_SIZE` refusals: (caller, reason).
    link_events : list of LinkEvent
        Every drop and recovery of a link, in order.
    """

    def __init__(self, party: str, listen: str, peers: list[PeerAddress], job: str,
                 tls: TlsFiles, *, connect_timeout: float = 60.0,
                 default_timeout: float = 600.0, policy: SecurityPolicy = DEFAULT_POLICY,
                 max_message_bytes: int | None = None, max_inbox_messages: int | None = None,
                 inbox_wait: float = 30.0, link_grace: float = LINK_GRACE,
                 on_link_event: Callable[[LinkEvent], None] | None = None) -> None:
        overrides = {k: v for k, v in (("max_message_bytes", max_message_bytes),
                                       ("max_inbox_messages", max_inbox_messages))
                     if v is not None}
        if overrides:
            policy = policy.replace(**overrides)
        super().__init__(party, [p.name for p in peers], job, default_timeout, policy=policy)
        self.listen = listen
        self.peer_info = {p.name: p for p in peers}
        self.connect_timeout = connect_timeout
        self.inbox_wait = inbox_wait
        if not 0 <= link_grace <= 7 * 86400:
            raise ConfigError(f"link_grace must be 0 to 604800 seconds, not {link_grace!r}.")
        self.link_grace = float(link_grace)
        self.link_events: list[LinkEvent] = []
        self._on_link_event = on_link_event
        #: per peer: since when (monotonic) its link has failed, while it has
        self._down_since: dict[str, float] = {}
        #: per peer: (seq, SHA-256) of the latest messages queued from it (see _queue_once)
        self._delivered: dict[str, OrderedDict[int, bytes]] = {p.name: OrderedDict()
                                                               for p in peers}
        self._delivered_lock = threading.Lock()
        #: peers with a copy of a queued message streaming now (see _claim_resend)
        self._resending: set[str] = set()
        self.rejected: deque[tuple[str, str]] = deque(maxlen=REJECTED_LOG_SIZE)
        self._contacted: set[str] = set()
        self._ready: set[str] = set()
        #: peers this party waited for in vain (an abort does not wait for them again)
        self._gave_up: set[str] = set()
        #: whether an abort waits for peers never reached (only if this party is the first
        #: to stop: otherwise the party that stopped first tells them, and waits for them)
        self._abort_waits = True
        #: a cause that ends the job for this party (a peer of another job): every send
        #: and receive raises it at once; the first one found wins
        self._failure: tuple[type[VFLError], str] | None = None
        self._tls = tls
        ca, cert, key = tls.read()
        pins = {p.name: _pinned_leaf(p.name, p.pinned_cert, ca)
                for p in peers if p.pinned_cert is not None}
        self._pinned_der = {name: c.public_bytes(serialization.Encoding.DER)
                            for name, c in pins.items()}
        server_creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                                   require_client_auth=True)
        options = [("grpc.max_receive_message_length", _MAX_FRAME),
                   ("grpc.max_send_message_length", _MAX_FRAME)]
        # exclusive: gRPC shares a port between processes by default (SO_REUSEPORT), so a
        # party started twice would listen twice and split the job's messages
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                   options=options + [("grpc.so_reuseport", 0)])
        pb_grpc.add_PartyServicer_to_server(_Servicer(self), self._server)
        try:
            port = self._server.add_secure_port(listen, server_creds)
        except RuntimeError:
            port = 0
        if port == 0:
            raise TransportError(
                f"{party} cannot listen on {listen}: address in use (is {party} already "
                "running?) or not available on this machine."
            )
        self.port = port
        self._server.start()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, pb_grpc.PartyStub] = {}
        for p in peers:
            # a pinned peer's certificate is the only trust anchor of its channel
            roots = pins[p.name].public_bytes(serialization.Encoding.PEM) if p.name in pins else ca
            creds = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key,
                                                 certificate_chain=cert)
            ch = grpc.secure_channel(p.address, creds, options=options + [
                ("grpc.ssl_target_name_override", p.name),
                ("grpc.use_local_subchannel_pool", 1),
                # retry a peer that is not up yet every 2 s at most (gRPC's default grows to
                # 2 min), so a late peer is found soon, and so is one an abort waits for
                ("grpc.initial_reconnect_backoff_ms", _RECONNECT_MS[0]),
                ("grpc.max_reconnect_backoff_ms", _RECONNECT_MS[1])])
            self._channels[p.name] = ch
            self._stubs[p.name] = pb_grpc.PartyStub(ch)
        self._closed = threading.Event()
        self._in_flight: set[grpc.Future] = set()  # Deliver calls under way

    # ------------------------------------------------------------------ send
    def _frames(self, to: str, seq: int, data: bytes) -> Iterator[pb.Frame]:
        total = max(1, -(-len(data) // CHUNK))
        for i in range(total):
            yield pb.Frame(job=self.job, sender=self.party, receiver=to, seq=seq, index=i,
                           total=total, data=data[i * CHUNK:(i + 1) * CHUNK])

    def _note_abort(self, frm: str, data: bytes) -> None:
        """Remember that ``frm`` stopped, if ``data`` (already queued) is its Abort."""
        if _ABORT_TYPE not in data:  # most small messages: no second decode
            return
        try:
            env = decode_envelope(data, peer=frm, max_bytes=_ABORT_PEEK_BYTES)
        except VFLError:
            return  # the receiving code reports a malformed message in order
        if (isinstance(env.body, Abort) and env.body.code in ABORT_CODES and env.job == self.job
                and env.sender == frm and env.receiver == self.party):
            self._aborted_by[frm] = env.body.code

    def _note_job_mismatch(self, peer: str, peer_job: str) -> None:
        """``peer`` (authenticated) runs job ``peer_job``: this job cannot go on."""
        if self._failure is None:  # a TransportError, as every refusal by the transport
            self._failure = (TransportError,
                             job_mismatch_text(self.party, self.job, peer, peer_job))

    def _reported_cause(self) -> tuple[str, str] | None:
        """The cause to report; if only relayed (``transport``) aborts are known, first wait
        up to :data:`_CAUSE_GRACE` s for the abort of the party that stopped first, which
        may still be on its way (its connection to this party retried while it started)."""
        cause = self._stop_cause()
        end = time.monotonic() + _CAUSE_GRACE
        while cause is not None and cause[1] == RELAYED_CODE and time.monotonic() < end:
            time.sleep(0.05)
            cause = self._stop_cause()
        return cause

    def _peer_stopped(self, to: str) -> VFLError | None:
        """Why a send to ``to`` must not wait: this job ended (first cause), or None."""
        if self._failure is not None:
            cls, text = self._failure
            return cls(text)
        if not self._aborted_by:
            return None
        peer, code = self._reported_cause() or ("?", "internal")
        other = "" if peer == to else f" to {to}"
        return TransportError(f"{peer} stopped the job ({code} error) before {self.party} could "
                              f"deliver its next message{other}; see {peer}'s log for the cause.")

    def _waiting_stopped(self, frm: str) -> VFLError | None:
        """Why a receive from ``frm`` must not wait any longer, or None.

        ``frm``'s own abort is left to arrive in order, after its queued messages.
        """
        if self._failure is not None:
            cls, text = self._failure
            return cls(text)
        if not set(self._aborted_by) - {frm}:
            return None
        peer, code = self._reported_cause() or ("?", "internal")
        if peer == frm:
            return None
        return TransportError(f"{peer} stopped the job ({code} error) while {self.party} waited "
                              f"for a message from {frm}; see {peer}'s log for the cause.")

    def _check_job(self, name: str) -> None:
        """Ask ``name`` which job it runs (its ``Ping`` reply); note a mismatch.

        The reply comes over the channel whose server certificate was verified
        for ``name``. No answer proves nothing here; other checks report that.
        """
        try:
            reply = self._stubs[name].Ping(pb.PingRequest(job=self.job, sender=self.party),
                                           timeout=2.0)
        except grpc.RpcError:
            return
        if reply.job and reply.job != self.job:
            self._note_job_mismatch(name, reply.job)

    # ------------------------------------------------------------------ links
    def _queue_once(self, caller: str, seq: int | None, data: bytes, reserved: int) -> bool:
        """Queue a whole message from ``caller`` unless it is one already queued.

        A sender whose link failed after the message arrived but before the
        reply did sends it again with the same sequence number; that copy is
        acknowledged and dropped. Only a byte-identical copy of one of the
        latest messages counts: anything else is queued, and a replayed or
        reordered message is then refused by :meth:`Endpoint.recv`.
        Returns whether ``data`` was queued.
        """
        digest = hashlib.sha256(data).digest()
        inbox = self._inbox[caller]
        with self._delivered_lock:
            seen = self._delivered[caller]
            if seq is not None and seen.get(seq) == digest:
                inbox.cancel(reserved)
                return False
            inbox.commit(data, reserved)
            if seq is not None:
                seen[seq] = digest
                seen.move_to_end(seq)
                while len(seen) > _DELIVERED_KEPT:
                    seen.popitem(last=False)
        return True

    def _claim_resend(self, caller: str, seq: int) -> bool:
        """Whether a stream of message ``seq`` from ``caller`` is a copy of one already queued
        that may stream now without room in the inbox (at most one such stream per peer, so
        an unreserved copy never holds more than one message's bytes)."""
        with self._delivered_lock:
            if seq not in self._delivered[caller] or caller in self._resending:
                return False
            self._resending.add(caller)
            return True

    def _release_resend(self, caller: str) -> None:
        with self._delivered_lock:
            self._resending.discard(caller)

    def _same_as_queued(self, caller: str, seq: int, data: bytes) -> bool:
        """Whether ``data`` is byte for byte message ``seq`` as queued from ``caller``."""
        digest = hashlib.sha256(data).digest()
        with self._delivered_lock:
            return self._delivered[caller].get(seq) == digest

    def _link_failed(self, peer: str) -> float:
        """Note that the link to ``peer`` fails now; return since when it has."""
        now = time.monotonic()
        since = self._down_since.setdefault(peer, now)
        if since == now:
            self._link_event(LinkEvent(peer, False, 0.0))
        return since

    def _link_ok(self, peer: str) -> None:
        """The link to ``peer`` works (a call went through): end its outage, if any."""
        since = self._down_since.pop(peer, None)
        if since is not None:
            self._link_event(LinkEvent(peer, True, time.monotonic() - since))

    def _link_event(self, event: LinkEvent) -> None:
        self.link_events.append(event)
        if self._on_link_event is not None:
            with contextlib.suppress(Exception):  # a reporting hook must not break the link
                self._on_link_event(event)

    def link_summary(self) -> dict[str, dict[str, float]]:
        """Per peer: outages survived (``reconnects``) and the longest one in seconds."""
        out: dict[str, dict[str, float]] = {}
        for e in self.link_events:
            if e.restored:
                row = out.setdefault(e.peer, {"reconnects": 0, "longest_outage_seconds": 0.0})
                row["reconnects"] += 1
                row["longest_outage_seconds"] = max(row["longest_outage_seconds"],
                                                    round(e.seconds, 3))
        return out

    def _await_link(self, peer: PeerAddress, until: float) -> bool:
        """Wait until the channel to ``peer`` is up again, at most until ``until``."""
        future = grpc.channel_ready_future(self._channels[peer.name])
        next_probe = 0.0
        try:
            while True:
                left = until - time.monotonic()
                try:
                    future.result(timeout=max(0.0, min(0.5, left)))
                    return True
                except grpc.FutureTimeoutError:
                    pass
                stopped = self._peer_stopped(peer.name)
                if stopped is not None:
                    raise stopped
                now = time.monotonic()
                if now >= next_probe and until - now > 0.2:  # a TLS probe every 2 s at most
                    next_probe = now + 2.0
                    self._refuse_another_pinned_certificate(peer, min(2.0, until - now))
                if left <= 0:
                    return False
        finally:
            if not future.done():
                future.cancel()

    def _accepted_for(self, peer: PeerAddress, der: bytes) -> bool:
        """Whether this party would accept ``der`` as ``peer``'s certificate (diagnostics)."""
        pinned = self._pinned_der.get(peer.name)
        if pinned is not None:
            return der == pinned
        try:
            pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
            _pinned_leaf(peer.name, pem, self._tls.ca.read_bytes())
        except (ConfigError, ValueError, OSError):
            return False
        return True

    def _refuse_another_pinned_certificate(self, peer: PeerAddress,
                                           timeout: float = 2.0) -> None:
        """For a pinned peer whose channel is not up: fail at once, saying so, if the server
        at its address presents another certificate (the channel would never come up)."""
        pinned = self._pinned_der.get(peer.name)
        if pinned is None:
            return
        seen = _presented_certificate(peer.address, peer.name, self._tls, timeout)
        if seen is not None and seen != pinned:
            self._gave_up.add(peer.name)
            raise TransportError(
                f"{peer.name} at {peer.address} presents a certificate that is not the one "
                f"{self.party} pinned for {peer.name}; nothing was sent to it.")

    def _silence_text(self, peer: PeerAddress, silent: float, doing: str) -> str:
        """Why the job stops: ``peer`` has not answered for ``silent`` s, past the grace."""
        if not _accepts_connections(peer.address):
            gone = "nothing accepts connections at its address any more"
        elif ((seen := _presented_certificate(peer.address, peer.name, self._tls)) is not None
              and not self._accepted_for(peer, seen)):
            gone = ("the server at its address presents a certificate this party does not "
                    f"accept for {peer.name} (not the pinned one, another CA or name, or "
                    "expired): another server took its place")
        else:
            gone = ("its address accepts connections, but it does not answer (stalled, or the "
                    "network between drops the traffic)")
        return (f"{peer.name} at {peer.address} went away: no answer from it for {silent:.0f} s "
                f"(longer than the link grace of {self.link_grace:.0f} s, [job] "
                f"link_grace_seconds) {doing}; {gone}. See {peer.name}'s log for why it stopped.")

    def _link_lost(self, peer: PeerAddress, since: float, exc: grpc.RpcError) -> VFLError:
        """The error once a link to ``peer`` has failed for longer than the grace."""
        first = self._rpc_error(exc, peer, "deliver a message to")
        err = str(first).rstrip()
        err += "" if err.endswith(".") else "."
        return type(first)(f"{err} The link had been down for {time.monotonic() - since:.0f} s, "
                         f"longer than the link grace ({self.link_grace:.0f} s, [job] "
                         "link_grace_seconds).")

    # ------------------------------------------------------------------ send
    def _deliver(self, to: str, seq: int, data: bytes) -> None:
        peer = self.peer_info[to]
        if self._aborting:
            # a peer never reached may still be starting: give it a moment to take the abort
            never_reached = not {to} & (self._ready | self._contacted | self._gave_up)
            deadline, ready = ((_ABORT_WAIT_FOR_PEER, True) if never_reached and self._abort_waits
                               else (_ABORT_DEADLINE, False))
            self._deliver_once(to, peer, seq, data, deadline, ready)
            return
        stopped = self._peer_stopped(to)
        if stopped is not None:
            raise stopped
        self._ensure_connected(peer)
        deadline = 30.0 + len(data) / 2e6
        first_failure: float | None = None  # of this message: pings do not reset it
        attempt = 0
        while True:
            try:
                # the channel has been up (_ensure_connected): a call on a link known to be
                # down fails at once, and the grace, not the call's deadline, bounds the wait
                self._deliver_once(to, peer, seq, data, deadline, False)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code not in _LINK_FAILURES:
                    raise self._rpc_error(exc, peer, "deliver a message to") from None
                self._link_failed(to)
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                until = first_failure + self.link_grace
                if now >= until or not self._await_link(peer, until):
                    self._gave_up.add(to)
                    raise self._link_lost(peer, first_failure, exc) from None
                # the same message under the same sequence number, after a pause that grows
                # (a fault that does not clear is not hammered), never past the grace
                attempt += 1
                time.sleep(min(_RETRY_PAUSE * 2 ** (attempt - 1), _RETRY_PAUSE_MAX,
                               max(0.0, until - time.monotonic())))
                continue
            self._link_ok(to)
            return

    def _deliver_once(self, to: str, peer: PeerAddress, seq: int, data: bytes,
                      deadline: float, ready: bool) -> None:
        """One ``Deliver`` call; raises the ``grpc.RpcError`` of a failed link for a retry."""
        call = self._stubs[to].Deliver.future(self._frames(to, seq, data), timeout=deadline,
                                              wait_for_ready=ready)
        self._in_flight.add(call)
        next_ping, failures = time.monotonic() + _PING_EVERY, 0
        answered = False  # the latest ping during this call was answered
        try:
            while True:
                try:
                    call.result(timeout=_ABORT_POLL)
                    return
                except grpc.FutureTimeoutError:
                    pass
                if self._aborting:
                    continue
                stopped = self._peer_stopped(to)
                if stopped is not None:
                    call.cancel()
                    raise stopped from None
                now = time.monotonic()
                if now < next_ping:
                    continue
                # a long call on a stalled link: the peer's silence, not the call's deadline,
                # ends it once it outlasts the grace (a short stall is ridden out)
                next_ping = now + _PING_EVERY
                if self._ping(to):
                    failures, answered = 0, True
                    self._link_ok(to)
                    continue
                failures, answered = failures + 1, False
                silent = time.monotonic() - self._link_failed(to)
                if failures >= _PING_FAILURES and silent >= self.link_grace:
                    call.cancel()
                    self._gave_up.add(to)
                    raise TransportError(self._silence_text(peer, silent, "while it sent a "
                                                            "message to it"))
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if not self._aborting and code == grpc.StatusCode.PERMISSION_DENIED:
                self._check_job(to)  # refused for another job id? say so, with both ids
            stopped = None if self._aborting else self._peer_stopped(to)
            if stopped is not None:
                raise stopped from None
            if self._aborting or (code == grpc.StatusCode.DEADLINE_EXCEEDED and answered):
                # a peer that answers pings but did not take the message in time is slow or
                # stuck, not cut off: sending it again would not help
                raise self._rpc_error(exc, peer, "deliver a message to") from None
            raise
        except BaseException:  # SIGTERM or Ctrl-C while it waits: the call must not linger
            call.cancel()
            raise
        finally:
            self._in_flight.discard(call)

    def _ensure_connected(self, peer: PeerAddress) -> None:
        """Wait (once per peer) until the TLS channel to ``peer`` is up.

        For a pinned peer, while the channel is not up, look at the certificate
        the server presents: if it is not the pinned one, fail at once with an
        error that says so (the channel itself would never come up).
        """
        if peer.name in self._ready:
            return
        future = grpc.channel_ready_future(self._channels[peer.name])
        end = time.monotonic() + self.connect_timeout
        try:
            while True:
                left = end - time.monotonic()
                try:
                    future.result(timeout=max(0.0, min(1.0, left)))
                    break
                except grpc.FutureTimeoutError:
                    pass
                stopped = self._peer_stopped(peer.name)
                if stopped is not None:
                    raise stopped
                self._refuse_another_pinned_certificate(peer)
                if left <= 0:
                    self._gave_up.add(peer.name)
                    raise PeerTimeoutError(self._unreachable(
                        peer, f"(for {self.connect_timeout:.0f} s {self.party} tried to connect "
                              "to deliver a message)"))
        finally:
            if not future.done():
                future.cancel()
        self._ready.add(peer.name)
        self._check_job(peer.name)
        stopped = self._peer_stopped(peer.name)
        if stopped is not None:
            raise stopped

    def _unreachable(self, peer: PeerAddress, waited: str) -> str:
        """Why ``peer`` could not be reached (``waited``: what we did meanwhile) and the fix."""
        name, addr = peer.name, peer.address
        if not _accepts_connections(addr):
            return (f"{name} at {addr} never came up: nothing accepts connections there {waited}. "
                    f"Check that {name} is running and its log (it may have stopped while "
                    f"starting), and that {addr} is the [party] listen address in {name}'s TOML.")
        hint = (f"the certificate it presents is not the one pinned for {name}, "
                if name in self._pinned_der else "")
        return (f"{name} at {addr} accepts connections, but no TLS session came up {waited} "
                f"({hint}certificate not issued by our CA, expired, or not for {name!r}). "
                f"Check {name}'s [tls] files and its log.")

    def _rpc_error(self, exc: grpc.RpcError, peer: PeerAddress, doing: str) -> TransportError:
        code = exc.code() if hasattr(exc, "code") else None
        detail = str((exc.details() if hasattr(exc, "details") else str(exc)) or "")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            # the channel was up before this call (_ensure_connected), so TLS worked once
            if not _accepts_connections(peer.address):
                why = (f"{peer.name} went away (nothing accepts connections at {peer.address} "
                       f"any more); see {peer.name}'s log for why it stopped.")
            else:
                pinned = (f", or it now presents a certificate other than the one {self.party} "
                          "pinned for it" if peer.name in self._pinned_der else "")
                why = (f"{peer.name} is reachable but did not take the message (busy, stuck or "
                       f"restarting{pinned}); see {peer.name}'s log.")
            return PeerTimeoutError(
                f"{self.party} could not {doing} {peer.name} at {peer.address}: no answer within "
                f"the timeout; {why}"
            )
        detail = detail[:300]
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return TransportError(f"{peer.name} at {peer.address} refused {self.party}: {detail}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return TransportError(
                f"{peer.name} at {peer.address} refused a message from {self.party}: {detail}"
            )
        return TransportError(
            f"{self.party} could not {doing} {peer.name} at {peer.address}: "
            f"{code.name if code else 'error'}: {detail}"
        )

    # ------------------------------------------------------------------ recv
    def _ping(self, name: str) -> bool:
        try:
            reply = self._stubs[name].Ping(pb.PingRequest(job=self.job, sender=self.party),
                                           timeout=2.0)
        except grpc.RpcError:
            return False
        self._contacted.add(name)
        if reply.job and reply.job != self.job:
            self._note_job_mismatch(name, reply.job)  # the server's certificate is verified
        return True

    def _next_bytes(self, frm: str, timeout: float) -> bytes:
        start = time.monotonic()
        inbox = self._inbox[frm]
        failures = 0
        next_ping = start + _PING_EVERY
        while True:
            stopped = self._waiting_stopped(frm)
            if stopped is not None:
                raise stopped
            remaining = timeout - (time.monotonic() - start)
            if remaining <= 0:
                peer = self.peer_info[frm]
                raise PeerTimeoutError(
                    f"{self.party} waited {timeout:.0f} s for a message from {frm} at "
                    f"{peer.address}; none arrived."
                )
            try:
                return inbox.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                pass
            now = time.monotonic()
            if now < next_ping:
                continue
            next_ping = now + _PING_EVERY
            if self._ping(frm):
                failures = 0
                self._link_ok(frm)
                continue
            failures += 1
            reached = frm in self._contacted
            silent = now - self._link_failed(frm) if reached else 0.0
            if (reached and failures >= _PING_FAILURES and silent >= self.link_grace) or (
                    not reached and now - start > self.connect_timeout):
                peer = self.peer_info[frm]
                self._gave_up.add(frm)
                if reached:
                    raise TransportError(self._silence_text(
                        peer, silent, "while it waited for its next message"))
                raise TransportError(self._unreachable(
                    peer, f"(for {now - start:.0f} s {self.party} waited for its first "
                          "message)"))

    def _broadcast(self, body: Abort) -> None:
        """Send the abort to every peer at once (one thread each), so a peer still starting
        does not delay the others; return when all are done or can no longer succeed."""
        self._abort_waits = not self._aborted_by
        threads = [threading.Thread(target=self._send_quietly, args=(p, body), daemon=True,
                                    name=f"vfl-abort-{p}") for p in self.peers]
        for t in threads:
            t.start()
        end = time.monotonic() + _ABORT_WAIT_FOR_PEER + 1.0
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))

    def close(self) -> None:
        """Stop serving and close the client channels."""
        if self._closed.is_set():
            return
        self._closed.set()
        # wait for the server to be down: a process that exits while gRPC's serving thread still
        # takes a late peer message (an abort) gets "cannot schedule new futures after
        # interpreter shutdown" from that thread, printed as a traceback
        self._server.stop(grace=1.0).wait(timeout=5.0)
        for call in list(self._in_flight):
            call.cancel()

        def close_channels() -> None:
            for ch in self._channels.values():
                ch.close()

        # gRPC's channel close can wait on a call still streaming to a peer that stopped
        # reading; the party is leaving either way, so it waits a few seconds at most
        closer = threading.Thread(target=close_channels, name="vfl-close-channels", daemon=True)
        closer.start()
        closer.join(timeout=3.0)
