"""Issue 26: Intel's multi-buffer crypto backend (vfl/crypto/mb.py) gives libsodium's results
bit for bit, refuses what libsodium refuses, and can be switched off.

Skips, saying why, where the backend cannot run (no `vfl[fast]` extra, or a CPU without
AVX-512 IFMA); CI installs the extra and runs these where the machine has IFMA.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError

from vfl.crypto.mb import BACKEND_ENV, CryptoMB, SmallOrderPoint, backend

try:
    MB: CryptoMB | None = CryptoMB.load()
    WHY = ""
except (OSError, RuntimeError) as exc:
    MB, WHY = None, str(exc)

needs_mb = pytest.mark.skipif(MB is None, reason=f"crypto_mb cannot run here: {WHY}")
P = 2**255 - 19


def _sodium(scalar: bytes, point: bytes) -> bytes | None:
    try:
        return crypto_scalarmult(scalar, point)
    except CryptoError:
        return None


def _mb(scalar: bytes, point: bytes) -> bytes | None:
    assert MB is not None
    try:
        return MB.x25519(scalar, point)
    except SmallOrderPoint:
        return None


EDGE_POINTS = {
    "u = 0": 0, "u = 1": 1, "u = p - 1": P - 1, "u = p": P, "u = p + 1": P + 1,
    "u = 2^255 - 1 (non-canonical, top bit set)": 2**255 - 1, "u = 2^256 - 1": 2**256 - 1,
    "order 8 point": 39382357235489614581723060781553021112529911719440698176882885853963445705823,
    "u = 9 (the base point)": 9,
}
EDGE_SCALARS = {"zero": bytes(32), "all ones": b"\xff" * 32, "one": (1).to_bytes(32, "little")}


@needs_mb
@pytest.mark.parametrize("point", list(EDGE_POINTS), ids=list(EDGE_POINTS))
@pytest.mark.parametrize("scalar", [*EDGE_SCALARS, "random"])
def test_x25519_equals_libsodium_on_edge_inputs(point, scalar):
    k = secrets.token_bytes(32) if scalar == "random" else EDGE_SCALARS[scalar]
    u = EDGE_POINTS[point].to_bytes(32, "little")
    assert _mb(k, u) == _sodium(k, u)


@needs_mb
def test_x25519_equals_libsodium_on_random_batches_of_every_length():
    for n in (1, 7, 8, 9, 63, 1000):
        k = secrets.token_bytes(32)
        pts = b"".join(secrets.token_bytes(32) for _ in range(n))
        want = b"".join(crypto_scalarmult(k, pts[i:i + 32]) for i in range(0, len(pts), 32))
        assert MB is not None and MB.x25519(k, pts) == want


@needs_mb
def test_a_small_order_point_is_named_by_its_index():
    k = secrets.token_bytes(32)
    pts = b"".join(secrets.token_bytes(32) for _ in range(11)) + bytes(32) + secrets.token_bytes(32)
    with pytest.raises(SmallOrderPoint) as err:
        assert MB is not None
        MB.x25519(k, pts)
    assert err.value.index == 11


def _backend_in_child(choice: str) -> str:
    code = "from vfl.crypto.mb import backend_name; print(backend_name())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, BACKEND_ENV: choice}, timeout=60)
    return (r.stdout + r.stderr).strip()


def test_the_portable_setting_never_loads_it():
    assert _backend_in_child("portable") == "portable (libsodium, gmpy2)"


def test_the_default_uses_it_where_it_runs_and_says_which():
    name = _backend_in_child("auto")
    assert name.startswith("crypto_mb") if MB is not None else name.startswith("portable")


def test_requiring_it_where_it_cannot_run_is_an_error():
    out = _backend_in_child("crypto_mb")
    if MB is not None:
        assert out.startswith("crypto_mb")
    else:
        assert "cannot run here" in out


def test_this_process_backend_is_cached():
    assert backend() is backend()


@needs_mb
def test_powmod_equals_python_on_random_and_edge_inputs():
    import gmpy2

    for bits in (1024, 2047, 2048, 3072, 4096):
        m = int(gmpy2.next_prime(secrets.randbits(bits) | (1 << (bits - 1)))) if bits < 4096 \
            else (1 << 4095) + 2 * secrets.randbits(1000) + 1
        e = secrets.randbits(bits - 1)
        bases = [0, 1, m - 1, m, m + 1, 2 * m + 3] + [secrets.randbelow(m) for _ in range(11)]
        assert MB is not None
        assert MB.powmod(bases, e, m) == [pow(b, e, m) for b in bases], bits
        assert MB.powmod(bases, 0, m) == [1] * len(bases)
        assert MB.powmod(bases, 1, m) == [b % m for b in bases]
    with pytest.raises(ValueError):
        MB.powmod([1], 3, 2**1024)  # even modulus


@needs_mb
def test_decryption_on_crypto_mb_equals_phe_and_the_portable_path():
    """The arbiter's decryption, eight CRT halves per call: equal to phe's (an independent
    implementation) and to the portable path, on random and edge ciphertexts."""
    import gmpy2
    import phe

    from vfl.crypto.paillier import PaillierPrivateKey

    pub, ref = phe.generate_paillier_keypair(n_length=2048)
    key = PaillierPrivateKey.from_phe(ref)
    n, n2 = pub.n, pub.n ** 2
    msgs = [0, 1, n - 1, n // 2] + [secrets.randbelow(n) for _ in range(20)]
    cts = [gmpy2.mpz(pub.raw_encrypt(m)) for m in msgs]
    cts += [gmpy2.mpz(1), gmpy2.mpz(n2 - 1), gmpy2.mpz(n + 1)]
    got = key.raw_decrypt_many(cts)
    assert got[:len(msgs)] == msgs
    assert got == [key.raw_decrypt(c) for c in cts]
    assert got[:len(msgs)] == [ref.raw_decrypt(int(c)) for c in cts[:len(msgs)]]
