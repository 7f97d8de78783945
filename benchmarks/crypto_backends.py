"""Issue 26: the crypto_mb backend against the portable path, side by side in one run.

One core each: X25519 (PSI's blinding; libsodium's ``crypto_scalarmult`` against
``CryptoMB.x25519``, eight points per call) and Paillier decryption at 2048 bits
(the CRT halves with gmpy2 against ``mbx_exp_mb8``), with a check that both give the
same results. Without the backend (no ``vfl[fast]``, or no IFMA) it says so and
measures the portable path only. Writes ``benchmarks/crypto_backends.json``::

    python -m benchmarks.crypto_backends [--points 200000] [--decryptions 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from pathlib import Path

import gmpy2

from benchmarks._data import cpu_model

ROOT = Path(__file__).resolve().parent


def _rate(n: int, fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return n / (time.perf_counter() - t0), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--decryptions", type=int, default=2_000)
    args = ap.parse_args()
    from nacl.bindings import crypto_scalarmult

    from vfl.crypto.mb import CryptoMB
    from vfl.crypto.paillier import generate_keypair
    from vfl.psi.ecdh import hash_to_point

    try:
        mb: CryptoMB | None = CryptoMB.load()
        why = ""
    except (OSError, RuntimeError) as exc:
        mb, why = None, str(exc)
    result: dict[str, object] = {"cpu": cpu_model(), "cores": os.cpu_count(),
                                 "crypto_mb": mb.version if mb else f"not used: {why}"}
    k = secrets.token_bytes(32)
    pts = b"".join(hash_to_point(f"customer-{i}") for i in range(args.points))
    r_sodium, want = _rate(args.points, lambda: b"".join(
        crypto_scalarmult(k, pts[i:i + 32]) for i in range(0, len(pts), 32)))
    x25519 = {"libsodium_per_s": round(r_sodium)}
    if mb is not None:
        r_mb, got = _rate(args.points, lambda: mb.x25519(k, pts))
        assert got == want, "crypto_mb's X25519 differs from libsodium's"
        x25519 |= {"crypto_mb_per_s": round(r_mb), "ratio": round(r_mb / r_sodium, 2)}
    result["x25519"] = x25519

    pub, priv = generate_keypair(2048)
    n, n2 = int(pub.n), int(pub.n) ** 2
    cts = [gmpy2.mpz((1 + secrets.randbelow(n) * n) * pow(secrets.randbelow(n - 1) + 1, n, n2)
                     % n2) for _ in range(args.decryptions)]
    r_gmp, want_m = _rate(len(cts), lambda: [priv.raw_decrypt(c) for c in cts])
    dec = {"gmpy2_crt_per_s": round(r_gmp)}
    if mb is not None:
        r_dec, got_m = _rate(len(cts), lambda: priv.raw_decrypt_many(cts))
        assert got_m == want_m, "crypto_mb's decryption differs from gmpy2's"
        dec |= {"crypto_mb_per_s": round(r_dec), "ratio": round(r_dec / r_gmp, 2)}
    result["paillier_2048_decrypt"] = dec
    result["command"] = "python -m benchmarks.crypto_backends"
    (ROOT / "crypto_backends.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
