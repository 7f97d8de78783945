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
