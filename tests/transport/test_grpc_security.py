"""gRPC with mutual TLS: who is refused, and with which error."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vfl.demo import free_ports
from vfl.exceptions import ConfigError, PeerTimeoutError, TransportError
from vfl.psi.messages import PsiRequest
from vfl.transport.grpc import GrpcEndpoint, PeerAddress

from .conftest import pair, tls


def _assert_refused(sender, receiver):
    with pytest.raises(TransportError) as info:
        sender.send("host", PsiRequest(b"x"))
    with pytest.raises(PeerTimeoutError):
        receiver.recv("guest", PsiRequest, timeout=0.5)
    return str(info.value)


def test_certificate_from_another_ca_is_refused(pki):
    # the host presents a certificate issued by another CA: TLS fails, nothing is delivered
    a, b = pair(pki, tls_b=tls(pki, "host", folder="other"), connect_timeout=3)
    try:
        msg = _assert_refused(a, b)
        assert "host" in msg and "127.0.0.1" in msg
    finally:
        a.close()
        b.close()


def test_client_certificate_from_another_ca_is_refused(pki):
    # the guest's server trusts only the right CA; a client with another CA's cert cannot talk
    a, b = pair(pki, tls_a=tls(pki, "guest"), tls_b=tls(pki, "host", folder="other"),
                connect_timeout=3)
    try:
        with pytest.raises(TransportError):
            b.send("guest", PsiRequest(b"x"))
        with pytest.raises(PeerTimeoutError):
            a.recv("host", PsiRequest, timeout=0.5)
    finally:
        a.close()
        b.close()


def test_expired_certificate_is_refused(pki):
    a, b = pair(pki, tls_b=tls(pki, "host", folder="expired"), connect_timeout=3)
    try:
        _assert_refused(a, b)
    finally:
        a.close()
        b.close()


def test_peer_not_in_config_is_refused(pki):
    # 'outsider' holds a valid certificate from the right CA but is not the guest's peer
    pa, pb = free_ports(2)
    guest = GrpcEndpoint("guest", f"127.0.0.1:{pa}", [PeerAddress("host", f"127.0.0.1:{pb}")],
                         "job", tls(pki, "guest"), connect_timeout=3)
    outsider = GrpcEndpoint("outsider", f"127.0.0.1:{pb}",
                            [PeerAddress("guest", f"127.0.0.1:{pa}")], "job",
                            tls(pki, "outsider"), connect_timeout=3)
    try:
        with pytest.raises(TransportError, match="refused outsider"):
            outsider.send("guest", PsiRequest(b"x"))
        assert guest.rejected and guest.rejected[0][0] == "outsider"
    finally:
        guest.close()
        outsider.close()


def test_pinned_certificate_mismatch_is_refused_inbound(pki):
    # the guest pins the host's second certificate; the host calls with its first one
    pa, pb = free_ports(2)
    other_pin = (pki / "second" / "host.pem").read_bytes()
    guest = GrpcEndpoint("guest", f"127.0.0.1:{pa}",
                         [PeerAddress("host", f"127.0.0.1:{pb}", other_pin)], "job",
                         tls(pki, "guest"), connect_timeout=3)
    host = GrpcEndpoint("host", f"127.0.0.1:{pb}", [PeerAddress("guest", f"127.0.0.1:{pa}")],
                        "job", tls(pki, "host"), connect_timeout=3)
    try:
        with pytest.raises(TransportError, match="pinned"):
            host.send("guest", PsiRequest(b"x"))
        assert guest.rejected[-1] == ("host", "certificate differs from the pinned one")
    finally:
        guest.close()
        host.close()


def test_pinned_certificates_that_match_work_both_ways(pki):
    pa, pb = free_ports(2)
    guest = GrpcEndpoint("guest", f"127.0.0.1:{pa}",
                         [PeerAddress("host", f"127.0.0.1:{pb}", (pki / "host.pem").read_bytes())],
                         "job", tls(pki, "guest"), connect_timeout=5)
    host = GrpcEndpoint("host", f"127.0.0.1:{pb}",
                        [PeerAddress("guest", f"127.0.0.1:{pa}",
                                     (pki / "guest.pem").read_bytes())],
                        "job", tls(pki, "host"), connect_timeout=5)
    try:
        guest.send("host", PsiRequest(b"a"))
        host.send("guest", PsiRequest(b"b"))
        assert host.recv("guest", PsiRequest).blinded == b"a"
        assert guest.recv("host", PsiRequest).blinded == b"b"
    finally:
        guest.close()
        host.close()


@pytest.mark.parametrize("pin, match", [
    ("arbiter.pem", "not issued to 'host'"),                 # another party's certificate
    ("other/host.pem", "not issued by the configured CA"),   # right name, foreign CA
    ("expired/host.pem", "not valid now"),
    ("host.key", "not a PEM certificate"),
])
def test_bad_pin_is_a_config_error(pki, pin, match):
    with pytest.raises(ConfigError, match=match):
        GrpcEndpoint("guest", "127.0.0.1:0",
                     [PeerAddress("host", "127.0.0.1:1", (pki / pin).read_bytes())], "job",
                     tls(pki, "guest"))


def test_other_job_is_refused(pki):
    pa, pb = free_ports(2)
    guest = GrpcEndpoint("guest", f"127.0.0.1:{pa}", [PeerAddress("host", f"127.0.0.1:{pb}")],
                         "job-1", tls(pki, "guest"), connect_timeout=3)
    host = GrpcEndpoint("host", f"127.0.0.1:{pb}", [PeerAddress("guest", f"127.0.0.1:{pa}")],
                        "job-2", tls(pki, "host"), connect_timeout=3)
    try:
        with pytest.raises(TransportError, match="does not match"):
            host.send("guest", PsiRequest(b"x"))
    finally:
        guest.close()
        host.close()


def test_port_already_in_use(pki):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        with pytest.raises(TransportError, match="cannot listen on 127.0.0.1:.*in use"):
            GrpcEndpoint("guest", f"127.0.0.1:{port}", [PeerAddress("host", "127.0.0.1:1")],
                         "job", tls(pki, "guest"))
    finally:
        s.close()


def test_peer_that_never_comes_up(pki):
    pa, pb = free_ports(2)
    guest = GrpcEndpoint("guest", f"127.0.0.1:{pa}", [PeerAddress("host", f"127.0.0.1:{pb}")],
                         "job", tls(pki, "guest"), connect_timeout=2, default_timeout=30)
    try:
        with pytest.raises(PeerTimeoutError, match=f"host at 127.0.0.1:{pb}"):
            guest.send("host", PsiRequest(b"x"))
        with pytest.raises(TransportError, match=f"host at 127.0.0.1:{pb} never came up"):
            guest.recv("host", PsiRequest)
    finally:
        guest.close()


def test_peer_that_goes_away_is_detected_quickly(pki):
    a, b = pair(pki, timeout=60, link_grace=3)
    try:
        b.send("guest", PsiRequest(b"hello"))
        assert a.recv("host", PsiRequest).blinded == b"hello"
        b.close()  # the host's process ends without a word
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="went away.*nothing accepts connections"):
            a.recv("host", PsiRequest)  # after the 3 s link grace, well before the 60 s timeout
        assert time.monotonic() - t0 < 15
    finally:
        a.close()


def test_generated_stubs_match_the_proto(tmp_path):
    pytest.importorskip("grpc_tools")
    root = Path(__file__).resolve().parents[2]
    script = root / "vfl" / "transport" / "_proto" / "regenerate.sh"
    subprocess.run(["bash", str(script), str(tmp_path)], check=True, env={
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})
    for name in ("transport_pb2.py", "transport_pb2.pyi", "transport_pb2_grpc.py"):
        committed = (root / "vfl" / "transport" / "_proto" / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"{name} is stale: run regenerate.sh"
