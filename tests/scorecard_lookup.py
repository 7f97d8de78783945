"""An independent reading of an exported points CSV (not vfl's own lookup), for the tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def csv_table_score(t: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Score ``rows`` from a points table read from CSV: base row plus one bin per feature.

    Bins are right-closed intervals (pandas ``IntervalIndex``); a value in no
    interval (missing) gets the feature's ``missing`` row.
    """
    total = np.zeros(len(rows), dtype=np.int64)
    base = t[t["kind"] == "base"]
    if len(base):
        total += int(base["points"].iloc[0])
    for name, g in t[t["kind"] != "base"].groupby("feature", sort=False):
        bins = g[g["kind"] == "bin"]
        intervals = pd.IntervalIndex.from_arrays(bins["lower"], bins["upper"], closed="right")
        pos = intervals.get_indexer(rows[name].to_numpy(dtype=float))
        missing = int(g.loc[g["kind"] == "missing", "points"].iloc[0])
        total += np.where(pos >= 0, bins["points"].to_numpy()[pos], missing)
    return total
