"""gRPC transport with mutual TLS (``protocols/proto/vfl/v1/transport.proto``).

Every party runs one ``Party`` server on its listen address. Sending a message
calls ``Deliver`` on the receiver's server, the envelope split into 1 MiB
frames; the call returns once the receiver has queued the whole envelope, so
messages on a link arrive in order and a finished sender can exit safely.

Security: both sides present certificates issued by the configured CA. The
client checks the server's certificate for the peer's configured name; the
server takes the caller's identity from the verified certificate's common
name (never from a message field), refuses callers that are not configured
peers, optionally pins a peer's exact certificate, and refuses frames whose
``sender``, ``receiver`` or ``job`` do not match.

Liveness: while waiting for a message, the receiver pings the peer every few
seconds; a peer that stops answering after it was reached once is reported
as gone (with its name and address) instead of waiting for the full timeout.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from vfl.exceptions import PeerTimeoutError, TransportError
from vfl.transport._proto import transport_pb2 as pb
from vfl.transport._proto import transport_pb2_grpc as pb_grpc
from vfl.transport.base import Endpoint

__all__ = ["GrpcEndpoint", "PeerAddress", "TlsFiles"]

CHUNK = 1 << 20
_MAX_MESSAGE = CHUNK + (64 << 10)
_PING_EVERY = 2.0
_PING_FAILURES = 3


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
class PeerAddress:
    """Where a peer listens, and optionally its exact certificate (pinning)."""

    name: str
    address: str
    pinned_cert: bytes | None = None


class _Servicer(pb_grpc.PartyServicer):
    def __init__(self, endpoint: GrpcEndpoint) -> None:
        self.ep = endpoint

    def _caller(self, context: grpc.ServicerContext) -> str:
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        caller = names[0].decode() if names else ""
        peer = self.ep.peer_info.get(caller)
        if peer is None:
            self.ep.rejected.append((caller or "<no certificate name>", "not a configured peer"))
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{self.ep.party} does not accept messages from {caller or 'unknown'!r}")
            raise AssertionError("unreachable: abort raises")
        if peer.pinned_cert is not None:
            pem = (auth.get("x509_pem_cert") or [b""])[0]
            if pem.strip() != peer.pinned_cert.strip():
                self.ep.rejected.append((caller, "certificate differs from the pinned one"))
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"certificate of {caller!r} is not the one {self.ep.party} pinned")
        return caller

    def Deliver(self, request_iterator: Iterator[pb.Frame],  # noqa: N802 - gRPC name
                context: grpc.ServicerContext) -> pb.DeliverReply:
        caller = self._caller(context)
        parts: list[bytes] = []
        seq = total = None
        for frame in request_iterator:
            if frame.sender != caller or frame.receiver != self.ep.party or frame.job != self.ep.job:
                self.ep.rejected.append((caller, "frame header does not match the session"))
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              "frame sender/receiver/job does not match the authenticated session")
            if seq is None:
                seq, total = frame.seq, frame.total
            if frame.seq != seq or frame.total != total or frame.index != len(parts):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "frames out of order")
            parts.append(frame.data)
        if total is None or len(parts) != total:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "incomplete message")
        data = b"".join(parts)
        self.ep._inbox[caller].put(data)
        self.ep._contacted.add(caller)
        return pb.DeliverReply(bytes=len(data))

    def Ping(self, request: pb.PingRequest, context: grpc.ServicerContext  # noqa: N802
             ) -> pb.PingReply:
        caller = self._caller(context)
        self.ep._contacted.add(caller)
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
    """

    def __init__(self, party: str, listen: str, peers: list[PeerAddress], job: str,
                 tls: TlsFiles, *, connect_timeout: float = 60.0,
                 default_timeout: float = 600.0) -> None:
        super().__init__(party, [p.name for p in peers], job, default_timeout)
        self.listen = listen
        self.peer_info = {p.name: p for p in peers}
        self.connect_timeout = connect_timeout
        self.rejected: list[tuple[str, str]] = []
        self._inbox: dict[str, queue.Queue[bytes]] = {p.name: queue.Queue() for p in peers}
        self._contacted: set[str] = set()
        self._ready: set[str] = set()
        ca, cert, key = tls.read()
        self._client_creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                                          certificate_chain=cert)
        server_creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                                   require_client_auth=True)
        options = [("grpc.max_receive_message_length", _MAX_MESSAGE),
                   ("grpc.max_send_message_length", _MAX_MESSAGE)]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options)
        pb_grpc.add_PartyServicer_to_server(_Servicer(self), self._server)
        try:
            port = self._server.add_secure_port(listen, server_creds)
        except RuntimeError:
            port = 0
        if port == 0:
            raise TransportError(
                f"{party} cannot listen on {listen}: the port is in use or the address is not "
                "available on this machine."
            )
        self.port = port
        self._server.start()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, pb_grpc.PartyStub] = {}
        for p in peers:
            ch = grpc.secure_channel(p.address, self._client_creds, options=options + [
                ("grpc.ssl_target_name_override", p.name)])
            self._channels[p.name] = ch
            self._stubs[p.name] = pb_grpc.PartyStub(ch)
        self._closed = threading.Event()

    # ------------------------------------------------------------------ send
    def _frames(self, to: str, seq: int, data: bytes) -> Iterator[pb.Frame]:
        total = max(1, -(-len(data) // CHUNK))
        for i in range(total):
            yield pb.Frame(job=self.job, sender=self.party, receiver=to, seq=seq, index=i,
                           total=total, data=data[i * CHUNK:(i + 1) * CHUNK])

    def _deliver(self, to: str, seq: int, data: bytes) -> None:
        peer = self.peer_info[to]
        if self._aborting:
            deadline, ready = 3.0, False
        else:
            self._ensure_connected(peer)
            deadline, ready = 30.0 + len(data) / 2e6, True
        try:
            self._stubs[to].Deliver(self._frames(to, seq, data), timeout=deadline,
                                    wait_for_ready=ready)
        except grpc.RpcError as exc:
            raise self._rpc_error(exc, peer, "deliver a message to") from None

    def _ensure_connected(self, peer: PeerAddress) -> None:
        """Wait (once per peer) until the TLS channel to ``peer`` is up."""
        if peer.name in self._ready:
            return
        try:
            grpc.channel_ready_future(self._channels[peer.name]).result(
                timeout=self.connect_timeout)
        except grpc.FutureTimeoutError:
            raise PeerTimeoutError(
                f"{self.party} could not connect to {peer.name} at {peer.address} within "
                f"{self.connect_timeout:.0f} s: it is not running or not reachable, or the TLS "
                "handshake failed (certificate not issued by our CA, expired, or not for "
                f"{peer.name!r})."
            ) from None
        self._ready.add(peer.name)

    def _rpc_error(self, exc: grpc.RpcError, peer: PeerAddress, doing: str) -> TransportError:
        code = exc.code() if hasattr(exc, "code") else None
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return PeerTimeoutError(
                f"{self.party} could not {doing} {peer.name} at {peer.address}: no answer within "
                f"the timeout (is {peer.name} running, reachable, and does it trust our "
                "certificate?)"
            )
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return TransportError(f"{peer.name} at {peer.address} refused {self.party}: {detail}")
        return TransportError(
            f"{self.party} could not {doing} {peer.name} at {peer.address}: "
            f"{code.name if code else 'error'}: {detail}"
        )

    # ------------------------------------------------------------------ recv
    def _ping(self, name: str) -> bool:
        try:
            self._stubs[name].Ping(pb.PingRequest(job=self.job, sender=self.party), timeout=2.0)
            self._contacted.add(name)
            return True
        except grpc.RpcError:
            return False

    def _next_bytes(self, frm: str, timeout: float) -> bytes:
        start = time.monotonic()
        inbox = self._inbox[frm]
        failures = 0
        next_ping = start + _PING_EVERY
        while True:
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
                continue
            failures += 1
            reached = frm in self._contacted
            if (reached and failures >= _PING_FAILURES) or (
                    not reached and now - start > self.connect_timeout):
                peer = self.peer_info[frm]
                what = "went away" if reached else "never came up"
                raise TransportError(
                    f"{frm} at {peer.address} {what}: no answer from it while {self.party} "
                    "waited for its next message."
                )

    def close(self) -> None:
        """Stop serving and close the client channels."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._server.stop(grace=1.0)
        for ch in self._channels.values():
            ch.close()
