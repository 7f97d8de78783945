"""Table files: CSV or Parquet, read whole or in chunks, written atomically.

One module knows the file formats; everything else asks it. The format is
told by the file name's suffix (:data:`SUFFIXES`, case-insensitive):
``.csv`` and ``.csv.gz`` (gzip, decompressed on the fly by pyarrow and
pandas) are CSV with a header line; ``.parquet`` and ``.pq`` are Parquet.
Any other suffix is a :class:`~vfl.exceptions.DataError`.

Both formats give the same values: a CSV is read with pandas' rules
(:func:`read_frame`, :func:`iter_batches`; the chunked ID reader
:func:`iter_column` applies the same missing-value words,
:data:`CSV_NA_VALUES`), IDs are text, and a Parquet ID column of integers is
read as their decimal text (a floating-point ID column is refused: it cannot
hold every ID exactly). Pandas' index columns in a Parquet file
(``__index_level_0__``, ...) are not data and are left out.

Memory bound (rows of raw input held at once)
---------------------------------------------
* :func:`iter_column`: CSV: blocks of :data:`CSV_BLOCK_BYTES` (1 MiB) of raw
  bytes; one is parsed at a time (one thread), while pyarrow's reader
  thread keeps up to :data:`CSV_READAHEAD_BLOCKS` (32) more queued, so at
  most about 33 MiB of raw CSV are in memory whatever the file's size; plus
  the parsed ID column of one block and a carry of fewer than ``batch_rows``
  IDs. Parquet: at most ``batch_rows`` rows of the one column (column chunks
  are read through a 1 MiB buffer, not whole). Each chunk yielded holds at
  most ``batch_rows`` IDs.
* :func:`iter_batches`: at most ``batch_rows`` rows of the requested columns
  (CSV: pandas' chunked reader, which tokenises ``batch_rows`` rows at a time;
  Parquet: as above).
* :func:`count_rows`: CSV: as :func:`iter_column` (the first column); Parquet: the footer.
* :func:`column_names`: the header line or the Parquet footer.
* :func:`read_frame` and :func:`write_frame`: the whole table (they serve
  :func:`vfl.data.load_table`, which needs every row); a Parquet file is
  written one row group (:data:`PARQUET_ROW_GROUP_ROWS` rows) at a time.

Errors name the file, the column and line numbers (CSV: 1-based lines of the
file, the header being line 1; Parquet: 1-based rows), never an ID or a value:
they are personal data.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from vfl.exceptions import DataError

__all__ = ["SUFFIXES", "CSV_NA_VALUES", "CSV_BLOCK_BYTES", "CSV_READAHEAD_BLOCKS",
           "PARQUET_ROW_GROUP_ROWS", "TableFormat", "table_format", "column_names",
           "count_rows", "iter_column", "iter_batches", "read_frame", "write_frame",
           "normalize_ids", "row_location"]

TableFormat = Literal["csv", "parquet"]

#: accepted file name endings and their format
SUFFIXES: dict[str, TableFormat] = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet",
                                    ".pq": "parquet"}

#: the words pandas reads as a missing value in a CSV (``pandas.read_csv``'s defaults);
#: :func:`iter_column` treats them the same way, so both readers see the same IDs
CSV_NA_VALUES: tuple[str, ...] = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
    "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")

#: bytes of raw CSV parsed at once by :func:`iter_column` and :func:`count_rows` (a row
#: longer than this is refused)
CSV_BLOCK_BYTES = 1 << 20

#: blocks pyarrow's CSV reader reads ahead in its I/O thread (fixed inside Arrow; stated
#: here for the memory bound)
CSV_READAHEAD_BLOCKS = 32

#: rows per Parquet row group written by :func:`write_frame`
PARQUET_ROW_GROUP_ROWS = 131_072

#: read buffer of a Parquet column chunk (so a chunk is not read into memory whole)
_PARQUET_BUFFER = 1 << 20
_INDEX_COLUMN = re.compile(r"__index_level_\d+__")
_MAX_SHOWN = 5


# ------------------------------------------------------------------ names and formats
def table_format(path: str | Path) -> TableFormat:
    """The format of ``path`` by its suffix: ``"csv"`` or ``"parquet"``.

    Raises
    ------
    DataError
        If the suffix is none of :data:`SUFFIXES`, naming the file and them.
    """
    name = Path(path).name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return SUFFIXES[suffix]
    raise DataError(f"{path}: unknown table format; name the file with one of "
                    f"{', '.join(SUFFIXES)} (CSV with a header line, or Parquet).")


def normalize_ids(ids: pd.Series, *, strip: bool = True, lower: bool = False) -> pd.Series:
    """Apply the ID normalisation the user asked for (both parties must agree).

    Text (``str``), then without leading/trailing white space (``strip``),
    then lower case (``lower``). :func:`vfl.data.load_table` and
    :func:`iter_column` both apply exactly this.
    """
    out = ids.astype(str)
    if strip:
        out = out.str.strip()
    if lower:
        out = out.str.lower()
    return out


def row_location(rows: Sequence[int] | np.ndarray, fmt: TableFormat | None, *,
                 more: int = 0) -> str:
    """Where rows are, for an error message: ``line(s) 2, 4`` or ``row(s) 1, 3``.

    ``rows`` are 0-based data rows (at most five are shown; ``more`` counts
    others). CSV (and ``fmt=None``, a table in memory) gives file lines, the
    header being line 1; Parquet gives 1-based rows.
    """
    shown = [int(r) for r in rows[:_MAX_SHOWN]]
    more += len(rows) - len(shown)
    first = 1 if fmt == "parquet" else 2
    text = ", ".join(str(r + first) for r in shown)
    word = "row(s)" if fmt == "parquet" else "line(s)"
    return f"{word} {text}" + (f" and {more} more" if more > 0 else "")


def _check_file(path: str | Path) -> tuple[Path, TableFormat]:
    p = Path(path)
    fmt = table_format(p)
    if not p.is_file():
        raise DataError(f"File not found: {p}")
    return p, fmt


def _parquet_columns(schema: pa.Schema) -> list[str]:
    return [str(n) for n in schema.names if not _INDEX_COLUMN.fullmatch(str(n))]


def _parquet_file(p: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(p, buffer_size=_PARQUET_BUFFER)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"Cannot read {p} as Parquet: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _safe_csv_message(exc: BaseException) -> str:
    """pyarrow's CSV error without the row text it may quote (personal data)."""
    msg = _first_line(exc)
    msg = re.sub(r"(Expected \d+ columns?, got \d+).*", r"\1", msg)
    return re.sub(r"(invalid value) .*", r"\1", msg)


def column_names(path: str | Path) -> list[str]:
    """The table's column names, without reading its rows (CSV header; Parquet footer).

    Raises
    ------
    DataError
        If the file is missing, of an unknown format or unreadable.
    """
    p, fmt = _check_file(path)
    if fmt == "parquet":
        return _parquet_columns(_parquet_file(p).schema_arrow)
    try:
        return [str(c) for c in pd.read_csv(p, nrows=0).columns]
    except Exception as exc:  # noqa: BLE001 - pandas raises many types
        raise DataError(f"Cannot read {p} as CSV: {_first_line(exc)}") from None


def _require(p: Path, names: list[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"{p}: column(s) {', '.join(map(repr, missing))} not found; columns "
                        f"are: {', '.join(names[:20])}" + (", ..." if len(names) > 20 else ""))


# ------------------------------------------------------------------ streamed reading
class _RowShape:
    """Records the first malformed CSV row pyarrow reports (its size, never its text)."""

    def __init__(self) -> None:
        self.expected = 0
        self.actual = 0

    def __call__(self, row: Any) -> str:
        if not self.expected:
            self.expected, self.actual = int(row.expected_columns), int(row.actual_columns)
        return "error"


def _csv_arrays(p: Path, column: str) -> Iterator[pa.Array]:
    """The ``column`` of a CSV as text (None = missing), one block at a time."""
    shape = _RowShape()
    done = 0
    try:
        reader = pacsv.open_csv(
            str(p),
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True,
                                             invalid_row_handler=shape),
            convert_options=pacsv.ConvertOptions(
                include_columns=[column], column_types={column: pa.string()},
                strings_can_be_null=True, null_values=list(CSV_NA_VALUES)))
        for batch in reader:
            done += batch.num_rows
            yield batch.column(0)
    except (pa.ArrowException, OSError) as exc:
        if shape.expected:
            raise DataError(
                f"{p}: a row after line {done + 1} has {shape.actual} field(s) where the header "
                f"has {shape.expected}; every row needs one value per column (empty for "
                "missing).") from None
        if "straddl" in str(exc):
            raise DataError(
                f"{p}: a row after line {done + 1} is longer than {CSV_BLOCK_BYTES >> 20} MiB, "
                "the most the chunked reader takes (or a quote is not closed).") from None
        raise DataError(f"Cannot read {p} as CSV (after line {done + 1}): "
                        f"{_safe_csv_message(exc)}") from None


def _id_text(array: pa.Array | pa.ChunkedArray, p: Path, column: str) -> pa.Array:
    """An ID column as text: strings as they are, integers as decimal text."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    typ = array.type
    if pa.types.is_dictionary(typ):
        array = array.dictionary_decode()
        typ = array.type
    if pa.types.is_string(typ):
        return array
    if pa.types.is_floating(typ):
        raise DataError(f"{p}: ID column {column!r} is floating point ({typ}); it cannot hold "
                        "every ID exactly. Write the IDs as text or integers.")
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowException, ValueError, TypeError):
        raise DataError(f"{p}: ID column {column!r} (type {typ}) cannot be read as text; "
                        "write the IDs as text or integers.") from None


def _parquet_batches(p: Path, pf: pq.ParquetFile, columns: Sequence[str], batch_rows: int
                     ) -> Iterator[pa.RecordBatch]:
    try:
        yield from pf.iter_batches(batch_size=batch_rows, columns=list(columns),
                                   use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"Cannot read {p} as Parquet: {_first_line(exc)}") from None


def _rechunk(arrays: Iterator[pa.Array], batch_rows: int) -> Iterator[pa.Array]:
    """The same values in arrays of ``batch_rows`` (the last one shorter)."""
    pending: list[pa.Array] = []
    n = 0
    for arr in arrays:
        offset = 0
        while offset < len(arr):
            take = min(batch_rows - n, len(arr) - offset)
            pending.append(arr.slice(offset, take))
            n += take
            offset += take
            if n == batch_rows:
                yield pa.concat_arrays(pending)
                pending, n = [], 0
    if n:
        yield pa.concat_arrays(pending)


def _check_batch_rows(batch_rows: int) -> None:
    if int(batch_rows) < 1:
        raise ValueError(f"batch_rows must be a positive number of rows; got {batch_rows}.")


def iter_column(path: str | Path, column: str, *, batch_rows: int = 65_536,
                strip: bool = True, lower: bool = False) -> Iterator[list[str]]:
    """The ID ``column`` as normalised text, in chunks of at most ``batch_rows`` rows.

    Normalised as :func:`normalize_ids` does (``strip``, ``lower``), in the
    file's row order; the chunks concatenated are the IDs
    :func:`vfl.data.load_table` reads. Only one chunk of raw input is held at
    a time (see the module docstring). Duplicates are not checked here.

    Raises
    ------
    DataError
        Naming the file (and column, line numbers) when the file is missing,
        unreadable or of an unknown format, the column is absent, or IDs are
        missing or empty (every one of the chunk where the first is found
        is listed, at most five shown); never an ID.
    ValueError
        If ``batch_rows`` is below 1.
    """
    _check_batch_rows(batch_rows)
    p, fmt = _check_file(path)
    if fmt == "csv":
        _require(p, column_names(p), [column])
        arrays: Iterator[pa.Array] = _csv_arrays(p, column)
    else:
        pf = _parquet_file(p)
        _require(p, _parquet_columns(pf.schema_arrow), [column])
        arrays = (_id_text(b.column(0), p, column)
                  for b in _parquet_batches(p, pf, [column], batch_rows))
    return _id_chunks(arrays, p, fmt, column, batch_rows, strip=strip, lower=lower)


def _id_chunks(arrays: Iterator[pa.Array], p: Path, fmt: TableFormat, column: str,
               batch_rows: int, *, strip: bool, lower: bool) -> Iterator[list[str]]:
    start = 0
    for chunk in _rechunk(arrays, batch_rows):
        values = chunk.to_pylist()
        bad = [i for i, v in enumerate(values) if v is None or not v.strip()]
        if bad:
            raise DataError(f"{p}: column {column!r} has missing or empty IDs on "
                            f"{row_location([start + i for i in bad], fmt)}.")
        start += len(values)
        yield normalize_ids(pd.Series(values, dtype=object), strip=strip,
                            lower=lower).tolist()


def iter_batches(path: str | Path, columns: Sequence[str], *, batch_rows: int = 65_536,
                 id_column: str | None = None) -> Iterator[pd.DataFrame]:
    """``columns`` of the table, in DataFrames of at most ``batch_rows`` rows.

    Each frame has the values and types :func:`read_frame` gives for these
    columns (a CSV is parsed by pandas with its default rules, chunk by
    chunk, so a column's type may differ between chunks, e.g. integers in one
    and floats where another has a gap; Parquet columns keep their stored
    types). ``id_column`` (one of ``columns``) is read as text, as
    :func:`read_frame` reads it. The frames' index counts rows from 0
    across the file.

    Raises
    ------
    DataError
        If the file is missing, unreadable, of an unknown format, or lacks a column.
    ValueError
        If ``batch_rows`` is below 1.
    """
    _check_batch_rows(batch_rows)
    p, fmt = _check_file(path)
    cols = list(columns)
    if id_column is not None and id_column not in cols:
        raise ValueError(f"id_column {id_column!r} must be one of the columns asked for.")
    if fmt == "parquet":
        pf = _parquet_file(p)
        _require(p, _parquet_columns(pf.schema_arrow), cols)
        return _parquet_frames(p, pf, cols, batch_rows, id_column)
    _require(p, column_names(p), cols)
    return _csv_frames(p, cols, batch_rows, id_column)


def _parquet_frames(p: Path, pf: pq.ParquetFile, cols: list[str], batch_rows: int,
                    id_column: str | None) -> Iterator[pd.DataFrame]:
    start = 0
    for batch in _parquet_batches(p, pf, cols, batch_rows):
        frame = _to_pandas(_with_id_text(pa.Table.from_batches([batch]), p, id_column))
        frame.index = pd.RangeIndex(start, start + len(frame))
        start += len(frame)
        yield frame


def _csv_frames(p: Path, cols: list[str], batch_rows: int,
                id_column: str | None) -> Iterator[pd.DataFrame]:
    try:
        reader = pd.read_csv(p, usecols=cols, dtype={id_column: str} if id_column else None,
                             keep_default_na=True, chunksize=batch_rows)
        with reader:
            for frame in reader:
                yield frame[cols]
    except Exception as exc:  # noqa: BLE001 - pandas raises many types
        raise DataError(f"Cannot read {p} as CSV: {_first_line(exc)}") from None


def count_rows(path: str | Path) -> int:
    """The number of data rows, streaming (CSV: block by block; Parquet: its footer).

    Raises
    ------
    DataError
        If the file is missing, unreadable or of an unknown format.
    """
    p, fmt = _check_file(path)
    if fmt == "parquet":
        return int(_parquet_file(p).metadata.num_rows)
    names = column_names(p)
    if not names:
        return 0
    return sum(len(a) for a in _csv_arrays(p, names[0]))


# ------------------------------------------------------------------ whole tables
def _with_id_text(table: pa.Table, p: Path, id_column: str | None) -> pa.Table:
    names = [str(n) for n in table.column_names]
    keep = [n for n in names if not _INDEX_COLUMN.fullmatch(n)]
    if keep != names:
        table = table.select(keep)
    if id_column is not None and id_column in keep:
        i = keep.index(id_column)
        table = table.set_column(i, id_column, _id_text(table.column(i), p, id_column))
    return table


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    frame: pd.DataFrame = table.to_pandas(ignore_metadata=True, split_blocks=True,
                                          self_destruct=True)
    return frame


def read_frame(path: str | Path, *, id_column: str | None = None) -> pd.DataFrame:
    """The whole table as a DataFrame; ``id_column`` (if present) as text.

    CSV: ``pandas.read_csv`` with its default rules (missing-value words,
    number parsing). Parquet: the stored types; integer IDs become their
    decimal text, a floating-point ID column is refused. An absent
    ``id_column`` is not an error here (the caller names it).

    Raises
    ------
    DataError
        If the file is missing, of an unknown format, or cannot be read as
        that format (naming the file).
    """
    p, fmt = _check_file(path)
    if fmt == "csv":
        try:
            frame: pd.DataFrame = pd.read_csv(p, dtype={id_column: str} if id_column else None,
                                              keep_default_na=True)
        except Exception as exc:  # noqa: BLE001 - pandas raises many types
            raise DataError(f"Cannot read {p} as CSV: {_first_line(exc)}") from None
        return frame
    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"Cannot read {p} as Parquet: {_first_line(exc)}") from None
    return _to_pandas(_with_id_text(table, p, id_column))


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_parquet(df: pd.DataFrame, tmp: str, path: Path) -> None:
    try:
        schema = pa.Schema.from_pandas(df, preserve_index=False)
        with pq.ParquetWriter(tmp, schema, compression="snappy", write_statistics=True) as w:
            for start in range(0, len(df), PARQUET_ROW_GROUP_ROWS):
                part = df.iloc[start:start + PARQUET_ROW_GROUP_ROWS]
                w.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False),
                              row_group_size=PARQUET_ROW_GROUP_ROWS)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise DataError(f"Cannot write {path} as Parquet: {_first_line(exc)}") from None


def write_frame(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` (without its index) to ``path`` in the format of its suffix, atomically.

    The table goes to a temporary file in the same folder, is synced, then
    renamed over ``path`` (as :func:`vfl.model.atomic_write_text`), so a
    reader never sees half a file. CSV: ``DataFrame.to_csv`` (gzip for
    ``.csv.gz``). Parquet: column-wise, snappy-compressed, row groups of
    :data:`PARQUET_ROW_GROUP_ROWS` rows with column statistics; column names
    become text. Returns ``path``.

    Raises
    ------
    DataError
        If the suffix is unknown or a column cannot be stored in Parquet.
    """
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if fmt == "csv":
            gz = path.name.lower().endswith(".gz")
            df.to_csv(tmp, index=False, compression="gzip" if gz else None)
        else:
            if not all(isinstance(c, str) for c in df.columns):
                df = df.rename(columns=str)
            _write_parquet(df, tmp, path)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
