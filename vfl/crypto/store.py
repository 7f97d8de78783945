"""Ciphertexts kept per row on local disk, so a party's memory does not grow with its row count.

The accurate mode's guest keeps, for every training row, the latest
encrypted clipped squares the hosts sent (``protocols/specs/hetero_lr.md``,
"Accurate mode"): 512 bytes a row with 2048-bit keys, 512 MB at a million
rows. :class:`CiphertextStore` keeps them in an anonymous temporary file
(created unlinked, so the operating system removes it when the party closes
it or its process ends, however it ends) and reads back one batch's rows at a
time; only a presence flag per row (1 byte) stays in memory. The file holds
ciphertexts under the arbiter's key, which this party cannot decrypt; it
never leaves the machine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import gmpy2
import numpy as np
import numpy.typing as npt

__all__ = ["CiphertextStore"]


class CiphertextStore:
    """Fixed-width ciphertexts by row number, in an anonymous temporary file.

    Parameters
    ----------
    n_rows : int
        Rows the store can hold.
    width : int
        Bytes per ciphertext (``PaillierPublicKey.ciphertext_bytes``).
    directory : path, optional
        Where to make the file (default: the system's temporary directory).
    """

    def __init__(self, n_rows: int, width: int, directory: str | Path | None = None) -> None:
        if n_rows < 0 or width < 1:
            raise ValueError("CiphertextStore needs n_rows >= 0 and width >= 1")
        self.n_rows, self.width = n_rows, width
        self.present = np.zeros(n_rows, dtype=bool)
        self._file = tempfile.TemporaryFile(dir=directory)
        self._fd = self._file.fileno()

    def put(self, rows: Sequence[int], ciphertexts: Sequence[gmpy2.mpz]) -> None:
        """Store ``ciphertexts[i]`` as row ``rows[i]`` (replacing what it held)."""
        if len(rows) != len(ciphertexts):
            raise ValueError("put needs one ciphertext per row")
        width, fd = self.width, self._fd
        for r, c in zip(rows, ciphertexts, strict=True):
            os.pwrite(fd, c.to_bytes(width, "big"), int(r) * width)
        self.present[np.asarray(rows, dtype=np.int64)] = True

    def get(self, rows: Sequence[int]) -> list[gmpy2.mpz | None]:
        """The ciphertexts of ``rows`` (``None`` for a row never stored)."""
        width, fd, present = self.width, self._fd, self.present
        return [gmpy2.mpz.from_bytes(os.pread(fd, width, int(r) * width), "big")
                if present[r] else None for r in rows]

    def iter_bytes(self, block_rows: int = 4096) -> Iterator[bytes]:
        """Every row's slot, in row order, ``block_rows`` at a time (zeros where never stored):
        what a checkpoint copies (:meth:`load` reads it back)."""
        width, fd = self.width, self._fd
        for start in range(0, self.n_rows, block_rows):
            want = (min(start + block_rows, self.n_rows) - start) * width
            data = os.pread(fd, want, start * width)
            yield data + bytes(want - len(data))  # rows past the end were never written

    def load(self, path: str | Path, present: npt.NDArray[np.bool_]) -> None:
        """Replace the store's contents by :meth:`iter_bytes`'s output saved at ``path``.

        Raises
        ------
        ValueError
            If the file does not hold exactly ``n_rows`` slots, or ``present``
            has another length.
        """
        size = os.stat(path).st_size
        if size != self.n_rows * self.width or present.shape != (self.n_rows,):
            raise ValueError(f"{path} holds {size} bytes; a store of {self.n_rows} rows of "
                             f"{self.width} bytes needs {self.n_rows * self.width}.")
        with open(path, "rb") as src:
            offset = 0
            for block in iter(lambda: src.read(1 << 20), b""):
                os.pwrite(self._fd, block, offset)
                offset += len(block)
        self.present = present.astype(bool).copy()

    def close(self) -> None:
        """Delete the file."""
        self._file.close()

    def __enter__(self) -> CiphertextStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
