"""The same hetero-LR protocol written the straightforward way with phe (one EncryptedNumber per value).

Used by ``benchmarks/run.py`` as the baseline: one epoch on a subset of rows,
every party's work counted, timed per row. Not part of the library.
"""

from __future__ import annotations

import secrets
import time

import numpy as np
from phe import paillier


def phe_epoch_seconds_per_row(Xg: np.ndarray, y: np.ndarray, Xh: np.ndarray, *, rows: int,
                              key_bits: int = 2048, batch_size: int = 256) -> float:
    """Seconds per row of one epoch of the masked-gradient protocol using phe objects."""
    pub, priv = paillier.generate_paillier_keypair(n_length=key_bits)
    Xg, y, Xh = Xg[:rows], y[:rows], Xh[:rows]
    wg, wh = np.zeros(Xg.shape[1] + 1), np.zeros(Xh.shape[1])
    y_pm = 2 * y - 1
    t0 = time.perf_counter()
    for start in range(0, rows, batch_size):
        sl = slice(start, min(start + batch_size, rows))
        xg, xh, yb = Xg[sl], Xh[sl], y_pm[sl]
        b = len(yb)
        # host: encrypt partial scores (phe randomises every encryption)
        enc_h = [pub.encrypt(float(v)) for v in xh @ wh]
        # guest: [[4d]] = [[h]] + (g - 2y), re-randomised before it goes back to the host
        g = xg @ wg[:-1] + wg[-1]
        d4 = [e + float(p) for e, p in zip(enc_h, g - 2 * yb, strict=True)]
        for e in d4:
            e.obfuscate()
        # guest and host: encrypted gradients, masked for the arbiter
        grads = []
        for X in (np.hstack([xg, np.ones((b, 1))]), xh):
            for j in range(X.shape[1]):
                acc = d4[0] * float(X[0, j])
                for i in range(1, b):
                    acc = acc + d4[i] * float(X[i, j])
                mask = secrets.randbelow(2**64) / 2**32
                grads.append((acc + mask, mask))
        # arbiter decrypts masked values; parties unmask and update
        plain = [priv.decrypt(e) - m for e, m in grads]
        gg = np.array(plain[: len(wg)]) / (4 * b)
        gh = np.array(plain[len(wg):]) / (4 * b)
        wg -= 0.05 * gg
        wh -= 0.05 * gh
    return (time.perf_counter() - t0) / rows
