"""Intel's multi-buffer crypto library (``crypto_mb``) on AVX-512 IFMA: eight operations
per call, through ``ctypes`` (no compiler).

Optional: ``pip install "vfl[fast]"`` installs Intel's ``ipp-crypto`` wheel (which
ships ``libcrypto_mb``) and the Intel compiler runtime it needs
(``intel-cmplr-lib-rt``; Intel's licence). :func:`backend` loads it once per
process, where the CPU has IFMA (``mbx_is_crypto_mb_applicable``) and a
known-answer check passes; otherwise it returns None and vfl keeps its
libsodium / gmpy2 path, with the same results. ``VFL_CRYPTO_BACKEND``:
``auto`` (the default), ``crypto_mb`` (required: an error if it cannot load),
or ``portable`` (never load it).

Operations:

* :meth:`CryptoMB.x25519`: one scalar times many X25519 points (PSI's blinding),
  bit for bit libsodium's ``crypto_scalarmult``; a point libsodium refuses
  (its small-order list, or an all-zero result) is reported by index.
* :meth:`CryptoMB.powmod`: many bases to one exponent modulo one odd modulus of
  1,024 to 4,096 bits (the CRT halves of Paillier decryption at the arbiter,
  :meth:`vfl.crypto.paillier.PaillierPrivateKey.raw_decrypt_many`).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from vfl.exceptions import ConfigError

__all__ = ["CryptoMB", "backend", "backend_name", "BACKEND_ENV", "SmallOrderPoint"]

#: The environment variable that chooses the backend (``auto``, ``crypto_mb``, ``portable``).
BACKEND_ENV = "VFL_CRYPTO_BACKEND"
_LANES = 8
_P8 = ctypes.c_void_p * _LANES

# RFC 7748, section 5.2, the first X25519 test vector
_KAT_SCALAR = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
_KAT_POINT = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
_KAT_OUT = bytes.fromhex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")


#: libsodium's refused inputs (``has_small_order``, top bit ignored): 0, 1, the two points
#: of order 8, and p - 1, p, p + 1. Refused here too, so both backends refuse alike.
_P = 2**255 - 19
_BLOCKED = [v.to_bytes(32, "little") for v in (
    0, 1, 325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    _P - 1, _P, _P + 1)]


def _first_blocked(points: bytes) -> int | None:
    """The index of the first point libsodium refuses as small order (None: none)."""
    first: int | None = None
    for entry in _BLOCKED:
        prefix, last = entry[:31], entry[31]
        at = points.find(prefix)
        while at != -1:
            if at % 32 == 0 and points[at + 31] & 0x7F == last:
                i = at // 32
                first = i if first is None else min(first, i)
                break
            at = points.find(prefix, at + 1)
    return first


class SmallOrderPoint(ValueError):
    """A point whose product is all zeros (small order); ``index`` in the batch."""

    def __init__(self, index: int) -> None:
        super().__init__(f"point {index} is of small order")
        self.index = index


def _library_dirs() -> list[Path]:
    """Where the wheels put their shared libraries: ``<prefix>/lib`` (and the user base)."""
    dirs = [Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"]
    import site

    user = getattr(site, "USER_BASE", None)
    if user:
        dirs.append(Path(user) / "lib")
    extra = os.environ.get("VFL_CRYPTO_MB_LIB")
    if extra:
        dirs.insert(0, Path(extra))
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


class CryptoMB:
    """The loaded library and its checked entry points (see the module's docstring)."""

    def __init__(self, lib: ctypes.CDLL, version: str) -> None:
        self._lib = lib
        self.version = version
        lib.mbx_x25519_mb8.restype = ctypes.c_uint64
        lib.mbx_x25519_mb8.argtypes = [_P8, _P8, _P8]
        lib.mbx_exp_BufferSize.restype = ctypes.c_int
        lib.mbx_exp_BufferSize.argtypes = [ctypes.c_int]
        lib.mbx_exp_mb8.restype = ctypes.c_uint64
        lib.mbx_exp_mb8.argtypes = [_P8, _P8, _P8, ctypes.c_int, _P8, ctypes.c_int,
                                    ctypes.c_void_p, ctypes.c_int]


    @classmethod
    def load(cls) -> CryptoMB:
        """Load the runtime and ``libcrypto_mb``, check the CPU and a known answer.

        Raises
        ------
        OSError
            If the libraries are not installed or do not load.
        RuntimeError
            If the CPU lacks the instructions, or the known answer differs.
        """
        errors = []
        for d in _library_dirs():
            crypto_mb = sorted(d.glob("libcrypto_mb.so*"))
            if not crypto_mb:
                continue
            try:
                for name in ("libintlc.so.5", "libimf.so", "libsvml.so", "libirng.so"):
                    if (d / name).exists():
                        ctypes.CDLL(str(d / name), mode=ctypes.RTLD_GLOBAL)
                lib = ctypes.CDLL(str(crypto_mb[0]))
            except OSError as exc:
                errors.append(f"{d}: {exc}")
                continue
            lib.mbx_is_crypto_mb_applicable.restype = ctypes.c_int
            lib.mbx_is_crypto_mb_applicable.argtypes = [ctypes.c_uint64]
            if not lib.mbx_is_crypto_mb_applicable(0):
                raise RuntimeError("this CPU lacks AVX-512 IFMA (mbx_is_crypto_mb_applicable)")
            mb = cls(lib, crypto_mb[0].name)
            if mb.x25519(_KAT_SCALAR, _KAT_POINT) != _KAT_OUT:
                raise RuntimeError("crypto_mb's X25519 differs from RFC 7748's test vector")
            m = (1 << 2047) + 1155  # odd, 2048 bits
            if mb.powmod([3, m - 2, 0, 1, m + 5], 65537 ** 3, m) != [
                    pow(b, 65537 ** 3, m) for b in (3, m - 2, 0, 1, m + 5)]:
                raise RuntimeError("crypto_mb's modular exponentiation differs from Python's")
            return mb
        raise OSError("libcrypto_mb is not installed (pip install \"vfl[fast]\")"
                      + (f"; {'; '.join(errors)}" if errors else ""))

    def x25519(self, scalar: bytes, points: bytes) -> bytes:
        """``X25519(scalar, p)`` for every 32-byte point of ``points``, concatenated.

        Raises
        ------
        SmallOrderPoint
            For the first point whose product is all zeros.
        """
        if len(scalar) != 32 or len(points) % 32:
            raise ValueError("x25519 takes a 32-byte scalar and 32-byte points")
        n = len(points) // 32
        if n == 0:
            return b""
        blocked = _first_blocked(points)
        if blocked is not None:
            raise SmallOrderPoint(blocked)
        pad = (-n) % _LANES
        src = ctypes.create_string_buffer(points + points[:32] * pad, (n + pad) * 32)
        out = ctypes.create_string_buffer((n + pad) * 32)
        key = ctypes.create_string_buffer(scalar, 32)
        keys = _P8(*([ctypes.addressof(key)] * _LANES))
        base_in, base_out = ctypes.addressof(src), ctypes.addressof(out)
        fn = self._lib.mbx_x25519_mb8
        for g in range(0, n + pad, _LANES):
            at = g * 32
            # a lane's status says little more than its result: a small-order point gives
            # all zeros, found below, as libsodium refuses it
            fn(_P8(*[base_out + at + 32 * i for i in range(_LANES)]), keys,
               _P8(*[base_in + at + 32 * i for i in range(_LANES)]))
        result = out.raw[:n * 32]
        zero = bytes(32)
        if zero in result:
            for i in range(n):
                if result[32 * i:32 * i + 32] == zero:
                    raise SmallOrderPoint(i)
        return result


    def powmod(self, bases: list[int], exponent: int, modulus: int) -> list[int]:
        """``b ** exponent % modulus`` for every base, eight per call (one odd modulus of
        1,024 to 4,096 bits and one exponent for all: the CRT halves of a decryption).

        Bases are reduced modulo ``modulus`` first; exponent 0 gives 1.
        """
        if (modulus % 2 == 0 or not 1024 <= modulus.bit_length() <= 4096 or exponent < 0
                or exponent.bit_length() > modulus.bit_length()):
            raise ValueError("powmod takes an odd modulus of 1024 to 4096 bits and an "
                             "exponent in [0, modulus)")
        if not bases:
            return []
        if exponent == 0:
            return [1 % modulus] * len(bases)
        bits = modulus.bit_length()
        words = (bits + 63) // 64
        size = words * 8
        n = len(bases)
        pad = (-n) % _LANES
        data = b"".join((int(b) % modulus).to_bytes(size, "little") for b in bases)
        src = ctypes.create_string_buffer(data + data[:size] * pad, (n + pad) * size)
        out = ctypes.create_string_buffer((n + pad) * size)
        exp = ctypes.create_string_buffer(int(exponent).to_bytes(size, "little"), size)
        mod = ctypes.create_string_buffer(int(modulus).to_bytes(size, "little"), size)
        # the library's scratch space, one per call (about 100 kB: no state shared between
        # threads)
        scratch = ctypes.create_string_buffer(self._lib.mbx_exp_BufferSize(bits))
        exps = _P8(*([ctypes.addressof(exp)] * _LANES))
        mods = _P8(*([ctypes.addressof(mod)] * _LANES))
        base_in, base_out = ctypes.addressof(src), ctypes.addressof(out)
        fn, ebits = self._lib.mbx_exp_mb8, exponent.bit_length()
        for g in range(0, n + pad, _LANES):
            at = g * size
            status = fn(_P8(*[base_out + at + size * i for i in range(_LANES)]),
                        _P8(*[base_in + at + size * i for i in range(_LANES)]), exps, ebits,
                        mods, bits, ctypes.addressof(scratch), len(scratch))
            if status:
                raise RuntimeError(f"mbx_exp_mb8 failed (status {status:#x})")
        raw = out.raw
        return [int.from_bytes(raw[size * i:size * (i + 1)], "little") for i in range(n)]


_STATE: dict[str, CryptoMB | None] = {}


def backend() -> CryptoMB | None:
    """The loaded :class:`CryptoMB`, or None where it cannot run (see the module).

    Loaded once per process (two threads that ask first may both load it: the same
    library, the same answer)."""
    if "mb" in _STATE:
        return _STATE["mb"]
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "crypto_mb", "portable"):
        raise ConfigError(f"{BACKEND_ENV} must be auto, crypto_mb or portable; got {choice!r}")
    mb: CryptoMB | None = None
    if choice != "portable":
        try:
            mb = CryptoMB.load()
        except (OSError, RuntimeError, AttributeError) as exc:
            if choice == "crypto_mb":
                raise ConfigError(f"{BACKEND_ENV}=crypto_mb, but it cannot run here: {exc}"
                                  ) from None
            mb = None
    _STATE["mb"] = mb
    return mb

def backend_name() -> str:
    """``crypto_mb <version>`` or ``portable (libsodium, gmpy2)``: what this process uses."""
    mb = backend()
    return f"crypto_mb ({mb.version})" if mb is not None else "portable (libsodium, gmpy2)"
