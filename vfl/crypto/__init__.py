"""Paillier layer: keys, fixed-point encoding, encrypted vectors."""

from __future__ import annotations

from vfl.crypto.encoding import dequantize, from_residues, quantize, to_residues
from vfl.crypto.paillier import (
    DEFAULT_KEY_BITS,
    MIN_SECURE_KEY_BITS,
    PaillierPrivateKey,
    PaillierPublicKey,
    Randomizer,
    check_key_size,
    generate_keypair,
)
from vfl.crypto.vector import EncryptedVector, matvec_t, multiexp

__all__ = [
    "DEFAULT_KEY_BITS",
    "MIN_SECURE_KEY_BITS",
    "EncryptedVector",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "Randomizer",
    "check_key_size",
    "dequantize",
    "from_residues",
    "generate_keypair",
    "matvec_t",
    "multiexp",
    "quantize",
    "to_residues",
]
