"""The in-memory transport honours the channel contract."""

from __future__ import annotations

import pytest

from vfl.codec import Envelope, encode_envelope
from vfl.exceptions import LocalProtocolError, PeerTimeoutError, RemoteProtocolError
from vfl.psi.messages import PsiRequest, PsiResponse
from vfl.transport import InMemoryNetwork


def test_send_recv_counts_bytes():
    net = InMemoryNetwork(["guest", "host"])
    g, h = net.endpoint("guest"), net.endpoint("host")
    g.send("host", PsiRequest(b"\x01" * 32))
    assert h.recv("guest", PsiRequest).blinded == b"\x01" * 32
    assert g.stats.total_sent == h.stats.total_received > 32


def test_wrong_type_names_sender_and_expected():
    net = InMemoryNetwork(["guest", "host"])
    net.endpoint("guest").send("host", PsiRequest(b""))
    expected = "Received psi.Request/1 from guest; expected psi.Response/1"
    with pytest.raises(RemoteProtocolError, match=expected):
        net.endpoint("host").recv("guest", PsiResponse)


def test_replayed_message_refused():
    net = InMemoryNetwork(["guest", "host"], job="j1")
    data = encode_envelope(Envelope("j1", 0, "guest", "host", PsiRequest(b"")))
    q = net._queues[("guest", "host")]
    q.put(data)
    q.put(data)
    h = net.endpoint("host")
    h.recv("guest", PsiRequest)
    with pytest.raises(RemoteProtocolError, match="sequence number 0; expected 1"):
        h.recv("guest", PsiRequest)


def test_other_job_and_spoofed_sender_refused():
    net = InMemoryNetwork(["guest", "host", "arbiter"], job="j1")
    q = net._queues[("guest", "host")]
    q.put(encode_envelope(Envelope("other", 0, "guest", "host", PsiRequest(b""))))
    with pytest.raises(RemoteProtocolError, match="job"):
        net.endpoint("host").recv("guest", PsiRequest)
    q2 = net._queues[("arbiter", "host")]
    q2.put(encode_envelope(Envelope("j1", 0, "guest", "host", PsiRequest(b""))))
    with pytest.raises(RemoteProtocolError, match="claims"):
        net.endpoint("host").recv("arbiter", PsiRequest)


def test_timeout_names_peer():
    net = InMemoryNetwork(["guest", "host"])
    with pytest.raises(PeerTimeoutError, match="from guest"):
        net.endpoint("host").recv("guest", PsiRequest, timeout=0.05)


def test_unknown_peer():
    net = InMemoryNetwork(["guest", "host"])
    with pytest.raises(LocalProtocolError, match="no channel"):
        net.endpoint("host").send("mallory", PsiRequest(b""))
