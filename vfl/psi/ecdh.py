"""X25519 primitives for ECDH private set intersection.

Hash to the curve
-----------------
An ID ``x`` (UTF-8 bytes) is mapped to the Montgomery u-coordinate
``u = SHA-512("vfl/psi/v1/x25519" || len(x) || x) mod p`` with
``p = 2^255 - 19``. RFC 7748 defines X25519 for every u, and the Montgomery
ladder computes scalar multiplication on Curve25519 when u is on the curve
and on its quadratic twist otherwise; both groups have a large prime-order
subgroup (2^252 + ... on the curve, ~2^253 on the twist; Curve25519 was
designed to be twist-secure), and X25519's clamped scalars are multiples of
the cofactor 8, so every blinded value lies in one of the two prime-order
subgroups. The map is therefore a random oracle onto curve-or-twist points;
which of the two a point is on is a public function of the ID and reveals
nothing to someone who does not already hold the ID. See
``protocols/specs/psi.md`` for the full argument.

Blinding is ``X25519(k, u)`` with a per-run secret scalar ``k`` drawn from the
operating system CSPRNG. Because both parties' scalars are applied to the same
point, ``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from vfl.exceptions import RemoteProtocolError

__all__ = ["POINT_BYTES", "hash_to_point", "BlindingKey", "split_points"]

POINT_BYTES = 32
_P = 2**255 - 19
_DST = b"vfl/psi/v1/x25519"


def hash_to_point(identifier: str) -> bytes:
    """Map an ID to a 32-byte X25519 u-coordinate (little-endian)."""
    data = identifier.encode("utf-8")
    digest = hashlib.sha512(_DST + len(data).to_bytes(4, "big") + data).digest()
    return (int.from_bytes(digest, "little") % _P).to_bytes(POINT_BYTES, "little")


def split_points(data: bytes, *, peer: str, what: str, expected: int | None = None) -> list[bytes]:
    """Split concatenated 32-byte points, checking the length and count."""
    if len(data) % POINT_BYTES:
        raise RemoteProtocolError(
            f"{what} from {peer} is {len(data)} bytes, not a multiple of {POINT_BYTES}."
        )
    count = len(data) // POINT_BYTES
    if expected is not None and count != expected:
        raise RemoteProtocolError(f"{what} from {peer} has {count} points; expected {expected}.")
    return [data[i : i + POINT_BYTES] for i in range(0, len(data), POINT_BYTES)]


class BlindingKey:
    """A per-run secret X25519 scalar (from the OS CSPRNG)."""

    def __init__(self) -> None:
        self._key = X25519PrivateKey.generate()

    def blind(self, points: Iterable[bytes], *, peer: str = "self") -> list[bytes]:
        """Multiply every point by the secret scalar.

        Raises
        ------
        RemoteProtocolError
            If a point is of small order (the result would be all zeros),
            which never happens for hashed IDs and so marks a malicious peer.
        """
        key = self._key
        out = []
        for i, point in enumerate(points):
            try:
                out.append(key.exchange(X25519PublicKey.from_public_bytes(point)))
            except ValueError:
                raise RemoteProtocolError(
                    f"Point {i} from {peer} is of small order; refusing to blind it."
                ) from None
        return out

    def blind_ids(self, ids: Sequence[str]) -> list[bytes]:
        """Hash IDs to points and blind them."""
        return self.blind(hash_to_point(x) for x in ids)
