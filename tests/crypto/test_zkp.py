"""The 0/1 proof of ``vfl.crypto.zkp``: completeness, soundness checks, binding, encoding."""

from __future__ import annotations

import secrets

import gmpy2
import pytest
from phe import paillier as phe_paillier

from vfl.crypto import zkp
from vfl.crypto.paillier import PaillierPrivateKey, PaillierPublicKey
from vfl.exceptions import CryptoError

CTX = b"binning.EncryptedLabels/2\x00job-1\x00guest"


@pytest.fixture(scope="module")
def keys() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    pub, priv = phe_paillier.generate_paillier_keypair(n_length=512)
    sk = PaillierPrivateKey.from_phe(priv)
    return sk.public_key, sk


def _cts(pk: PaillierPublicKey, data: bytes) -> list[gmpy2.mpz]:
    w = pk.ciphertext_bytes
    return [gmpy2.mpz.from_bytes(data[i:i + w], "big") for i in range(0, len(data), w)]


def _join(pk: PaillierPublicKey, values: list[gmpy2.mpz]) -> bytes:
    return b"".join(int(v).to_bytes(pk.ciphertext_bytes, "big") for v in values)


def _unit(n: gmpy2.mpz) -> gmpy2.mpz:
    while True:
        r = gmpy2.mpz(secrets.randbelow(int(n) - 1) + 1)
        if gmpy2.gcd(r, n) == 1:
            return r


@pytest.mark.parametrize("bits", [[0] * 5, [1] * 5, [0, 1, 1, 0, 1, 0, 0, 1]])
def test_honest_proofs_verify_and_decrypt_to_the_bits(keys, bits):
    pk, sk = keys
    cts, proofs = zkp.prove_bits(pk, bits, context=CTX, workers=1)
    assert len(proofs) == len(bits) * zkp.proof_width(pk)
    assert zkp.verify_bits(pk, cts, proofs, context=CTX, workers=1) is None
    # phe (the independent reference) decrypts vfl's ciphertexts to the proven bits
    phe_sk = sk.to_phe()
    assert [phe_sk.raw_decrypt(int(c)) for c in _cts(pk, cts)] == bits


def test_reference_prover_on_phe_ciphertexts(keys):
    """Ciphertexts made by phe with known randomness; the textbook prover proves them."""
    pk, _ = keys
    phe_pk = pk.to_phe()
    bits = [1, 0, 0, 1]
    roots = [_unit(pk.n) for _ in bits]
    cts = [gmpy2.mpz(phe_pk.raw_encrypt(b, r_value=int(r))) for b, r in zip(bits, roots, strict=True)]
    # known answer: vfl's encryption formula is phe's for the same randomness
    assert cts == [pk.raw_encrypt(b, gmpy2.powmod(r, pk.n, pk.nsquare))
                   for b, r in zip(bits, roots, strict=True)]
    proofs = zkp.prove_bits_with_roots(pk, cts, bits, roots, context=CTX)
    assert zkp.verify_bits(pk, _join(pk, cts), proofs, context=CTX) is None


@pytest.mark.parametrize("value", [2, 2**7, -1])
def test_no_proof_is_produced_for_values_other_than_0_and_1(keys, value):
    pk, _ = keys
    with pytest.raises(CryptoError):
        zkp.prove_bits(pk, [0, value, 1], context=CTX, workers=1)
    with pytest.raises(CryptoError):
        zkp.BitProver(pk).commit([value])
    # the reference prover refuses a ciphertext of the value, whatever bit it is told
    r = _unit(pk.n)
    c = pk.raw_encrypt(value % int(pk.n), gmpy2.powmod(r, pk.n, pk.nsquare))
    for claimed in (0, 1, value):
        with pytest.raises(CryptoError):
            zkp.prove_bits_with_roots(pk, [c], [claimed], [r], context=CTX)


def _prove_anyway(pk, c, r, claimed, context):
    """The textbook prover's computation for ``c``, skipping its witness check.

    Branch ``claimed`` is answered with ``r`` as if ``u_claimed = r^n``, the other
    branch is simulated, and the challenge is the verifier's Fiat–Shamir hash.
    """
    n, n2, w, nb = pk.n, pk.nsquare, pk.ciphertext_bytes, (pk.bits + 7) // 8
    us = (c, c * (1 - n) % n2)
    s, z_sim, e_sim = _unit(n), _unit(n), secrets.randbits(128)
    a_true = gmpy2.powmod(s, n, n2)
    a_sim = gmpy2.powmod(z_sim, n, n2) * gmpy2.invert(gmpy2.powmod(us[1 - claimed], e_sim, n2),
                                                      n2) % n2
    a0, a1 = (a_true, a_sim) if claimed == 0 else (a_sim, a_true)
    coms = int(a0).to_bytes(w, "big") + int(a1).to_bytes(w, "big")
    digest = zkp._transcript_hash(pk, context, 1, int(c).to_bytes(w, "big"), coms, 2 * w)
    e = zkp._challenges(digest, 1)[0]
    e_true = (e - e_sim) % (1 << 128)
    z_true = s * gmpy2.powmod(r, e_true, n) % n
    e0, z0, z1 = (e_true, z_true, z_sim) if claimed == 0 else (e_sim, z_sim, z_true)
    return coms + e0.to_bytes(16, "big") + int(z0).to_bytes(nb, "big") + int(z1).to_bytes(nb, "big")


@pytest.mark.parametrize("value", [2, 2**100, -1])
def test_forged_proofs_for_other_values_are_refused(keys, value):
    pk, _ = keys
    n, n2 = pk.n, pk.nsquare
    good_c, good_p = zkp.prove_bits(pk, [0, 1, 1], context=CTX, workers=1)
    r = _unit(n)
    bad = pk.raw_encrypt(value % int(n), gmpy2.powmod(r, n, n2))
    cts = _cts(pk, good_c)
    w = zkp.proof_width(pk)
    # (a) another row's valid proof reused for the forged ciphertext
    forged = _join(pk, [cts[0], bad, cts[2]])
    assert zkp.verify_bits(pk, forged, good_p, context=CTX) == 0  # every challenge changes
    # (b) the prover's own equations run for the forged ciphertext, claiming 0 or 1
    for claimed in (0, 1):
        p = _prove_anyway(pk, bad, r, claimed, CTX)
        assert zkp.verify_bits(pk, _join(pk, [bad]), p, context=CTX) == 0
    # ... the same computation for a ciphertext of a bit verifies (the forgery test can pass)
    honest = pk.raw_encrypt(1, gmpy2.powmod(r, n, n2))
    assert zkp.verify_bits(pk, _join(pk, [honest]), _prove_anyway(pk, honest, r, 1, CTX),
                           context=CTX) is None
    # (c) a simulated proof: both branches simulated with challenges of the forger's choice
    e0, e1 = secrets.randbits(128), secrets.randbits(128)
    z0, z1 = _unit(n), _unit(n)
    a0 = gmpy2.powmod(z0, n, n2) * gmpy2.invert(gmpy2.powmod(bad, e0, n2), n2) % n2
    u1 = bad * (1 - n) % n2
    a1 = gmpy2.powmod(z1, n, n2) * gmpy2.invert(gmpy2.powmod(u1, e1, n2), n2) % n2
    nb = (pk.bits + 7) // 8
    sim = (int(a0).to_bytes(pk.ciphertext_bytes, "big") + int(a1).to_bytes(pk.ciphertext_bytes, "big")
           + e0.to_bytes(16, "big") + int(z0).to_bytes(nb, "big") + int(z1).to_bytes(nb, "big"))
    assert len(sim) == w
    assert zkp.verify_bits(pk, _join(pk, [bad]), sim, context=CTX) == 0


def _flips(nbytes: int) -> list[int]:
    """One bit position in every byte (rotating through the 8), as bit indices."""
    return [8 * i + i % 8 for i in range(nbytes)]


def test_single_bit_tampering_fails(keys):
    pk, _ = keys
    cts, proofs = zkp.prove_bits(pk, [1, 0, 1], context=CTX, workers=1)
    w, pw = pk.ciphertext_bytes, zkp.proof_width(pk)
    row = 1
    # a bit in every byte of row 1's proof, and all 128 bits of its e_0; responses
    # (e_0, z_0, z_1) are not hashed, so exactly row 1 fails; a flipped commitment
    # changes every challenge, so row 0 already fails
    e_bits = range(16 * w, 16 * w + 128)
    for bit in sorted(set(_flips(pw)) | set(e_bits)):
        t = bytearray(proofs)
        t[row * pw + bit // 8] ^= 1 << (bit % 8)
        bad = zkp.verify_bits(pk, cts, bytes(t), context=CTX, workers=1)
        assert bad == (0 if bit < 16 * w else row), bit
    for bit in _flips(w):
        t = bytearray(cts)
        t[row * w + bit // 8] ^= 1 << (bit % 8)
        assert zkp.verify_bits(pk, bytes(t), proofs, context=CTX, workers=1) is not None, bit
    for bit in range(8 * len(CTX)):
        t = bytearray(CTX)
        t[bit // 8] ^= 1 << (bit % 8)
        assert zkp.verify_bits(pk, cts, proofs, context=bytes(t), workers=1) == 0
    assert zkp.verify_bits(pk, cts, proofs, context=CTX, workers=1) is None


def test_proofs_are_bound_to_context_and_row_index(keys):
    pk, _ = keys
    cts, proofs = zkp.prove_bits(pk, [0, 1, 0, 1], context=CTX, workers=1)
    w, pw = pk.ciphertext_bytes, zkp.proof_width(pk)
    assert zkp.verify_bits(pk, cts, proofs, context=CTX + b"x", workers=1) == 0
    assert zkp.verify_bits(pk, cts, proofs, context=b"", workers=1) == 0
    # rows 0 and 1 swapped together with their proofs: the same pairs at other indices
    swapped_c = cts[w:2 * w] + cts[:w] + cts[2 * w:]
    swapped_p = proofs[pw:2 * pw] + proofs[:pw] + proofs[2 * pw:]
    assert zkp.verify_bits(pk, swapped_c, swapped_p, context=CTX, workers=1) == 0
    # a prefix of the rows (another row count) does not verify either
    assert zkp.verify_bits(pk, cts[:3 * w], proofs[:3 * pw], context=CTX, workers=1) == 0
    # and the unchanged proofs still do (the checks above can pass)
    assert zkp.verify_bits(pk, cts, proofs, context=CTX, workers=1) is None


def test_batch_names_the_first_bad_row_among_many(keys):
    pk, _ = keys
    n, nb = pk.n, (pk.bits + 7) // 8
    cts, proofs = zkp.prove_bits(pk, [secrets.randbits(1) for _ in range(70)], context=CTX,
                                 workers=1)
    pw = zkp.proof_width(pk)
    off = 2 * pk.ciphertext_bytes + 16
    t = bytearray(proofs)
    for row in (61, 37):  # z_0 of two rows replaced by other units: the first one is named
        t[row * pw + off:row * pw + off + nb] = int(_unit(n)).to_bytes(nb, "big")
    assert zkp.verify_bits(pk, cts, bytes(t), context=CTX, workers=1) == 37


def test_range_and_unit_checks_name_the_row(keys):
    pk, sk = keys
    n, nb, w = pk.n, (pk.bits + 7) // 8, pk.ciphertext_bytes
    cts, proofs = zkp.prove_bits(pk, [0, 1, 0], context=CTX, workers=1)
    pw = zkp.proof_width(pk)
    z0 = 2 * w + 16
    cases = {
        "z0 = n": (z0, int(n).to_bytes(nb, "big")),
        "z0 = 0": (z0, bytes(nb)),
        "z1 = p": (z0 + nb, int(sk.p).to_bytes(nb, "big")),  # not a unit
        "A0 = 0": (0, bytes(w)),
        "A1 = n^2 - 1": (w, int(pk.nsquare - 1).to_bytes(w, "big")),  # in range, wrong
        "A0 = n": (0, int(n).to_bytes(w, "big")),  # not a unit
    }
    for name, (start, value) in cases.items():
        t = bytearray(proofs)
        t[2 * pw + start:2 * pw + start + len(value)] = value
        assert zkp.verify_bits(pk, cts, bytes(t), context=CTX, workers=1) is not None, name
    t = bytearray(proofs)
    t[2 * pw + z0:2 * pw + z0 + nb] = int(n).to_bytes(nb, "big")
    assert zkp.verify_bits(pk, cts, bytes(t), context=CTX, workers=1) == 2
    # a ciphertext that is not a unit (a multiple of q) is refused at its row
    c_bad = bytearray(cts)
    c_bad[w:2 * w] = int(sk.q).to_bytes(w, "big")
    assert zkp.verify_bits(pk, bytes(c_bad), proofs, context=CTX, workers=1) is not None
    with pytest.raises(CryptoError):
        zkp.verify_bits(pk, cts, proofs[:-1], context=CTX)
    with pytest.raises(CryptoError):
        zkp.verify_bits(pk, cts + b"\x01", proofs, context=CTX)


def test_worker_processes_give_the_same_verdicts(keys):
    pk, sk = keys
    bits = [secrets.randbits(1) for _ in range(140)]
    cts, proofs = zkp.prove_bits(pk, bits, context=CTX, workers=2)
    assert [int(sk.raw_decrypt(c)) for c in _cts(pk, cts)] == bits
    assert zkp.verify_bits(pk, cts, proofs, context=CTX, workers=2) is None
    t = bytearray(proofs)
    t[100 * zkp.proof_width(pk) + 2 * pk.ciphertext_bytes] ^= 0x80  # e_0 of row 100
    assert zkp.verify_bits(pk, cts, bytes(t), context=CTX, workers=2) == 100


def test_modulus_checks(keys):
    pk, _ = keys
    zkp.check_prover_modulus(pk)  # a real key passes
    p = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(300)) | (1 << 299))
    q = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(300)) | (1 << 299))
    small = gmpy2.next_prime(1 << 20)
    for name, n in {"prime": p, "square": p * p, "cube": q**3,
                    "small factor": small * p * q, "factor 3": 3 * p}.items():
        with pytest.raises(CryptoError) as err:
            zkp.check_prover_modulus(PaillierPublicKey(n))
        assert str(int(n)) not in str(err.value), name


def test_uniform_rerandomize_keeps_plaintexts_and_changes_ciphertexts(keys):
    pk, sk = keys
    cts, _ = zkp.prove_bits(pk, [0, 1, 1], context=CTX, workers=1)
    before = _cts(pk, cts)
    after = zkp.uniform_rerandomize(pk, before)
    assert all(a != b for a, b in zip(after, before, strict=True))
    assert [int(sk.raw_decrypt(c)) for c in after] == [0, 1, 1]
    # the Jacobi symbol of r^n is that of r: both signs occur (DJN's h_s^a keeps one sign)
    ones = zkp.uniform_rerandomize(pk, [gmpy2.mpz(1)] * 64)
    assert {gmpy2.jacobi(c % pk.n, pk.n) for c in ones} == {-1, 1}


def test_group_products_of_chunks_are_sum_by_group(keys):
    """The chunk function the binning host farms out: products of chunks = sum_by_group."""
    import numpy as np

    from vfl.crypto.paillier import Randomizer
    from vfl.crypto.tasks import split
    from vfl.crypto.vector import EncryptedVector, group_products

    pk, sk = keys
    rng = np.random.default_rng(4)
    values = rng.integers(0, 2, 150)
    enc = EncryptedVector.encrypt(pk, values.tolist(), 0, Randomizer(pk))
    data = enc.to_bytes()
    sizes = (3, 7)
    groups = np.stack([rng.integers(0, k, 150) for k in sizes], axis=1).astype(np.int32)
    w, n2 = pk.ciphertext_bytes, pk.nsquare
    acc = [gmpy2.mpz(1)] * sum(sizes)
    for a, b in split(150, 4):
        blob = group_products(pk.to_bytes(), data[a * w:b * w], groups[a:b].tobytes(), sizes)
        acc = [x * gmpy2.mpz.from_bytes(blob[i * w:(i + 1) * w], "big") % n2
               for i, x in enumerate(acc)]
    want = [enc.sum_by_group(groups[:, 0], 3), enc.sum_by_group(groups[:, 1], 7)]
    assert acc == [*want[0].ciphertexts, *want[1].ciphertexts]
    assert [int(sk.raw_decrypt(c)) for c in acc[:3]] == [int(values[groups[:, 0] == g].sum())
                                                        for g in range(3)]


def test_proofs_made_and_checked_on_a_pool_verify_and_name_a_forged_row(keys):
    """The worker path (spawned processes, chunked commit/respond, batch products)."""
    pk, sk = keys
    bits = [secrets.randbelow(2) for _ in range(300)]
    cts, proofs = zkp.prove_bits(pk, bits, context=CTX, workers=2)
    assert [int(sk.raw_decrypt(c)) for c in _cts(pk, cts)] == bits
    assert zkp.verify_bits(pk, cts, proofs, context=CTX, workers=1) is None
    assert zkp.verify_bits(pk, cts, proofs, context=CTX, workers=2) is None
    pw = zkp.proof_width(pk)
    forged = bytearray(proofs)
    forged[211 * pw + pw - 1] ^= 1
    assert zkp.verify_bits(pk, cts, bytes(forged), context=CTX, workers=2) == 211


@pytest.mark.parametrize("row", [0, 149, 150, 299])
def test_a_forged_row_at_a_chunk_edge_is_named_on_a_pool(keys, row):
    """Rows 149 | 150 straddle the two workers' chunks; 0 and 299 are the ends."""
    pk, _ = keys
    cts, proofs = zkp.prove_bits(pk, [secrets.randbelow(2) for _ in range(300)], context=CTX,
                                 workers=1)
    pw = zkp.proof_width(pk)
    forged = bytearray(proofs)
    forged[row * pw + pw - 1] ^= 1  # a response: outside the transcript, only this row fails
    assert zkp.verify_bits(pk, cts, bytes(forged), context=CTX, workers=2) == row
    # a changed ciphertext changes the transcript, so every challenge: the proofs all fail
    w = pk.ciphertext_bytes
    other = bytearray(cts)
    other[row * w + w - 1] ^= 1
    assert zkp.verify_bits(pk, bytes(other), proofs, context=CTX, workers=2) is not None


def test_workers_that_compute_wrong_products_are_not_blamed_on_the_prover(keys):
    """A runner whose batch products are wrong (a worker with another vfl, broken state):
    every row verifies in-process, so the verifier refuses to name a row of an honest prover."""
    from concurrent.futures import Future

    from vfl.crypto.tasks import InlineTasks
    from vfl.exceptions import ComputeError

    class WrongWorkers:
        parallelism = 2

        def submit(self, fn, *args):
            z, r, f = fn(*args)
            done = Future()
            done.set_result((z, (int.from_bytes(r, "big") + 1).to_bytes(len(r), "big"), f))
            return done

        def close(self):
            pass

    pk, _ = keys
    cts, proofs = zkp.prove_bits(pk, [1, 0, 1, 1, 0, 0, 1, 0], context=CTX, workers=1)
    with pytest.raises(ComputeError, match="workers disagree"):
        zkp.verify_bits(pk, cts, proofs, context=CTX, tasks=WrongWorkers())
    with zkp.prover_tasks(pk, 8, workers=1) as inline:
        assert isinstance(inline, InlineTasks)
        assert zkp.verify_bits(pk, cts, proofs, context=CTX, tasks=inline) is None


def test_a_worker_refuses_to_prove_under_a_key_it_was_not_set_up_for(keys):
    other = PaillierPrivateKey.from_phe(phe_paillier.generate_paillier_keypair(n_length=512)[1])
    pk, _ = keys
    zkp._init_worker(pk.to_bytes(), int(zkp.draw_djn_base(pk)).to_bytes(64, "big"), None, 4)
    try:
        zkp._w_commit(pk.to_bytes(), bytes([0, 1]))
        with pytest.raises(RuntimeError, match="no prover for the requested key"):
            zkp._w_commit(other.public_key.to_bytes(), bytes([0, 1]))
    finally:
        zkp._WORKER.clear()
