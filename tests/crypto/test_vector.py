"""Homomorphic vector operations, checked against plain integer arithmetic."""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest

from vfl.crypto import EncryptedVector, matvec_t, multiexp, quantize
from vfl.exceptions import CryptoError, EncodingOverflowError

rng = np.random.default_rng(1)


def test_add_add_plain_mul_scalar(keypair, randomizer):
    pub, priv = keypair
    a = rng.integers(-10**9, 10**9, 20)
    b = rng.integers(-10**9, 10**9, 20)
    ea = EncryptedVector.encrypt(pub, a, 0, randomizer)
    eb = EncryptedVector.encrypt(pub, b, 0, randomizer)
    assert ea.add(eb).decrypt(priv) == (a + b).tolist()
    assert ea.add_plain(b).decrypt(priv) == (a + b).tolist()
    assert ea.mul_scalar(-37).decrypt(priv) == (a * -37).tolist()
    assert ea.mul_elementwise(b).decrypt(priv) == [int(x) * int(y) for x, y in zip(a, b, strict=False)]
    assert ea.sum().decrypt(priv) == [int(a.sum())]
    assert ea.rerandomize(randomizer).decrypt(priv) == a.tolist()


def test_sum_by_group_and_sum_all(keypair, randomizer):
    pub, priv = keypair
    a = rng.integers(-10**6, 10**6, 40)
    groups = rng.integers(0, 5, 40)
    groups[groups == 3] = 4  # group 3 stays empty: an encryption of 0
    ea = EncryptedVector.encrypt(pub, a, 0, randomizer)
    want = [int(a[groups == g].sum()) for g in range(5)]
    assert ea.sum_by_group(groups, 5).decrypt(priv) == want
    with pytest.raises(CryptoError):
        ea.sum_by_group(groups, 4)
    with pytest.raises(CryptoError):
        ea.sum_by_group(groups[:-1], 5)
    parts = [EncryptedVector.encrypt(pub, a[i:i + 1], 0, randomizer) for i in range(4)]
    assert EncryptedVector.sum_all(parts).decrypt(priv) == [int(a[:4].sum())]
    with pytest.raises(CryptoError):
        EncryptedVector.sum_all([])


@pytest.mark.parametrize("count", [1, 3, 50, 300])
def test_multiexp_matches_naive(keypair, count):
    pub, _ = keypair
    n2 = pub.nsquare
    bases = [gmpy2.mpz(int(x)) % n2 for x in rng.integers(2, 2**62, count)]
    exps = rng.integers(0, 2**40, count).tolist()
    expected = gmpy2.mpz(1)
    for b, e in zip(bases, exps, strict=False):
        expected = expected * gmpy2.powmod(b, e, n2) % n2
    assert multiexp(bases, exps, n2) == expected


def test_matvec_t_signed_features(keypair, randomizer):
    pub, priv = keypair
    X = rng.normal(size=(200, 4)) * 3
    d = rng.integers(-10**12, 10**12, 200)
    q = quantize(X, 16)
    offsets = np.maximum(0, -q.min(axis=0))
    enc = EncryptedVector.encrypt(pub, d, 30, randomizer)
    out = matvec_t(q + offsets, offsets, enc, 16)
    assert out.frac_bits == 46
    expected = [sum(int(q[i, j]) * int(d[i]) for i in range(200)) for j in range(4)]
    assert out.decrypt(priv) == expected


def test_serialisation_roundtrip_and_validation(keypair, randomizer):
    pub, priv = keypair
    enc = EncryptedVector.encrypt(pub, [5, -6, 7], 3, randomizer)
    data = enc.to_bytes()
    assert len(data) == 3 * pub.ciphertext_bytes
    back = EncryptedVector.from_bytes(pub, data, 3, expected_len=3)
    assert back.decrypt(priv) == [5, -6, 7]
    with pytest.raises(CryptoError, match="Expected 2"):
        EncryptedVector.from_bytes(pub, data, 3, expected_len=2)
    with pytest.raises(CryptoError, match="multiple"):
        EncryptedVector.from_bytes(pub, data[:-1], 3)
    zero = bytes(pub.ciphertext_bytes)
    with pytest.raises(CryptoError, match="range"):
        EncryptedVector.from_bytes(pub, zero, 3)
    too_big = int(pub.nsquare).to_bytes(pub.ciphertext_bytes, "big")
    with pytest.raises(CryptoError, match="range"):
        EncryptedVector.from_bytes(pub, too_big, 3)


def test_encoding_overflow(keypair, randomizer):
    pub, _ = keypair
    with pytest.raises(EncodingOverflowError):
        EncryptedVector.encrypt(pub, [int(pub.n) // 2], 0, randomizer)
    with pytest.raises(EncodingOverflowError):
        quantize([1e12], 40)
    with pytest.raises(EncodingOverflowError):
        quantize([float("nan")], 4)


def test_wire_form_is_reused_only_when_it_matches(keypair, randomizer):
    pub, priv = keypair
    enc = EncryptedVector.encrypt(pub, [1, 2, 3], 0, randomizer)
    data = enc.to_bytes()
    parsed = EncryptedVector.from_bytes(pub, data, 0)
    assert parsed.encoded is data and parsed.to_bytes() == data
    # derived vectors carry no stale wire form
    moved = parsed.add_plain([1, 1, 1])
    assert moved.encoded is None and moved.to_bytes() != data
    assert EncryptedVector.from_bytes(pub, moved.to_bytes(), 0).decrypt(priv) == [2, 3, 4]


def test_at_scale_keeps_the_ciphertexts_and_changes_the_scale(keypair, randomizer):
    pub, priv = keypair
    a = rng.integers(-10**6, 10**6, 6)
    w = rng.integers(0, 2**8, 6)
    ea = EncryptedVector.encrypt(pub, a, 3, randomizer)
    weighted = ea.mul_elementwise(w.tolist()).at_scale(3 + 8)  # weights w / 2^8
    assert weighted.frac_bits == 11
    assert weighted.ciphertexts == ea.mul_elementwise(w.tolist()).ciphertexts
    assert weighted.decrypt(priv) == [int(x) * int(y) for x, y in zip(a, w, strict=True)]
    wire = EncryptedVector.from_bytes(pub, ea.to_bytes(), 3)
    assert wire.at_scale(5).to_bytes() == ea.to_bytes()  # the wire form does not hold the scale
    with pytest.raises(CryptoError):  # vectors at different scales still refuse to mix
        ea.add(ea.at_scale(4))
