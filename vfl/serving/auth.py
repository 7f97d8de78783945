"""Who may call the guest's scoring API, how often, and a trail of what each asked.

A bank's decision engine calls ``POST /v1/score``; nobody else may. The guest's
``[serve] auth`` says how callers prove who they are:

* ``"api_keys"``: ``Authorization: Bearer <key>``. Keys are 256-bit random
  strings made by ``vfl serve-key`` and shown once; the clients file keeps
  only their SHA-256 (a key has full entropy, so a fast hash suffices: what
  the file leaks is as hard to invert as the key is to guess). A client is
  revoked by ``revoked = true`` (or by deleting it) and a reload (SIGHUP).
* ``"mtls"``: mutual TLS on the API itself: the client presents a certificate
  of the configured client CA (an expired, foreign or missing one fails the
  handshake before any HTTP), and the certificate's common name must be a
  client of the file (``cert_name``). Revoked as for keys.
* ``"none"``: no check here, for an API that only a gateway reaches and that
  gateway authenticates every caller. It must be said explicitly: without an
  ``auth`` setting the API refuses to start.

Every client has its own quota (requests per second in bursts, applicants
per UTC day), so one caller cannot spend another's, nor the hosts' budgets
beyond its share; the refusals are HTTP 401 (no or unknown credentials), 403
(revoked) and 429 (over quota, with ``Retry-After``). Every answered or refused
request of a known client is one JSON line of the audit trail: time, client,
endpoint, status, applicants and their customer IDs.

Pure logic, no HTTP: :mod:`vfl.serving.api` calls it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vfl.exceptions import ConfigError, VFLError

__all__ = ["AUTH_MODES", "ApiClient", "AuthError", "ClientRegistry", "new_api_key",
           "key_digest", "add_client"]

#: ``[serve] auth`` values.
AUTH_MODES = ("api_keys", "mtls", "none")
#: Largest clients file read (bytes) and most clients in it.
MAX_CLIENTS_FILE = 1 << 20
MAX_CLIENTS = 10_000
#: A key as ``vfl serve-key`` makes it: the prefix and 43 URL-safe characters (256 bits).
KEY_PATTERN = re.compile(r"vfl_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class AuthError(VFLError):
    """A request refused before it is scored: ``status`` 401, 403 or 429."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def new_api_key() -> str:
    """A fresh key (256 bits from ``secrets``)."""
    return "vfl_" + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    """What the clients file keeps of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class ApiClient:
    """One caller of the API and its quota (one ``[[client]]`` of the clients file)."""

    name: str
    key_sha256: str | None
    requests_per_second: float = 50.0
    burst: int = 100
    daily_applicants: int = 100_000
    revoked: bool = False
    #: the common name of the client's certificate (auth = "mtls")
    cert_name: str | None = None
    # the token bucket and today's count (not in the file)
    tokens: float = field(default=0.0, repr=False)
    refilled: float = field(default=-math.inf, repr=False)
    day: dt.date | None = field(default=None, repr=False)
    used_today: int = field(default=0, repr=False)


def _read_clients(path: Path) -> list[ApiClient]:
    try:
        size = path.stat().st_size
        if size > MAX_CLIENTS_FILE:
            raise ConfigError(f"{path}: {size} bytes; a clients file holds at most "
                              f"{MAX_CLIENTS_FILE}.")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read the API clients file {path}: {exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a TOML clients file ({exc}).") from None
    unknown = set(data) - {"client"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; a clients "
                          "file has [[client]] entries only.")
    entries = data.get("client", [])
    if not isinstance(entries, list) or len(entries) > MAX_CLIENTS:
        raise ConfigError(f"{path}: [[client]] must be a list of at most {MAX_CLIENTS}.")
    out: list[ApiClient] = []
    seen: set[str] = set()
    keys = {"name", "key_sha256", "cert_name", "requests_per_second", "burst",
            "daily_applicants", "revoked"}
    for i, e in enumerate(entries):
        where = f"{path}: client {i + 1}"
        if not isinstance(e, dict) or set(e) - keys:
            raise ConfigError(f"{where}: only {', '.join(sorted(keys))}.")
        name, digest = e.get("name"), e.get("key_sha256")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: name must be 1-64 letters, digits, '_', '.', '-'.")
        if name in seen:
            raise ConfigError(f"{where}: a second client named {name!r}.")
        seen.add(name)
        cert_name = e.get("cert_name")
        if digest is None and cert_name is None:
            raise ConfigError(f"{where} ({name}): needs key_sha256 (auth = \"api_keys\") or "
                              "cert_name (auth = \"mtls\").")
        if digest is not None and (not isinstance(digest, str)
                                   or not re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise ConfigError(f"{where} ({name}): key_sha256 must be 64 lowercase hex digits "
                              "(as vfl serve-key writes it), never the key itself.")
        if cert_name is not None and (not isinstance(cert_name, str)
                                      or not 0 < len(cert_name) <= 128):
            raise ConfigError(f"{where} ({name}): cert_name must be 1-128 characters.")
        rps = e.get("requests_per_second", 50.0)
        burst = e.get("burst", 100)
        daily = e.get("daily_applicants", 100_000)
        revoked = e.get("revoked", False)
        if not (isinstance(rps, int | float) and not isinstance(rps, bool)
                and 0 < rps <= 100_000 and math.isfinite(rps)):
            raise ConfigError(f"{where} ({name}): requests_per_second must be in (0, 100000].")
        if not (isinstance(burst, int) and not isinstance(burst, bool) and 1 <= burst <= 10**6):
            raise ConfigError(f"{where} ({name}): burst must be 1 to 1000000.")
        if not (isinstance(daily, int) and not isinstance(daily, bool) and 1 <= daily <= 10**9):
            raise ConfigError(f"{where} ({name}): daily_applicants must be 1 to 10^9.")
        if not isinstance(revoked, bool):
            raise ConfigError(f"{where} ({name}): revoked must be true or false.")
        out.append(ApiClient(name, digest, float(rps), burst, daily, revoked, cert_name))
    return out


class ClientRegistry:
    """The API's callers (from the clients file), their quotas and the audit trail.

    ``clock`` (monotonic seconds) and ``today`` are for tests.
    """

    def __init__(self, clients: Sequence[ApiClient], *, audit: str | Path | None = None,
                 source: str = "<memory>", clock: Callable[[], float] = time.monotonic,
                 today: Callable[[], dt.date] | None = None) -> None:
        self.source = source
        self._clock = clock
        self._today = today or (lambda: dt.datetime.now(dt.UTC).date())
        self._lock = threading.Lock()
        self._by_digest: dict[str, ApiClient] = {}
        self._by_cert: dict[str, ApiClient] = {}
        self.replace(clients)
        self._audit: IO[str] | None = None
        self.audit_path = Path(audit) if audit is not None else None
        if self.audit_path is not None:
            self.audit_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)  # it names customers
            self._audit = os.fdopen(fd, "a", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> ClientRegistry:
        """The registry of a clients file (``[[client]]`` entries)."""
        path = Path(path)
        return cls(_read_clients(path), source=str(path), **kwargs)

    def reload(self) -> int:
        """Read the clients file again (revocations, new clients); quotas in use carry over.
        Returns the number of clients."""
        clients = _read_clients(Path(self.source))
        self.replace(clients)
        return len(clients)

    def replace(self, clients: Sequence[ApiClient]) -> None:
        """Serve ``clients`` from now on, keeping the quota state of those already known."""
        with self._lock:
            old = {c.name: c for c in (*self._by_digest.values(), *self._by_cert.values())}
            by_digest: dict[str, ApiClient] = {}
            by_cert: dict[str, ApiClient] = {}
            for c in clients:
                prev = old.get(c.name)
                if prev is not None:
                    c.tokens, c.refilled = prev.tokens, prev.refilled
                    c.day, c.used_today = prev.day, prev.used_today
                if c.key_sha256 is not None:
                    by_digest[c.key_sha256] = c
                if c.cert_name is not None:
                    by_cert[c.cert_name] = c
            self._by_digest, self._by_cert = by_digest, by_cert

    @property
    def clients(self) -> list[str]:
        """The clients' names (revoked ones too)."""
        return sorted({c.name for c in (*self._by_digest.values(), *self._by_cert.values())})

    def authenticate(self, authorization: str | None) -> ApiClient:
        """The client an ``Authorization`` header names, or :class:`AuthError` (401, 403)."""
        if not authorization:
            raise AuthError(401, "no credentials: send 'Authorization: Bearer <API key>'")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not KEY_PATTERN.fullmatch(key):
            raise AuthError(401, "malformed credentials: send 'Authorization: Bearer <API key>' "
                                 "with a key made by vfl serve-key")
        digest = key_digest(key)
        client = self._by_digest.get(digest)
        if client is None or not hmac.compare_digest(client.key_sha256 or "", digest):
            raise AuthError(401, "unknown API key")
        if client.revoked:
            raise AuthError(403, f"the API key of client {client.name!r} is revoked")
        return client

    def authenticate_cert(self, cert_name: str | None) -> ApiClient:
        """The client whose certificate (already verified by the TLS handshake against the
        client CA) has this common name, or :class:`AuthError` (403)."""
        if not cert_name:
            raise AuthError(403, "the client certificate names no common name")
        client = self._by_cert.get(cert_name)
        if client is None:
            raise AuthError(403, f"the certificate of {cert_name[:128]!r} is not a client of "
                                 "this API")
        if client.revoked:
            raise AuthError(403, f"client {client.name!r} is revoked")
        return client

    def admit(self, client: ApiClient, applicants: int) -> None:
        """Take one request from ``client``'s rate and ``applicants`` from its day, or raise
        :class:`AuthError` (429) without taking anything."""
        with self._lock:
            now = self._clock()
            if client.refilled == -math.inf:
                client.tokens = float(client.burst)
            else:
                client.tokens = min(float(client.burst), client.tokens
                                    + (now - client.refilled) * client.requests_per_second)
            client.refilled = now
            today = self._today()
            if client.day != today:
                client.day, client.used_today = today, 0
            if client.tokens < 1.0:
                wait = (1.0 - client.tokens) / client.requests_per_second
                raise AuthError(429, f"client {client.name!r}: more than "
                                     f"{client.requests_per_second:g} requests per second "
                                     f"(bursts of {client.burst})", retry_after=wait)
            if client.used_today + applicants > client.daily_applicants:
                tomorrow = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(),
                                               tzinfo=dt.UTC)
                wait = (tomorrow - dt.datetime.now(dt.UTC)).total_seconds()
                raise AuthError(429, f"client {client.name!r}: today's {client.daily_applicants} "
                                     "applicants are used up (it resets at 00:00 UTC)",
                                retry_after=max(1.0, wait))
            client.tokens -= 1.0
            client.used_today += applicants

    def record(self, client: str, endpoint: str, status: int,
               customer_ids: Sequence[str] = ()) -> None:
        """One line of the audit trail (if kept)."""
        if self._audit is None:
            return
        line = json.dumps({"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                           "client": client, "endpoint": endpoint, "status": status,
                           "applicants": len(customer_ids),
                           "customers": list(customer_ids)}, separators=(",", ":"),
                          ensure_ascii=False)
        with self._lock:
            self._audit.write(line + "\n")
            self._audit.flush()

    def close(self) -> None:
        """Close the audit trail."""
        with self._lock:
            if self._audit is not None:
                self._audit.close()
                self._audit = None


def add_client(path: str | Path, name: str, *, requests_per_second: float = 50.0,
               burst: int = 100, daily_applicants: int = 100_000) -> str:
    """Append a client to the clients file (created ``0600``); return its new key, which
    is stored nowhere: show it once."""
    path = Path(path)
    if not _NAME.fullmatch(name):
        raise ConfigError("A client's name is 1-64 letters, digits, '_', '.', '-'.")
    existing = _read_clients(path) if path.exists() else []
    if any(c.name == name for c in existing):
        raise ConfigError(f"{path} already has a client {name!r}: revoke it, or choose "
                          "another name.")
    if len(existing) >= MAX_CLIENTS:
        raise ConfigError(f"{path}: at most {MAX_CLIENTS} clients.")
    key = new_api_key()
    entry = ApiClient(name, key_digest(key), float(requests_per_second), burst,
                      daily_applicants)
    text = (f'\n[[client]]\nname = "{name}"\nkey_sha256 = "{entry.key_sha256}"\n'
            f"requests_per_second = {float(requests_per_second)!r}\nburst = {burst}\n"
            f"daily_applicants = {daily_applicants}\nrevoked = false\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text)
    _read_clients(path)  # what was written reads back
    return key
