"""A small certificate authority for demos and tests (``vfl certs``).

Real deployments bring certificates from their own PKI; vfl only needs, per
party, a key and a certificate whose common name is the party's name, issued
by a CA that every party trusts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vfl.exceptions import ConfigError
from vfl.model import atomic_write_text

__all__ = ["make_ca", "issue_party_cert", "write_party_certs"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vfl"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(name: str = "vfl demo CA", days: int = 365
            ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA key and certificate (ECDSA P-256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue_party_cert(party: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                     *, days: int = 365, valid_from: dt.datetime | None = None
                     ) -> tuple[bytes, bytes]:
    """Key and certificate PEM for ``party`` (CN and DNS name = party; also localhost)."""
    if not party or any(c in party for c in "/\\ \t\n"):
        raise ConfigError(f"Invalid party name {party!r} for a certificate.")
    key = ec.generate_private_key(ec.SECP256R1())
    start = valid_from or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    san = x509.SubjectAlternativeName([x509.DNSName(party), x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(_name(party))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)


def write_party_certs(out_dir: str | Path, parties: list[str], days: int = 365) -> dict[str, Path]:
    """Write ``ca.pem`` (+ ``ca.key``) and ``<party>.pem`` / ``<party>.key`` for each party."""
    if len(set(parties)) != len(parties) or not parties:
        raise ConfigError("Give distinct party names, e.g. --parties bank_a,bank_b,arbiter.")
    out = Path(out_dir)
    ca_key, ca_cert = make_ca(days=days)
    atomic_write_text(out / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    atomic_write_text(out / "ca.key", _pem_key(ca_key).decode())
    (out / "ca.key").chmod(0o600)
    paths = {"ca": out / "ca.pem"}
    for party in parties:
        key, cert = issue_party_cert(party, ca_key, ca_cert, days=days)
        atomic_write_text(out / f"{party}.key", key.decode())
        (out / f"{party}.key").chmod(0o600)
        atomic_write_text(out / f"{party}.pem", cert.decode())
        paths[party] = out / f"{party}.pem"
    return paths
