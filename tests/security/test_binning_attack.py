"""A deviating guest in federated binning (issue 8, finding 5).

The guest encrypts its labels under its own key and decrypts the hosts' bin
sums. Before the fix it could encrypt ``2^i`` instead of ``y_i`` and read, from
each decrypted sum, the set of rows in that bin: every row's bin of every host
feature (measured against the code before the fix: 300/300 rows, 101 bins, for
each feature). Now every label carries a proof that it is 0 or 1, hosts verify
all of them before summing and cap the guest's key size, and re-randomise every
sum with a uniform ``r^n``. Each test below runs the attacker's real computation
against the real host code (``BinningHost`` / ``run_binning_host``); a positive
control shows the same computation succeeding where the defence is absent.
"""

from __future__ import annotations

import secrets
import threading

import gmpy2
import numpy as np
import pytest
from phe import paillier as phe_paillier

from vfl.binning import run_binning_host
from vfl.binning.core import assign_bins
from vfl.binning.driver import labels_context
from vfl.binning.guest import BinningGuest
from vfl.binning.host import BinningHost
from vfl.binning.messages import EncryptedLabels, HostBinStats
from vfl.crypto import zkp
from vfl.crypto.paillier import PaillierPrivateKey, PaillierPublicKey, Randomizer, generate_keypair
from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import Ciphertexts
from vfl.exceptions import PeerTimeoutError, RemoteProtocolError
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.transport import InMemoryNetwork

INSECURE = SecurityPolicy(allow_insecure_key_size=True).validate()
ROWS, FEATURES, BINS = 300, 3, 100
CTX = b"binning.EncryptedLabels/2\x00job\x00guest"


@pytest.fixture(scope="module")
def host_data() -> np.ndarray:
    rng = np.random.default_rng(8)
    return rng.normal(size=(ROWS, FEATURES))


@pytest.fixture(scope="module")
def guest_key() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    pk, sk = generate_keypair(1024, allow_insecure_key_size=True)
    return pk, sk


def _true_bins(X: np.ndarray, host: BinningHost) -> list[list[int]]:
    """Ground truth (scoring only): each row's bin under the host's own cuts."""
    return [assign_bins(X[:, j], host.cuts[j]).tolist() for j in range(X.shape[1])]


# ------------------------------------------------------------------ the attacker
def encrypt_powers(pk: PaillierPublicKey, rows: int) -> list[gmpy2.mpz]:
    """``[[2^i]]`` for every row i, with fresh randomness (the deviating guest's labels)."""
    rnd = Randomizer(pk, window_bits=8)
    return [pk.raw_encrypt(1 << i, rnd.draw()) for i in range(rows)]


def reused_proofs(pk: PaillierPublicKey, y: list[int], context: bytes) -> bytes:
    """Forgery 1: valid proofs, made for the guest's real labels, attached to ``[[2^i]]``."""
    return zkp.prove_bits(pk, y, context=context, workers=1)[1]


def simulated_proofs(pk: PaillierPublicKey, cts: list[gmpy2.mpz]) -> bytes:
    """Forgery 2: both branches simulated, with challenges of the forger's own choice."""
    n, n2, w, nb = pk.n, pk.nsquare, pk.ciphertext_bytes, (pk.bits + 7) // 8
    out = bytearray()
    for c in cts:
        e0, e1 = secrets.randbits(128), secrets.randbits(128)
        z0 = gmpy2.mpz(secrets.randbelow(int(n) - 1) + 1)
        z1 = gmpy2.mpz(secrets.randbelow(int(n) - 1) + 1)
        a0 = gmpy2.powmod(z0, n, n2) * gmpy2.powmod(gmpy2.invert(c, n2), e0, n2) % n2
        a1 = gmpy2.powmod(z1, n, n2) * gmpy2.powmod(gmpy2.invert(c * (1 - n) % n2, n2), e1, n2) % n2
        out += int(a0).to_bytes(w, "big") + int(a1).to_bytes(w, "big") + e0.to_bytes(16, "big")
        out += int(z0).to_bytes(nb, "big") + int(z1).to_bytes(nb, "big")
    return bytes(out)


def read_bins(sk: PaillierPrivateKey, stats: HostBinStats, rows: int) -> list[list[int | None]]:
    """Decrypt each bin sum; bit i set means row i is in that bin. Per feature, per row."""
    w = sk.public_key.ciphertext_bytes
    sums = [int(sk.raw_decrypt(gmpy2.mpz.from_bytes(stats.event_sums.data[k:k + w], "big")))
            for k in range(0, len(stats.event_sums.data), w)]
    out, start = [], 0
    for nb in stats.bins_per_feature:
        found: list[int | None] = [None] * rows
        for b, s in enumerate(sums[start:start + nb]):
            for i in range(rows):
                if s >> i & 1:
                    found[i] = b
        out.append(found)
        start += nb
    return out


def _message(pk: PaillierPublicKey, cts: list[gmpy2.mpz], proofs: bytes,
             n_bins: int = BINS) -> EncryptedLabels:
    data = b"".join(int(c).to_bytes(pk.ciphertext_bytes, "big") for c in cts)
    return EncryptedLabels(pk.to_bytes(), Ciphertexts(pk.fingerprint, 0, data), proofs, n_bins,
                           False, False)


# ------------------------------------------------------------------ finding 5
@pytest.mark.parametrize("forgery", ["reused", "simulated"])
def test_powers_of_two_attack_is_refused(host_data, guest_key, forgery):
    pk, sk = guest_key
    cts = encrypt_powers(pk, ROWS)
    y = [secrets.randbits(1) for _ in range(ROWS)]
    proofs = reused_proofs(pk, y, CTX) if forgery == "reused" else simulated_proofs(pk, cts)
    msg = _message(pk, cts, proofs)

    # positive control: the attacker's decoding on the host's own per-bin sums (what the
    # host computed before it checked proofs) recovers every row's bin of every feature
    control = BinningHost(host_data, ["a", "b", "c"], party="host1", policy=INSECURE)
    enc = EncryptedVector(pk, cts, 0)
    with zkp.prover_tasks(pk, ROWS, workers=1) as tasks:
        sizes, counts, sums = control._bin_sums(enc, enc.to_bytes(), BINS, tasks)
    stats = HostBinStats(control.aliases(), sizes, np.asarray(counts),
                         Ciphertexts(pk.fingerprint, 0, EncryptedVector(
                             pk, zkp.uniform_rerandomize(pk, sums.ciphertexts), 0).to_bytes()))
    truth = _true_bins(host_data, control)
    recovered = read_bins(sk, stats, ROWS)
    assert sizes == [BINS + 1] * FEATURES
    assert all(recovered[j] == truth[j] for j in range(FEATURES))  # 300/300 rows, each feature

    # the real host step: verifies before summing, names the guest and the first bad row
    host = BinningHost(host_data, ["a", "b", "c"], party="host1", policy=INSECURE)
    with pytest.raises(RemoteProtocolError, match=r"from guest: the proof that label 0 is 0 or 1"):
        host.on_labels(msg, peer="guest", context=CTX)

    # the real I/O loop: the host aborts, the guest never gets a bin sum
    net = InMemoryNetwork(["guest", "host1"])
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            run_binning_host(net.endpoint("host1"), host_data, ["a", "b", "c"], guest="guest",
                             policy=INSECURE)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=serve)
    t.start()
    ch = net.endpoint("guest")
    proofs = (reused_proofs(pk, y, labels_context(ch, "guest")) if forgery == "reused"
              else proofs)  # bound to this job: still refused
    ch.send("host1", _message(pk, cts, proofs))
    t.join(timeout=60)
    assert len(errors) == 1 and isinstance(errors[0], RemoteProtocolError)
    assert "guest" in str(errors[0]) and "label 0" in str(errors[0])
    with pytest.raises(PeerTimeoutError):
        ch.recv("host1", HostBinStats, timeout=0.5)


def test_honest_guest_still_gets_exact_counts(host_data):
    """The defence costs nothing in correctness: event counts per bin are exact."""
    y = np.asarray([secrets.randbits(1) for _ in range(ROWS)])
    guest = BinningGuest(y, key_bits=1024, allow_insecure_key_size=True, n_bins=10, workers=1)
    host = BinningHost(host_data, ["a", "b", "c"], party="host1", policy=INSECURE, workers=1)
    stats = host.on_labels(guest.labels_message(context=CTX), context=CTX)
    got = guest.on_stats("host1", stats)
    for j, s in enumerate(got):
        idx = assign_bins(host_data[:, j], host.cuts[j])
        assert s.events == [int(y[idx == b].sum()) for b in range(len(s.counts))]


# ------------------------------------------------------------------ tagged randomness
def _key_with_jacobi_minus_one_square() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A guest key with Jacobi(−1 | n) = 1 (p ≡ q mod 4): DJN residues all have Jacobi +1."""
    while True:
        _, priv = phe_paillier.generate_paillier_keypair(n_length=512)
        sk = PaillierPrivateKey.from_phe(priv)
        if gmpy2.jacobi(sk.public_key.n - 1, sk.public_key.n) == 1:
            return sk.public_key, sk


def _root(n: gmpy2.mpz, sign: int) -> gmpy2.mpz:
    while True:
        r = gmpy2.mpz(secrets.randbelow(int(n) - 1) + 1)
        if gmpy2.jacobi(r, n) == sign:
            return r


def _guess_by_jacobi(pk: PaillierPublicKey, sums: list[gmpy2.mpz], sizes: list[int]) -> list[int | None]:
    """The attacker's read-out: per feature, the first bin whose sum has Jacobi symbol −1."""
    out, start = [], 0
    for nb in sizes:
        signs = [gmpy2.jacobi(c % pk.n, pk.n) for c in sums[start:start + nb]]
        out.append(next((b for b, s in enumerate(signs) if s == -1), None))
        start += nb
    return out


def test_tagged_randomness_no_longer_marks_a_row():
    """Valid 0/1 labels, but row t's randomness has Jacobi symbol −1 and all others +1.

    The proofs verify (each label is a bit). With the host's former DJN
    re-randomisation ``h_s^a`` (Jacobi +1 for this key) the sign survives the
    sum, and the bin with sign −1 is row t's, in every feature. With uniform
    ``r^n`` the sign of every sum is a fair coin.
    """
    pk, sk = _key_with_jacobi_minus_one_square()
    n, n2 = pk.n, pk.nsquare
    rows, features, target = 200, 12, 17
    X = np.random.default_rng(3).normal(size=(rows, features))
    y = [secrets.randbits(1) for _ in range(rows)]
    roots = [_root(n, -1 if i == target else 1) for i in range(rows)]
    cts = [(1 + b * n) * gmpy2.powmod(r, n, n2) % n2 for b, r in zip(y, roots, strict=True)]
    proofs = zkp.prove_bits_with_roots(pk, cts, y, roots, context=CTX)
    msg = _message(pk, cts, proofs, n_bins=10)
    names = [f"f{j}" for j in range(features)]

    # positive control: the host's per-bin sums re-randomised as before the fix
    before = BinningHost(X, names, party="host1", policy=INSECURE)
    enc = EncryptedVector(pk, cts, 0)
    with zkp.prover_tasks(pk, len(cts), workers=1) as tasks:
        sizes, _, sums = before._bin_sums(enc, enc.to_bytes(), 10, tasks)
    djn = sums.rerandomize(Randomizer(pk, window_bits=8)).ciphertexts
    truth = [b[target] for b in _true_bins(X, before)]
    assert _guess_by_jacobi(pk, djn, sizes) == truth  # 12/12 features

    # the real host step now (proofs valid, so it answers)
    host = BinningHost(X, names, party="host1", policy=INSECURE)
    stats = host.on_labels(msg, context=CTX)
    w = pk.ciphertext_bytes
    after = [gmpy2.mpz.from_bytes(stats.event_sums.data[k:k + w], "big")
             for k in range(0, len(stats.event_sums.data), w)]
    hits = sum(g == t for g, t in zip(_guess_by_jacobi(pk, after, stats.bins_per_feature), truth,
                                      strict=True))
    assert hits <= 6  # chance is about 1/11 per feature; before: 12 of 12
    # and the sums still decrypt to the exact event counts
    idx = assign_bins(X[:, 0], host.cuts[0])
    assert [int(sk.raw_decrypt(c)) for c in after[:sizes[0]]] == [
        int(np.asarray(y)[idx == b].sum()) for b in range(sizes[0])]


# ------------------------------------------------------------------ the guest's key
def test_guest_key_size_is_capped_by_the_host_policy(host_data, guest_key):
    pk, _ = guest_key
    small_X = host_data[:8]
    y = [0, 1, 1, 0, 0, 1, 0, 1]

    def request(key: PaillierPublicKey) -> EncryptedLabels:
        cts, proofs = zkp.prove_bits(key, y, context=CTX, workers=1)
        return EncryptedLabels(key.to_bytes(), Ciphertexts(key.fingerprint, 0, cts), proofs, 4,
                               False, False)

    # 1024 bits: refused under the default policy, accepted under an insecure one
    host = BinningHost(small_X, ["a", "b", "c"], party="host1")
    with pytest.raises(RemoteProtocolError, match="from guest.*1024-bit.*2048"):
        host.on_labels(request(pk), context=CTX)
    BinningHost(small_X, ["a", "b", "c"], party="host1", policy=INSECURE).on_labels(
        request(pk), context=CTX)
    # a host with a lower ceiling refuses the same key for being too large
    low = SecurityPolicy(allow_insecure_key_size=True, max_key_bits=768).validate()
    with pytest.raises(RemoteProtocolError, match="larger than the 768 bits"):
        BinningHost(small_X, ["a", "b", "c"], party="host1", policy=low).on_labels(
            request(pk), context=CTX)
    # 8200 bits: refused from its length alone, before any parsing or arithmetic
    huge = (1 << 8199) | secrets.randbits(8199) | 1
    msg = EncryptedLabels(huge.to_bytes(1025, "big"), Ciphertexts(b"\0" * 16, 0, b""), b"", 4,
                          False, False)
    for policy in (DEFAULT_POLICY, INSECURE):
        with pytest.raises(RemoteProtocolError, match="larger than the 8192 bits"):
            BinningHost(small_X, ["a"], party="host1", policy=policy).on_labels(msg, context=CTX)
    # the real I/O loop refuses it too
    net = InMemoryNetwork(["guest", "host1"])
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            run_binning_host(net.endpoint("host1"), small_X, ["a", "b", "c"], guest="guest")
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=serve)
    t.start()
    net.endpoint("guest").send("host1", msg)
    t.join(timeout=60)
    assert len(errors) == 1 and isinstance(errors[0], RemoteProtocolError)
    assert "guest" in str(errors[0])


def test_a_2048_bit_guest_key_passes_the_default_policy(host_data):
    pk, _ = generate_keypair(2048)
    y = [1, 0, 0, 1, 1, 0]
    cts, proofs = zkp.prove_bits(pk, y, context=CTX, workers=1)
    msg = EncryptedLabels(pk.to_bytes(), Ciphertexts(pk.fingerprint, 0, cts), proofs, 3,
                          False, False)
    stats = BinningHost(host_data[:6], ["a", "b", "c"], party="host1").on_labels(msg, context=CTX)
    assert sum(stats.counts.tolist()) == 6 * FEATURES


# ------------------------------------------------------------------ why the modulus is sieved
def test_small_factor_modulus_lets_a_prover_grind_and_is_refused():
    """With a prime factor r of n below the challenge space, a false proof passes at ~r hashes.

    n = r·p·q; the plaintext m is 0 mod p·q but not mod r, so c encrypts neither 0 nor 1.
    The forger answers branch 0 honestly except mod r, which holds when e_0 ≡ 0 (mod r),
    and re-draws its commitment until the Fiat–Shamir hash gives such an e_0.
    """
    r = gmpy2.next_prime(1 << 11)
    while True:
        p = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(250)) | (1 << 249))
        q = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(250)) | (1 << 249))
        n = r * p * q
        if gmpy2.gcd(n, (r - 1) * (p - 1) * (q - 1)) == 1:
            break
    pk = PaillierPublicKey(n)
    n2, w, nb = pk.nsquare, pk.ciphertext_bytes, (pk.bits + 7) // 8
    m = p * q * (5 * gmpy2.invert(p * q, r) % r)  # ≡ 5 mod r, ≡ 0 mod pq: not a bit
    assert m % n not in (0, 1)
    wit = gmpy2.mpz(secrets.randbelow(int(n) - 2) + 2)
    c = (1 + m * n) * gmpy2.powmod(wit, n, n2) % n2
    e1 = secrets.randbits(128)
    z1 = gmpy2.mpz(secrets.randbelow(int(n) - 2) + 2)
    a1 = gmpy2.powmod(z1, n, n2) * gmpy2.powmod(gmpy2.invert(c * (1 - n) % n2, n2), e1, n2) % n2
    s = gmpy2.mpz(secrets.randbelow(int(n) - 2) + 2)
    step = gmpy2.mpz(3)
    a0, step_n = gmpy2.powmod(s, n, n2), gmpy2.powmod(step, n, n2)
    c_bytes = int(c).to_bytes(w, "big")
    tries = 0
    while True:  # expected ~r tries
        tries += 1
        coms = int(a0).to_bytes(w, "big") + int(a1).to_bytes(w, "big")
        e = zkp._challenges(zkp._transcript_hash(pk, CTX, 1, c_bytes, coms, 2 * w), 1)[0]
        e0 = (e - e1) % (1 << 128)
        if e0 % r == 0 or tries >= 200 * int(r):
            break
        a0, s = a0 * step_n % n2, s * step % n
    z0 = s * gmpy2.powmod(wit, e0, n) % n
    proof = coms + e0.to_bytes(16, "big") + int(z0).to_bytes(nb, "big") + int(z1).to_bytes(nb, "big")
    assert zkp.verify_bits(pk, c_bytes, proof, context=CTX) is None  # the forgery verifies
    assert tries < 200 * int(r)
    # the host never gets that far: it refuses the modulus
    host = BinningHost(np.zeros((1, 1)), ["a"], party="host1", policy=INSECURE)
    msg = EncryptedLabels(pk.to_bytes(), Ciphertexts(pk.fingerprint, 0, c_bytes), proof, 2,
                          False, False)
    with pytest.raises(RemoteProtocolError, match="from guest.*prime factor below 2\\^24"):
        host.on_labels(msg, context=CTX)


# ------------------------------------------------------------------ what is left
def test_a_deviating_guest_can_still_probe_one_row_with_valid_labels(host_data):
    """Documented residual: labels are the guest's to choose. Labelling only row t with 1
    gives row t's bin in every host feature (and nothing else: every sum is 0 or 1)."""
    t = 42
    y = np.zeros(ROWS, dtype=np.int64)
    y[t] = 1
    guest = BinningGuest(y, key_bits=1024, allow_insecure_key_size=True, n_bins=10, workers=1)
    host = BinningHost(host_data, ["a", "b", "c"], party="host1", policy=INSECURE, workers=1)
    stats = guest.on_stats("host1", host.on_labels(guest.labels_message(context=CTX), context=CTX))
    probed = [s.events.index(1) for s in stats]
    assert probed == [b[t] for b in _true_bins(host_data, host)]
    assert all(sorted(s.events) == [0] * (len(s.events) - 1) + [1] for s in stats)
