"""Feature selection by IV from the shared table, per party."""

from __future__ import annotations

import pytest

from vfl.binning.select import select_by_iv
from vfl.exceptions import ConfigError

TABLE = [
    {"party": "guest", "feature": "age", "iv": 0.30},
    {"party": "guest", "feature": "income", "iv": 0.01},
    {"party": "host1", "feature": "host1_f0", "iv": 0.50},
    {"party": "host1", "feature": "host1_f1", "iv": 0.02},
    {"party": "host1", "feature": "host1_f2", "iv": 0.10},
]


def test_min_iv_and_top_k():
    assert select_by_iv(TABLE, "guest", ["age", "income"], min_iv=0.02) == ["age"]
    host = ["savings", "loans", "dti"]
    assert select_by_iv(TABLE, "host1", host, min_iv=0.02) == ["savings", "loans", "dti"]
    assert select_by_iv(TABLE, "host1", host, top_k=3) == ["savings", "dti"]
    assert select_by_iv(TABLE, "guest", ["age", "income"], top_k=1) == ["age"]  # keeps >= 1


def test_revealed_names_and_missing_rows():
    table = [{"party": "host1", "feature": "host1:dti", "iv": 0.2}]
    assert select_by_iv(table, "host1", ["dti"], min_iv=0.1) == ["dti"]
    with pytest.raises(ConfigError, match="no row for host1's column"):
        select_by_iv(table, "host1", ["dti", "loans"], min_iv=0.1)
