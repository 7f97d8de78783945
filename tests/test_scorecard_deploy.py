"""Deployable scorecard, end to end: the exported points tables reproduce ``vfl predict --score``.

Issue 10, item 8. A WOE-binned model is fitted on default_credit with every
party on this machine (small insecure keys, 2 epochs), scored with the CLI's
``predict --score``, and every scored row's ``score`` is recomputed from the
exported ``<party>_points.csv`` and ``<party>_points.json`` alone, with a few
lines of pandas / plain Python written here (not vfl's own bin lookup).
The protocol checks of the scale and the points are tested on the roles.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from vfl.cli import main
from vfl.codec import Envelope, decode_envelope, encode_envelope
from vfl.data import load_table
from vfl.demo import write_demo_job
from vfl.exceptions import ConfigError, DataError, RemoteProtocolError
from vfl.jobs import JobOptions, guest_predict_job, host_predict_job
from vfl.lr import TrainConfig
from vfl.lr.estimator import GuestLogisticRegression, HostLogisticRegression
from vfl.lr.guest import GuestScoring
from vfl.lr.host import HostScoring, answer_score_request
from vfl.lr.messages import MAX_POINTS_SCALE, PartialScores, ScoreRequest
from vfl.model import ModelPart, load_model_part, save_model_part
from vfl.outputs import existing_outputs, refresh_points
from vfl.pipeline import fit_files, run_threads
from vfl.preprocess import Standardizer
from vfl.runner import run_fit, run_predict
from vfl.scorecard import PointsTable, ScoreBins, Scorecard, part_points_table, part_score_bins
from vfl.transport.memory import InMemoryNetwork

from .conftest import run_parties, shared_csv
from .scorecard_lookup import csv_table_score

FAST = dict(key_bits=512, allow_insecure_key_size=True)
PARTIES = ("guest", "host1")


# ------------------------------------------------------------------ independent lookups


def csv_points(path: Path, rows: pd.DataFrame) -> np.ndarray:
    """One party's points of ``rows`` from its exported CSV (pandas interval lookup)."""
    return csv_table_score(pd.read_csv(path), rows)


def json_points(path: Path, rows: pd.DataFrame) -> np.ndarray:
    """One party's points of ``rows`` from its exported JSON, as a decision engine reads it."""
    doc = json.loads(path.read_text())
    assert doc["interval"] == "lower < x <= upper" and doc["rounding"] == "half away from zero"
    total = np.full(len(rows), doc["base_points"] or 0, dtype=np.int64)
    for f in doc["features"]:
        x = rows[f["name"]].to_numpy(dtype=float)
        pts = np.full(len(x), f["missing_points"], dtype=np.int64)
        for b in f["bins"]:
            inside = ~np.isnan(x)
            if b["lower"] is not None:
                inside &= x > b["lower"]
            if b["upper"] is not None:
                inside &= x <= b["upper"]
            pts[inside] = b["points"]
        total += pts
    return total


# ------------------------------------------------------------------ the fitted model


@pytest.fixture(scope="module")
def credit(tmp_path_factory):
    """default_credit's two CSVs, a WOE-binned model of them, and its --score output."""
    guest, host = (shared_csv("default_credit_hetero_guest.csv"),
                   shared_csv("default_credit_hetero_host.csv"))
    work = tmp_path_factory.mktemp("credit")
    model = work / "model"
    fit_files(guest, [host], id_column="id", label="y", out_dir=model,
              config=TrainConfig(epochs=2, **FAST), options=JobOptions(woe_bins=10),
              html_report=False)
    scores = work / "scores.csv"
    r = CliRunner().invoke(main, ["predict", "--model", str(model), "--guest", str(guest),
                                  "--host", str(host), "--id", "id", "--label", "y",
                                  "--out", str(scores), "--score", "--quiet"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return guest, host, model, scores


def _rows(guest: Path, host: Path, scores: Path) -> tuple[pd.DataFrame, pd.DataFrame,
                                                        pd.DataFrame]:
    """The scored rows, and each party's raw rows in the scores file's order."""
    s = pd.read_csv(scores)
    g = pd.read_csv(guest).set_index("id")
    h = pd.read_csv(host).set_index("id")
    scored = s[s["matched"]].reset_index(drop=True)
    return scored, g.loc[scored["id"]].reset_index(), h.loc[scored["id"]].reset_index()


def _reproduce(model: Path, scored, g_rows, h_rows, lookup) -> np.ndarray:
    suffix = ".csv" if lookup is csv_points else ".json"
    return (lookup(model / f"guest_points{suffix}", g_rows)
            + lookup(model / f"host1_points{suffix}", h_rows))


def test_points_csv_reproduce_every_score_on_default_credit(credit):
    guest, host, model, scores = credit
    scored, g_rows, h_rows = _rows(guest, host, scores)
    assert len(scored) == 30_000  # every customer is at both banks
    assert pd.api.types.is_integer_dtype(scored["points"])
    assert pd.api.types.is_integer_dtype(scored["score"])
    total = _reproduce(model, scored, g_rows, h_rows, csv_points)
    mismatches = int((total != scored["points"].to_numpy()).sum())
    assert mismatches == 0, f"{mismatches} of {len(scored)} rows differ"


def test_points_json_reproduce_every_score_on_default_credit(credit):
    guest, host, model, scores = credit
    scored, g_rows, h_rows = _rows(guest, host, scores)
    total = _reproduce(model, scored, g_rows, h_rows, json_points)
    assert int((total != scored["points"].to_numpy()).sum()) == 0
    docs = {p: json.loads((model / f"{p}_points.json").read_text()) for p in PARTIES}
    # one scaling for both parties, the guest's calibration slope included; base row: guest only
    report = json.loads((model / "report.json").read_text())
    assert docs["guest"]["scorecard"] == docs["host1"]["scorecard"]
    assert docs["guest"]["scorecard"]["slope"] == report["scorecard"]["slope"]
    assert isinstance(docs["guest"]["base_points"], int) and docs["host1"]["base_points"] is None
    for doc in docs.values():
        for f in doc["features"]:  # open-ended first and last bins
            assert f["bins"][0]["lower"] is None and f["bins"][-1]["upper"] is None


def test_woe_tables_are_the_model_up_to_rounding(credit):
    """With WOE bins the points are the model's (calibrated) probability's score, rounded per
    bin; the score is that probability's, exactly."""
    guest, host, model, scores = credit
    scored, _, _ = _rows(guest, host, scores)
    n_terms = 1 + sum(len(json.loads((model / f"{p}.json").read_text())["features"])
                      for p in PARTIES)
    continuous = Scorecard().from_probability(scored["probability"].to_numpy())
    gap = np.abs(scored["points"].to_numpy() - continuous)
    assert gap.max() <= 0.5 * n_terms + 1e-6
    assert (scored["score"].to_numpy() == Scorecard().decision_score(
        scored["probability"].to_numpy())).all()
    report = json.loads((model / "report.json").read_text())["scorecard"]
    assert report["bins"] == "woe"
    assert report["guest_gap"]["max_abs"] <= report["guest_gap"]["rounding_bound"] + 1e-6


def test_points_files_are_outputs_of_the_run(credit, tmp_path):
    _, _, model, _ = credit
    found = {p.name for p in existing_outputs(model)}
    assert {f"{p}_points{s}" for p in PARTIES for s in (".csv", ".json")} <= found
    (tmp_path / "my_points.json").write_text('{"not": "a scorecard"}')
    assert existing_outputs(tmp_path) == []  # a user's file of that name is left alone


def _subset(tmp_path: Path, guest: Path, host: Path) -> tuple[Path, Path]:
    """Small scoring files: 1,500 guest rows, 1,200 of them at the host, plus 300 others."""
    g = pd.read_csv(guest).iloc[:1500]
    h = pd.read_csv(host).iloc[300:1800]
    paths = tmp_path / "g.csv", tmp_path / "h.csv"
    g.to_csv(paths[0], index=False)
    h.to_csv(paths[1], index=False)
    return paths


def _predict(model: Path, g: Path, h: Path, out: Path, *extra: str):
    return CliRunner().invoke(main, ["predict", "--model", str(model), "--guest", str(g),
                                     "--host", str(h), "--id", "id", "--label", "y",
                                     "--out", str(out), "--quiet", *extra],
                              catch_exceptions=False)


def test_other_scaling_rewrites_the_tables_and_they_still_reproduce(credit, tmp_path):
    guest, host, model, _ = credit
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    g, h = _subset(tmp_path, guest, host)
    out = tmp_path / "scores.csv"
    r = _predict(copy, g, h, out, "--score", "--pdo", "40", "--base-score", "500")
    assert r.exit_code == 0, r.output
    s = pd.read_csv(out)
    assert s["matched"].sum() == 1200 and s.loc[~s["matched"], "score"].isna().all()
    doc = json.loads((copy / "host1_points.json").read_text())
    assert doc["scorecard"]["pdo"] == 40 and doc["scorecard"]["base_score"] == 500
    scored, g_rows, h_rows = _rows(g, h, out)
    for lookup in (csv_points, json_points):
        total = _reproduce(copy, scored, g_rows, h_rows, lookup)
        assert (total == scored["points"].to_numpy()).all()
    # the default scaling again: the tables go back; without --score no score column
    assert _predict(copy, g, h, out, "--score", "--force").exit_code == 0
    assert json.loads((copy / "host1_points.json").read_text()) == json.loads(
        (model / "host1_points.json").read_text())
    assert _predict(copy, g, h, out, "--force").exit_code == 0
    assert list(pd.read_csv(out).columns) == ["id", "probability", "matched"]


def _strip_bins(path: Path) -> None:
    part = load_model_part(path)
    del part.preprocessing["score_bins"]
    save_model_part(part, path)


@pytest.mark.parametrize("old", [("guest", "host1"), ("host1",)], ids=["both", "host-only"])
def test_score_on_a_part_without_score_bins_says_retrain(credit, tmp_path, old):
    guest, host, model, _ = credit
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    for party in old:
        _strip_bins(copy / f"{party}.json")
    g, h = _subset(tmp_path, guest, host)
    out = tmp_path / "scores.csv"
    r = _predict(copy, g, h, out, "--score")
    assert r.exit_code == 2
    assert f"{old[0]}: this model part predates deployable scorecards" in r.output
    assert "retrain" in r.output and "Traceback" not in r.output
    assert not out.exists()
    # without --score the old part still scores as before
    assert _predict(copy, g, h, out).exit_code == 0


def test_host_with_an_old_part_refuses_points_in_the_job(credit, tmp_path):
    """Over a network only the host knows its part is old: its own error, naming it."""
    guest, host, model, _ = credit
    g_part = load_model_part(model / "guest.json")
    h_part = load_model_part(model / "host1.json")
    del h_part.preprocessing["score_bins"]
    g, h = _subset(tmp_path, guest, host)
    gt = load_table(g, id_column="id", label_column="y")
    ht = load_table(h, id_column="id")
    net = InMemoryNetwork(["guest", "host1"])
    with pytest.raises(DataError, match="host1: this model part predates deployable scorecards"):
        run_threads(net, {
            "guest": lambda ch: guest_predict_job(ch, gt, g_part, hosts=["host1"],
                                                  scorecard=Scorecard()),
            "host1": lambda ch: host_predict_job(ch, ht, h_part, guest="guest")})


# ------------------------------------------------------------------ the protocol checks


def _host(points=None):
    return HostScoring(np.array([0.5, -1.0, 2.0]), "m", "guest",
                       points if points is not None else
                       (lambda scale: np.array([1, 2, 3], dtype=np.int64)))


@pytest.mark.parametrize("scale", [math.nan, math.inf, -math.inf, -1.0, MAX_POINTS_SCALE * 2,
                                   1e300])
def test_host_refuses_a_scale_that_is_not_finite_or_sane(scale):
    with pytest.raises(RemoteProtocolError, match=r"^guest asks for scorecard points at scale"):
        _host().on_score_request(ScoreRequest("m", 3, scale))


def test_non_finite_scale_is_refused_on_the_wire():
    data = encode_envelope(Envelope("j", 0, "guest", "host1", ScoreRequest("m", 3, math.nan)))
    with pytest.raises(RemoteProtocolError, match="from guest.*not finite"):
        decode_envelope(data, peer="guest")


def test_host_answers_points_only_when_asked():
    answer = _host().on_score_request(ScoreRequest("m", 3))
    assert answer.points.shape == (0,)
    answer = _host().on_score_request(ScoreRequest("m", 3, MAX_POINTS_SCALE))
    assert answer.points.tolist() == [1, 2, 3] and answer.points.dtype == np.int64
    back = decode_envelope(encode_envelope(Envelope("j", 1, "host1", "guest", answer))).body
    assert back.points.tolist() == [1, 2, 3] and back.points.dtype == np.int64
    with pytest.raises(RemoteProtocolError, match="serves none"):
        answer_score_request(ScoreRequest("m", 3, 28.8), np.zeros(3), "m", guest="guest")


def _guest(scale=28.8):
    return GuestScoring(np.zeros(3), "m", ["host1"], None, scale)


@pytest.mark.parametrize("points, match", [
    (np.array([1.0, 2.0, 3.0]), "float64 of shape"),
    (np.array([1, 2], dtype=np.int64), r"shape \(2,\); expected \(3,\) int64"),
    (np.array([1, 2, 10**17], dtype=np.int64), "exceed"),
    (np.array([1, 2, np.iinfo(np.int64).min], dtype=np.int64), "exceed"),
])
def test_guest_refuses_malformed_points_naming_the_host(points, match):
    with pytest.raises(RemoteProtocolError, match=match) as info:
        _guest().on_partial_scores("host1", PartialScores("m", np.zeros(3), points))
    assert "host1" in str(info.value)


def test_guest_refuses_points_it_did_not_ask_for_and_sums_the_ones_it_did():
    with pytest.raises(RemoteProtocolError, match="host1 sent scorecard points that were not"):
        _guest(0.0).on_partial_scores("host1", PartialScores("m", np.zeros(3),
                                                             np.ones(3, dtype=np.int64)))
    g = GuestScoring(np.zeros(3), "m", ["host1", "host2"], None, 28.8)
    g.on_partial_scores("host1", PartialScores("m", np.zeros(3), np.array([1, 2, 3])))
    g.on_partial_scores("host2", PartialScores("m", np.zeros(3), np.array([-5, 0, 5])))
    assert g.host_points().tolist() == [-4, 2, 8]


@pytest.mark.parametrize("scale", [math.nan, -1.0, MAX_POINTS_SCALE * 2])
def test_guest_refuses_to_ask_at_an_insane_scale(scale):
    with pytest.raises(ConfigError, match="scorecard scale"):
        _guest(scale)


# ------------------------------------------------------------------ over the network


def test_networked_score_and_each_partys_own_tables(tmp_path):
    """gRPC: the host learns the calibrated scale only at --score and rewrites its table then.

    Raw columns here (the demo job has no WOE binning): quantile bins, so the
    tables approximate the model, and still reproduce every ``score`` exactly.
    """
    job = write_demo_job(tmp_path / "job", rows=1500, key_bits=512, insecure=True, epochs=2,
                         batch_size=256)
    results, errors = run_parties(job.configs, run_fit)
    assert not errors, errors
    host_dir, guest_dir = job.outputs["bank_b"], job.outputs["bank_a"]
    fit_doc = json.loads((host_dir / "bank_b_points.json").read_text())
    assert fit_doc["scorecard"]["slope"] is None  # the host does not learn the calibration
    g_part = load_model_part(guest_dir / "bank_a.json")
    assert g_part.calibration is not None  # default validation share: a calibrated model

    scores = tmp_path / "scores.csv"
    configs = {k: v for k, v in job.configs.items() if k != "arbiter"}
    results, errors = run_parties(configs, lambda cfg: run_predict(
        cfg, cfg.data.path, out=scores, scorecard=Scorecard()))
    assert not errors, errors
    assert results["bank_b"]["points_files"]  # rewritten at the calibrated scale
    doc = json.loads((host_dir / "bank_b_points.json").read_text())
    guest_doc = json.loads((guest_dir / "bank_a_points.json").read_text())
    assert doc["scorecard"]["scale"] == pytest.approx(guest_doc["scorecard"]["scale"], rel=1e-12)
    assert results["bank_a"]["points_files"] == []  # the guest's table was right from the fit

    s = pd.read_csv(scores)
    scored = s[s["matched"]].reset_index(drop=True)
    assert len(scored) == results["bank_b"]["rows_scored"] > 0
    g = pd.read_csv(job.data["bank_a"]).set_index("customer_id").loc[scored["id"]]
    h = pd.read_csv(job.data["bank_b"]).set_index("customer_id").loc[scored["id"]]
    for lookup, suffix in ((csv_points, ".csv"), (json_points, ".json")):
        total = (lookup(guest_dir / f"bank_a_points{suffix}", g.reset_index())
                 + lookup(host_dir / f"bank_b_points{suffix}", h.reset_index()))
        assert (total == scored["points"].to_numpy()).all()


# ------------------------------------------------------------------ tables from model parts


def _parts(standardize: bool = True, slope: float = 0.9):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    pre = Standardizer.fit(X) if standardize else None
    bins = ScoreBins.fit(["a", "b"], X, pre).to_dict()
    pre_d = {**(pre.to_dict() if pre else {}), "score_bins": bins}
    g = ModelPart("m", "guest", "guest", ["a", "b"], [0.5, -0.2], 0.1, dict(pre_d),
                  calibration={"method": "platt", "slope": slope, "intercept": 0.05})
    h = ModelPart("m", "host", "host1", ["a", "b"], [0.3, 0.4], None, dict(pre_d))
    return g, h, X


def test_host_table_from_slope_or_from_the_guests_scale_is_the_same():
    g, h, _ = _parts()
    guest_table = part_points_table(g)
    by_slope = part_points_table(h, slope=0.9)
    by_scale = part_points_table(h, scale=guest_table.scale)
    assert by_slope.features == by_scale.features and by_slope.scale == by_scale.scale
    assert guest_table.base_points == Scorecard().base_points(0.1, 0.9, 0.05)
    unknown = part_points_table(h)  # networked fit: the host does not know the slope
    assert unknown.slope is None and unknown.scale == Scorecard().factor


def test_refresh_points_writes_only_other_points(tmp_path):
    _, h, _ = _parts()
    first = part_points_table(h, slope=0.9)
    assert refresh_points(tmp_path, "host1", first)  # nothing saved yet
    # the same points from the scale alone (what a host knows at --score): no rewrite
    assert refresh_points(tmp_path, "host1", part_points_table(h, scale=first.scale)) == []
    assert refresh_points(tmp_path, "host1", part_points_table(h, slope=1.3)) != []
    assert PointsTable.from_json((tmp_path / "host1_points.json").read_text()).slope == 1.3


def test_a_negative_calibration_slope_gives_no_table():
    g, _, _ = _parts(slope=-0.5)
    with pytest.raises(ConfigError, match="slope must be finite and > 0"):
        part_points_table(g)


def test_unstandardised_part_with_score_bins_loads():
    g, h, _ = _parts(standardize=False)
    assert GuestLogisticRegression.from_part(g).preprocessor_ is None
    assert HostLogisticRegression.from_part(h).preprocessor_ is None
    assert part_score_bins(h).names == ("a", "b")
