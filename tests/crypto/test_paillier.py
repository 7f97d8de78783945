"""The Paillier layer against an independent reference (phe)."""

from __future__ import annotations

import gmpy2
import pytest
from phe import paillier as phe

from vfl.crypto import (
    EncryptedVector,
    PaillierPrivateKey,
    PaillierPublicKey,
    Randomizer,
    generate_keypair,
)
from vfl.exceptions import InsecureKeySizeError, KeyMismatchError

VALUES = [0, 1, -1, 12345, -98765, 2**40 + 3, -(2**50)]


def test_phe_decrypts_our_ciphertexts(keypair, randomizer):
    pub, priv = keypair
    vec = EncryptedVector.encrypt(pub, VALUES, 0, randomizer)
    phe_priv = priv.to_phe()
    for c, v in zip(vec.ciphertexts, VALUES, strict=False):
        num = phe.EncryptedNumber(phe_priv.public_key, int(c), 0)
        assert phe_priv.decrypt(num) == v


def test_we_decrypt_phe_ciphertexts(keypair):
    pub, priv = keypair
    phe_pub = pub.to_phe()
    cts = [gmpy2.mpz(phe_pub.encrypt(v).ciphertext()) for v in VALUES]
    assert EncryptedVector(pub, cts, 0).decrypt(priv) == VALUES


def test_phe_key_roundtrip(keypair):
    pub, priv = keypair
    again = PaillierPrivateKey.from_phe(priv.to_phe())
    assert again.public_key == pub
    assert PaillierPublicKey.from_bytes(pub.to_bytes()) == pub


def test_small_keys_refused_without_flag():
    with pytest.raises(InsecureKeySizeError, match="2048"):
        generate_keypair(1024)


def test_randomizer_draws_nth_residues(keypair, randomizer):
    pub, priv = keypair
    draws = randomizer.draw_many(5)
    assert len(set(draws)) == 5
    # an n-th residue is an encryption of zero
    assert EncryptedVector(pub, draws, 0).decrypt(priv) == [0] * 5


def test_two_encryptions_of_one_value_differ(keypair, randomizer):
    pub, _ = keypair
    a = EncryptedVector.encrypt(pub, [7, 7], 0, randomizer)
    assert a.ciphertexts[0] != a.ciphertexts[1]


def test_key_mismatch_is_refused(keypair, randomizer):
    other_pub, _ = generate_keypair(512, allow_insecure_key_size=True)
    a = EncryptedVector.encrypt(keypair[0], [1], 0, randomizer)
    b = EncryptedVector.encrypt(other_pub, [1], 0, Randomizer(other_pub))
    with pytest.raises(KeyMismatchError):
        a.add(b)


def test_private_key_repr_hides_primes(keypair):
    _, priv = keypair
    assert str(int(priv.p)) not in repr(priv)


def test_randomizer_exponent_floor(keypair):
    pub, priv = keypair
    with pytest.raises(InsecureKeySizeError, match="exponent"):
        Randomizer(pub, exponent_bits=200)
    short = Randomizer(pub, exponent_bits=256)
    assert EncryptedVector(pub, short.draw_many(3), 0).decrypt(priv) == [0, 0, 0]


def test_pack_and_unpack_against_phe_decryption():
    """Packed slots decrypt (with phe, independently) to the packed sum; unpacking splits it."""
    import secrets as _secrets

    from vfl.crypto.vector import slots_per_ciphertext, unpack_residue

    pub, priv = generate_keypair(512, allow_insecure_key_size=True)
    W = 72
    k = slots_per_ciphertext(pub, W)
    assert k == (pub.n.bit_length() - 2) // W
    values = [_secrets.randbelow(1 << W) for _ in range(2 * k + 3)]
    packed = EncryptedVector.encrypt(pub, values, 0, Randomizer(pub)).pack(W)
    assert len(packed) == 3
    phe_priv = priv.to_phe()
    for i, c in enumerate(packed.ciphertexts):
        group = values[i * k:(i + 1) * k]
        plain = phe_priv.raw_decrypt(int(c))
        assert plain == sum(v << (W * j) for j, v in enumerate(group))
        assert unpack_residue(plain, W, len(group)) == group


def test_key_size_error_carries_its_figures():
    """Callers explain a too-small key from the error's fields, not by parsing its text."""
    from vfl.crypto.paillier import MIN_SECURE_KEY_BITS, check_key_size

    with pytest.raises(InsecureKeySizeError) as err:
        check_key_size(1024, allow_insecure_key_size=False)
    assert (err.value.bits, err.value.minimum) == (1024, MIN_SECURE_KEY_BITS)
    with pytest.raises(InsecureKeySizeError) as err:
        check_key_size(128, allow_insecure_key_size=True)
    assert (err.value.bits, err.value.minimum) == (128, 256)
