"""Zero-knowledge proofs that Paillier ciphertexts encrypt 0 or 1.

Used where the key owner is the party to distrust: in federated binning the
guest encrypts its labels under its *own* key, hosts sum them per bin and the
guest decrypts the sums. Without a proof a guest could encrypt ``2^i`` instead
of ``y_i`` and read every row's bin from the sums. The full argument, with the
figures, is in ``protocols/specs/paillier.md`` ("Proof that a ciphertext
encrypts 0 or 1") and ``protocols/specs/binning.md``.

Statement. Public key ``n`` (``g = n + 1``); ciphertext ``c`` in ``Z*_{n^2}``.
The prover shows that ``u_0 = c`` or ``u_1 = c·(1+n)^-1 = c·(1 − n) mod n^2``
is an ``n``-th residue, i.e. ``c = (1 + m·n)·r^n mod n^2`` with ``m ∈ {0, 1}``,
without revealing ``m`` or ``r``.

Σ-protocol for "``u`` is an ``n``-th residue" (Damgård–Jurik 2001 §5;
Baudron–Fouque–Pointcheval–Poupard–Stern 2001), with witness ``w^n = u``:
commitment ``A = s^n mod n^2``; challenge ``e < 2^128``; response
``z = s·w^e mod n``; the verifier checks ``z^n = A·u^e mod n^2``. Two accepting
answers ``(e, z)``, ``(e', z')`` to one ``A`` give ``(z/z')^n = u^(e−e')``, and
with ``gcd(e − e', n) = 1`` (every prime factor of ``n`` exceeds ``2^128``) an
``n``-th root of ``u``: special soundness. OR composition
(Cramer–Damgård–Schoenmakers 1994): the prover simulates the false branch
(picks ``e_{1−m}``, ``z_{1−m}``, sets ``A_{1−m} = z^n·u^(−e)``), answers the true
branch honestly, and the two challenges must add up to the verifier's
challenge mod ``2^128``, so at most one branch can be simulated.

Fiat–Shamir (SHA-256). One transcript hash binds the domain string, ``n``,
the caller's context (job and protocol step), the row count and, for every
row in order, ``c_i ‖ A_i0 ‖ A_i1``; row ``i``'s challenge is
``SHA-256(domain ‖ transcript hash ‖ i)`` truncated to 128 bits. Binding every
row into one hash means a cheating prover must satisfy all its cheated rows
with the same hash at once (see "Modulus checks" below for why that matters).

Fast prover (DJN randomness). ``c = (1 + m·n)·h_s^a`` with ``h_s = γ^n mod n^2``,
``γ = −x^2 mod n`` for a secret ``x``, ``a`` of ``|n|/2`` bits, so the witness is
``w = γ^a mod n``. Commitments are ``A = h_s^k`` for ``k`` uniform in ``[0, 2^L)``,
``L = |a| + 128 + 128``, and responses ``z = γ^(k + a·e) mod n``; the simulated
branch is computed the same way with the trapdoor ``a``:
``A_{1−m} = h_s^k·(1 + (1−2m)·e·n)`` and ``z = γ^(k + a·e)``. Everything comes
from two fixed-base tables (``h_s`` mod ``n^2`` and ``γ`` mod ``n``): no full
exponentiation per row. Both branches have the same form, and ``k + a·e`` is
within statistical distance ``2^-128`` of uniform on ``[0, 2^L)`` whatever
``a`` and ``e`` are, so the proof is honest-verifier statistical zero
knowledge for a simulator that knows ``γ`` (which decrypts nothing; see the
spec). :func:`prove_bits_with_roots` is the textbook prover (``s`` uniform in
``Z*_n``, full exponentiations) for arbitrary witnesses, used as a reference.

Batched verification (Bellare–Garay–Rabin small exponents). The verifier draws
secret ``δ_i0, δ_i1 < 2^80`` and checks the one equation
``(Π z_i0^δ_i0 · z_i1^δ_i1 mod n)^n = Π A_i0^δ_i0 · A_i1^δ_i1 · c_i^(e_i0·δ_i0 + e_i1·δ_i1)
· (1 − F·n) mod n^2`` with ``F = Σ e_i1·δ_i1`` (``(1+n)^−F = 1 − F·n``). Soundness:
write ``W`` for the ``n``-th residues ``{w^n : w ∈ Z*_n}``. Every ``z^n`` lies in
``W``, so the equation says ``Π x_ij^δ_ij ∈ W`` for ``x_ij = A_ij·u_ij^e_ij``.
``Z*_{n^2}/W`` has order ``n·|K|`` with ``K = {w ∈ Z*_n : w^n = 1 mod n^2}``, whose
prime factors all divide ``n``; if some ``x_ij ∉ W`` its class has order at least the smallest prime
factor of ``n`` (> ``2^80``), so for any fixed other ``δ`` at most one of the
``2^80`` values of ``δ_ij`` passes: the batch accepts a false row with
probability at most ``2^-80``, drawn after the proof is fixed (no grinding).
Rows that pass the batch satisfy ``A·u^e ∈ W``, which is all special soundness
uses. A failing batch is bisected to the first failing row, whose equations
are then checked exactly.

Modulus checks. Soundness needs every prime factor of ``n`` above the
challenge space; the verifier cannot see the factors of a modulus its peer
chose. :func:`check_prover_modulus` refuses prime moduli, perfect powers and
any prime factor below ``2^24``; a prover that still builds ``n`` with a factor
``r`` between ``2^24`` and ``2^128`` can make a false row pass with probability
``1/r`` per transcript hash, and because all rows share one hash, cheating on
``k`` rows costs about ``r^k ≥ 2^(24k)`` hash evaluations. Closing this
completely needs a proof that ``n`` has no small factor (CGGMP21 Π^mod and
Π^fac); see the spec.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

import gmpy2

from vfl.crypto.engine import ComputeConfig
from vfl.crypto.paillier import (
    FixedBase,
    PaillierPublicKey,
    draw_djn_base,
    exponent_bits_for,
)
from vfl.crypto.tasks import InlineTasks, SecretBytes, TaskRunner, open_tasks, split
from vfl.crypto.vector import multiexp
from vfl.exceptions import ComputeError, CryptoError

__all__ = [
    "BATCH_BITS",
    "CHALLENGE_BITS",
    "DOMAIN",
    "SIEVE_BITS",
    "SLACK_BITS",
    "BitProver",
    "check_prover_modulus",
    "proof_width",
    "prove_bits",
    "prover_tasks",
    "prove_bits_with_roots",
    "uniform_rerandomize",
    "verify_bits",
]

#: Domain-separation string of the 0/1 proof (version 1 of its encoding).
DOMAIN = b"vfl/zkp/paillier-bit/v1"
#: Length of each Fiat–Shamir challenge.
CHALLENGE_BITS = 128
#: Statistical zero-knowledge slack of the commitment exponents.
SLACK_BITS = 128
#: Length of the verifier's secret batch exponents (soundness error 2^-80 per batch).
BATCH_BITS = 80
#: Every prime below 2^SIEVE_BITS is refused as a factor of a prover's modulus.
SIEVE_BITS = 24
#: Rows from which the default worker count switches to the machine's cores (proving).
PARALLEL_ROWS = 2000
#: The same for verification (about 0.3 ms a row on one core at 2048 bits, so a pool,
#: which takes about a second to start, pays off only for larger jobs).
PARALLEL_VERIFY_ROWS = 8000

_E_BYTES = CHALLENGE_BITS // 8
_E_MOD = 1 << CHALLENGE_BITS
_WINDOW_BITS = 8


def _n_bytes(public_key: PaillierPublicKey) -> int:
    return (public_key.bits + 7) // 8


def proof_width(public_key: PaillierPublicKey) -> int:
    """Bytes of one row's proof: ``A_0 ‖ A_1`` (mod ``n^2``), ``e_0`` (16), ``z_0 ‖ z_1`` (mod ``n``)."""
    return 2 * public_key.ciphertext_bytes + _E_BYTES + 2 * _n_bytes(public_key)


# ---------------------------------------------------------------- hashing
def _transcript_hash(public_key: PaillierPublicKey, context: bytes, count: int,
                     ciphertexts: bytes, commitments: bytes, commit_stride: int) -> bytes:
    """SHA-256 over the statement and every row's ``c ‖ A_0 ‖ A_1`` (fixed widths).

    ``commitments`` holds ``A_0 ‖ A_1`` at offset ``i * commit_stride`` for row ``i``.
    """
    width = public_key.ciphertext_bytes
    n = public_key.to_bytes()
    h = hashlib.sha256(DOMAIN + b"\x00transcript\x00")
    h.update(len(n).to_bytes(4, "big") + n)
    h.update(len(context).to_bytes(4, "big") + context)
    h.update(count.to_bytes(8, "big"))
    for i in range(count):
        h.update(ciphertexts[i * width:(i + 1) * width])
        off = i * commit_stride
        h.update(commitments[off:off + 2 * width])
    return h.digest()


def _challenges(digest: bytes, count: int) -> list[int]:
    base = hashlib.sha256(DOMAIN + b"\x00challenge\x00" + digest)
    out = []
    for i in range(count):
        h = base.copy()
        h.update(i.to_bytes(8, "big"))
        out.append(int.from_bytes(h.digest()[:_E_BYTES], "big"))
    return out


# ---------------------------------------------------------------- prover
class BitProver:
    """Encrypts 0/1 values under ``public_key`` and proves each one is 0 or 1.

    Draws its own secret ``x`` (``γ = −x^2 mod n``) and builds two fixed-base
    tables (for ``h_s = γ^n`` mod ``n^2`` and ``γ`` mod ``n``; window 8: about
    21 MB + 10 MB and 0.3 s for a 2048-bit key). A row costs
    ``|n|/16 + |L|/4`` multiplications mod ``n^2`` and ``|L|/4`` mod ``n`` with
    ``L = |n|/2 + 256`` (measured figures in ``protocols/specs/binning.md``).

    Parameters
    ----------
    public_key : PaillierPublicKey
        The prover's own key.
    exponent_bits : int, optional
        Length of the secret encryption exponent ``a``; default ``|n|/2``
        (as :class:`~vfl.crypto.paillier.Randomizer`).
    window_bits : int
        Fixed-base window.
    """

    def __init__(self, public_key: PaillierPublicKey, *, exponent_bits: int | None = None,
                 window_bits: int = _WINDOW_BITS, _gamma: int | None = None) -> None:
        self.public_key = public_key
        n, n2 = public_key.n, public_key.nsquare
        self.exponent_bits = exponent_bits_for(public_key, exponent_bits, "prover")
        self.commit_bits = self.exponent_bits + CHALLENGE_BITS + SLACK_BITS
        self.window_bits = window_bits
        gamma = draw_djn_base(public_key) if _gamma is None else gmpy2.mpz(_gamma)
        self._gamma = gamma
        self._hs = FixedBase(gmpy2.powmod(gamma, n, n2), n2, self.commit_bits, window_bits)
        self._gm = FixedBase(gamma, n, self.commit_bits + 1, window_bits)

    def commit(self, bits: Sequence[int]) -> tuple[bytes, bytes, list[tuple[int, ...]]]:
        """Encrypt ``bits`` and commit: ``(c_i …, A_i0 ‖ A_i1 …, secret state)``.

        Raises
        ------
        CryptoError
            If a value is not 0 or 1 (no proof exists for it).
        """
        values = [int(b) for b in bits]
        if any(b not in (0, 1) for b in values):
            raise CryptoError("Only the values 0 and 1 can be proven; refusing to encrypt others.")
        pk = self.public_key
        n, n2, width = pk.n, pk.nsquare, pk.ciphertext_bytes
        hs = self._hs
        cts, coms = bytearray(), bytearray()
        state: list[tuple[int, ...]] = []
        for m in values:
            a = secrets.randbits(self.exponent_bits)
            c = hs.pow(a)
            if m:
                c = c * (1 + n) % n2
            k0 = secrets.randbits(self.commit_bits)
            k1 = secrets.randbits(self.commit_bits)
            e_sim = secrets.randbits(CHALLENGE_BITS)
            # true branch m: A_m = h_s^k_m; simulated branch 1-m: A = h_s^k·(1+n)^((1-m)-m)·e
            a0, a1 = hs.pow(k0), hs.pow(k1)
            if m:
                a0 = a0 * ((1 - e_sim * n) % n2) % n2
            else:
                a1 = a1 * ((1 + e_sim * n) % n2) % n2
            cts += c.to_bytes(width, "big")
            coms += a0.to_bytes(width, "big") + a1.to_bytes(width, "big")
            state.append((m, a, k0, k1, e_sim))
        return bytes(cts), bytes(coms), state

    def respond(self, state: Sequence[tuple[int, ...]], challenges: Sequence[int]) -> bytes:
        """``e_0 ‖ z_0 ‖ z_1`` for every committed row, given its challenge."""
        nb = _n_bytes(self.public_key)
        gm = self._gm
        out = bytearray()
        for (m, a, k0, k1, e_sim), e in zip(state, challenges, strict=True):
            e_true = (e - e_sim) % _E_MOD
            e0, e1 = (e_sim, e_true) if m else (e_true, e_sim)
            out += e0.to_bytes(_E_BYTES, "big")
            out += gm.pow(k0 + a * e0).to_bytes(nb, "big") + gm.pow(k1 + a * e1).to_bytes(nb, "big")
        return bytes(out)


def _assemble(public_key: PaillierPublicKey, coms: bytes, responses: bytes) -> bytes:
    """Per row ``A_0 ‖ A_1 ‖ e_0 ‖ z_0 ‖ z_1`` from the commitments and the responses."""
    cw = 2 * public_key.ciphertext_bytes
    rw = _E_BYTES + 2 * _n_bytes(public_key)
    count = len(coms) // cw
    return b"".join(coms[i * cw:(i + 1) * cw] + responses[i * rw:(i + 1) * rw] for i in range(count))


# -- state packing for worker processes (this party's own pipes; never sent to a peer)
def _state_widths(prover: BitProver) -> tuple[int, int]:
    return (prover.exponent_bits + 7) // 8, (prover.commit_bits + 7) // 8


def _pack_state(prover: BitProver, state: Sequence[tuple[int, ...]]) -> bytes:
    aw, kw = _state_widths(prover)
    return b"".join(bytes([m]) + a.to_bytes(aw, "big") + k0.to_bytes(kw, "big")
                    + k1.to_bytes(kw, "big") + e.to_bytes(_E_BYTES, "big")
                    for m, a, k0, k1, e in state)


def _unpack_state(prover: BitProver, blob: bytes) -> list[tuple[int, ...]]:
    aw, kw = _state_widths(prover)
    step = 1 + aw + 2 * kw + _E_BYTES
    out = []
    for off in range(0, len(blob), step):
        row = blob[off:off + step]
        fields = (row[1:1 + aw], row[1 + aw:1 + aw + kw], row[1 + aw + kw:1 + aw + 2 * kw],
                  row[1 + aw + 2 * kw:])
        out.append((row[0], *(int.from_bytes(f, "big") for f in fields)))
    return out


_WORKER: dict[str, Any] = {}


def _init_worker(n_bytes: bytes, gamma: bytes | None, exponent_bits: int | None,
                 window_bits: int) -> None:
    pk = PaillierPublicKey.from_bytes(n_bytes)
    _WORKER.clear()  # a previous prover's tables go
    _WORKER["pk"] = pk
    if gamma is not None:
        _WORKER["prover"] = BitProver(pk, exponent_bits=exponent_bits, window_bits=window_bits,
                                      _gamma=int.from_bytes(gamma, "big"))


def _worker_prover(n_bytes: bytes) -> BitProver:
    """This worker's prover, checked to be for the caller's key (never a stale one)."""
    prover: BitProver | None = _WORKER.get("prover")
    if prover is None or prover.public_key.to_bytes() != n_bytes:
        raise RuntimeError("This worker holds no prover for the requested key; its state was "
                           "not set up for this proof.")
    return prover


def _w_commit(n_bytes: bytes, bits: bytes) -> tuple[bytes, bytes, SecretBytes]:
    prover = _worker_prover(n_bytes)
    cts, coms, state = prover.commit(list(bits))
    return cts, coms, SecretBytes(_pack_state(prover, state))


def _w_respond(n_bytes: bytes, state: SecretBytes, challenges: bytes) -> bytes:
    prover = _worker_prover(n_bytes)
    es = [int.from_bytes(challenges[i:i + _E_BYTES], "big")
          for i in range(0, len(challenges), _E_BYTES)]
    return prover.respond(_unpack_state(prover, state.value), es)


def _w_batch(n_bytes: bytes, cts: bytes, proofs: bytes,
             challenges: bytes) -> tuple[bytes, bytes, bytes]:
    # stateless: the key comes with the chunk (the batch weights are drawn here, fresh)
    pk = PaillierPublicKey.from_bytes(n_bytes)
    rows = _parse_rows(pk, cts, proofs)
    es = [int.from_bytes(challenges[i:i + _E_BYTES], "big")
          for i in range(0, len(challenges), _E_BYTES)]
    z, r, f = _batch_terms(pk, rows, es)
    return (z.to_bytes(_n_bytes(pk), "big"), r.to_bytes(pk.ciphertext_bytes, "big"),
            f.to_bytes((f.bit_length() + 7) // 8 or 1, "big"))


def prover_tasks(public_key: PaillierPublicKey, count: int, gamma: gmpy2.mpz | None = None, *,
                 exponent_bits: int | None = None, workers: int | None = None,
                 compute: ComputeConfig | None = None) -> contextlib.AbstractContextManager[
                     TaskRunner]:
    """Where the proof's chunks run (:func:`vfl.crypto.tasks.open_tasks`).

    With ``gamma`` the workers build a prover on that base (fixed-base tables,
    once per worker); without, they only hold the public key (verification,
    sums). ``workers=None`` uses the machine's cores from
    :data:`PARALLEL_ROWS` rows on when proving and :data:`PARALLEL_VERIFY_ROWS`
    when verifying.
    """
    g = None if gamma is None else int(gamma).to_bytes(_n_bytes(public_key), "big")
    threshold = PARALLEL_VERIFY_ROWS if gamma is None else PARALLEL_ROWS
    return open_tasks(_init_worker, (public_key.to_bytes(), g, exponent_bits, _WINDOW_BITS),
                      count=count, threshold=threshold, workers=workers, compute=compute)


def prove_bits(public_key: PaillierPublicKey, bits: Sequence[int], *, context: bytes,
               workers: int | None = None, exponent_bits: int | None = None,
               compute: ComputeConfig | None = None) -> tuple[bytes, bytes]:
    """Encrypt each value of ``bits`` (0 or 1) and prove it; returns ``(ciphertexts, proofs)``.

    Both are fixed-width bytes, row after row: ``ciphertext_bytes`` per
    ciphertext and :func:`proof_width` per proof.

    Parameters
    ----------
    public_key : PaillierPublicKey
        The prover's own key.
    bits : sequence of int
        Values, each 0 or 1.
    context : bytes
        What the proofs are bound to (job id, protocol step, prover); the
        verifier must pass the same bytes.
    workers : int, optional
        Worker processes; ``None`` uses the machine's cores from
        :data:`PARALLEL_ROWS` rows on, else this process.
    exponent_bits : int, optional
        See :class:`BitProver`.
    compute : ComputeConfig, optional
        The party's ``[compute]`` (default: the current
        :func:`~vfl.crypto.engine.compute_context`); ``engine="dask"`` makes
        the proofs on its cluster. Each worker draws the secret exponents of
        its rows with ``secrets``; they come back to this process (inside the
        cluster's TLS) only to be handed to the responding chunk.

    Raises
    ------
    CryptoError
        If a value is not 0 or 1.
    """
    values = [int(b) for b in bits]
    if any(b not in (0, 1) for b in values):
        raise CryptoError("Only the values 0 and 1 can be proven; refusing to encrypt others.")
    count = len(values)
    gamma = draw_djn_base(public_key)
    with prover_tasks(public_key, count, gamma, exponent_bits=exponent_bits, workers=workers,
                      compute=compute) as tasks:
        if isinstance(tasks, InlineTasks):
            prover = BitProver(public_key, exponent_bits=exponent_bits, _gamma=int(gamma))
            cts, coms, state = prover.commit(values)
            digest = _transcript_hash(public_key, context, count, cts, coms,
                                      2 * public_key.ciphertext_bytes)
            responses = prover.respond(state, _challenges(digest, count))
            return cts, _assemble(public_key, coms, responses)
        parts = split(count, tasks.parallelism)
        n_bytes = public_key.to_bytes()
        commits = [tasks.submit(_w_commit, n_bytes, bytes(values[a:b])) for a, b in parts]
        results = [f.result() for f in commits]
        cts = b"".join(r[0] for r in results)
        coms = b"".join(r[1] for r in results)
        digest = _transcript_hash(public_key, context, count, cts, coms,
                                  2 * public_key.ciphertext_bytes)
        es = b"".join(e.to_bytes(_E_BYTES, "big") for e in _challenges(digest, count))
        answers = [tasks.submit(_w_respond, n_bytes, r[2], es[a * _E_BYTES:b * _E_BYTES])
                   for r, (a, b) in zip(results, parts, strict=True)]
        responses = b"".join(f.result() for f in answers)
    return cts, _assemble(public_key, coms, responses)


def prove_bits_with_roots(public_key: PaillierPublicKey, ciphertexts: Sequence[int],
                          bits: Sequence[int], roots: Sequence[int], *, context: bytes) -> bytes:
    """Textbook prover for given ciphertexts ``c_i = (1 + b_i·n)·r_i^n mod n^2``.

    The reference implementation of the proof (commitments ``s^n`` with ``s``
    uniform in ``Z*_n``, simulated branch ``z`` uniform in ``Z*_n``): two full
    exponentiations per row, so for tests and known-answer checks, not bulk use.

    Raises
    ------
    CryptoError
        If a value is not 0 or 1 or a witness does not open its ciphertext.
    """
    pk = public_key
    n, n2, width, nb = pk.n, pk.nsquare, pk.ciphertext_bytes, _n_bytes(pk)
    count = len(ciphertexts)
    if not len(bits) == len(roots) == count:
        raise CryptoError("Ciphertexts, values and witnesses differ in number.")

    def unit() -> gmpy2.mpz:
        while True:
            s = gmpy2.mpz(secrets.randbelow(int(n) - 1) + 1)
            if gmpy2.gcd(s, n) == 1:
                return s

    cts, coms = bytearray(), bytearray()
    state = []
    for c, b, r in zip(ciphertexts, bits, roots, strict=True):
        c, r = gmpy2.mpz(c), gmpy2.mpz(r)
        if b not in (0, 1) or not 0 < c < n2 or c != (1 + b * n) * gmpy2.powmod(r, n, n2) % n2:
            raise CryptoError("A witness does not open its ciphertext to 0 or 1; no proof exists.")
        us = (c, c * (1 - n) % n2)
        s, z_sim, e_sim = unit(), unit(), secrets.randbits(CHALLENGE_BITS)
        a_true = gmpy2.powmod(s, n, n2)
        a_sim = gmpy2.powmod(z_sim, n, n2) * gmpy2.invert(gmpy2.powmod(us[1 - b], e_sim, n2), n2) % n2
        a0, a1 = (a_true, a_sim) if b == 0 else (a_sim, a_true)
        cts += c.to_bytes(width, "big")
        coms += a0.to_bytes(width, "big") + a1.to_bytes(width, "big")
        state.append((b, r, s, z_sim, e_sim))
    digest = _transcript_hash(pk, context, count, bytes(cts), bytes(coms), 2 * width)
    out = bytearray()
    for (b, r, s, z_sim, e_sim), e in zip(state, _challenges(digest, count), strict=True):
        e_true = (e - e_sim) % _E_MOD
        z_true = s * gmpy2.powmod(r, e_true, n) % n
        e0, z0, z1 = (e_true, z_true, z_sim) if b == 0 else (e_sim, z_sim, z_true)
        out += e0.to_bytes(_E_BYTES, "big") + z0.to_bytes(nb, "big") + z1.to_bytes(nb, "big")
    return _assemble(pk, bytes(coms), bytes(out))


# ---------------------------------------------------------------- verifier
_Row = tuple[gmpy2.mpz, gmpy2.mpz, gmpy2.mpz, int, gmpy2.mpz, gmpy2.mpz]


def _parse_rows(pk: PaillierPublicKey, cts: bytes, proofs: bytes) -> list[_Row | None]:
    """``(c, A_0, A_1, e_0, z_0, z_1)`` per row, or ``None`` for a row out of range."""
    n, n2, width, nb = pk.n, pk.nsquare, pk.ciphertext_bytes, _n_bytes(pk)
    pw = proof_width(pk)
    frm = gmpy2.mpz.from_bytes
    out: list[_Row | None] = []
    for i in range(len(cts) // width):
        p = proofs[i * pw:(i + 1) * pw]
        c = frm(cts[i * width:(i + 1) * width], "big")
        a0, a1 = frm(p[:width], "big"), frm(p[width:2 * width], "big")
        e0 = int.from_bytes(p[2 * width:2 * width + _E_BYTES], "big")
        z0 = frm(p[2 * width + _E_BYTES:2 * width + _E_BYTES + nb], "big")
        z1 = frm(p[2 * width + _E_BYTES + nb:], "big")
        ok = 0 < c < n2 and 0 < a0 < n2 and 0 < a1 < n2 and 0 < z0 < n and 0 < z1 < n
        out.append((c, a0, a1, e0, z0, z1) if ok else None)
    return out


def _batch_terms(pk: PaillierPublicKey, rows: Sequence[_Row | None],
                 challenges: Sequence[int]) -> tuple[gmpy2.mpz, gmpy2.mpz, int]:
    """``(Π z^δ mod n, Π A^δ·c^(e_0·δ_0 + e_1·δ_1) mod n^2, Σ e_1·δ_1)`` with fresh secret ``δ``."""
    zs: list[gmpy2.mpz] = []
    zexp: list[int] = []
    bases: list[gmpy2.mpz] = []
    bexp: list[int] = []
    f = 0
    for row, e in zip(rows, challenges, strict=True):
        assert row is not None  # callers pass parsed rows only
        c, a0, a1, e0, z0, z1 = row
        e1 = (e - e0) % _E_MOD
        d0, d1 = secrets.randbits(BATCH_BITS), secrets.randbits(BATCH_BITS)
        zs += (z0, z1)
        zexp += (d0, d1)
        bases += (a0, a1, c)
        bexp += (d0, d1, e0 * d0 + e1 * d1)
        f += e1 * d1
    return multiexp(zs, zexp, pk.n), multiexp(bases, bexp, pk.nsquare), f


def _batch_holds(pk: PaillierPublicKey, terms: Sequence[tuple[gmpy2.mpz, gmpy2.mpz, int]]) -> bool:
    n, n2 = pk.n, pk.nsquare
    z, r, f = gmpy2.mpz(1), gmpy2.mpz(1), 0
    for tz, tr, tf in terms:
        z, r, f = z * tz % n, r * tr % n2, f + tf
    return bool(gmpy2.powmod(z, n, n2) == r * ((1 - (f % n) * n) % n2) % n2)


def _row_holds(pk: PaillierPublicKey, row: _Row, e: int) -> bool:
    """The two verification equations of one row, checked exactly."""
    n, n2 = pk.n, pk.nsquare
    c, a0, a1, e0, z0, z1 = row
    e1 = (e - e0) % _E_MOD
    return bool(gmpy2.powmod(z0, n, n2) == a0 * gmpy2.powmod(c, e0, n2) % n2
                and gmpy2.powmod(z1, n, n2) == a1 * gmpy2.powmod(c * (1 - n) % n2, e1, n2) % n2)


def _first_bad(pk: PaillierPublicKey, rows: Sequence[_Row | None], es: Sequence[int],
               lo: int, hi: int) -> int | None:
    """The first row in ``[lo, hi)`` whose proof fails (bisection over batches)."""
    if hi - lo == 1:
        row = rows[lo]
        return None if row is not None and _row_holds(pk, row, es[lo]) else lo
    if _batch_holds(pk, [_batch_terms(pk, rows[lo:hi], es[lo:hi])]):
        return None
    mid = (lo + hi) // 2
    left = _first_bad(pk, rows, es, lo, mid)
    return left if left is not None else _first_bad(pk, rows, es, mid, hi)


def _batches_hold(pk: PaillierPublicKey, tasks: TaskRunner, rows: Sequence[_Row | None],
                  ciphertexts: bytes, proofs: bytes, es: Sequence[int], limit: int) -> bool:
    """The batch check of rows ``[0, limit)``, its products in chunks on ``tasks``."""
    if isinstance(tasks, InlineTasks):
        return _batch_holds(pk, [_batch_terms(pk, rows[:limit], es[:limit])])
    width, pw = pk.ciphertext_bytes, proof_width(pk)
    futures = [tasks.submit(_w_batch, pk.to_bytes(), ciphertexts[a * width:b * width],
                            proofs[a * pw:b * pw],
                            b"".join(e.to_bytes(_E_BYTES, "big") for e in es[a:b]))
               for a, b in split(limit, tasks.parallelism)]
    frm = gmpy2.mpz.from_bytes
    return _batch_holds(pk, [(frm(z, "big"), frm(r, "big"), int.from_bytes(f, "big"))
                             for z, r, f in (f.result() for f in futures)])


def verify_bits(public_key: PaillierPublicKey, ciphertexts: bytes, proofs: bytes, *,
                context: bytes, workers: int | None = None,
                compute: ComputeConfig | None = None,
                tasks: TaskRunner | None = None) -> int | None:
    """Check that every ciphertext encrypts 0 or 1; ``None``, or the first failing row.

    Parameters
    ----------
    public_key : PaillierPublicKey
        The prover's key (check it with :func:`check_prover_modulus` first).
    ciphertexts : bytes
        Fixed-width ciphertexts, ``ciphertext_bytes`` each.
    proofs : bytes
        One :func:`proof_width` proof per ciphertext.
    context : bytes
        The bytes the prover bound the proofs to.
    workers : int, optional
        Processes for the batch products; ``None`` uses the machine's cores
        from :data:`PARALLEL_VERIFY_ROWS` rows on.
    compute : ComputeConfig, optional
        As in :func:`prove_bits`: ``engine="dask"`` computes the batch
        products on the party's cluster.
    tasks : TaskRunner, optional
        A runner already open for this key (:func:`prover_tasks` without
        ``gamma``); replaces ``workers`` and ``compute``.

    Returns
    -------
    int or None
        ``None`` if all proofs verify, else the lowest index of a row whose
        values are out of range, not units, or whose proof fails.

    Raises
    ------
    CryptoError
        If the payload lengths do not match (no row can be named).
    """
    pk = public_key
    width, pw = pk.ciphertext_bytes, proof_width(pk)
    if len(ciphertexts) % width:
        raise CryptoError("Ciphertext payload is not a whole number of ciphertexts.")
    count = len(ciphertexts) // width
    if len(proofs) != count * pw:
        raise CryptoError(f"Expected {count} proofs of {pw} bytes, got {len(proofs)} bytes.")
    rows = _parse_rows(pk, ciphertexts, proofs)
    first_range = next((i for i, r in enumerate(rows) if r is None), None)
    limit = count if first_range is None else first_range
    # every value a unit: one gcd over the product of all of them
    n = pk.n
    prod = gmpy2.mpz(1)
    for row in rows[:limit]:
        assert row is not None
        c, a0, a1, _, z0, z1 = row
        prod = prod * (c * a0 % n) * (a1 * z0 % n) * z1 % n
    if gmpy2.gcd(prod, n) != 1:
        for i, row in enumerate(rows[:limit]):
            assert row is not None
            c, a0, a1, _, z0, z1 = row
            if gmpy2.gcd(c * a0 * a1 * z0 * z1 % n, n) != 1:
                return i
    if limit == 0:
        return first_range
    es = _challenges(_transcript_hash(pk, context, count, ciphertexts, proofs, pw), count)
    if tasks is None:
        with prover_tasks(pk, limit, workers=workers, compute=compute) as runner:
            ok = _batches_hold(pk, runner, rows, ciphertexts, proofs, es, limit)
    else:
        ok = _batches_hold(pk, tasks, rows, ciphertexts, proofs, es, limit)
    if ok:
        return first_range
    bad = _first_bad(pk, rows, es, 0, limit)
    if bad is None:
        # every row holds when checked here: the workers' batch products were wrong (a
        # worker with another vfl, or broken state), not the prover's proofs; blaming the
        # prover's row 0 would accuse an honest peer (or, at ~2^-80, a batch was unlucky)
        raise ComputeError(
            "The 0/1 proofs failed the batch check on this party's compute workers but every "
            "row verifies in this process: the workers disagree with this process (check that "
            "they run the same vfl version); nothing was blamed on the prover.")
    return bad


# ---------------------------------------------------------------- key owner as adversary
@functools.lru_cache(maxsize=1)
def _small_primes() -> gmpy2.mpz:
    return gmpy2.primorial(1 << SIEVE_BITS)


def check_prover_modulus(public_key: PaillierPublicKey) -> None:
    """Refuse a prover's modulus under which the 0/1 proofs would not be sound.

    Refuses a prime ``n``, a perfect power, and any prime factor below
    ``2^SIEVE_BITS`` (one gcd with their product, built once per process in
    about 1 s). Factors between ``2^24`` and ``2^128`` cannot be excluded
    this way; see the module docstring for what they allow.

    Raises
    ------
    CryptoError
        Naming the defect (never the modulus or a factor).
    """
    n = public_key.n
    if gmpy2.is_prime(n):
        raise CryptoError("The Paillier modulus is prime, not a product of two primes.")
    if gmpy2.is_power(n):
        raise CryptoError("The Paillier modulus is a perfect power.")
    if gmpy2.gcd(_small_primes() % n, n) != 1:
        raise CryptoError(f"The Paillier modulus has a prime factor below 2^{SIEVE_BITS}.")


def uniform_rerandomize(public_key: PaillierPublicKey,
                        ciphertexts: Sequence[gmpy2.mpz]) -> list[gmpy2.mpz]:
    """Multiply each ciphertext by ``r^n`` for a fresh ``r`` uniform in ``Z*_n``.

    For ciphertexts the key owner will decrypt when the key owner also chose
    the inputs' randomness. :class:`~vfl.crypto.paillier.Randomizer` residues
    ``h_s^a`` are uniform only within the cyclic group ``<h_s>``, whose index
    in the ``n``-th residues the key owner controls through ``p`` and ``q``;
    it can read the class of a product in that quotient (at least its Jacobi
    symbol), and so tag rows with its own randomness. ``c·r^n`` is uniform in
    ``c·W``: the owner learns the class of ``c`` modulo ``W``, which for
    ciphertexts proven to encrypt 0 or 1 is just the plaintext. One full
    exponentiation per ciphertext.
    """
    n, n2 = public_key.n, public_key.nsquare
    out = []
    for c in ciphertexts:
        while True:
            r = gmpy2.mpz(secrets.randbelow(int(n) - 1) + 1)
            if gmpy2.gcd(r, n) == 1:
                break
        out.append(gmpy2.mpz(c) * gmpy2.powmod(r, n, n2) % n2)
    return out
