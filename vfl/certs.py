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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vfl.exceptions import ConfigError
from vfl.model import atomic_write_text

__all__ = ["make_ca", "issue_party_cert", "write_party_certs", "check_party_tls"]


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


def _load_cert(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {path} is not a PEM certificate ({exc}).") from None


def check_party_tls(ca: str | Path, cert: str | Path, key: str | Path, party: str, *,
                    now: dt.datetime | None = None) -> None:
    """Check this party's own TLS files before it listens or connects.

    Finds locally, at once, what a peer would only see as a failed handshake:
    a key that does not belong to the certificate, a certificate not issued
    by the configured CA, one for another party name, or one not valid now.

    Raises
    ------
    ConfigError
        Naming the party, the file, the cause and the fix.
    """
    ca_path, cert_path, key_path = Path(ca), Path(cert), Path(key)
    ca_cert = _load_cert(ca_path, "[tls] ca")
    own = _load_cert(cert_path, "[tls] cert")
    try:
        own_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{party}: [tls] key {key_path} is not an unencrypted PEM private key "
                          f"({exc}).") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if own_key.public_key().public_bytes(enc, pub) != own.public_key().public_bytes(enc, pub):
        raise ConfigError(f"{party}: [tls] key {key_path} does not belong to [tls] cert "
                          f"{cert_path} (key/certificate mismatch); give the key the "
                          "certificate was issued for.")
    if own.issuer != ca_cert.subject:
        raise ConfigError(f"{party}: [tls] cert {cert_path} was issued by "
                          f"{own.issuer.rfc4514_string()!r}, not by the configured CA "
                          f"{ca_cert.subject.rfc4514_string()!r} ({ca_path}); use the CA "
                          "every party trusts, or a certificate it issued.")
    try:
        own.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise ConfigError(f"{party}: [tls] cert {cert_path} is not signed by the CA in "
                          f"{ca_path} (same name, another key); use that CA's certificate.") \
            from None
    names = [a.value for a in own.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if party not in names:
        raise ConfigError(f"{party}: [tls] cert {cert_path} is for {', '.join(map(str, names))}, "
                          f"not for this party {party!r}; peers would refuse it. Use "
                          f"{party}'s certificate (its common name must be the party name).")
    at = now or dt.datetime.now(dt.UTC)
    for what, c, path in (("[tls] cert", own, cert_path), ("[tls] ca", ca_cert, ca_path)):
        if not c.not_valid_before_utc <= at <= c.not_valid_after_utc:
            state = "expired on" if at > c.not_valid_after_utc else "is not valid before"
            when = c.not_valid_after_utc if at > c.not_valid_after_utc else c.not_valid_before_utc
            raise ConfigError(f"{party}: {what} {path} {state} {when:%Y-%m-%d %H:%M} UTC; "
                              "renew it (vfl certs makes demo certificates).")
