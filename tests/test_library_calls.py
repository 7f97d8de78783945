"""Everything the CLI does is one library call: CSV files in, the same outputs written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from vfl.lr import TrainConfig
from vfl.outputs import read_guest_outputs
from vfl.pipeline import fit_files, iv_files, predict_files, psi_files
from vfl.scorecard import Scorecard
from vfl.synthetic import make_two_banks

FAST = dict(key_bits=512, allow_insecure_key_size=True)


def _csvs(tmp_path, rows, seed):
    g, h = make_two_banks(rows, 0.8, seed=seed)
    paths = tmp_path / f"a{seed}.csv", tmp_path / f"b{seed}.csv"
    g.to_csv(paths[0], index=False)
    h.to_csv(paths[1], index=False)
    return paths, g, h


def test_psi_iv_fit_predict_as_library_calls(tmp_path):
    (a, b), g, h = _csvs(tmp_path, 1500, 3)
    (va, vb), _, _ = _csvs(tmp_path, 600, 4)
    ids = dict(id_column="customer_id")

    n, files = psi_files(a, [b], out_dir=tmp_path / "aligned", label="default", **ids)
    assert n == len(set(g["customer_id"]) & set(h["customer_id"]))
    aligned = [pd.read_csv(f) for f in files]
    assert [len(t) for t in aligned] == [n, n]
    assert (aligned[0]["customer_id"] == aligned[1]["customer_id"]).all()

    iv = iv_files(a, [b], label="default", out=tmp_path / "iv.json", n_bins=5, **ids, **FAST)
    assert json.loads((tmp_path / "iv.json").read_text()) == iv

    # each party keeps its columns among the 6 best of all parties, then trains with
    # separate validation tables: the selection and validation wiring the CLI used to do
    result = fit_files(a, [b], label="default", out_dir=tmp_path / "model", iv_table=tmp_path /
                       "iv.json", top_k=6, guest_valid=va, hosts_valid=[vb],
                       config=TrainConfig(epochs=2, batch_size=256, patience=1, **FAST),
                       html_report=False, **ids)
    host_columns = [c for c in h.columns if c != "customer_id"]  # aliased host1_f<j> in the table
    name = {f"host1_f{j}": c for j, c in enumerate(host_columns)}
    best = {(r["party"], name.get(r["feature"], r["feature"]))
            for r in sorted(iv, key=lambda r: -r["iv"])[:6]}
    assert result.kept_columns is not None
    kept_pairs = {(p, c) for p, cols in result.kept_columns.items() for c in cols}
    assert kept_pairs == best  # (each party keeps at least one column; here both have some)
    out = read_guest_outputs(tmp_path / "model")
    assert out.part.features == result.kept_columns["guest"]
    assert out.report["evaluated_on"] == "training intersection"
    assert len(out.report["validation_history"]) >= 1
    host_part = json.loads((tmp_path / "model" / "host1.json").read_text())
    assert host_part["features"] == result.kept_columns["host1"]

    card = Scorecard(600, 50, 20)
    scores = predict_files(tmp_path / "model", a, [b], out=tmp_path / "scores.csv",
                           scorecard=card, **ids)
    written = pd.read_csv(tmp_path / "scores.csv")
    assert list(written.columns) == ["id", "probability", "matched", "score", "points"]
    assert list(written["id"]) == list(g["customer_id"]) and written["matched"].sum() == n
    # the points are the deployable card's integer points: the guest's table (base row
    # included) plus the host's, read back here from the exported files
    from vfl.scorecard import PointsTable

    matched = written["matched"].to_numpy(bool)
    model_dir = tmp_path / "model"
    tables = [PointsTable.from_csv((model_dir / f"{p}_points.csv").read_text())
              for p in ("guest", "host1")]
    gx = g.set_index("customer_id").loc[written.loc[matched, "id"]]
    hx = h.set_index("customer_id").loc[written.loc[matched, "id"]]
    expected = tables[0].score(gx) + tables[1].score(hx)
    assert np.array_equal(written.loc[matched, "points"].to_numpy(np.int64), expected)
    # the score is the probability's, exactly (issue 25); the points track it up to the
    # cards' binning
    proba = scores["probability"].to_numpy()[matched]
    assert np.array_equal(written.loc[matched, "score"].to_numpy(np.int64),
                          card.decision_score(proba))
    assert np.corrcoef(written.loc[matched, "points"], card.from_probability(proba))[0, 1] > 0.9
    assert written.loc[~written["matched"], ["score", "points"]].isna().all().all()
