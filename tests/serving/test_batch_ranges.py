"""Issue 25: batch scoring (vfl predict) applies the same range policy as vfl serve, and says
how many rows it touched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vfl.pipeline import predict_local


@pytest.mark.parametrize("policy", ["refuse", "clip", "flag"])
def test_batch_scoring_applies_the_range_policy(trained, policy):
    guest = trained.guest.select(trained.guest_part.features)
    X = guest.X.copy()
    j = guest.feature_names.index("utilization")
    shared = set(trained.host.ids)
    rows = [i for i, c in enumerate(guest.ids) if c in shared][3:5]
    X[rows, j] = 27.5  # a percentage typed for a fraction
    odd = dataclasses.replace(guest, X=X)
    base = predict_local(trained.model_dir, guest, [trained.host])
    out = predict_local(trained.model_dir, odd, [trained.host], range_policy=policy)
    assert out.attrs["out_of_range"] == {"rows": 2, "policy": policy,
                                         "not_scored": 2 if policy == "refuse" else 0}
    by_id = out.set_index("id")
    ids = [guest.ids[i] for i in rows]
    assert list(by_id.loc[ids, "out_of_range"]) == ["utilization", "utilization"]
    others = out[~out["id"].isin(ids)]
    np.testing.assert_allclose(others["probability"], base[~base["id"].isin(ids)]["probability"])
    got = by_id.loc[ids, "probability"].to_numpy(dtype=float)
    if policy == "refuse":
        assert np.isnan(got).all() and by_id.loc[ids, "matched"].all()
    elif policy == "clip":
        assert np.isfinite(got).all() and (got < 1 - 1e-6).all()
    else:  # 27.5 as given: scored on it, flagged (the model's extrapolation, not the clip's)
        clipped = predict_local(trained.model_dir, odd, [trained.host], range_policy="clip")
        assert not np.allclose(got, clipped.set_index("id").loc[ids, "probability"].to_numpy(
            dtype=float), atol=1e-6)
    assert "out_of_range" not in base.columns and base.attrs["out_of_range"]["rows"] == 0
