"""A party's IDs, streamed from a table and partitioned into bucket files on local disk.

Bucketed PSI (``protocols/specs/psi.md``, "Bucketed PSI") never holds a
whole ID set in memory: IDs arrive in chunks (:class:`IdSource`), each chunk
is hashed — its public order key ``SHA-256("vfl/psi/v1/order\\0" || id)`` and
its curve point ``H(id)`` — and every ID's fixed-width record (order key,
point, row number: 72 bytes) is appended to the file of its bucket, the top
``bits`` bits of its order key. A bucket is then read back alone.

The files live in a private temporary directory (mode ``0700``) that is
removed when the run ends, normally or not (a process killed outright leaves
it: issue 13); they hold unsalted hashes of this party's own IDs, which a
dictionary reverses for low-entropy IDs such as phone numbers, so they are
as sensitive as the ID column itself. They never leave the machine. Put them
on a disk (``workdir``), not on a memory-backed ``/tmp``, for large sets.

Memory: one chunk of raw IDs (``batch_rows``, 65,536 by default) and its
hashes at a time while spilling; one bucket's records while reading back.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from vfl.exceptions import DataError
from vfl.psi.ecdh import POINT_BYTES, Blinder

__all__ = ["IdSource", "SpilledSet", "RECORD", "bucket_of"]

#: one ID's record in a bucket file
RECORD = np.dtype([("key", "u1", (32,)), ("point", "u1", (POINT_BYTES,)), ("row", "<i8")])
#: rows of raw input read at once
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class IdSource:
    """A party's IDs as a row count and a re-startable stream of chunks (in row order).

    Use :meth:`from_sequence` for IDs already in memory and :meth:`from_file`
    for a CSV or Parquet table read column-wise in chunks.
    """

    count: int
    chunks: Callable[[], Iterator[Sequence[str]]]
    name: str = "<memory>"

    @classmethod
    def from_sequence(cls, ids: Sequence[str], name: str = "<memory>",
                      batch_rows: int = BATCH_ROWS) -> IdSource:
        """IDs held by the caller (already normalised)."""
        def chunks() -> Iterator[Sequence[str]]:
            for a in range(0, len(ids), batch_rows):
                yield ids[a:a + batch_rows]
        return cls(len(ids), chunks, name)

    @classmethod
    def from_file(cls, path: str | Path, column: str, *, strip: bool = True, lower: bool = False,
                  batch_rows: int = BATCH_ROWS) -> IdSource:
        """The ID column of a CSV or Parquet file, normalised, read ``batch_rows`` rows at a time."""
        from vfl.tableio import count_rows, iter_column

        def chunks() -> Iterator[Sequence[str]]:
            return iter_column(path, column, batch_rows=batch_rows, strip=strip, lower=lower)
        return cls(count_rows(path), chunks, str(path))

    def to_list(self) -> list[str]:
        """All IDs in memory (the single-message protocol, for sets up to one bucket)."""
        out: list[str] = []
        for chunk in self.chunks():
            out.extend(chunk)
        if len(out) != self.count:
            raise DataError(f"{self.name}: read {len(out):,} IDs; expected {self.count:,}.")
        return out


def bucket_of(keys: npt.NDArray[np.uint8], bits: int) -> npt.NDArray[np.int64]:
    """The bucket of each order key (rows of 32 bytes): its top ``bits`` bits (``bits <= 16``)."""
    top = (keys[:, 0].astype(np.int64) << 8) | keys[:, 1].astype(np.int64)
    return top >> (16 - bits)


def _where(rows: npt.NDArray[np.int64], name: str) -> str:
    """Rows as a file's lines (CSV, header first) or rows (Parquet, IDs in memory)."""
    from vfl.tableio import row_location

    fmt: Literal["csv", "parquet"] | None = None  # IDs in memory: lines, as vfl.data says
    if name.lower().endswith((".parquet", ".pq")):
        fmt = "parquet"
    elif name.lower().endswith((".csv", ".csv.gz")):
        fmt = "csv"
    return row_location(np.sort(rows), fmt)


class SpilledSet:
    """This party's IDs, hashed and partitioned into ``2**bits`` bucket files.

    Parameters
    ----------
    source : IdSource
    bits : int
        Bucket bits (0-16); bucket ``b`` holds the IDs whose order key starts with ``b``.
    pool : Blinder
        Hashes the chunks (in this party's worker processes).
    cap : int
        The most IDs a bucket may hold (the padded size both parties agreed on).
    workdir : path, optional
        Where to make the private temporary directory (default: the system's).
    progress : callable, optional
        ``progress(rows_done, rows_total)`` after every chunk.

    Raises
    ------
    DataError
        If the source yields another number of IDs than it announced, an ID
        repeats (named by line numbers, never by value), or a bucket holds
        more than ``cap`` IDs.
    """

    def __init__(self, source: IdSource, bits: int, pool: Blinder, *, cap: int,
                 workdir: str | Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        if not 0 <= bits <= 16:
            raise ValueError("bucket bits must be in [0, 16]")
        self.bits, self.buckets, self.cap, self.name = bits, 1 << bits, cap, source.name
        self._dir = Path(tempfile.mkdtemp(prefix="vfl-psi-", dir=workdir))
        self.counts = np.zeros(self.buckets, dtype=np.int64)
        try:
            self._spill(source, pool, progress)
            self._check()
        except BaseException:
            self.close()
            raise

    def _path(self, bucket: int) -> Path:
        return self._dir / f"{bucket:05d}.bin"

    def _spill(self, source: IdSource, pool: Blinder,
               progress: Callable[[int, int], None] | None) -> None:
        start = 0
        for chunk in source.chunks():
            n = len(chunk)
            if start + n > source.count:
                break
            keys, points = pool.hash_ids(chunk)
            rec = np.empty(n, dtype=RECORD)
            rec["key"] = np.frombuffer(keys, dtype=np.uint8).reshape(n, 32)
            rec["point"] = np.frombuffer(points, dtype=np.uint8).reshape(n, POINT_BYTES)
            rec["row"] = np.arange(start, start + n, dtype=np.int64)
            buckets = bucket_of(rec["key"], self.bits)
            order = np.argsort(buckets, kind="stable")
            counts = np.bincount(buckets, minlength=self.buckets)
            rec = rec[order]
            edges = np.concatenate([[0], np.cumsum(counts)])
            for b in np.flatnonzero(counts):
                with open(self._path(int(b)), "ab") as f:
                    f.write(rec[edges[b]:edges[b + 1]].tobytes())
            self.counts += counts
            start += n
            if progress is not None:
                progress(start, source.count)
        if start != source.count:
            raise DataError(f"{source.name}: the ID column yielded {start:,} rows or more; the "
                            f"table announced {source.count:,} (was the file changed while "
                            "it was read?).")

    def _check(self) -> None:
        for b in range(self.buckets):
            rec = self.load(b)
            keys = np.ascontiguousarray(rec["key"]).view(np.dtype((np.void, 32))).ravel()
            order = np.argsort(keys, kind="stable")
            same = keys[order][1:] == keys[order][:-1]
            if same.any():
                dup = np.zeros(len(rec), dtype=bool)
                dup[order[1:][same]] = True
                dup[order[:-1][same]] = True
                raise DataError(f"{self.name}: the ID column has duplicate IDs "
                                f"({_where(rec['row'][dup], self.name)}); each customer must "
                                "appear once.")
        over = np.flatnonzero(self.counts > self.cap)
        if over.size:
            raise DataError(
                f"{self.name}: bucket {int(over[0])} holds {int(self.counts[over[0]]):,} IDs, above "
                f"the padded bucket size {self.cap:,}. The bound is chosen so that this happens "
                "with probability below 1e-12 for distinct IDs; check the ID column.")

    def load(self, bucket: int) -> npt.NDArray[np.void]:
        """The records of ``bucket`` (fields ``key``, ``point``, ``row``)."""
        path = self._path(bucket)
        if not path.exists():
            return np.empty(0, dtype=RECORD)
        return np.fromfile(path, dtype=RECORD)

    def close(self) -> None:
        """Remove the bucket files."""
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SpilledSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
