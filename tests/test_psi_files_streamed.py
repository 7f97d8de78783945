"""`vfl psi` on large tables streams them: the same aligned files as the in-memory path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vfl.exceptions import DataError
from vfl.pipeline import psi_files


def _tables(tmp_path, fmt):
    rng = np.random.default_rng(7)
    g_ids = [f" C{i:05d}" for i in rng.permutation(3000)]  # a leading space: stripped by both
    h_ids = [f"C{i:05d}" for i in rng.permutation(np.arange(1200, 4800))]
    guest = pd.DataFrame({"id": g_ids, "y": rng.integers(0, 2, 3000),
                          "a": rng.normal(size=3000), "b": rng.integers(0, 9, 3000)})
    host = pd.DataFrame({"x1": rng.normal(size=3600), "id": h_ids,
                         "x2": np.where(rng.random(3600) < 0.1, np.nan, rng.normal(size=3600))})
    paths = []
    for name, df in (("g", guest), ("h", host)):
        p = tmp_path / f"{name}.{fmt}"
        df.to_csv(p, index=False) if fmt == "csv" else df.to_parquet(p, index=False)
        paths.append(p)
    return paths


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_streamed_psi_files_equal_the_in_memory_ones(tmp_path, fmt):
    g, h = _tables(tmp_path, fmt)
    n_mem, mem = psi_files(g, [h], id_column="id", label="y", out_dir=tmp_path / "mem",
                           out_format="parquet")
    n_st, streamed = psi_files(g, [h], id_column="id", label="y", out_dir=tmp_path / "st",
                               out_format="parquet", stream_rows=1000)
    assert n_mem == n_st == 1800
    for a, b in zip(mem, streamed, strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
    out = pd.read_parquet(streamed[0])
    assert list(out.columns) == ["id", "y", "a", "b"]
    assert out["id"].str.startswith("C").all()


def test_streamed_psi_files_check_the_shared_rows(tmp_path):
    g, h = _tables(tmp_path, "csv")
    df = pd.read_csv(h)
    df["x1"] = df["x1"].astype(object)
    df.loc[df["id"] == "C01500", "x1"] = "abc"  # a shared customer
    df.to_csv(h, index=False)
    with pytest.raises(DataError, match=r"feature column 'x1' is not numeric \(line\(s\) \d+\)"):
        psi_files(g, [h], id_column="id", label="y", out_dir=tmp_path / "st", stream_rows=1000)
    assert not (tmp_path / "st" / "guest.csv").exists()
