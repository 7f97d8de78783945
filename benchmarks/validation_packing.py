"""Cost of the per-epoch validation step with and without packing (issue 10).

The arbiter decrypts the validation rows' joint scores every epoch. Decryption
dominates, so the guest packs the permuted scores 28 to a 2048-bit ciphertext
(72-bit slots). One run measures both, one core each, on the same ciphertexts::

    python benchmarks/validation_packing.py
"""

from __future__ import annotations

import platform
import time

import numpy as np

from vfl.crypto.paillier import Randomizer, generate_keypair
from vfl.crypto.vector import EncryptedVector
from vfl.lr.config import VALIDATION_SLOT_BITS


def main() -> None:
    pub, priv = generate_keypair(2048)
    print(f"CPU: {platform.processor() or platform.machine()}; 2048-bit key; one core")
    for n in (1200, 6000):
        vals = np.random.default_rng(0).integers(-2**40, 2**40, n)
        rnd = Randomizer(pub)
        t = time.perf_counter()
        enc = EncryptedVector.encrypt(pub, vals, 32, rnd)
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        e2 = enc.rerandomize(rnd)
        t_rr = time.perf_counter() - t
        t = time.perf_counter()
        e2.decrypt_residues(priv)
        t_dec = time.perf_counter() - t
        offset = 1 << (VALIDATION_SLOT_BITS - 1)
        t = time.perf_counter()
        packed = enc.add_plain([int(v) + offset for v in vals.tolist()]).pack(VALIDATION_SLOT_BITS)
        t_pack = time.perf_counter() - t
        t = time.perf_counter()
        p2 = packed.rerandomize(rnd)
        t_rr2 = time.perf_counter() - t
        t = time.perf_counter()
        p2.decrypt_residues(priv)
        t_dec2 = time.perf_counter() - t
        before, after = t_rr + t_dec, t_pack + t_rr2 + t_dec2
        print(f"{n} validation rows: host encryption {t_enc:.2f} s (both); unpacked: "
              f"re-randomise {t_rr:.2f} s + decrypt {t_dec:.2f} s = {before:.2f} s; packed "
              f"({len(packed)} ciphertexts): pack {t_pack:.2f} s + re-randomise {t_rr2:.2f} s "
              f"+ decrypt {t_dec2:.2f} s = {after:.2f} s; {before / after:.1f}x less")


if __name__ == "__main__":
    main()
