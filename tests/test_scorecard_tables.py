"""Deployable points tables: integer points, base row, open-ended bins, CSV/JSON that reproduce the score.

The models are fitted with scikit-learn on each party's standardised (or WOE,
then standardised) columns, exactly the ``z`` the vfl estimators use, and the
scores read back from the exported files are computed by a few lines of pandas
written here (interval lookup), not by ``vfl``'s own bin lookup.
"""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from vfl.binning.woe import WoeEncoder
from vfl.exceptions import ConfigError
from vfl.preprocess import Standardizer
from vfl.scorecard import (
    FeaturePoints,
    PointsTable,
    ScoreBins,
    Scorecard,
    approximation_gap,
    continuous_points,
    round_points,
)
from vfl.synthetic import make_two_banks

from .scorecard_lookup import csv_table_score

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GUEST_CSV = DATA / "default_credit_hetero_guest.csv"
HOST_CSV = DATA / "default_credit_hetero_host.csv"


# ------------------------------------------------------------------ helpers


def csv_score(csv_text: str, rows: pd.DataFrame) -> np.ndarray:
    """Score ``rows`` from an exported points CSV alone (independent of vfl's lookup)."""
    return csv_table_score(pd.read_csv(io.StringIO(csv_text)), rows)


def half_away(x: np.ndarray) -> np.ndarray:
    """The stated rounding rule, written independently."""
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


class Party:
    """One party's fitted pieces: raw rows, optional WOE, preprocessing, weights."""

    def __init__(self, frame: pd.DataFrame, woe: WoeEncoder | None):
        self.frame = frame
        self.names = list(frame.columns)
        self.X = frame.to_numpy(dtype=float)
        self.woe = woe
        enc = woe.transform(self.X) if woe is not None else self.X
        self.pre = Standardizer.fit(enc)
        self.Z = self.pre.transform(enc)
        self.coef = np.zeros(len(self.names))

    def z_of(self, X: np.ndarray) -> np.ndarray:
        enc = self.woe.transform(X) if self.woe is not None else X
        return self.pre.transform(enc)

    def bins(self, max_bins: int = 10) -> ScoreBins:
        return ScoreBins.fit(self.names, self.X, self.pre, self.woe, max_bins=max_bins)


def fit_model(guest: Party, host: Party, y: np.ndarray) -> float:
    """Joint LR on the pooled z (what the federated run fits); sets coefs, returns intercept."""
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(np.hstack([guest.Z, host.Z]), y)
    k = guest.Z.shape[1]
    guest.coef, host.coef = lr.coef_[0, :k].copy(), lr.coef_[0, k:].copy()
    return float(lr.intercept_[0])


def clear_points(sc: Scorecard, guest: Party, host: Party, b: float, Xg: np.ndarray,
                 Xh: np.ndarray, slope: float = 1.0, c: float = 0.0) -> np.ndarray:
    """The model's continuous score of rows, written from the scaling formula."""
    logit = b + guest.z_of(Xg) @ guest.coef + host.z_of(Xh) @ host.coef
    return sc.offset - sc.factor * (slope * logit + c)


@pytest.fixture(scope="module")
def credit() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    if not (GUEST_CSV.exists() and HOST_CSV.exists()):
        pytest.skip(f"the shared credit data set is absent ({DATA}); these tests need "
                    "default_credit_hetero_{guest,host}.csv")
    g = pd.read_csv(GUEST_CSV)
    h = pd.read_csv(HOST_CSV).set_index("id").loc[g["id"]].reset_index()
    y = g["y"].to_numpy()
    return g.drop(columns=["id", "y"]), h.drop(columns=["id"]), y


@pytest.fixture(scope="module")
def banks() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Synthetic two-bank data with missing values (savings_balance, and injected ones)."""
    g, h = make_two_banks(4000, overlap=1.0, seed=3)
    h = h.set_index("customer_id").loc[g["customer_id"]].reset_index()
    y = g["default"].to_numpy()
    gX = g.drop(columns=["customer_id", "default"])
    hX = h.drop(columns=["customer_id"])
    rng = np.random.default_rng(5)
    gX = gX.mask(rng.random(gX.shape) < 0.03)
    assert hX.isna().any().any() and gX.isna().any().any()
    return gX, hX, y


def _scored_rows(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rows to score: the training rows, plus rows with NaNs and values beyond the training range."""
    rng = np.random.default_rng(seed)
    extra = frame.sample(500, random_state=seed).reset_index(drop=True)
    span = (frame.max() - frame.min()).to_numpy()
    out = extra.to_numpy(dtype=float)
    far = rng.random(out.shape) < 0.1
    out = np.where(far, np.where(rng.random(out.shape) < 0.5, frame.min().to_numpy() - 3 * span,
                                 frame.max().to_numpy() + 3 * span), out)
    out[rng.random(out.shape) < 0.1] = np.nan
    return pd.concat([frame, pd.DataFrame(out, columns=frame.columns)], ignore_index=True)


# ------------------------------------------------------------------ rounding


def test_round_half_away_from_zero():
    got = round_points([2.5, -2.5, 0.5, -0.5, 1.4999999999999998, 0.49999999999999994, -0.0, 7.0])
    assert got.tolist() == [3, -3, 1, -1, 1, 0, 0, 7]
    assert got.dtype == np.int64
    with pytest.raises(ConfigError):
        round_points([np.nan])
    sc = Scorecard(600, 50, 20)
    assert sc.base_points(0.0) == half_away(np.array([sc.offset]))[0]


# ------------------------------------------------------------------ (a) CSV reproduces the score


@pytest.mark.parametrize("use_woe", [False, True], ids=["raw", "woe"])
def test_credit_csv_reproduces_every_row(credit, use_woe):
    gX, hX, y = credit
    guest = Party(gX, WoeEncoder.fit(gX.to_numpy(float), y, 8) if use_woe else None)
    host = Party(hX, WoeEncoder.fit(hX.to_numpy(float), y, 8) if use_woe else None)
    b = fit_model(guest, host, y)
    sc = Scorecard(600, 50, 20)
    # what each party keeps in its model part, read back from JSON at predict time
    g_bins = ScoreBins.from_dict(json.loads(json.dumps(guest.bins().to_dict())))
    h_bins = ScoreBins.from_dict(json.loads(json.dumps(host.bins().to_dict())))
    assert g_bins.exact is use_woe
    g_tab = sc.guest_table(g_bins, guest.coef, b, party="bank_a")
    h_tab = sc.host_table(h_bins, host.coef, party="bank_b")
    assert g_tab.base_points is not None and h_tab.base_points is None
    g_rows, h_rows = _scored_rows(gX, 1), _scored_rows(hX, 1)
    total = g_tab.score(g_rows) + h_tab.score(h_rows)
    from_csv = csv_score(g_tab.to_csv(), g_rows) + csv_score(h_tab.to_csv(), h_rows)
    np.testing.assert_array_equal(from_csv, total)
    # and from the JSON a decision engine loads
    np.testing.assert_array_equal(PointsTable.from_json(g_tab.to_json()).score(g_rows)
                                  + PointsTable.from_json(h_tab.to_json()).score(h_rows), total)
    # the table is the model: close to its continuous score on every row
    clear = clear_points(sc, guest, host, b, g_rows.to_numpy(float), h_rows.to_numpy(float))
    gap = np.abs(total - clear)
    if use_woe:
        assert gap.max() <= 0.5 * (len(guest.names) + len(host.names) + 1) + 1e-9
    else:
        assert np.median(gap) < 0.25 * sc.pdo


def test_synthetic_with_missing_values_csv_and_missing_rows(banks):
    gX, hX, y = banks
    guest, host = Party(gX, None), Party(hX, None)
    b = fit_model(guest, host, y)
    sc = Scorecard(500, 20, 40)
    g_tab = sc.guest_table(guest.bins(), guest.coef, b, party="a")
    h_tab = sc.host_table(host.bins(), host.coef, party="b")
    g_rows, h_rows = _scored_rows(gX, 2), _scored_rows(hX, 2)
    np.testing.assert_array_equal(csv_score(g_tab.to_csv(), g_rows), g_tab.score(g_rows))
    np.testing.assert_array_equal(csv_score(h_tab.to_csv(), h_rows), h_tab.score(h_rows))
    # a missing value scores what the model does with it (the preprocessing's imputation)
    for party, tab in ((guest, g_tab), (host, h_tab)):
        probe = np.full((1, len(party.names)), np.nan)
        z_nan = party.pre.transform(probe)[0]
        expect = half_away(-sc.factor * party.coef * z_nan)
        assert [f.missing_points for f in tab.features] == expect.tolist()


def test_discrete_columns_are_exact_up_to_rounding():
    rng = np.random.default_rng(11)
    n = 3000
    frame = pd.DataFrame({"late": rng.poisson(1.0, n).clip(0, 6).astype(float),
                          "cards": rng.integers(1, 5, n).astype(float),
                          "flag": rng.integers(0, 2, n).astype(float)})
    frame.loc[rng.random(n) < 0.05, "late"] = np.nan
    y = (rng.random(n) < 1 / (1 + np.exp(-(frame["late"].fillna(1) - 1.5)))).astype(int)
    party = Party(frame, None)
    lr = LogisticRegression(max_iter=1000).fit(party.Z, y)
    party.coef = lr.coef_[0]
    sc = Scorecard()
    tab = sc.guest_table(party.bins(max_bins=10), party.coef, float(lr.intercept_[0]))
    cont = continuous_points(frame.to_numpy(float), party.coef, party.pre, scale=sc.scale(),
                             base=sc.base_value(float(lr.intercept_[0])))
    clear = sc.offset - sc.factor * (float(lr.intercept_[0]) + party.Z @ party.coef)
    np.testing.assert_allclose(cont, clear, atol=1e-9)
    gap = approximation_gap(tab, frame, cont)
    assert gap.rows == n and gap.rounding_bound == 2.0
    assert gap.max_abs <= gap.rounding_bound + 1e-9
    assert gap.mean_abs <= gap.max_abs and gap.p99_abs <= gap.max_abs
    assert gap.to_dict()["rows"] == n


# ------------------------------------------------------------------ (b) WOE: table = model up to rounding


def test_woe_table_is_the_rounded_model_with_calibration(credit):
    gX, hX, y = credit
    guest = Party(gX, WoeEncoder.fit(gX.to_numpy(float), y, 6))
    host = Party(hX, WoeEncoder.fit(hX.to_numpy(float), y, 6))
    b = fit_model(guest, host, y)
    sc, slope, c = Scorecard(650, 30, 25), 0.9, -0.15
    g_tab = sc.guest_table(guest.bins(), guest.coef, b, slope=slope, calibration_intercept=c)
    h_tab = sc.host_table(host.bins(), host.coef, slope=slope)
    Xg, Xh = gX.to_numpy(float), hX.to_numpy(float)
    total = g_tab.score(Xg) + h_tab.score(Xh)
    clear = clear_points(sc, guest, host, b, Xg, Xh, slope, c)
    bound = 0.5 * (len(guest.names) + len(host.names) + 1)
    assert np.abs(total - clear).max() <= bound + 1e-9
    assert np.abs(total - half_away(clear)).max() <= bound + 0.5 + 1e-9
    # exactly: the sum of each feature's rounded points on the model's own z, plus the base
    scale = sc.factor * slope
    per_feature = (half_away(-scale * guest.coef * guest.z_of(Xg)).sum(axis=1)
                   + half_away(-scale * host.coef * host.z_of(Xh)).sum(axis=1))
    base = half_away(np.array([sc.offset - sc.factor * (slope * b + c)]))[0]
    np.testing.assert_array_equal(total, per_feature + base)
    # each party's gap as a report would state it
    g_gap = approximation_gap(g_tab, Xg, continuous_points(
        Xg, guest.coef, guest.pre, woe=guest.woe, scale=sc.scale(slope),
        base=sc.base_value(b, slope, c)))
    assert g_gap.max_abs <= g_gap.rounding_bound + 1e-9


# ------------------------------------------------------------------ (c) open ends


@pytest.mark.parametrize("use_woe", [False, True], ids=["raw", "woe"])
def test_values_beyond_training_range_use_first_and_last_bins(banks, use_woe):
    gX, _, y = banks
    X = gX.to_numpy(float)
    woe = WoeEncoder.fit(X, y, 5) if use_woe else None
    party = Party(gX, woe)
    party.coef = np.linspace(-1, 1, len(party.names))
    bins = party.bins()
    lo, hi = np.nanmin(X, axis=0), np.nanmax(X, axis=0)
    span = hi - lo + 1.0
    probe = np.vstack([lo - 1e6 * span, lo, hi, hi + 1e6 * span,
                       np.full(len(lo), -np.inf), np.full(len(lo), np.inf)])
    idx = bins.bin_index(probe)
    last = np.array([len(e) for e in bins.edges])
    assert (idx[[0, 1, 4]] == 0).all()
    assert (idx[[2, 3, 5]] == last).all()
    tab = bins.points(party.coef, 10.0)
    pts = tab.points_per_feature(probe)
    first_pts = [f.points[0] for f in tab.features]
    last_pts = [f.points[-1] for f in tab.features]
    assert pts[0].tolist() == first_pts == pts[1].tolist() == pts[4].tolist()
    assert pts[3].tolist() == last_pts == pts[2].tolist() == pts[5].tolist()
    frame = tab.to_frame()
    bins_rows = frame[frame["kind"] == "bin"]
    assert bins_rows.groupby("feature")["lower"].first().eq(-np.inf).all()
    assert bins_rows.groupby("feature")["upper"].last().eq(np.inf).all()
    doc = json.loads(tab.to_json())
    for f in doc["features"]:
        assert f["bins"][0]["lower"] is None and f["bins"][-1]["upper"] is None
        assert all(bn["lower"] is not None for bn in f["bins"][1:])


def test_woe_bins_are_the_encoders_bins(credit):
    gX, _, y = credit
    X = gX.to_numpy(float)
    woe = WoeEncoder.fit(X, y, 7)
    party = Party(gX, woe)
    bins = party.bins()
    assert [list(e) for e in bins.edges] == [c.tolist() for c in woe.cuts]
    # a value exactly at a cut point falls in the same bin as in the encoder
    for j, c in enumerate(woe.cuts):
        col = np.full((len(c), X.shape[1]), np.nan)
        col[:, j] = c
        enc = woe.transform(col)[:, j]
        np.testing.assert_array_equal(enc, woe.woe[j][bins.bin_index(col)[:, j]])


# ------------------------------------------------------------------ (d) malformed files are refused


def _table() -> PointsTable:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    X[:10, 1] = np.nan
    pre = Standardizer.fit(X)
    return Scorecard().guest_table(ScoreBins.fit(["age", "income"], X, pre, max_bins=4),
                                   [0.4, -0.7], -2.0, party="bank_a")


def _set(doc: dict, path: list, value):
    d = copy.deepcopy(doc)
    node = d
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


@pytest.mark.parametrize(("path", "value", "field"), [
    (["version"], 2, "scorecard.version"),
    (["format"], "other", "scorecard.format"),
    (["rounding"], "half to even", "scorecard.rounding"),
    (["interval"], "lower <= x < upper", "scorecard.interval"),
    (["base_points"], "512", "scorecard.base_points"),
    (["base_points"], 512.5, "scorecard.base_points"),
    (["base_points"], 10**12, "scorecard.base_points"),
    (["party"], 7, "scorecard.party"),
    (["scorecard", "pdo"], -20, "scorecard.scorecard"),
    (["scorecard", "base_odds"], None, "scorecard.scorecard"),
    (["scorecard", "scale"], "big", "scorecard.scorecard.scale"),
    (["scorecard", "extra"], 1, "scorecard.scorecard"),
    (["features"], [], "scorecard.features"),
    (["features", 0, "name"], "", "scorecard.features[0].name"),
    (["features", 1, "name"], "age", "scorecard"),
    (["features", 0, "bins", 1, "points"], 1.5, "scorecard.features[0].bins[1].points"),
    (["features", 0, "bins", 1, "points"], True, "scorecard.features[0].bins[1].points"),
    (["features", 0, "bins", 0, "lower"], -5.0, "open below"),
    (["features", 0, "bins", -1, "upper"], 99.0, "open above"),
    (["features", 0, "bins", 1, "lower"], 123.0, "lower must equal"),
    (["features", 0, "bins", 1, "upper"], "x", "scorecard.features[0].bins[1].upper"),
    (["features", 0, "missing_points"], KeyError, "scorecard.features[0]"),
    (["features", 1, "bins"], [], "scorecard.features[1].bins"),
])
def test_points_json_refuses_malformed(path, value, field):
    doc = json.loads(_table().to_json())
    with pytest.raises(ConfigError, match=re.escape(field)):
        PointsTable.from_dict(_set(doc, path, value))
    with pytest.raises(ConfigError, match=re.escape(field)):
        PointsTable.from_json(json.dumps(_set(doc, path, value)))


def test_points_json_refuses_bad_text_and_unsorted_bins():
    text = _table().to_json()
    nan_text = re.sub(r'"missing_points": -?\d+', '"missing_points": NaN', text, count=1)
    assert nan_text != text
    for bad in (nan_text, "[1, 2", "null"):
        with pytest.raises(ConfigError):
            PointsTable.from_json(bad)
    doc = json.loads(text)
    bins = doc["features"][0]["bins"]
    bins[1]["upper"], bins[2]["lower"] = bins[0]["upper"], bins[0]["upper"]
    with pytest.raises(ConfigError, match="strictly increasing"):
        PointsTable.from_dict(doc)
    doc = json.loads(text)
    doc["features"] = doc["features"] * 501
    with pytest.raises(ConfigError, match=re.escape("scorecard.features")):
        PointsTable.from_dict(doc)


def _bins_doc() -> dict:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 2))
    return ScoreBins.fit(["a", "b"], X, Standardizer.fit(X), max_bins=5).to_dict()


@pytest.mark.parametrize(("path", "value", "field"), [
    (["kind"], "woe", "score_bins.kind"),
    (["version"], "1", "score_bins.version"),
    (["source"], "magic", "score_bins.source"),
    (["interval"], "x < upper", "score_bins.interval"),
    (["features"], "a,b", "score_bins.features"),
    (["features", 0, "edges"], [0.5, 0.1], "score_bins.features[0].edges"),
    (["features", 0, "edges"], [0.1, 0.1], "score_bins.features[0].edges"),
    (["features", 0, "edges"], [0.0] * 300, "score_bins.features[0].edges"),
    (["features", 1, "edges", 0], float("inf"), "score_bins.features[1].edges[0]"),
    (["features", 1, "z"], [0.0], "score_bins.features[1].z"),
    (["features", 1, "z", 0], None, "score_bins.features[1].z[0]"),
    (["features", 1, "z_missing"], float("nan"), "score_bins.features[1].z_missing"),
    (["features", 1, "name"], "a", "score_bins.features[1].name"),
    (["features", 0, "colour"], "red", "score_bins.features[0]"),
])
def test_score_bins_from_dict_refuses_malformed(path, value, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        ScoreBins.from_dict(_set(_bins_doc(), path, value))


def test_csv_reader_refuses_malformed():
    text = _table().to_csv()
    lines = text.splitlines()
    assert lines[0] == "kind,feature,bin,lower,upper,points"
    cases = {
        "column points": [*lines[:2], re.sub(r",-?\d+$", ",1.5", lines[2]), *lines[3:]],
        "open below": [*lines[:2], lines[2].replace("-inf", "0.0"), *lines[3:]],
        "column kind": [*lines[:2], "bins" + lines[2][3:], *lines[3:]],
        "missing row": lines[:-1],
        "base row must come first": [lines[0], *lines[2:4], lines[1], *lines[4:]],
    }
    for message, bad in cases.items():
        with pytest.raises(ConfigError, match=message):
            PointsTable.from_csv("\n".join(bad) + "\n")


# ------------------------------------------------------------------ (e) points are integers


def test_points_are_integers_in_csv_and_json(banks):
    gX, hX, y = banks
    guest, host = Party(gX, None), Party(hX, None)
    b = fit_model(guest, host, y)
    tab = Scorecard().guest_table(guest.bins(), guest.coef, b)
    text = tab.to_csv()
    rows = list(pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)["points"])
    assert rows and all(re.fullmatch(r"-?\d+", p) for p in rows)
    assert pd.read_csv(io.StringIO(text))["points"].dtype == np.int64
    assert tab.to_frame()["points"].dtype == np.int64
    doc = json.loads(tab.to_json())
    assert type(doc["base_points"]) is int
    for f in doc["features"]:
        assert type(f["missing_points"]) is int
        assert all(type(bn["points"]) is int for bn in f["bins"])
    assert all(type(p) is int for f in tab.features for p in f.points)
    assert tab.score(gX).dtype == np.int64


# ------------------------------------------------------------------ (f) round trips


_names = st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                          min_size=1, max_size=12).filter(lambda s: s.strip() == s and s != ""),
                  min_size=1, max_size=5, unique=True)
_cut = st.floats(allow_nan=False, allow_infinity=False, width=64)
_pts = st.integers(-(10**9), 10**9)


@st.composite
def tables(draw) -> PointsTable:
    feats = []
    for name in draw(_names):
        cuts = sorted(set(draw(st.lists(_cut, max_size=6))))
        cuts = [c + 0.0 for c in cuts]  # -0.0 and 0.0 are one cut
        cuts = sorted(set(cuts))
        pts = draw(st.lists(_pts, min_size=len(cuts) + 1, max_size=len(cuts) + 1))
        feats.append(FeaturePoints(name, tuple(cuts), tuple(pts), draw(_pts)))
    sc = draw(st.none() | st.builds(Scorecard, st.floats(-1e4, 1e4), st.floats(0.01, 1e3),
                                    st.floats(0.1, 200)))
    slope = draw(st.none() | st.floats(0.05, 5))
    scale = sc.factor * slope if (sc is not None and slope is not None) else draw(
        st.none() | st.floats(0.01, 1e3))
    return PointsTable(tuple(feats), base_points=draw(st.none() | _pts),
                       party=draw(st.text(max_size=10)), scale=scale, scorecard=sc, slope=slope)


@settings(max_examples=150, deadline=None)
@given(tables())
def test_json_and_csv_round_trip(tab):
    back = PointsTable.from_json(tab.to_json())
    assert back == tab
    csv_back = PointsTable.from_csv(tab.to_csv(), party=tab.party)
    assert csv_back == PointsTable(tab.features, base_points=tab.base_points, party=tab.party)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.floats(0.0, 0.5))
def test_score_bins_round_trip_and_table_scores(seed, max_bins, missing_share):
    rng = np.random.default_rng(seed)
    n = 60
    X = np.column_stack([rng.normal(size=n) * 10 ** rng.uniform(-3, 3),
                         rng.integers(0, 3, n).astype(float), np.full(n, 4.2)])
    X[rng.random(n) < missing_share, 0] = np.nan
    X[0, 0] = 1.0  # at least one value
    pre = Standardizer.fit(X)
    bins = ScoreBins.fit(["x", "k", "const"], X, pre, max_bins=max_bins)
    assert all(len(e) + 1 <= max_bins for e in bins.edges)
    assert bins.edges[2] == ()  # a constant column is one bin
    back = ScoreBins.from_dict(json.loads(json.dumps(bins.to_dict())))
    assert back == bins
    tab = back.points(rng.normal(size=3), 28.85, base_points=600)
    frame = pd.DataFrame(X, columns=["x", "k", "const"])
    np.testing.assert_array_equal(csv_score(tab.to_csv(), frame), tab.score(X))
