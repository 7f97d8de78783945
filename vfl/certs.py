"""A small certificate authority for demos and tests (``vfl certs``).

Real deployments bring certificates from their own PKI; vfl only needs, per
party, a key and a certificate whose common name is the party's name, issued
by a CA that every party trusts.

A party that runs its ciphertext work on its own Dask cluster
(``[compute] engine = "dask"``) needs a second, separate CA of its own for
that cluster (:func:`write_compute_certs`): Dask's mutual TLS accepts *any*
certificate its CA issued, whatever its name, and whoever reaches a Dask
scheduler can run code on its workers, so the cluster's CA must never be the
federation's (a peer's certificate would then open the cluster to that peer).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vfl.exceptions import ConfigError
from vfl.model import atomic_write_text

__all__ = ["make_ca", "issue_party_cert", "write_party_certs", "check_party_tls",
           "issue_compute_cert", "write_compute_certs", "check_compute_tls", "COMPUTE_CERT_NAMES"]


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


def _load_key_matching(key_path: Path, own: x509.Certificate, cert_path: Path, who: str,
                       sect: str) -> None:
    try:
        own_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{who}: {sect} key {key_path} is not an unencrypted PEM private key "
                          f"({exc}).") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if own_key.public_key().public_bytes(enc, pub) != own.public_key().public_bytes(enc, pub):
        raise ConfigError(f"{who}: {sect} key {key_path} does not belong to {sect} cert "
                          f"{cert_path} (key/certificate mismatch); give the key the "
                          "certificate was issued for.")


def _check_issued_by(own: x509.Certificate, cert_path: Path, ca_cert: x509.Certificate,
                     ca_path: Path, who: str, sect: str, trusted_by: str) -> None:
    if own.issuer != ca_cert.subject:
        raise ConfigError(f"{who}: {sect} cert {cert_path} was issued by "
                          f"{own.issuer.rfc4514_string()!r}, not by the configured CA "
                          f"{ca_cert.subject.rfc4514_string()!r} ({ca_path}); use the CA "
                          f"{trusted_by} trusts, or a certificate it issued.")
    try:
        own.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise ConfigError(f"{who}: {sect} cert {cert_path} is not signed by the CA in "
                          f"{ca_path} (same name, another key); use that CA's certificate.") \
            from None


def _check_validity(who: str, sect: str, checks: Sequence[tuple[str, x509.Certificate, Path]],
                    now: dt.datetime | None, renew: str) -> None:
    at = now or dt.datetime.now(dt.UTC)
    for what, c, path in checks:
        if not c.not_valid_before_utc <= at <= c.not_valid_after_utc:
            state = "expired on" if at > c.not_valid_after_utc else "is not valid before"
            when = c.not_valid_after_utc if at > c.not_valid_after_utc else c.not_valid_before_utc
            raise ConfigError(f"{who}: {sect} {what} {path} {state} {when:%Y-%m-%d %H:%M} UTC; "
                              f"renew it ({renew}).")


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
    _load_key_matching(key_path, own, cert_path, party, "[tls]")
    _check_issued_by(own, cert_path, ca_cert, ca_path, party, "[tls]", "every party")
    names = [a.value for a in own.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if party not in names:
        raise ConfigError(f"{party}: [tls] cert {cert_path} is for {', '.join(map(str, names))}, "
                          f"not for this party {party!r}; peers would refuse it. Use "
                          f"{party}'s certificate (its common name must be the party name).")
    _check_validity(party, "[tls]", (("cert", own, cert_path), ("ca", ca_cert, ca_path)), now,
                    "vfl certs makes demo certificates")


# ------------------------------------------------------- a party's own Dask cluster
#: The certificates :func:`write_compute_certs` issues by default: one each for the
#: Dask scheduler, the workers (all may share one) and the party's own process (client).
COMPUTE_CERT_NAMES = ("scheduler", "worker", "client")


def _san(hostnames: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    for h in hostnames:
        entry: x509.GeneralName
        if _is_ip(h):
            entry = x509.IPAddress(ipaddress.ip_address(h))
        elif h and not any(c in h for c in "/\\ \t\n:"):
            entry = x509.DNSName(h)
        else:
            raise ConfigError(f"Invalid host name {h!r} for a compute certificate; give a DNS "
                              "name or an IP address.")
        if entry not in names:
            names.append(entry)
    return x509.SubjectAlternativeName(names)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def issue_compute_cert(common_name: str, ca_key: ec.EllipticCurvePrivateKey,
                       ca_cert: x509.Certificate, *, hostnames: Sequence[str] = (),
                       days: int = 365, valid_from: dt.datetime | None = None
                       ) -> tuple[bytes, bytes]:
    """Key and certificate PEM for one member of a party's Dask cluster.

    Dask uses one certificate per role both to accept connections and to make
    them (a worker listens for its peers and connects to the scheduler), so
    the certificate allows TLS server *and* client authentication (key usage
    ``digitalSignature``, extended key usage ``serverAuth`` + ``clientAuth``).
    Its subject alternative names are ``localhost``, ``127.0.0.1``, ``::1``
    and ``hostnames`` (DNS names or IP addresses of the machines that use it);
    Dask itself does not check host names (it trusts exactly the CA it is
    given), but other TLS tools do.

    Parameters
    ----------
    common_name : str
        E.g. ``"bank_a-dask-worker"``.
    ca_key, ca_cert
        The party's own compute CA (not the federation's CA).
    hostnames : sequence of str
        Extra DNS names or IP addresses.
    days : int
        Validity from ``valid_from`` (default: five minutes ago).

    Returns
    -------
    (key_pem, cert_pem) : tuple of bytes
    """
    if not common_name or any(c in common_name for c in "/\\\t\n"):
        raise ConfigError(f"Invalid common name {common_name!r} for a compute certificate.")
    key = ec.generate_private_key(ec.SECP256R1())
    start = valid_from or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    cert = (x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(_san(hostnames), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)


def write_compute_certs(out_dir: str | Path, party: str, *,
                        names: Sequence[str] = COMPUTE_CERT_NAMES,
                        hostnames: Sequence[str] = (), days: int = 365) -> dict[str, Path]:
    """Certificates for ``party``'s own Dask cluster, from the party's own compute CA.

    Writes, in ``out_dir``, ``ca.pem`` + ``ca.key`` (a new CA named
    ``"<party> compute CA"``; an existing pair there is reused, so more
    workers can be issued certificates later) and ``<name>.pem`` /
    ``<name>.key`` for each of ``names`` (common name
    ``<party>-dask-<name>``; keys mode 0600). Use ``ca.pem`` and the
    ``client`` files in the party's ``[compute]`` section, and start the
    cluster with the ``scheduler`` and ``worker`` files (``dask scheduler
    --tls-ca-file ca.pem --tls-cert scheduler.pem --tls-key scheduler.key``,
    likewise ``dask worker``). Keep this CA apart from the federation's
    ``vfl certs`` CA: Dask admits any certificate its CA issued.

    Parameters
    ----------
    out_dir : str or Path
        Folder of the compute PKI (created if missing).
    party : str
        The party the cluster belongs to (in the CA's and certificates' names).
    names : sequence of str
        Certificates to issue (default ``scheduler``, ``worker``, ``client``).
    hostnames : sequence of str
        DNS names or IP addresses of the cluster's machines, added to every
        certificate's subject alternative names (``localhost``/``127.0.0.1``
        always are).
    days : int
        Validity of the CA (when made here) and of each certificate.

    Returns
    -------
    dict of str to Path
        ``"ca"`` and each name mapped to its certificate file (the key is
        the same path with the suffix ``.key``).

    Raises
    ------
    ConfigError
        For an invalid or repeated name, or an existing ``ca.pem`` whose
        ``ca.key`` is missing or does not belong to it.
    """
    if not party or any(c in party for c in "/\\ \t\n"):
        raise ConfigError(f"Invalid party name {party!r} for compute certificates.")
    if not names or len(set(names)) != len(names) or "ca" in names or any(
            not n or any(c in n for c in "/\\ \t\n.") for n in names):
        raise ConfigError("Give distinct certificate names without '/', '.' or spaces, other "
                          "than 'ca', e.g. scheduler,worker,client.")
    out = Path(out_dir)
    ca_pem, ca_key_path = out / "ca.pem", out / "ca.key"
    if ca_pem.exists():
        ca_cert = _load_cert(ca_pem, "compute CA")
        try:
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{ca_pem} exists but its key {ca_key_path} cannot be read "
                              f"({exc}); give an empty folder for a new compute CA.") from None
        _load_key_matching(ca_key_path, ca_cert, ca_pem, party, "compute CA")
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{ca_key_path}: the compute CA key must be an EC key.")
        ca_key = loaded
    else:
        ca_key, ca_cert = make_ca(f"{party} compute CA", days=days)
        atomic_write_text(ca_pem, ca_cert.public_bytes(serialization.Encoding.PEM).decode())
        atomic_write_text(ca_key_path, _pem_key(ca_key).decode())
        ca_key_path.chmod(0o600)
    paths = {"ca": ca_pem}
    for name in names:
        key, cert = issue_compute_cert(f"{party}-dask-{name}", ca_key, ca_cert,
                                       hostnames=hostnames, days=days)
        atomic_write_text(out / f"{name}.key", key.decode())
        (out / f"{name}.key").chmod(0o600)
        atomic_write_text(out / f"{name}.pem", cert.decode())
        paths[name] = out / f"{name}.pem"
    return paths


def _same_ca(a: x509.Certificate, b: x509.Certificate) -> bool:
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return (a.subject == b.subject
            or a.public_key().public_bytes(enc, pub) == b.public_key().public_bytes(enc, pub))


def check_compute_tls(ca: str | Path, cert: str | Path, key: str | Path, party: str, *,
                      federation_ca: str | Path | None = None,
                      now: dt.datetime | None = None) -> None:
    """Check the files a party's process uses to reach its own Dask cluster.

    The key must belong to the certificate, the certificate must be issued by
    the compute CA and valid now, and the compute CA must not be the
    federation's CA (``federation_ca``, the party's ``[tls] ca``): Dask admits
    any certificate its CA issued, so a shared CA would let a peer's
    certificate onto this party's cluster.

    Raises
    ------
    ConfigError
        Naming the party, the ``[compute]`` file, the cause and the fix.
    """
    ca_path, cert_path, key_path = Path(ca), Path(cert), Path(key)
    ca_cert = _load_cert(ca_path, "[compute] ca")
    own = _load_cert(cert_path, "[compute] cert")
    if federation_ca is not None:
        fed = _load_cert(Path(federation_ca), "[tls] ca")
        if _same_ca(ca_cert, fed):
            raise ConfigError(
                f"{party}: [compute] ca {ca_path} is the federation's CA ([tls] ca "
                f"{federation_ca}); a Dask cluster admits every certificate its CA issued, so "
                "every peer could run code on it. Give the cluster a CA of its own "
                "(vfl.certs.write_compute_certs).")
    _load_key_matching(key_path, own, cert_path, party, "[compute]")
    _check_issued_by(own, cert_path, ca_cert, ca_path, party, "[compute]",
                     "your Dask scheduler and workers")
    _check_validity(party, "[compute]", (("cert", own, cert_path), ("ca", ca_cert, ca_path)),
                    now, "vfl.certs.write_compute_certs issues compute certificates")
