"""Loading a party's table: every bad input fails with a clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vfl.data import load_table
from vfl.exceptions import DataError
from vfl.preprocess import Standardizer


def _csv(tmp_path, df, name="t.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


def test_loads_ids_as_strings_and_features(tmp_path):
    p = _csv(tmp_path, pd.DataFrame({"id": ["007", " 8"], "y": [0, 1], "a": [1.5, None]}))
    t = load_table(p, id_column="id", label_column="y")
    assert t.ids == ["007", "8"]
    assert t.feature_names == ["a"]
    assert np.isnan(t.X[1, 0]) and t.y.tolist() == [0, 1]


@pytest.mark.parametrize(
    "df, kwargs, match",
    [
        (pd.DataFrame({"id": ["a", "b", "a"], "x": [1, 2, 3]}), {}, r"duplicate IDs on line\(s\) 2, 4"),
        (pd.DataFrame({"id": ["a", None], "x": [1, 2]}), {}, "missing IDs"),
        (pd.DataFrame({"key": ["a"], "x": [1]}), {}, "ID column 'id' not found"),
        (pd.DataFrame({"id": ["a", "b"], "x": ["1", "lots"]}), {}, "'x' is not numeric"),
        (pd.DataFrame({"id": ["a", "b"], "y": [0, 2], "x": [1, 2]}), {"label_column": "y"},
         "must be 0 or 1"),
        (pd.DataFrame({"id": ["a", "b"], "x": [1, 2]}),
         {"label_column": "y", "require_label": True}, "label column 'y' not found"),
        (pd.DataFrame({"id": ["a", "b"], "y": [0, 1]}), {"label_column": "y"}, "no feature"),
    ],
)
def test_bad_tables(tmp_path, df, kwargs, match):
    with pytest.raises(DataError, match=match):
        load_table(_csv(tmp_path, df), id_column="id", **kwargs)


def test_errors_do_not_leak_ids(tmp_path):
    df = pd.DataFrame({"id": ["SECRET-1", "SECRET-1"], "x": [1, 2]})
    with pytest.raises(DataError) as info:
        load_table(_csv(tmp_path, df), id_column="id")
    assert "SECRET" not in str(info.value)


def test_missing_file():
    with pytest.raises(DataError, match="File not found"):
        load_table("/nonexistent/x.csv", id_column="id")


def test_lower_ids(tmp_path):
    p = _csv(tmp_path, pd.DataFrame({"id": ["AbC"], "x": [1]}))
    assert load_table(p, id_column="id", lower_ids=True).ids == ["abc"]


def test_standardizer_imputes_and_scales():
    X = np.array([[1.0, 10.0], [np.nan, 20.0], [3.0, 30.0], [5.0, np.nan]])
    s = Standardizer.fit(X)
    Z = s.transform(X)
    assert not np.isnan(Z).any()
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(0), 1, atol=1e-12)
    again = Standardizer.from_dict(s.to_dict())
    np.testing.assert_array_equal(again.transform(X), Z)


# ------------------------------------------------------------------ Parquet input
def _both(tmp_path, df, name="t"):
    """The same frame as a CSV and as a Parquet file (written by vfl.tableio)."""
    from vfl.tableio import write_frame

    return write_frame(df, tmp_path / f"{name}.csv"), write_frame(df, tmp_path / f"{name}.parquet")


def test_parquet_and_csv_give_the_same_table(tmp_path):
    rng = np.random.default_rng(3)
    n = 200
    df = pd.DataFrame({"id": [f" C{i:04d}" if i % 7 else f"c{i:04d}" for i in range(n)],
                       "y": rng.integers(0, 2, n),
                       "income": np.where(rng.random(n) < 0.2, np.nan,
                                          rng.normal(5e4, 1e4, n).round(2)),
                       "cards": rng.integers(0, 5, n), "score": rng.random(n).round(8)})
    tables = [load_table(p, id_column="id", label_column="y", lower_ids=True)
              for p in _both(tmp_path, df)]
    a, b = tables
    assert a.ids == b.ids and a.original_ids == b.original_ids
    assert a.feature_names == b.feature_names == ["income", "cards", "score"]
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.label_column == b.label_column == "y"
    assert b.source.endswith("t.parquet")


@pytest.mark.parametrize(
    "df, kwargs, match",
    [
        (pd.DataFrame({"id": ["a", "b", "a"], "x": [1, 2, 3]}), {},
         r"duplicate IDs on row\(s\) 1, 3"),
        (pd.DataFrame({"id": ["a", None], "x": [1, 2]}), {}, r"missing IDs on row\(s\) 2"),
        (pd.DataFrame({"key": ["a"], "x": [1]}), {}, "ID column 'id' not found"),
        (pd.DataFrame({"id": ["a", "b"], "x": ["1", "lots"]}), {},
         r"'x' is not numeric \(row\(s\) 2\)"),
        (pd.DataFrame({"id": ["a", "b"], "y": [0, 2], "x": [1, 2]}), {"label_column": "y"},
         r"must be 0 or 1; other values on row\(s\) 2"),
        (pd.DataFrame({"id": ["a", "b"], "x": [1.0, 1e16]}), {}, r"beyond .* \(row\(s\) 2\)"),
        (pd.DataFrame({"id": ["a", "b"], "x": pd.to_datetime(["2024-01-01", None])}), {},
         r"'x' is not numeric \(row\(s\) 1\)"),
    ],
)
def test_bad_parquet_tables_name_rows(tmp_path, df, kwargs, match):
    from vfl.tableio import write_frame

    path = write_frame(df, tmp_path / "t.parquet")
    with pytest.raises(DataError, match=match) as info:
        load_table(path, id_column="id", **kwargs)
    assert str(path) in str(info.value)


def test_csv_messages_are_unchanged(tmp_path):
    df = pd.DataFrame({"id": ["a", "b", "a"], "x": [1, 2, 3]})
    csv, _ = _both(tmp_path, df)
    with pytest.raises(DataError, match=r"duplicate IDs on line\(s\) 2, 4; each customer"):
        load_table(csv, id_column="id")
    header_only = tmp_path / "h.csv"
    header_only.write_text("id,x\n")
    with pytest.raises(DataError, match=r"no data rows \(only a header\)"):
        load_table(header_only, id_column="id")


def test_parquet_errors_do_not_leak_ids(tmp_path):
    _, pq_path = _both(tmp_path, pd.DataFrame({"id": ["SECRET-1", "SECRET-1"], "x": [1, 2]}))
    with pytest.raises(DataError) as info:
        load_table(pq_path, id_column="id")
    assert "SECRET" not in str(info.value)


def test_empty_parquet(tmp_path):
    from vfl.tableio import write_frame

    path = write_frame(pd.DataFrame({"id": pd.Series([], dtype=str), "x": []}),
                       tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet: no data rows; nothing to train"):
        load_table(path, id_column="id")


@pytest.mark.parametrize("content", [b"", b"garbage" * 20])
def test_corrupt_parquet(tmp_path, content):
    path = tmp_path / "bank.parquet"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"Cannot read .*bank\.parquet as Parquet"):
        load_table(path, id_column="id")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "bank.txt"
    path.write_text("id,x\na,1\n")
    with pytest.raises(DataError, match=r"bank\.txt: unknown table format.*\.parquet"):
        load_table(path, id_column="id")


def test_parquet_types(tmp_path):
    """Booleans and integers with gaps load as numbers; a dictionary column decodes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({
        "id": pa.array([1, 2, 3], pa.int32()),
        "flag": pa.array([True, None, False]),
        "n": pa.array([1, None, 3], pa.int64()),
        "cat": pa.array(["1.5", "2", "1.5"]).dictionary_encode(),
        "y": pa.array([0, 1, 0], pa.int8())}), path)
    t = load_table(path, id_column="id", label_column="y")
    assert t.ids == ["1", "2", "3"] and t.y.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(t.X, [[1.0, 1.0, 1.5], [np.nan, np.nan, 2.0],
                                        [0.0, 3.0, 1.5]])
