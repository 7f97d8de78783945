"""Table files (vfl.tableio): CSV and Parquet give the same table, read whole or in chunks."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vfl.data import load_table, normalize_ids
from vfl.exceptions import DataError
from vfl.tableio import (
    CSV_BLOCK_BYTES,
    CSV_NA_VALUES,
    PARQUET_ROW_GROUP_ROWS,
    SUFFIXES,
    column_names,
    count_rows,
    iter_batches,
    iter_column,
    read_frame,
    table_format,
    write_frame,
)

#: IDs a CSV writer quotes or a careless reader mangles (no missing ones)
ODD_IDS = ["007", " 8", "9 ", "a,b", 'q"uote', 'x""y', "multi\nline", "AbC", "ÉLAN-ß", "0x1F",
           "1e5", "-0", "tab\there", "'single'", "#hash", "semi;colon", "  padded  ", "Ǆ"]


def _odd_frame() -> pd.DataFrame:
    n = len(ODD_IDS)
    return pd.DataFrame({"id": ODD_IDS, "y": [i % 2 for i in range(n)],
                         "x": [0.5 * i if i % 4 else None for i in range(n)],
                         "k": list(range(n))})


def _chunks(path, column="id", **kw):
    chunks = list(iter_column(path, column, **kw))
    return chunks, [v for c in chunks for v in c]


# ------------------------------------------------------------------ formats
@pytest.mark.parametrize("name, fmt", [("a.csv", "csv"), ("A.CSV", "csv"), ("a.csv.gz", "csv"),
                                       ("a.b.parquet", "parquet"), ("a.pq", "parquet"),
                                       ("dir.csv/t.Parquet", "parquet")])
def test_format_by_suffix(name, fmt):
    assert table_format(name) == fmt


@pytest.mark.parametrize("name", ["a.txt", "a.tsv", "a.parquet.bak", "a", ".csv", "a.gz",
                                  "a.json"])
def test_unknown_suffix_names_the_file_and_the_suffixes(tmp_path, name):
    with pytest.raises(DataError) as info:
        table_format(tmp_path / name)
    assert str(tmp_path / name) in str(info.value)
    assert all(s in str(info.value) for s in SUFFIXES)


def test_unknown_suffix_is_refused_by_every_reader_and_writer(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("id,x\na,1\n")
    for call in (lambda: read_frame(p, id_column="id"), lambda: column_names(p),
                 lambda: count_rows(p), lambda: iter_column(p, "id"),
                 lambda: iter_batches(p, ["id"]), lambda: load_table(p, id_column="id"),
                 lambda: write_frame(pd.DataFrame({"a": [1]}), tmp_path / "o.xlsx")):
        with pytest.raises(DataError, match="unknown table format"):
            call()
    assert not (tmp_path / "o.xlsx").exists()


def test_na_words_are_pandas_defaults():
    parsers = pytest.importorskip("pandas._libs.parsers")
    assert set(CSV_NA_VALUES) == set(parsers.STR_NA_VALUES)


# ------------------------------------------------------------------ write and read back
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".pq"])
def test_round_trip(tmp_path, suffix):
    df = _odd_frame()
    path = write_frame(df, tmp_path / f"t{suffix}")
    assert path == tmp_path / f"t{suffix}"
    back = read_frame(path, id_column="id")
    assert list(back.columns) == list(df.columns)
    assert back["id"].tolist() == ODD_IDS
    assert back["y"].tolist() == df["y"].tolist() and back["k"].tolist() == df["k"].tolist()
    np.testing.assert_array_equal(back["x"].to_numpy(float), df["x"].to_numpy(float))
    assert column_names(path) == list(df.columns)
    assert count_rows(path) == len(df)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    if suffix == ".csv.gz":
        assert gzip.decompress(path.read_bytes()).decode() == df.to_csv(index=False)


def test_csv_output_is_what_to_csv_writes(tmp_path):
    df = _odd_frame()
    path = write_frame(df, tmp_path / "t.csv")
    assert path.read_text(encoding="utf-8") == df.to_csv(index=False)


def test_write_replaces_atomically_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "t.parquet"
    write_frame(pd.DataFrame({"a": [1, 2]}), path)
    write_frame(pd.DataFrame({"a": [3]}), path)
    assert read_frame(path)["a"].tolist() == [3]
    with pytest.raises(DataError, match=r"Cannot write .*t\.parquet as Parquet"):
        write_frame(pd.DataFrame({"a": [1, "text"]}, dtype=object), path)  # mixed column
    assert read_frame(path)["a"].tolist() == [3]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_parquet_is_written_in_row_groups_with_statistics(tmp_path):
    n = 2 * PARQUET_ROW_GROUP_ROWS + 5
    df = pd.DataFrame({"id": np.arange(n).astype(str), "x": np.arange(n, dtype=float)})
    path = write_frame(df, tmp_path / "t.parquet")
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == n and meta.num_row_groups == 3
    assert [meta.row_group(i).num_rows for i in range(3)] == [PARQUET_ROW_GROUP_ROWS] * 2 + [5]
    stats = meta.row_group(1).column(1).statistics
    assert stats.has_min_max and stats.min == PARQUET_ROW_GROUP_ROWS
    assert count_rows(path) == n


def test_parquet_with_no_rows_keeps_its_columns(tmp_path):
    path = write_frame(pd.DataFrame({"id": pd.Series([], dtype=str), "x": []}),
                       tmp_path / "t.parquet")
    assert column_names(path) == ["id", "x"] and count_rows(path) == 0
    assert list(iter_column(path, "id")) == []


# ------------------------------------------------------------------ chunked ID reading
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
@pytest.mark.parametrize("batch_rows", [1, 4, 7, 1000])
def test_iter_column_gives_pandas_ids_in_chunks(tmp_path, suffix, batch_rows):
    path = write_frame(_odd_frame(), tmp_path / f"t{suffix}")
    chunks, ids = _chunks(path, batch_rows=batch_rows)
    assert all(0 < len(c) <= batch_rows for c in chunks)
    assert all(len(c) == batch_rows for c in chunks[:-1])
    assert ids == load_table(path, id_column="id").ids
    expected = normalize_ids(pd.read_csv(tmp_path / f"t{suffix}", dtype={"id": str})["id"]
                             if suffix != ".parquet" else pd.Series(ODD_IDS)).tolist()
    assert ids == expected


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("strip, lower", [(False, False), (True, True), (False, True)])
def test_iter_column_normalises_as_load_table(tmp_path, suffix, strip, lower):
    path = write_frame(_odd_frame(), tmp_path / f"t{suffix}")
    _, ids = _chunks(path, batch_rows=5, strip=strip, lower=lower)
    assert ids == load_table(path, id_column="id", strip_ids=strip, lower_ids=lower).ids
    assert ids == normalize_ids(pd.Series(ODD_IDS), strip=strip, lower=lower).tolist()


def test_iter_column_on_a_hand_written_csv(tmp_path):
    """Quoting pandas' writer never produces: BOM, blank lines, quoted plain IDs, CRLF."""
    path = tmp_path / "t.csv"
    path.write_bytes('\ufeffid,x\r\n"a",1\r\n\r\nb"c,2\r\n"d ""e"" f",3\r\n  g  ,4\r\n'
                     '"h\r\ni",5\r\n'.encode())
    expected = normalize_ids(pd.read_csv(path, dtype={"id": str})["id"]).tolist()
    assert expected == ["a", 'b"c', 'd "e" f', "g", "h\r\ni"]
    _, ids = _chunks(path, batch_rows=2)
    assert ids == expected
    assert count_rows(path) == 5 and column_names(path) == ["id", "x"]


def test_iter_column_rechunks_across_csv_blocks(tmp_path):
    n = 3 * CSV_BLOCK_BYTES // 40  # about three pyarrow blocks
    df = pd.DataFrame({"id": [f"customer-{i:010d}" for i in range(n)], "x": np.arange(n) * 0.25,
                       "pad": "p" * 8})
    path = write_frame(df, tmp_path / "big.csv")
    assert path.stat().st_size > 2 * CSV_BLOCK_BYTES
    batch = 7_001
    chunks, ids = _chunks(path, batch_rows=batch)
    assert [len(c) for c in chunks] == [batch] * (n // batch) + ([n % batch] if n % batch else [])
    assert ids == df["id"].tolist()
    assert count_rows(path) == n


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_iter_column_refuses_missing_ids_naming_lines_not_ids(tmp_path, suffix):
    ids = ["SECRET-1", None, "SECRET-2", "   ", "SECRET-3", ""]
    if suffix == ".csv":
        path = tmp_path / "t.csv"
        path.write_text("id,x\nSECRET-1,1\nNA,2\nSECRET-2,3\n   ,4\nSECRET-3,5\n,6\n")
    else:
        path = write_frame(pd.DataFrame({"id": ids, "x": range(6)}), tmp_path / "t.parquet")
    with pytest.raises(DataError) as info:
        _chunks(path, batch_rows=100)
    msg = str(info.value)
    assert str(path) in msg and "'id'" in msg and "missing or empty IDs" in msg
    assert ("line(s) 3, 5, 7" if suffix == ".csv" else "row(s) 2, 4, 6") in msg
    assert "SECRET" not in msg
    # the chunks before the first bad one arrive first
    first = next(iter_column(path, "id", batch_rows=1))
    assert first == ["SECRET-1"]


def test_iter_column_refuses_a_short_row_without_quoting_it(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,x,y\nSECRET-1,1,2\nSECRET-2,1\nSECRET-3,1,2\n")
    with pytest.raises(DataError) as info:
        _chunks(path)
    msg = str(info.value)
    assert str(path) in msg and "2 field(s) where the header has 3" in msg
    assert "SECRET" not in msg


def test_iter_column_refuses_a_row_longer_than_a_block(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text\na,x\nb," + "y" * (3 * CSV_BLOCK_BYTES) + "\nc,z\n")
    with pytest.raises(DataError, match="longer than 1 MiB"):
        _chunks(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_missing_column(tmp_path, suffix):
    path = write_frame(_odd_frame(), tmp_path / f"t{suffix}")
    for call in (lambda: iter_column(path, "customer"),
                 lambda: iter_batches(path, ["id", "customer"])):
        with pytest.raises(DataError) as info:
            call()  # before the first chunk is asked for
        assert str(path) in str(info.value) and "'customer' not found" in str(info.value)
        assert "id, y, x, k" in str(info.value)


def test_batch_rows_must_be_positive(tmp_path):
    path = write_frame(_odd_frame(), tmp_path / "t.csv")
    with pytest.raises(ValueError, match="batch_rows"):
        iter_column(path, "id", batch_rows=0)


# ------------------------------------------------------------------ Parquet ID columns
def test_parquet_integer_ids_read_as_text(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([7, 10**15, -3], pa.int64()),
                             "x": [1.0, 2.0, 3.0]}), path)
    _, ids = _chunks(path, batch_rows=2)
    assert ids == ["7", "1000000000000000", "-3"]
    assert load_table(path, id_column="id").ids == ids
    csv = write_frame(pd.DataFrame({"id": [7, 10**15, -3], "x": [1.0, 2.0, 3.0]}),
                      tmp_path / "t.csv")
    assert load_table(csv, id_column="id").ids == ids


def test_parquet_dictionary_ids(tmp_path):
    path = tmp_path / "t.parquet"
    ids = pa.array(["b", "a", "b2"]).dictionary_encode()
    pq.write_table(pa.table({"id": ids, "x": [1.0, 2.0, 3.0]}), path)
    assert _chunks(path)[1] == ["b", "a", "b2"] == load_table(path, id_column="id").ids


def test_parquet_float_ids_are_refused(tmp_path):
    path = write_frame(pd.DataFrame({"id": [1.0, 2.0], "x": [1, 2]}), tmp_path / "t.parquet")
    for call in (lambda: _chunks(path), lambda: load_table(path, id_column="id")):
        with pytest.raises(DataError, match=r"ID column 'id' is floating point"):
            call()


def test_pandas_index_columns_are_not_data(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"x": [1.0, 2.0]}, index=[5, 6]).assign(id=["a", "b"]).to_parquet(path)
    assert "__index_level_0__" in pq.read_schema(path).names
    assert column_names(path) == ["x", "id"]
    assert list(read_frame(path, id_column="id").columns) == ["x", "id"]
    assert load_table(path, id_column="id").feature_names == ["x"]


# ------------------------------------------------------------------ several columns
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_iter_batches_matches_read_frame(tmp_path, suffix):
    rng = np.random.default_rng(0)
    n = 1000
    df = pd.DataFrame({"id": [f"c{i:05d}" for i in range(n)], "a": rng.normal(size=n).round(6),
                       "b": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
                       "c": rng.integers(0, 9, n)})
    path = write_frame(df, tmp_path / f"t{suffix}")
    frames = list(iter_batches(path, ["b", "id"], batch_rows=300, id_column="id"))
    assert [len(f) for f in frames] == [300, 300, 300, 100]
    assert all(list(f.columns) == ["b", "id"] for f in frames)
    joined = pd.concat(frames)
    assert joined.index.tolist() == list(range(n))
    whole = read_frame(path, id_column="id")
    assert joined["id"].tolist() == whole["id"].tolist() == df["id"].tolist()
    np.testing.assert_array_equal(joined["b"].to_numpy(float), whole["b"].to_numpy(float))


# ------------------------------------------------------------------ unreadable files
@pytest.mark.parametrize("content", [b"", b"not parquet at all" * 10, b"PAR1" + b"\0" * 64])
def test_corrupt_parquet_names_the_file(tmp_path, content):
    path = tmp_path / "broken.parquet"
    path.write_bytes(content)
    for call in (lambda: read_frame(path), lambda: column_names(path), lambda: count_rows(path),
                 lambda: _chunks(path), lambda: list(iter_batches(path, ["id"]))):
        with pytest.raises(DataError, match=r"Cannot read .*broken\.parquet as Parquet"):
            call()


def test_truncated_parquet_names_the_file(tmp_path):
    path = write_frame(_odd_frame(), tmp_path / "t.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"Cannot read .*t\.parquet as Parquet"):
        load_table(path, id_column="id")


def test_empty_csv_and_missing_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    for call in (lambda: column_names(empty), lambda: read_frame(empty),
                 lambda: iter_column(empty, "id")):
        with pytest.raises(DataError, match=r"Cannot read .*empty\.csv as CSV"):
            call()
    for name in ("nope.csv", "nope.parquet"):
        with pytest.raises(DataError, match="File not found"):
            column_names(tmp_path / name)
        with pytest.raises(DataError, match="File not found"):
            iter_column(tmp_path / name, "id")


def test_header_only_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,x\n")
    assert count_rows(path) == 0 and list(iter_column(path, "id")) == []
