"""Encrypted vectors and decrypted residues on the wire, with their checks.

Every protocol that moves Paillier ciphertexts (hetero LR, federated binning)
sends them as :class:`Ciphertexts` and parses what it receives with
:func:`decode_ciphertexts`, which refuses another key, another scale, another
length or an element outside ``(0, n^2)`` and names the sender.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vfl.crypto.paillier import PaillierPublicKey
from vfl.crypto.vector import EncryptedVector
from vfl.exceptions import CryptoError, RemoteProtocolError

__all__ = ["Ciphertexts", "encode_ciphertexts", "decode_ciphertexts", "encode_residues",
           "decode_residues"]


@dataclass(frozen=True, slots=True)
class Ciphertexts:
    """An encrypted vector on the wire: key fingerprint, scale, fixed-width bytes."""

    key: bytes
    frac_bits: int
    data: bytes


def encode_ciphertexts(vec: EncryptedVector) -> Ciphertexts:
    """Wire form of an :class:`EncryptedVector`."""
    return Ciphertexts(vec.public_key.fingerprint, vec.frac_bits, vec.to_bytes())


def decode_ciphertexts(
    public_key: PaillierPublicKey,
    wire: Ciphertexts,
    *,
    peer: str,
    what: str,
    expected_len: int,
    frac_bits: int,
) -> EncryptedVector:
    """Validate and parse ciphertexts received from ``peer``.

    Checks the key fingerprint, the scale, the element count and
    ``0 < c < n^2`` for every element.
    """
    if wire.key != public_key.fingerprint:
        raise RemoteProtocolError(f"{what} from {peer} is encrypted under another public key.")
    if wire.frac_bits != frac_bits:
        raise RemoteProtocolError(
            f"{what} from {peer} has scale 2^{wire.frac_bits}; expected 2^{frac_bits}."
        )
    try:
        return EncryptedVector.from_bytes(public_key, wire.data, frac_bits,
                                          expected_len=expected_len)
    except CryptoError as exc:
        raise RemoteProtocolError(f"{what} from {peer}: {exc}") from None


def encode_residues(values: Iterable[Any], width: int) -> bytes:
    """Fixed-width big-endian bytes of residues mod n."""
    return b"".join(int(v).to_bytes(width, "big") for v in values)


def decode_residues(data: bytes, width: int, bound: int, *, peer: str, expected: int,
                    what: str = "Decrypted gradient") -> list[int]:
    """Parse fixed-width values, checking count and ``0 <= v < bound``."""
    if len(data) != width * expected:
        raise RemoteProtocolError(
            f"{what} from {peer} has {len(data)} bytes; expected {width * expected}."
        )
    out = [int.from_bytes(data[i * width : (i + 1) * width], "big") for i in range(expected)]
    if any(v >= bound for v in out):
        raise RemoteProtocolError(f"{what} from {peer} has a value outside the masked range.")
    return out
