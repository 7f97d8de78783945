"""Fixtures for transport tests: certificates and loopback gRPC endpoints."""

from __future__ import annotations

import datetime as dt

import pytest

from vfl.certs import issue_party_cert, make_ca, write_party_certs
from vfl.demo import free_ports
from vfl.model import atomic_write_text
from vfl.transport.grpc import GrpcEndpoint, PeerAddress, TlsFiles


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A CA with certificates for guest, host, arbiter and an outsider."""
    d = tmp_path_factory.mktemp("pki")
    write_party_certs(d, ["guest", "host", "arbiter", "outsider"])
    # a second CA and a 'host' certificate from it
    other = d / "other"
    write_party_certs(other, ["host"])
    # an expired certificate for 'host' from the right CA
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_key, ca_cert = make_ca()
    atomic_write_text(d / "ca2.pem", ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    key, cert = issue_party_cert("host", ca_key, ca_cert, days=1,
                                 valid_from=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    atomic_write_text(d / "expired" / "host.key", key.decode())
    atomic_write_text(d / "expired" / "host.pem", cert.decode())
    assert x509.load_pem_x509_certificate(cert).not_valid_after_utc < dt.datetime.now(dt.UTC)
    # a second valid 'host' certificate from the right CA (same name, other key)
    write_second_cert(d, "host")
    return d


def write_second_cert(pki, name):
    """Issue another certificate for ``name`` from ``pki``'s CA into ``pki/second``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    key, cert = issue_party_cert(name, ca_key, ca_cert)
    atomic_write_text(pki / "second" / f"{name}.key", key.decode())
    atomic_write_text(pki / "second" / f"{name}.pem", cert.decode())


def tls(pki, name, folder=None, ca="ca.pem"):
    base = pki / folder if folder else pki
    return TlsFiles(pki / ca, base / f"{name}.pem", base / f"{name}.key")


def pair(pki, job="job", a="guest", b="host", tls_a=None, tls_b=None, connect_timeout=10.0,
         timeout=10.0, link_grace=30.0):
    """Two connected endpoints on free loopback ports."""
    pa, pb = free_ports(2)
    ea = GrpcEndpoint(a, f"127.0.0.1:{pa}", [PeerAddress(b, f"127.0.0.1:{pb}")], job,
                      tls_a or tls(pki, a), connect_timeout=connect_timeout,
                      default_timeout=timeout, link_grace=link_grace)
    eb = GrpcEndpoint(b, f"127.0.0.1:{pb}", [PeerAddress(a, f"127.0.0.1:{pa}")], job,
                      tls_b or tls(pki, b), connect_timeout=connect_timeout,
                      default_timeout=timeout, link_grace=link_grace)
    return ea, eb
