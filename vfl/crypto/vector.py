"""``EncryptedVector``: many raw Paillier ciphertexts sharing one key and scale.

A vector is a Python list of gmpy2 integers plus the public key and the
number of fractional bits of the plaintexts, not one object per number: the
scale is fixed by the protocol, so adding vectors never needs the exponent
alignment that costs ``phe`` a modular exponentiation per element.

Homomorphic operations (with ``[[x]]`` an encryption of ``x``):

* ``[[a]] + [[b]]``       ciphertext product mod n^2
* ``[[a]] + b``           ``c * (1 + b*n) mod n^2``: one multiplication
* ``k * [[a]]``           ``c^k mod n^2``
* ``X^T [[d]]``           per column ``prod_i c_i^{x_ij}``, computed by a
                          bucket (Pippenger) multi-exponentiation over
                          offset-encoded, non-negative exponents
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import gmpy2
import numpy as np
import numpy.typing as npt

from vfl.crypto.encoding import from_residues, to_residues
from vfl.crypto.paillier import PaillierPrivateKey, PaillierPublicKey, Randomizer
from vfl.exceptions import CryptoError, KeyMismatchError

__all__ = ["EncryptedVector", "multiexp", "matvec_t", "slots_per_ciphertext", "unpack_residue"]


@dataclass(frozen=True, slots=True)
class EncryptedVector:
    """Ciphertexts under one public key, plaintexts at scale ``2**frac_bits``.

    Parameters
    ----------
    public_key : PaillierPublicKey
    ciphertexts : list of gmpy2.mpz
    frac_bits : int
        Fixed-point scale shared by every element.
    encoded : bytes, optional
        The wire form of exactly these ciphertexts, when the vector was built
        from it (parsed from a peer or from a worker): :meth:`to_bytes` then
        returns it instead of serialising every ciphertext again.
    """

    public_key: PaillierPublicKey
    ciphertexts: list[gmpy2.mpz]
    frac_bits: int
    encoded: bytes | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ciphertexts)

    # ------------------------------------------------------------------ create
    @classmethod
    def encrypt(
        cls,
        public_key: PaillierPublicKey,
        values: Sequence[int] | npt.NDArray[np.int64],
        frac_bits: int,
        randomizer: Randomizer,
    ) -> EncryptedVector:
        """Encrypt signed integers (already scaled by ``2**frac_bits``)."""
        _same_key(public_key, randomizer.public_key)
        n, n2 = public_key.n, public_key.nsquare
        residues = to_residues(values, n)
        cts = [(1 + m * n) * randomizer.draw() % n2 for m in residues]
        return cls(public_key, cts, frac_bits)

    # --------------------------------------------------------------- decrypt
    def decrypt(self, private_key: PaillierPrivateKey) -> list[int]:
        """Decrypt to signed integers at scale ``2**frac_bits``."""
        _same_key(self.public_key, private_key.public_key)
        return from_residues(private_key.raw_decrypt_many(self.ciphertexts), self.public_key.n)

    def decrypt_residues(self, private_key: PaillierPrivateKey) -> list[gmpy2.mpz]:
        """Decrypt to residues of Z_n (used for masked values, which are uniform)."""
        _same_key(self.public_key, private_key.public_key)
        return private_key.raw_decrypt_many(self.ciphertexts)

    # ------------------------------------------------------------- arithmetic
    def add(self, other: EncryptedVector) -> EncryptedVector:
        """Element-wise ``[[a + b]]``."""
        _same_key(self.public_key, other.public_key)
        if len(self) != len(other) or self.frac_bits != other.frac_bits:
            raise CryptoError(
                f"Cannot add vectors of length/scale {len(self)}/{self.frac_bits} and "
                f"{len(other)}/{other.frac_bits}."
            )
        n2 = self.public_key.nsquare
        cts = [a * b % n2 for a, b in zip(self.ciphertexts, other.ciphertexts, strict=True)]
        return EncryptedVector(self.public_key, cts, self.frac_bits)

    def add_plain(self, values: Sequence[int] | npt.NDArray[np.int64]) -> EncryptedVector:
        """Element-wise ``[[a + v]]`` for signed integers ``v`` at this scale."""
        if len(values) != len(self):
            raise CryptoError(f"Expected {len(self)} plaintexts, got {len(values)}.")
        n, n2 = self.public_key.n, self.public_key.nsquare
        residues = to_residues(values, n)
        cts = [c * (1 + m * n) % n2 for c, m in zip(self.ciphertexts, residues, strict=True)]
        return EncryptedVector(self.public_key, cts, self.frac_bits)

    def add_residues(self, residues: Sequence[gmpy2.mpz]) -> EncryptedVector:
        """Element-wise ``[[a + r mod n]]`` for residues ``r`` (used for masks)."""
        n, n2 = self.public_key.n, self.public_key.nsquare
        if len(residues) != len(self):
            raise CryptoError(f"Expected {len(self)} residues, got {len(residues)}.")
        cts = [c * (1 + m * n) % n2 for c, m in zip(self.ciphertexts, residues, strict=True)]
        return EncryptedVector(self.public_key, cts, self.frac_bits)

    def mul_scalar(self, k: int, extra_frac_bits: int = 0) -> EncryptedVector:
        """``[[k * a]]``; the scale grows by ``extra_frac_bits``."""
        n2 = self.public_key.nsquare
        if k >= 0:
            cts = [gmpy2.powmod(c, k, n2) for c in self.ciphertexts]
        else:
            cts = [gmpy2.powmod(gmpy2.invert(c, n2), -k, n2) for c in self.ciphertexts]
        return EncryptedVector(self.public_key, cts, self.frac_bits + extra_frac_bits)

    def mul_elementwise(self, ks: Sequence[int]) -> EncryptedVector:
        """``[[k_i * a_i]]`` for signed integers ``k_i`` (scale unchanged)."""
        n2 = self.public_key.nsquare
        out = []
        for c, k in zip(self.ciphertexts, ks, strict=True):
            k = int(k)
            out.append(gmpy2.powmod(c, k, n2) if k >= 0 else gmpy2.powmod(gmpy2.invert(c, n2), -k, n2))
        return EncryptedVector(self.public_key, out, self.frac_bits)

    def add_multiple(self, other: EncryptedVector, ks: Sequence[int]) -> EncryptedVector:
        """Element-wise ``[[a_i + k_i b_i]]`` for signed integers ``k_i`` of any size."""
        _same_key(self.public_key, other.public_key)
        if len(other) != len(self) or len(ks) != len(self):
            raise CryptoError("add_multiple needs vectors and factors of one length.")
        n2 = self.public_key.nsquare
        cts = [a * gmpy2.powmod(b, int(k), n2) % n2  # gmpy2 inverts for k < 0
               for a, b, k in zip(self.ciphertexts, other.ciphertexts, ks, strict=True)]
        return EncryptedVector(self.public_key, cts, self.frac_bits)

    def sum(self) -> EncryptedVector:
        """A one-element vector ``[[sum_i a_i]]``."""
        n2 = self.public_key.nsquare
        acc = gmpy2.mpz(1)
        for c in self.ciphertexts:
            acc = acc * c % n2
        return EncryptedVector(self.public_key, [acc], self.frac_bits)

    def sum_by_group(self, groups: Sequence[int] | npt.NDArray[np.int64],
                     n_groups: int) -> EncryptedVector:
        """``[[sum of a_i over i in group g]]`` for ``g = 0 .. n_groups - 1``.

        ``groups[i]`` is the group of element ``i``. An empty group gives the
        unrandomised encryption of 0 (the ciphertext 1): re-randomise before
        sending.
        """
        if len(groups) != len(self):
            raise CryptoError(f"Expected {len(self)} group indices, got {len(groups)}.")
        n2 = self.public_key.nsquare
        acc = [gmpy2.mpz(1)] * n_groups
        for c, g in zip(self.ciphertexts, groups, strict=True):
            g = int(g)
            if not 0 <= g < n_groups:
                raise CryptoError(f"Group index {g} is outside 0..{n_groups - 1}.")
            acc[g] = acc[g] * c % n2
        return EncryptedVector(self.public_key, acc, self.frac_bits)

    @staticmethod
    def sum_all(vectors: Sequence[EncryptedVector]) -> EncryptedVector:
        """Element-wise ``[[sum over vectors]]`` (same key, length and scale; at least one)."""
        if not vectors:
            raise CryptoError("sum_all needs at least one vector.")
        total = vectors[0]
        for v in vectors[1:]:
            total = total.add(v)
        return total

    def at_scale(self, frac_bits: int) -> EncryptedVector:
        """The same ciphertexts, their plaintexts read at scale ``2**frac_bits``.

        After ``[[k_i a_i]]`` with integers ``k_i`` that stand for ``k_i / 2**w``
        (e.g. quantised weights), the plaintexts are at ``2**(frac_bits + w)``:
        nothing changes but the bookkeeping.
        """
        return EncryptedVector(self.public_key, self.ciphertexts, frac_bits, self.encoded)

    def take(self, index: Sequence[int] | npt.NDArray[np.int64]) -> EncryptedVector:
        """Sub-vector of the given positions."""
        cts = self.ciphertexts
        return EncryptedVector(self.public_key, [cts[int(i)] for i in index], self.frac_bits)

    def concat(self, other: EncryptedVector) -> EncryptedVector:
        """Append ``other`` (same key and scale)."""
        _same_key(self.public_key, other.public_key)
        if self.frac_bits != other.frac_bits:
            raise CryptoError("Cannot concatenate vectors of different scales.")
        return EncryptedVector(self.public_key, self.ciphertexts + other.ciphertexts, self.frac_bits)

    def pack(self, slot_bits: int) -> EncryptedVector:
        """Pack consecutive elements into slots: ``[[Σ_j a_j · 2^(slot_bits·j)]]``.

        Each output ciphertext holds :func:`slots_per_ciphertext` elements
        (Horner's rule: ``slot_bits`` squarings and one product per element,
        far cheaper than a decryption). Every ``a_j`` must lie in
        ``[0, 2^slot_bits)``, so the sum stays below ``n`` and the slots do not
        overlap; :func:`unpack_residue` splits a decrypted residue again. The
        result is a function of this vector's ciphertexts: re-randomise it
        before it leaves the party.
        """
        k = slots_per_ciphertext(self.public_key, slot_bits)
        n2 = self.public_key.nsquare
        shift = gmpy2.mpz(1) << slot_bits
        out = []
        cts = self.ciphertexts
        for start in range(0, len(cts), k):
            group = cts[start:start + k]
            acc = group[-1]
            for c in reversed(group[:-1]):
                acc = gmpy2.powmod(acc, shift, n2) * c % n2
            out.append(acc)
        return EncryptedVector(self.public_key, out, self.frac_bits)

    def rerandomize(self, randomizer: Randomizer) -> EncryptedVector:
        """Multiply every ciphertext by a fresh random n-th residue.

        Done on everything a party sends that it derived from ciphertexts it
        received, so no peer can link or strip what it sent earlier.
        """
        _same_key(self.public_key, randomizer.public_key)
        n2 = self.public_key.nsquare
        cts = [c * randomizer.draw() % n2 for c in self.ciphertexts]
        return EncryptedVector(self.public_key, cts, self.frac_bits)

    # --------------------------------------------------------- serialisation
    def to_bytes(self) -> bytes:
        """Fixed-width big-endian concatenation of the ciphertexts."""
        if self.encoded is not None:
            return self.encoded
        width = self.public_key.ciphertext_bytes
        return b"".join(c.to_bytes(width, "big") for c in self.ciphertexts)

    @classmethod
    def from_bytes(
        cls, public_key: PaillierPublicKey, data: bytes, frac_bits: int, *, expected_len: int | None = None
    ) -> EncryptedVector:
        """Parse and validate ciphertexts: width, count and ``0 < c < n^2``.

        Raises
        ------
        CryptoError
            If the byte length, the element count or a ciphertext's range is wrong.
        """
        width = public_key.ciphertext_bytes
        if len(data) % width:
            raise CryptoError(
                f"Ciphertext payload of {len(data)} bytes is not a multiple of the "
                f"{width}-byte ciphertext width of this key."
            )
        count = len(data) // width
        if expected_len is not None and count != expected_len:
            raise CryptoError(f"Expected {expected_len} ciphertexts, got {count}.")
        n2 = public_key.nsquare
        cts = []
        for i in range(count):
            c = gmpy2.mpz.from_bytes(data[i * width : (i + 1) * width], "big")
            if not 0 < c < n2:
                raise CryptoError(f"Ciphertext {i} is outside the range (0, n^2).")
            cts.append(c)
        return cls(public_key, cts, frac_bits, data)


def _same_key(a: PaillierPublicKey, b: PaillierPublicKey) -> None:
    if a.fingerprint != b.fingerprint:
        raise KeyMismatchError(
            "Ciphertexts under different Paillier public keys cannot be combined "
            f"(fingerprints {a.fingerprint.hex()} and {b.fingerprint.hex()})."
        )


def slots_per_ciphertext(public_key: PaillierPublicKey, slot_bits: int) -> int:
    """How many ``slot_bits``-bit slots one plaintext holds (their sum stays below ``n``)."""
    k = (public_key.n.bit_length() - 2) // slot_bits
    if k < 1:
        raise CryptoError(f"A {slot_bits}-bit slot does not fit a {public_key.n.bit_length()}-bit key.")
    return int(k)


def unpack_residue(residue: int, slot_bits: int, count: int) -> list[int]:
    """The ``count`` slots of a decrypted packed residue, lowest slot first."""
    mask = (1 << slot_bits) - 1
    r = int(residue)
    out = [(r >> (slot_bits * j)) & mask for j in range(count)]
    if r >> (slot_bits * count):
        raise CryptoError("A packed value has bits above its last slot.")
    return out


def multiexp(bases: Sequence[gmpy2.mpz], exponents: Iterable[int], modulus: gmpy2.mpz) -> gmpy2.mpz:
    """``prod_i bases[i] ** exponents[i] mod modulus`` for non-negative exponents.

    Bucket (Pippenger) method: for each ``c``-bit window, every base is
    multiplied into the bucket of its digit, then ``sum_d d * bucket[d]`` is
    formed with two running products. About ``(bits / c) * (len + 2^(c+1))``
    multiplications instead of ``~1.5 * bits`` per element.
    """
    exps = [int(e) for e in exponents]
    if any(e < 0 for e in exps):
        raise ValueError("multiexp needs non-negative exponents")
    if len(exps) != len(bases):
        raise ValueError("bases and exponents differ in length")
    max_bits = max((e.bit_length() for e in exps), default=0)
    if max_bits == 0:
        return gmpy2.mpz(1)
    count = len(exps)
    # window minimising (windows) * (count + 2^(c+1)) multiplications
    c = min(range(1, 13), key=lambda w: -(-max_bits // w) * (count + (2 << w)))
    windows = -(-max_bits // c)
    mask = (1 << c) - 1
    result = gmpy2.mpz(1)
    for w in range(windows - 1, -1, -1):
        if result != 1:
            result = gmpy2.powmod(result, 1 << c, modulus)
        shift = w * c
        buckets: list[gmpy2.mpz | None] = [None] * (mask + 1)
        for b, e in zip(bases, exps, strict=True):
            d = (e >> shift) & mask
            if d:
                cur = buckets[d]
                buckets[d] = b if cur is None else cur * b % modulus
        running = gmpy2.mpz(1)
        acc = gmpy2.mpz(1)
        for d in range(mask, 0, -1):
            bd = buckets[d]
            if bd is not None:
                running = running * bd % modulus
            if running != 1:
                acc = acc * running % modulus
        result = result * acc % modulus
    return result


def row_multiexps(bases: Sequence[gmpy2.mpz], rows: Sequence[Sequence[int]],
                  modulus: gmpy2.mpz) -> list[gmpy2.mpz]:
    """``prod_j bases[j] ** rows[i][j] mod modulus`` for every row ``i`` (non-negative
    exponents): the same few bases for many short exponent vectors, ``X [[v]]``.

    Per column, each distinct exponent is raised once, and a row then costs one
    product per column. Real columns repeat values (binned, categorical, WOE, counts:
    default_credit's host has 2 to 53 distinct values per column in 1,024 rows), so
    this is most of the saving. The distinct values are raised with a fixed-base
    comb: every exponent is cut into ``h`` windows of ``w`` bits, and each base gets
    a table of ``base^(d 2^(w t))`` for every digit ``d`` and window ``t``, once for
    all rows, so that a power costs one product per window (no squaring); ``w``
    minimises the tables plus the products. A column with so few distinct values
    that its table would cost more is raised directly (``powmod``).
    """
    k = len(bases)
    exps = [[int(e) for e in r] for r in rows]
    if any(len(r) != k for r in exps):
        raise ValueError("every exponent row needs one exponent per base")
    if any(e < 0 for r in exps for e in r):
        raise ValueError("row_multiexps needs non-negative exponents")
    top = max((e.bit_length() for r in exps for e in r), default=0)
    if top == 0 or not exps:
        return [gmpy2.mpz(1)] * len(exps)
    distinct = [sorted({r[j] for r in exps}) for j in range(k)]

    def cost(w: int) -> int:
        h = -(-top // w)
        combed = [len(d) for d in distinct if len(d) * top > h << w]
        return len(combed) * (h << w) + sum(combed) * h

    w = min(range(1, 13), key=cost)
    h = -(-top // w)
    mask = (1 << w) - 1
    powers_of: list[dict[int, gmpy2.mpz]] = []
    for base, values in zip(bases, distinct, strict=True):
        b = gmpy2.mpz(base) % modulus
        if len(values) * top <= h << w:  # a few values: no table
            powers_of.append({e: gmpy2.powmod(b, e, modulus) for e in values})
            continue
        table: list[list[gmpy2.mpz]] = []
        b_t = b
        for _ in range(h):
            powers = [gmpy2.mpz(1), b_t]
            for _ in range(2, mask + 1):
                powers.append(powers[-1] * b_t % modulus)
            table.append(powers)
            b_t = powers[-1] * b_t % modulus  # base^(2^(w (t+1)))
        out_j: dict[int, gmpy2.mpz] = {}
        for e in values:
            acc = None
            window = 0
            while e >> (window * w):
                d = (e >> (window * w)) & mask
                if d:
                    acc = table[window][d] if acc is None else acc * table[window][d] % modulus
                window += 1
            out_j[e] = gmpy2.mpz(1) if acc is None else acc
        powers_of.append(out_j)
    out = []
    for row in exps:
        acc = powers_of[0][row[0]]
        for j in range(1, k):
            acc = acc * powers_of[j][row[j]] % modulus
        out.append(acc)
    return out


def matvec_t(
    x_offset: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    enc: EncryptedVector,
    x_frac_bits: int,
    total: gmpy2.mpz | None = None,
) -> EncryptedVector:
    """``[[X^T d]]`` for a quantised matrix ``X`` given as ``X + offsets >= 0``.

    Parameters
    ----------
    x_offset : ndarray of shape (n_rows, n_cols), int64, non-negative
        ``round(X * 2**x_frac_bits) + offsets`` (computed once per training run).
    offsets : ndarray of shape (n_cols,), int64, non-negative
        The per-column offsets; removed with one exponentiation of ``[[sum d]]``.
    enc : EncryptedVector of length n_rows
    x_frac_bits : int
    total : gmpy2.mpz, optional
        ``[[sum d]]`` if the caller already has it (saves one pass).

    Returns
    -------
    EncryptedVector of length n_cols at scale ``enc.frac_bits + x_frac_bits``.
    """
    if x_offset.shape[0] != len(enc):
        raise CryptoError(f"Matrix has {x_offset.shape[0]} rows but the vector has {len(enc)}.")
    n2 = enc.public_key.nsquare
    cts = enc.ciphertexts
    if total is None and np.any(offsets):
        total = enc.sum().ciphertexts[0]
    total_inv = gmpy2.invert(total, n2) if np.any(offsets) else None
    out = []
    for j in range(x_offset.shape[1]):
        acc = multiexp(cts, x_offset[:, j].tolist(), n2)
        if offsets[j]:
            acc = acc * gmpy2.powmod(total_inv, int(offsets[j]), n2) % n2
        out.append(acc)
    return EncryptedVector(enc.public_key, out, enc.frac_bits + x_frac_bits)


def group_products(n_bytes: bytes, data: bytes, groups: bytes,
                   sizes: tuple[int, ...]) -> bytes:
    """Chunk function: ``[[sum per group]]`` of fixed-width ciphertexts, for several groupings.

    ``data`` holds ``rows`` ciphertexts of the key with modulus ``n_bytes``;
    ``groups`` is an int32 ``rows x len(sizes)`` matrix (row-major) whose
    column ``j`` puts each row in one of ``sizes[j]`` groups. Returns, grouping
    after grouping, the product mod ``n^2`` of each group's ciphertexts (``1``
    for an empty group), fixed width. Products of chunks multiply to the
    products of the whole (:meth:`EncryptedVector.sum_by_group`, bit for bit).
    """
    pk = PaillierPublicKey.from_bytes(n_bytes)
    n2, width = pk.nsquare, pk.ciphertext_bytes
    frm = gmpy2.mpz.from_bytes
    cts = [frm(data[i:i + width], "big") for i in range(0, len(data), width)]
    idx = np.frombuffer(groups, dtype=np.int32).reshape(len(cts), len(sizes))
    out = bytearray()
    for j, nb in enumerate(sizes):
        acc = [gmpy2.mpz(1)] * nb
        for c, g in zip(cts, idx[:, j].tolist(), strict=True):
            acc[g] = acc[g] * c % n2
        out += b"".join(a.to_bytes(width, "big") for a in acc)
    return bytes(out)
