"""The process-pool engine gives the same ciphertext results as the in-process one."""

from __future__ import annotations

import numpy as np
import pytest

from vfl.crypto import quantize
from vfl.crypto.engine import CipherEngine, PoolEngine, make_engine


@pytest.fixture(scope="module")
def pool(keypair):
    engine = PoolEngine(keypair[0], 2)
    yield engine
    engine.close()


def test_pool_matches_local(keypair, pool):
    pub, priv = keypair
    local = CipherEngine(pub)
    rng = np.random.default_rng(5)
    vals = rng.integers(-2**40, 2**40, 700)
    enc = pool.encrypt(vals, 7)
    assert enc.frac_bits == 7 and enc.decrypt(priv) == vals.tolist()
    again = pool.rerandomize(enc)
    assert again.decrypt(priv) == vals.tolist()
    assert set(again.ciphertexts).isdisjoint(enc.ciphertexts)
    X = quantize(rng.normal(size=(700, 3)), 12)
    offs = np.maximum(0, -X.min(axis=0))
    a = pool.matvec_t(X + offs, offs, enc, 12)
    b = local.matvec_t(X + offs, offs, enc, 12)
    assert a.frac_bits == b.frac_bits == 19
    assert a.decrypt(priv) == b.decrypt(priv) == [
        sum(int(X[i, j]) * int(vals[i]) for i in range(700)) for j in range(3)]


def test_prefilled_randomisers_are_fresh(keypair, pool):
    pub, priv = keypair
    pool.prefill(200)
    zeros = pool.encrypt(np.zeros(300, dtype=np.int64), 0)
    assert len(set(zeros.ciphertexts)) == 300
    assert zeros.decrypt(priv) == [0] * 300


def test_make_engine_choice(keypair):
    assert type(make_engine(keypair[0], None, 100)) is CipherEngine
    assert type(make_engine(keypair[0], 1, 10**6)) is CipherEngine


def test_projection_against_phe_and_the_pool(keypair, pool):
    """``[[X v]]`` per row (the shared protocol's forward pass): ciphertexts made and read
    back by phe, an independent implementation; the pool gives the same ciphertexts."""
    from phe import paillier

    from vfl.crypto.paillier import PaillierPrivateKey, Randomizer
    from vfl.crypto.vector import EncryptedVector

    phe_pub, phe_priv = paillier.generate_paillier_keypair(n_length=512)
    pub = PaillierPrivateKey.from_phe(phe_priv).public_key
    rng = np.random.default_rng(11)
    # shares are large signed integers; features quantised, signed
    v = [int(x) for x in rng.integers(-2**62, 2**62, 5)] + [-(3 << 150)]
    enc_v = EncryptedVector(pub, [phe_pub.encrypt(x).ciphertext() for x in v], 0)
    X = quantize(rng.normal(size=(300, len(v))), 16)
    offs = np.maximum(0, -X.min(axis=0)).astype(np.int64)
    out = CipherEngine(pub).project(X + offs, offs, enc_v, 16)
    assert out.frac_bits == 16
    want = [sum(int(X[i, j]) * v[j] for j in range(len(v))) for i in range(300)]
    got = [phe_priv.decrypt(paillier.EncryptedNumber(phe_pub, int(c))) for c in out.ciphertexts]
    assert got == want
    # the pool's workers compute the same deterministic products
    key = keypair[0]
    enc = EncryptedVector.encrypt(key, v, 0, Randomizer(key))
    a = pool.project(X + offs, offs, enc, 16)
    b = CipherEngine(key).project(X + offs, offs, enc, 16)
    assert a.ciphertexts == b.ciphertexts and a.decrypt(keypair[1]) == want
