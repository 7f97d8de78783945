"""Online scoring over gRPC with mutual TLS: the host's server and the guest's client.

One unary method, ``/vfl.v1.Scoring/PartialScore``. Its request and reply
bodies are codec envelopes (:mod:`vfl.codec`, the one codec of every vfl
message; no protobuf, no code-executing deserialiser): a
:class:`~vfl.serving.messages.PartialScoreRequest` from the guest, a
:class:`~vfl.serving.messages.PartialScoreReply` back. The caller is the
name in its verified certificate (the federation's CA, as for training);
the host answers only its configured guest, and with a pinned guest
certificate only that certificate.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent import futures
from typing import NoReturn

import grpc
import numpy as np
from cryptography.hazmat.primitives import serialization

from vfl.codec import Envelope, decode_envelope, encode_envelope
from vfl.exceptions import RemoteProtocolError, TransportError, VFLError
from vfl.lr.messages import MAX_ROW_POINTS
from vfl.serving.host import MAX_ID_CHARS, HostScorer, ServingError
from vfl.serving.messages import PartialScoreReply, PartialScoreRequest
from vfl.transport.grpc import _RECONNECT_MS, TlsFiles, _der, _pinned_leaf

__all__ = ["METHOD", "ScoringServer", "HostClient", "HostUnavailable", "SERVE_JOB",
           "MAX_SHARED_FEATURES"]

#: The gRPC method (service ``vfl.v1.Scoring``).
METHOD = "/vfl.v1.Scoring/PartialScore"
#: The envelope's job field for serving (a served model is named in the message itself).
SERVE_JOB = "serve"
#: Largest request a host reads (10,000 IDs of 256 characters of up to 4 bytes in UTF-8, with
#: room for the envelope).
MAX_REQUEST_BYTES = 12 << 20
#: Largest reply a guest reads (per-feature points of 10,000 customers × 100 features: 8 MB).
MAX_REPLY_BYTES = 16 << 20
#: Trailing metadata naming why the host refused (one of the ServingError codes).
_REFUSAL_KEY = "vfl-refusal"
#: Most host features whose points a reply may carry.
MAX_SHARED_FEATURES = 100

_CODES = {"invalid": grpc.StatusCode.INVALID_ARGUMENT,
          "forbidden": grpc.StatusCode.PERMISSION_DENIED,
          "unknown_model": grpc.StatusCode.NOT_FOUND,
          "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
          "budget_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED}


def _in_range(points: np.ndarray) -> bool:
    """Every value within +-MAX_ROW_POINTS (no abs(): it overflows at the int64 minimum)."""
    return not points.size or bool(((points >= -MAX_ROW_POINTS)
                                    & (points <= MAX_ROW_POINTS)).all())


def _pin(peer: str, pem: bytes, ca: bytes) -> bytes:
    """A pinned certificate, checked as training checks pins (issued to ``peer`` by our CA,
    valid now); its DER. A pin that fails is a configuration error, never "no pin"."""
    return _pinned_leaf(peer, pem, ca).public_bytes(serialization.Encoding.DER)


class ScoringServer:
    """The host's scoring service: ``scorer`` behind :data:`METHOD` on ``listen``.

    Parameters
    ----------
    scorer : HostScorer
    party : str
        This host's name (its certificate's).
    listen : str
        ``host:port`` (port 0: any free port; see :attr:`port`).
    tls : TlsFiles
        This host's certificate and key, and the federation's CA.
    pinned_guest : bytes, optional
        The guest's exact certificate (PEM): any other is refused.
    """

    def __init__(self, scorer: HostScorer, *, party: str, listen: str, tls: TlsFiles,
                 pinned_guest: bytes | None = None, workers: int = 8) -> None:
        self.scorer = scorer
        self.party = party
        self.counts: Counter[str] = Counter()  # "answered" and each refusal code
        self._counts_lock = threading.Lock()
        ca, cert, key = tls.read()
        self._pinned = _pin(scorer.guest, pinned_guest, ca) if pinned_guest else None
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                            require_client_auth=True)
        options = [("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                   ("grpc.max_send_message_length", MAX_REPLY_BYTES)]
        # exclusive (no SO_REUSEPORT): a second `vfl serve` of this party fails at once
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                   options=options + [("grpc.so_reuseport", 0)])
        handler = grpc.method_handlers_generic_handler(
            "vfl.v1.Scoring", {"PartialScore": grpc.unary_unary_rpc_method_handler(self._score)})
        self._server.add_generic_rpc_handlers((handler,))
        try:
            port = self._server.add_secure_port(listen, creds)
        except RuntimeError:
            port = 0
        if port == 0:
            raise TransportError(f"{party} cannot listen on {listen}: address in use (is "
                                 f"{party}'s vfl serve already running?) or not available on "
                                 "this machine.")
        self.port = port
        self._server.start()

    def _count(self, what: str) -> None:
        with self._counts_lock:
            self.counts[what] += 1

    def _refuse(self, context: grpc.ServicerContext, code: str, detail: str) -> NoReturn:
        self._count(code)
        context.set_trailing_metadata(((_REFUSAL_KEY, code),))
        context.abort(_CODES.get(code, grpc.StatusCode.INVALID_ARGUMENT), detail)
        raise AssertionError("unreachable: abort raises")

    def _score(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        caller = names[0].decode(errors="replace") if names else ""
        if self._pinned is not None and caller == self.scorer.guest:
            pem = (auth.get("x509_pem_cert") or [b""])[0]
            if _der(pem) != self._pinned:
                self._refuse(context, "forbidden", f"the certificate of {caller!r} is not the "
                             f"one {self.party} pinned")
        if caller != self.scorer.guest:
            self._refuse(context, "forbidden", f"{self.party} answers scoring requests from "
                         f"its guest only, not from {caller[:64]!r}")
        try:
            env = decode_envelope(request, peer=caller, max_bytes=MAX_REQUEST_BYTES)
        except VFLError as exc:
            self._refuse(context, "invalid", f"malformed request: {exc}")
        body = env.body
        if (not isinstance(body, PartialScoreRequest) or env.sender != caller
                or env.receiver != self.party or env.job != SERVE_JOB):
            self._refuse(context, "invalid", "expected a serve.PartialScoreRequest/1 from "
                         f"{caller} to {self.party}")
        try:
            reply = self.scorer.score(caller, body)
        except ServingError as exc:
            self._refuse(context, exc.code, str(exc))
        self._count("answered")
        return encode_envelope(Envelope(SERVE_JOB, 0, self.party, caller, reply))

    def stop(self, grace: float = 1.0) -> None:
        """Stop answering (requests in flight get ``grace`` seconds)."""
        self._server.stop(grace).wait()


class HostUnavailable(TransportError):
    """The host could not be reached, or did not answer in time."""


class HostClient:
    """The guest's client of one host's scoring service.

    Parameters
    ----------
    host : str
        The host's name: its certificate must carry it.
    address : str
        ``host:port`` of its scoring service.
    tls : TlsFiles
        The guest's certificate and key, and the federation's CA.
    party : str
        The guest's name (its certificate's).
    timeout : float
        Seconds per call; a slower host counts as unavailable.
    pinned : bytes, optional
        The host's exact certificate (PEM): then the only one trusted.
    """

    def __init__(self, host: str, address: str, tls: TlsFiles, *, party: str,
                 timeout: float = 2.0, pinned: bytes | None = None) -> None:
        self.host, self.address, self.party, self.timeout = host, address, party, timeout
        ca, cert, key = tls.read()
        roots = ca
        if pinned:  # the checked leaf alone is the trust anchor (not a chain the file may hold)
            leaf = _pinned_leaf(host, pinned, ca)
            roots = leaf.public_bytes(serialization.Encoding.PEM)
        creds = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key,
                                             certificate_chain=cert)
        self._channel = grpc.secure_channel(address, creds, options=[
            ("grpc.ssl_target_name_override", host),
            ("grpc.max_receive_message_length", MAX_REPLY_BYTES),
            ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
            # a restarted host is found again within 2 s (gRPC's default backoff grows to 2 min)
            ("grpc.initial_reconnect_backoff_ms", _RECONNECT_MS[0]),
            ("grpc.max_reconnect_backoff_ms", _RECONNECT_MS[1])])
        self._call = self._channel.unary_unary(METHOD)

    def partial_scores(self, model_id: str, customer_ids: list[str],
                       scale: float = 0.0) -> PartialScoreReply:
        """The host's answer, checked (shape, finiteness, model id, points range).

        Raises
        ------
        HostUnavailable
            Not reachable, or no answer within ``timeout``.
        ServingError
            The host refused (``code`` as the host said: unknown model, rate
            limited, ...).
        RemoteProtocolError
            The answer is malformed.
        """
        if any(len(i) > MAX_ID_CHARS for i in customer_ids):
            raise ServingError("invalid", f"customer IDs have at most {MAX_ID_CHARS} characters")
        data = encode_envelope(Envelope(SERVE_JOB, 0, self.party, self.host,
                                        PartialScoreRequest(model_id, list(customer_ids),
                                                            float(scale))))
        try:
            raw = self._call(data, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            said = dict(exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else {}
            refusal = said.get(_REFUSAL_KEY)
            if refusal in _CODES:  # the host's own refusal; any other status is gRPC's
                raise ServingError(str(refusal), f"{self.host}: {detail}") from None
            raise HostUnavailable(f"{self.host} at {self.address} did not answer "
                                  f"({code.name if code else 'error'}: {detail})") from None
        env = decode_envelope(raw, peer=self.host, max_bytes=MAX_REPLY_BYTES)
        reply = env.body
        n = len(customer_ids)
        if (not isinstance(reply, PartialScoreReply) or env.sender != self.host
                or env.receiver != self.party):
            raise RemoteProtocolError(f"{self.host} answered with something other than its "
                                      "partial scores.")
        if reply.model_id != model_id:
            raise RemoteProtocolError(f"{self.host} answered for model {reply.model_id!r}, not "
                                      f"{model_id!r}.")
        if (len(reply.known) != (n + 7) // 8 or reply.scores.dtype != np.float64
                or reply.scores.shape != (n,) or not np.all(np.isfinite(reply.scores))):
            raise RemoteProtocolError(f"{self.host}'s partial scores do not match the {n} "
                                      "customers asked (shape, or not finite).")
        want = (n,) if scale > 0 else (0,)
        if (reply.points.dtype != np.int64 or reply.points.shape != want
                or not _in_range(reply.points)):
            raise RemoteProtocolError(f"{self.host}'s points do not match the request.")
        names, per = reply.feature_names, reply.feature_points
        if names or per.size:
            k = len(names)
            if (scale <= 0 or not 0 < k <= MAX_SHARED_FEATURES or len(set(names)) != k
                    or any(not 0 < len(f) <= 128 for f in names)
                    or per.dtype != np.int64 or per.shape != (n, k) or not _in_range(per)
                    or not np.array_equal(per.sum(axis=1), reply.points)):
                raise RemoteProtocolError(f"{self.host}'s points per feature do not match the "
                                          "request or its total points.")
        return reply

    def known(self, reply: PartialScoreReply) -> np.ndarray:
        """Which customers of ``reply`` the host knows (bool per customer)."""
        n = reply.scores.shape[0]
        return np.unpackbits(np.frombuffer(reply.known, dtype=np.uint8), count=n).astype(bool)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
