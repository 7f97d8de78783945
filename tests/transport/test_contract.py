"""One contract, two transports: in-memory and gRPC over loopback with mutual TLS."""

from __future__ import annotations

import pytest

from vfl.exceptions import PeerTimeoutError, RemoteProtocolError, TransportError
from vfl.psi.messages import PsiRequest, PsiResponse
from vfl.transport import InMemoryNetwork

from .conftest import pair


@pytest.fixture(params=["memory", "grpc"])
def endpoints(request, pki):
    if request.param == "memory":
        net = InMemoryNetwork(["guest", "host"], job="job", timeout=10)
        yield net.endpoint("guest"), net.endpoint("host")
        return
    a, b = pair(pki)
    yield a, b
    a.close()
    b.close()


def test_messages_arrive_in_order_with_byte_counts(endpoints):
    a, b = endpoints
    for i in range(5):
        a.send("host", PsiRequest(bytes([i]) * 32))
    assert [b.recv("guest", PsiRequest).blinded[0] for _ in range(5)] == list(range(5))
    assert a.stats.total_sent == b.stats.total_received > 5 * 32


def test_large_payload(endpoints):
    a, b = endpoints
    blob = bytes(range(256)) * (40 * 4096)  # 40 MiB: above gRPC's 4 MiB default limit
    a.send("host", PsiRequest(blob))
    assert b.recv("guest", PsiRequest, timeout=60).blinded == blob


def test_unexpected_type_names_peer(endpoints):
    a, b = endpoints
    a.send("host", PsiRequest(b""))
    with pytest.raises(RemoteProtocolError, match="from guest; expected psi.Response/1"):
        b.recv("guest", PsiResponse)


def test_recv_timeout_names_peer(endpoints):
    _, b = endpoints
    with pytest.raises(PeerTimeoutError, match="guest"):
        b.recv("guest", PsiRequest, timeout=1.0)


def test_abort_reaches_peer(endpoints):
    a, b = endpoints
    a.abort("guest: something failed")
    with pytest.raises(TransportError, match="guest stopped the job: guest: something failed"):
        b.recv("guest", PsiRequest)
