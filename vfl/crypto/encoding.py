"""Signed fixed-point encoding of real numbers into integers and Z_n.

A real ``x`` is represented by the integer ``round(x * 2**frac_bits)``. The
protocol fixes ``frac_bits`` per quantity for a whole session (one shared
scale per vector; no per-number exponents, unlike ``phe``), so products of
encodings have known scales: an encoding at ``2**a`` times one at ``2**b`` is
an encoding at ``2**(a + b)``.

Signed integers map into Z_n as ``v mod n``; decoding maps residues above
``n // 2`` back to negatives. Values with ``|v| > n // 3`` are refused, as phe
does, so a sum of a few in-range values cannot wrap silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2
import numpy as np
import numpy.typing as npt

from vfl.exceptions import EncodingOverflowError

__all__ = ["quantize", "dequantize", "to_residues", "from_residues"]

_INT64_SAFE = 2.0**62


def quantize(values: npt.ArrayLike, frac_bits: int) -> npt.NDArray[np.int64]:
    """Round ``values * 2**frac_bits`` to int64, refusing overflow.

    Raises
    ------
    EncodingOverflowError
        If a value is not finite or does not fit in 62 bits after scaling.
    """
    arr = np.asarray(values, dtype=np.float64) * (2.0**frac_bits)
    if not np.all(np.isfinite(arr)):
        raise EncodingOverflowError("Cannot encode a non-finite value.")
    if arr.size and float(np.max(np.abs(arr))) >= _INT64_SAFE:
        raise EncodingOverflowError(
            f"A value does not fit the fixed-point range with {frac_bits} fractional bits; "
            "standardise the features (zero mean, unit variance) before training."
        )
    return np.rint(arr).astype(np.int64)


def dequantize(values: npt.ArrayLike, frac_bits: int) -> npt.NDArray[np.float64]:
    """Inverse of :func:`quantize` (to float64)."""
    return np.asarray(values, dtype=np.float64) / (2.0**frac_bits)


def to_residues(values: Sequence[int] | npt.NDArray[np.int64], n: gmpy2.mpz) -> list[gmpy2.mpz]:
    """Map signed integers into Z_n, refusing ``|v| > n // 3``."""
    limit = n // 3
    out = []
    for v in values:
        m = gmpy2.mpz(int(v))
        if abs(m) > limit:
            raise EncodingOverflowError("A value exceeds the encoding range n/3 of the key.")
        out.append(m % n)
    return out


def from_residues(residues: Sequence[gmpy2.mpz], n: gmpy2.mpz) -> list[int]:
    """Map residues of Z_n back to signed integers, refusing the overflow band."""
    half = n // 2
    limit = n // 3
    out = []
    for r in residues:
        v = r - n if r > half else r
        if abs(v) > limit:
            raise EncodingOverflowError(
                "A decrypted value lies in the overflow band of the encoding; the computation "
                "overflowed (use a larger key or fewer fractional bits)."
            )
        out.append(int(v))
    return out
