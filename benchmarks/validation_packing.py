"""Cost of the per-epoch validation step with and without packing (issue 10).

The arbiter decrypts the validation rows' joint scores every epoch. Decryption
dominates, so the guest packs the permuted scores 28 to a 2048-bit ciphertext
(72-bit slots). One run measures both, one core each, on the same ciphertexts::

    python benchmarks/validation_packing.py
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from vfl.crypto.paillier import Randomizer, generate_keypair
from vfl.crypto.vector import EncryptedVector
from vfl.lr.config import VALIDATION_SLOT_BITS

T = TypeVar("T")


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``fn(*args)`` and its wall time in seconds."""
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def _pack(enc: EncryptedVector, vals: np.ndarray) -> EncryptedVector:
    """What the guest does: offset every score into its slot, then pack."""
    offset = 1 << (VALIDATION_SLOT_BITS - 1)
    return enc.add_plain([int(v) + offset for v in vals.tolist()]).pack(VALIDATION_SLOT_BITS)


def main() -> None:
    pub, priv = generate_keypair(2048)
    print(f"CPU: {platform.processor() or platform.machine()}; 2048-bit key; one core")
    for n in (1200, 6000):
        vals = np.random.default_rng(0).integers(-2**40, 2**40, n)
        rnd = Randomizer(pub)
        enc, t_enc = _timed(EncryptedVector.encrypt, pub, vals, 32, rnd)
        e2, t_rr = _timed(enc.rerandomize, rnd)
        _, t_dec = _timed(e2.decrypt_residues, priv)
        packed, t_pack = _timed(_pack, enc, vals)
        p2, t_rr2 = _timed(packed.rerandomize, rnd)
        _, t_dec2 = _timed(p2.decrypt_residues, priv)
        before, after = t_rr + t_dec, t_pack + t_rr2 + t_dec2
        print(f"{n} validation rows: host encryption {t_enc:.2f} s (both); unpacked: "
              f"re-randomise {t_rr:.2f} s + decrypt {t_dec:.2f} s = {before:.2f} s; packed "
              f"({len(packed)} ciphertexts): pack {t_pack:.2f} s + re-randomise {t_rr2:.2f} s "
              f"+ decrypt {t_dec2:.2f} s = {after:.2f} s; {before / after:.1f}x less")


if __name__ == "__main__":
    main()
