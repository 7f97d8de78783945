"""Issue 25: one process per party and port. gRPC lets several servers share a port by
default (SO_REUSEPORT), so a party started twice listened twice and the two split the
job's messages; both servers now bind exclusively and the second fails at once."""

from __future__ import annotations

import pytest

from vfl.demo import free_ports
from vfl.exceptions import TransportError
from vfl.transport.grpc import GrpcEndpoint, PeerAddress

from .conftest import pki, tls  # noqa: F401 - fixture


def test_a_party_started_twice_on_one_port_fails_at_once(pki):  # noqa: F811
    port, other = free_ports(2)
    peers = [PeerAddress("guest", f"127.0.0.1:{other}")]
    first = GrpcEndpoint("host", f"127.0.0.1:{port}", peers, "job", tls(pki, "host"),
                         connect_timeout=5, default_timeout=5)
    try:
        with pytest.raises(TransportError, match=r"address in use \(is host already running"):
            GrpcEndpoint("host", f"127.0.0.1:{port}", peers, "job", tls(pki, "host"),
                         connect_timeout=5, default_timeout=5)
    finally:
        first.close()
    # once the first has stopped, the port is free again
    again = GrpcEndpoint("host", f"127.0.0.1:{port}", peers, "job", tls(pki, "host"),
                         connect_timeout=5, default_timeout=5)
    again.close()


def test_a_second_scoring_server_on_one_port_fails_at_once(tmp_path):
    from vfl.certs import write_party_certs
    from vfl.serving.grpc import ScoringServer
    from vfl.transport.grpc import TlsFiles

    write_party_certs(tmp_path, ["guest", "host1"])
    files = TlsFiles(tmp_path / "ca.pem", tmp_path / "host1.pem", tmp_path / "host1.key")

    class _Scorer:
        guest = "guest"

    (port,) = free_ports(1)
    first = ScoringServer(_Scorer(), party="host1", listen=f"127.0.0.1:{port}", tls=files)
    try:
        with pytest.raises(TransportError, match="address in use"):
            ScoringServer(_Scorer(), party="host1", listen=f"127.0.0.1:{port}", tls=files)
    finally:
        first.stop()
