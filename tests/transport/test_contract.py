"""One contract, two transports: in-memory and gRPC over loopback with mutual TLS."""

from __future__ import annotations

import pytest

from vfl.exceptions import (
    DataError,
    LocalProtocolError,
    PeerTimeoutError,
    RemoteProtocolError,
    TransportError,
)
from vfl.psi.messages import PsiRequest, PsiResponse
from vfl.transport import InMemoryNetwork
from vfl.transport.base import MIN_MESSAGE_LIMIT, Abort, abort_code

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


def test_abort_reaches_peer_with_code_only(endpoints):
    a, b = endpoints
    a.abort(abort_code(DataError("column 'income' has value 123456 in row 7")))
    with pytest.raises(TransportError,
                       match=r"^guest stopped the job \(data error\); see its log for details"):
        b.recv("guest", PsiRequest)


def test_abort_with_free_text_sends_internal(endpoints):
    a, b = endpoints
    a.abort("guest: secret 123456")  # not a code: only 'internal' leaves this party
    with pytest.raises(TransportError, match=r"\(internal error\)") as info:
        b.recv("guest", PsiRequest)
    assert "123456" not in str(info.value)


def test_abort_with_unknown_code_is_refused(endpoints):
    a, b = endpoints
    a.send("host", Abort("secret 123456"))  # a deviating peer bypassing abort()
    with pytest.raises(RemoteProtocolError, match="unknown reason code") as info:
        b.recv("guest", PsiRequest)
    assert "123456" not in str(info.value)


def test_message_above_the_job_limit_is_refused(endpoints):
    a, b = endpoints
    b.limit_message_size("guest", 200_000)
    assert b.message_limit("guest") == 200_000
    a.send("host", PsiRequest(b"x" * 100_000))  # fits
    with pytest.raises(TransportError, match="refused a message"):
        a.send("host", PsiRequest(b"x" * 300_000))
    assert b.recv("guest", PsiRequest).blinded == b"x" * 100_000
    with pytest.raises(RemoteProtocolError, match="guest.*at most 200000 bytes"):
        b.recv("guest", PsiRequest, timeout=5)


def test_limit_is_capped_by_ceiling_and_floor(endpoints):
    _, b = endpoints
    b.limit_message_size("guest", 1 << 40)
    assert b.message_limit("guest") == b.max_message_bytes
    b.limit_message_size("guest", 10)
    assert b.message_limit("guest") == MIN_MESSAGE_LIMIT
    with pytest.raises(LocalProtocolError, match="positive int"):
        b.limit_message_size("guest", -1)
    with pytest.raises(LocalProtocolError, match="no channel"):
        b.limit_message_size("mallory", 1000)
