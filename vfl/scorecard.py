"""Scorecard points from the joint model, each party from its own weights.

Convention (the one credit-risk teams use): the score is linear in the log
odds of *good*, ``score = offset + factor * ln(odds_good)``, with
``factor = pdo / ln 2`` (points to double the odds) and
``offset = base_score - factor * ln(base_odds)`` (``base_score`` points at
odds ``base_odds``:1). The model gives ``ln(odds_good) = -(b + sum_k x_k . w_k)``,
so the total splits exactly into per-party points:

* guest: ``offset - factor * (b + x_g . w_g)``
* host k: ``-factor * x_k . w_k``

With a calibration of the whole logit, ``logit' = slope * logit + c``, the
same split holds with ``scale = factor * slope`` in place of ``factor`` and
the guest's constant ``offset - factor * (slope * b + c)``.

Each party's points split further per feature (``-scale * w_j * z_j`` on
the party's standardised column ``z_j``, which depends on raw column ``j``
only), so every party can publish a deployable **points table**:

* :class:`ScoreBins` is a party's binning of its own raw columns, fitted on
  its aligned training rows and saved in its model part. Bins are
  right-closed and open-ended: ``(-inf, c1], (c1, c2], ..., (ck, +inf)``,
  i.e. bin ``i`` holds ``lower < x <= upper`` (the side
  :func:`vfl.binning.core.assign_bins` uses, so a party trained on WOE
  columns gets exactly its WOE bins); a missing value (NaN) has a bin of its
  own. Each bin carries the standardised value ``z`` its points are taken
  at: the exact ``z`` of the bin's WOE value for WOE columns (the table is
  then the model, up to rounding), the mean ``z`` of the training rows in
  the bin for raw columns (a binned approximation; :func:`approximation_gap`
  measures it).
* :class:`PointsTable` holds one party's **integer** points per bin (and the
  guest's base points). Rounding rule, used everywhere: round half away from
  zero (:func:`round_points`), applied once per bin and once to the base.
  A customer's score is the guest table's score plus every host table's
  score, all integers; with WOE columns it differs from the unrounded model
  score by at most ``0.5 * (n_features + 1)`` points.

Points tables stay with the party that owns the features; only per-customer
party totals (integers) reach the guest, which adds them.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from vfl.binning.core import assign_bins
from vfl.exceptions import ConfigError, DataError
from vfl.types import FloatArray, IntArray

if TYPE_CHECKING:  # pragma: no cover
    from vfl.binning.woe import WoeEncoder
    from vfl.data import PartyTable
    from vfl.lr.estimator import GuestLogisticRegression, HostLogisticRegression
    from vfl.model import ModelPart

__all__ = [
    "Scorecard",
    "ScoreBins",
    "FeaturePoints",
    "PointsTable",
    "ScoreGap",
    "round_points",
    "continuous_points",
    "approximation_gap",
    "points_table",
    "SCORE_BINS_KEY",
    "part_score_bins",
    "part_calibration",
    "part_points_table",
]

#: Bin side convention, stated in every saved file: bin holds ``lower < x <= upper``.
INTERVAL = "lower < x <= upper"
#: Rounding rule, stated in every saved file.
ROUNDING = "half away from zero"
BINS_KIND = "vfl.score-bins"
TABLE_FORMAT = "vfl.scorecard"
VERSION = 1
#: Bounds on what a file may hold (a file is untrusted input).
MAX_FEATURES = 1000
MAX_BINS = 256
MAX_NAME_CHARS = 256
MAX_ABS_POINTS = 10**9
MAX_JSON_CHARS = 64 * 1024 * 1024
_SOURCES = ("woe", "quantile")
CSV_COLUMNS = ["kind", "feature", "bin", "lower", "upper", "points"]


class _Preprocessor(Protocol):
    def transform(self, X: FloatArray) -> FloatArray: ...  # pragma: no cover


# ---------------------------------------------------------------- rounding


def round_points(values: npt.ArrayLike) -> IntArray:
    """Round half away from zero to int64 (``2.5 -> 3``, ``-2.5 -> -3``, ``2.4999 -> 2``).

    Exact for every float: the fraction ``a - floor(a)`` of ``a = |x|`` is
    computed without rounding error. Python's ``round`` (half to even) is
    *not* used, so a decision engine can reproduce points with the rule
    stated in the JSON.

    Raises
    ------
    ConfigError
        For non-finite values or values beyond ``MAX_ABS_POINTS``.
    """
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)) or np.any(np.abs(x) > MAX_ABS_POINTS):
        raise ConfigError(f"Points must be finite and at most {MAX_ABS_POINTS:g} in magnitude; "
                          "check the weights and the scorecard scale.")
    a = np.abs(x)
    f = np.floor(a)
    r = f + (a - f >= 0.5)
    out: IntArray = (np.sign(x) * r).astype(np.int64)
    return out


def _round_one(value: float) -> int:
    return int(round_points(np.array([value]))[0])


# ---------------------------------------------------------------- scaling


@dataclass(frozen=True)
class Scorecard:
    """Scaling of log-odds to points.

    Parameters
    ----------
    base_score : float
        Points at ``base_odds``.
    base_odds : float
        Good:bad odds that score ``base_score`` (e.g. 50 for 50:1).
    pdo : float
        Points to double the odds.
    """

    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0

    def __post_init__(self) -> None:
        if not (_finite(self.pdo) and _finite(self.base_odds) and _finite(self.base_score)
                and self.pdo > 0 and self.base_odds > 0):
            raise ConfigError(
                f"Scorecard needs finite values with pdo > 0 and base_odds > 0; got "
                f"pdo={self.pdo}, base_odds={self.base_odds}, base_score={self.base_score}."
            )

    @property
    def factor(self) -> float:
        """Points per unit of log odds."""
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        """Points at log odds 0."""
        return self.base_score - self.factor * math.log(self.base_odds)

    def scale(self, slope: float = 1.0) -> float:
        """Points per unit of a party's partial logit: ``factor * slope``.

        This is the one number the guest sends the hosts so they can build
        their tables (``slope``: a calibration slope applied to the whole logit).
        """
        s = self.factor * float(slope)
        if not (_finite(s) and s > 0):
            raise ConfigError(f"The calibration slope must be finite and > 0; got {slope}.")
        return s

    def base_value(self, intercept: float, slope: float = 1.0,
                   calibration_intercept: float = 0.0) -> float:
        """The guest's constant points, unrounded: ``offset - factor*(slope*b + c)``."""
        v = self.offset - self.factor * (float(slope) * float(intercept)
                                         + float(calibration_intercept))
        if not _finite(v):
            raise ConfigError("The base points are not finite; check the intercept and calibration.")
        return v

    def base_points(self, intercept: float, slope: float = 1.0,
                    calibration_intercept: float = 0.0) -> int:
        """The guest's base-points row: :meth:`base_value` rounded half away from zero."""
        return _round_one(self.base_value(intercept, slope, calibration_intercept))

    def guest_points(self, guest_partial_score: FloatArray) -> FloatArray:
        """The guest's points from its own partial score ``b + x_g . w_g``."""
        return self.offset - self.factor * np.asarray(guest_partial_score, dtype=np.float64)

    def host_points(self, host_partial_score: FloatArray) -> FloatArray:
        """A host's points from its own partial score ``x_h . w_h``."""
        return -self.factor * np.asarray(host_partial_score, dtype=np.float64)

    def from_probability(self, proba: FloatArray) -> FloatArray:
        """Score of a default probability (the same scale, for checks and reports)."""
        p = np.clip(np.asarray(proba, dtype=np.float64), 1e-15, 1 - 1e-15)
        return self.offset + self.factor * np.log((1 - p) / p)

    def decision_score(self, proba: FloatArray) -> IntArray:
        """The integer score of a probability: :meth:`from_probability` rounded half away
        from zero. The probability is primary: ``vfl serve`` and ``vfl predict --score``
        report this score, so that score and probability always agree through the
        points-to-odds mapping (issue 25); the points tables' total (``points``) explains
        it, within the rounding and binning gap."""
        return round_points(self.from_probability(proba))

    def add_points(self, scores: pd.DataFrame) -> pd.DataFrame:
        """``scores`` (with a ``probability`` column) plus ``score``: points, to 0.01.

        The sum of every party's points equals the score of the joint
        probability, so the guest gets the total without any party's table.
        (The deployable integer score is the sum of the parties'
        :meth:`PointsTable.score`; see the module docstring.)
        """
        out = scores.copy()
        out["score"] = self.from_probability(out["probability"].to_numpy()).round(2)
        return out

    def guest_table(self, bins: ScoreBins, coef: npt.ArrayLike, intercept: float, *,
                    party: str = "", slope: float = 1.0,
                    calibration_intercept: float = 0.0) -> PointsTable:
        """The guest's points table: its bins' points plus the base-points row."""
        return bins.points(coef, self.scale(slope), party=party,
                           base_points=self.base_points(intercept, slope, calibration_intercept),
                           scorecard=self, slope=float(slope))

    def host_table(self, bins: ScoreBins, coef: npt.ArrayLike, *, party: str = "",
                   slope: float = 1.0) -> PointsTable:
        """A host's points table (no base row)."""
        return bins.points(coef, self.scale(slope), party=party, scorecard=self,
                           slope=float(slope))


# ---------------------------------------------------------------- binning


def _column_z(pre: _Preprocessor | None, n_features: int, j: int, values: FloatArray
              ) -> FloatArray:
    """``z`` of ``values`` placed in column ``j`` (the preprocessing is per column)."""
    M = np.full((len(values), n_features), np.nan)
    M[:, j] = values
    Z = pre.transform(M) if pre is not None else np.nan_to_num(M)
    return np.asarray(Z[:, j], dtype=np.float64)


def _quantile_edges(v: FloatArray, max_bins: int) -> FloatArray:
    """Inner cut points at observed values, so no bin of the training rows is empty.

    A column with at most ``max_bins`` distinct values gets one bin per value
    (its points are then exact). Otherwise ``inverted_cdf`` quantiles, which
    are data values: a right-closed bin ``(c_{i-1}, c_i]`` holds its own cut
    ``c_i``, and a cut at the maximum (which would leave the last bin empty)
    is dropped.
    """
    distinct = np.unique(v)
    if len(distinct) <= max_bins:
        return np.asarray(distinct[:-1], dtype=np.float64)
    qs = np.linspace(0.0, 1.0, max_bins + 1)[1:-1]
    cuts = np.unique(np.quantile(v, qs, method="inverted_cdf"))
    return np.asarray(cuts[cuts < v.max()], dtype=np.float64)


@dataclass(frozen=True)
class ScoreBins:
    """A party's binning of its own raw columns for scoring (saved in its model part).

    Bins of feature ``j`` are ``(-inf, e_1], (e_1, e_2], ..., (e_k, +inf)``
    for ``edges[j] = (e_1, ..., e_k)`` (a bin holds ``lower < x <= upper``),
    then one bin for missing values. Nothing here depends on the weights or
    the scaling, so the points can be recomputed for any pdo, base score or
    calibration without the training rows.

    Attributes
    ----------
    names : tuple of str
        The party's features, in model order.
    edges : tuple of tuple of float
        Strictly increasing inner cut points per feature (at most 255).
    z : tuple of tuple of float
        Per feature, the standardised value of each bin (``len(edges[j]) + 1``).
    z_missing : tuple of float
        Per feature, the standardised value the preprocessing gives a missing value.
    source : {"woe", "quantile"}
        ``"woe"``: the model's own WOE bins (``z`` exact); ``"quantile"``:
        quantile bins of raw columns (``z`` = mean of the training rows in the bin).
    """

    names: tuple[str, ...]
    edges: tuple[tuple[float, ...], ...]
    z: tuple[tuple[float, ...], ...]
    z_missing: tuple[float, ...]
    source: str = "quantile"

    def __post_init__(self) -> None:
        _validate_bins(self.names, self.edges, self.z, self.z_missing, self.source, "ScoreBins")

    @property
    def n_features(self) -> int:
        """Number of features."""
        return len(self.names)

    @property
    def exact(self) -> bool:
        """Whether the bins' ``z`` are the model's own values (WOE columns)."""
        return self.source == "woe"

    @classmethod
    def fit(cls, names: Sequence[str], X_raw: npt.ArrayLike, preprocessor: _Preprocessor | None,
            woe: WoeEncoder | None = None, max_bins: int = 10) -> ScoreBins:
        """Bin a party's aligned training rows.

        Parameters
        ----------
        names : sequence of str
            Feature names, in column order.
        X_raw : array of shape (n_rows, n_features)
            Raw training rows (NaN = missing), before any WOE encoding.
        preprocessor : Standardizer or None
            The estimator's ``preprocessor_`` (None: the model used
            ``nan_to_num`` of its input, as the estimators do).
        woe : WoeEncoder or None
            The party's WOE encoding if it trained on WOE columns; its bins
            are then used exactly and ``max_bins`` is ignored.
        max_bins : int
            At most this many quantile bins per raw feature (1..256).

        Raises
        ------
        DataError
            For a malformed table (shape, infinite values, a column without values).
        ConfigError
            For ``max_bins`` out of range or a WOE encoding that does not fit.
        """
        X = np.asarray(X_raw, dtype=np.float64)
        names = [str(n) for n in names]
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] != len(names):
            raise DataError(f"ScoreBins.fit expects (n_rows >= 1, {len(names)}) raw rows; "
                            f"got shape {X.shape}.")
        if np.isinf(X).any():
            raise DataError("ScoreBins.fit: the training rows contain infinite values.")
        if isinstance(max_bins, bool) or not isinstance(max_bins, int | np.integer) \
                or not 1 <= int(max_bins) <= MAX_BINS:
            raise ConfigError(f"max_bins must be an integer in [1, {MAX_BINS}]; got {max_bins!r}.")
        n = len(names)
        edges, zs, zm = [], [], []
        if woe is not None:
            if len(woe.cuts) != n or len(woe.woe) != n:
                raise ConfigError(f"The WOE encoding has {len(woe.cuts)} columns; expected {n}.")
            for j in range(n):
                c = np.asarray(woe.cuts[j], dtype=np.float64)
                w = np.asarray(woe.woe[j], dtype=np.float64)
                if w.shape != (len(c) + 2,):
                    raise ConfigError(f"WOE column {names[j]!r}: {len(c)} cuts need {len(c) + 2} "
                                      f"WOE values (bins + missing); got {w.size}.")
                zb = _column_z(preprocessor, n, j, w)
                edges.append(tuple(c.tolist()))
                zs.append(tuple(zb[:-1].tolist()))
                zm.append(float(zb[-1]))
            return cls(tuple(names), tuple(edges), tuple(zs), tuple(zm), "woe")
        Z = preprocessor.transform(X) if preprocessor is not None else np.nan_to_num(X)
        for j in range(n):
            x, zj = X[:, j], np.asarray(Z[:, j], dtype=np.float64)
            present = ~np.isnan(x)
            if not present.any():
                raise DataError(f"Feature {names[j]!r} has no values in the training rows.")
            c = _quantile_edges(x[present], int(max_bins))
            idx = assign_bins(x[present], c)
            zp, xp = zj[present], x[present]
            means: list[float] = []
            for b in range(len(c) + 1):
                m = idx == b
                # one observed value: take its own z, so discrete columns are exact
                means.append(float(zp[m][0]) if xp[m].min() == xp[m].max()
                             else float(zp[m].mean()))
            edges.append(tuple(c.tolist()))
            zs.append(tuple(means))
            zm.append(float(_column_z(preprocessor, n, j, np.array([np.nan]))[0]))
        return cls(tuple(names), tuple(edges), tuple(zs), tuple(zm), "quantile")

    def bin_index(self, X_raw: npt.ArrayLike) -> IntArray:
        """Bin of every value, shape ``(n_rows, n_features)``: 0..k_j, missing ``k_j + 1``."""
        return _bin_index(_raw_matrix(X_raw, self.names), self.edges)

    def points(self, coef: npt.ArrayLike, scale: float, *, party: str = "",
               base_points: int | None = None, scorecard: Scorecard | None = None,
               slope: float | None = None) -> PointsTable:
        """Integer points per bin: ``round_points(-scale * coef_j * z)``.

        Parameters
        ----------
        coef : array of shape (n_features,)
            The party's weights (on the standardised columns).
        scale : float
            ``factor * slope`` (:meth:`Scorecard.scale`), sent by the guest.
        party : str
        base_points : int or None
            The guest's base row (:meth:`Scorecard.base_points`); None for hosts.
        scorecard, slope :
            Recorded in the table for its readers (optional).
        """
        w = np.asarray(coef, dtype=np.float64).ravel()
        if w.shape != (self.n_features,) or not np.all(np.isfinite(w)):
            raise ConfigError(f"coef must hold {self.n_features} finite weights; got shape "
                              f"{w.shape}.")
        s = float(scale)
        if not (_finite(s) and s > 0):
            raise ConfigError(f"scale must be finite and > 0; got {scale}.")
        feats = []
        for j, name in enumerate(self.names):
            k = -s * float(w[j])
            pts = round_points(k * np.asarray(self.z[j], dtype=np.float64))
            miss = round_points(np.array([k * self.z_missing[j]]))[0]
            feats.append(FeaturePoints(name, self.edges[j], tuple(int(p) for p in pts), int(miss)))
        return PointsTable(tuple(feats), base_points=base_points, party=party, scale=s,
                           scorecard=scorecard, slope=slope)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (floats as Python floats, so ``json`` round-trips them exactly)."""
        return {"kind": BINS_KIND, "version": VERSION, "source": self.source,
                "interval": INTERVAL,
                "features": [{"name": n, "edges": list(e), "z": list(z), "z_missing": m}
                             for n, e, z, m in zip(self.names, self.edges, self.z,
                                                   self.z_missing, strict=True)]}

    @classmethod
    def from_dict(cls, data: Any) -> ScoreBins:
        """Inverse of :meth:`to_dict`; validates everything (it is read from a file).

        Raises
        ------
        ConfigError
            Naming the first bad field, e.g. ``score_bins.features[2].edges``.
        """
        where = "score_bins"
        d = _obj(data, where, {"kind", "version", "source", "interval", "features"})
        if d["kind"] != BINS_KIND:
            raise ConfigError(f"{where}.kind must be {BINS_KIND!r}; got {d['kind']!r}.")
        _version(d["version"], f"{where}.version")
        _interval(d["interval"], f"{where}.interval")
        if d["source"] not in _SOURCES:
            raise ConfigError(f"{where}.source must be one of {list(_SOURCES)}; "
                              f"got {d['source']!r}.")
        feats = _list(d["features"], f"{where}.features", 1, MAX_FEATURES)
        names: list[str] = []
        edges, zs, zm = [], [], []
        for i, f in enumerate(feats):
            fw = f"{where}.features[{i}]"
            fd = _obj(f, fw, {"name", "edges", "z", "z_missing"})
            name = _name(fd["name"], f"{fw}.name")
            if name in names:
                raise ConfigError(f"{fw}.name: duplicate feature {name!r}.")
            names.append(name)
            e = tuple(_number(v, f"{fw}.edges[{k}]") for k, v in
                      enumerate(_list(fd["edges"], f"{fw}.edges", 0, MAX_BINS - 1)))
            _validate_cuts(e, f"{fw}.edges")
            z = tuple(_number(v, f"{fw}.z[{k}]") for k, v in
                      enumerate(_list(fd["z"], f"{fw}.z", 1, MAX_BINS)))
            if len(z) != len(e) + 1:
                raise ConfigError(f"{fw}.z must hold {len(e) + 1} values (one per bin); "
                                  f"got {len(z)}.")
            edges.append(e)
            zs.append(z)
            zm.append(_number(fd["z_missing"], f"{fw}.z_missing"))
        return cls(tuple(names), tuple(edges), tuple(zs), tuple(zm), d["source"])


# ---------------------------------------------------------------- points tables


@dataclass(frozen=True)
class FeaturePoints:
    """One feature's integer points: bins ``(-inf, c1], ..., (ck, +inf)`` then missing."""

    name: str
    cuts: tuple[float, ...]
    points: tuple[int, ...]
    missing_points: int

    def bins(self) -> list[tuple[float, float]]:
        """``(lower, upper)`` per bin, with ``-inf``/``inf`` for the open ends."""
        e = (-math.inf, *self.cuts, math.inf)
        return [(e[i], e[i + 1]) for i in range(len(self.cuts) + 1)]


@dataclass(frozen=True)
class PointsTable:
    """One party's deployable scorecard: integer points per feature and bin.

    Attributes
    ----------
    features : tuple of FeaturePoints
    base_points : int or None
        The base-points row (guest only; hosts have None).
    party : str
    scale : float or None
        ``factor * slope`` the points were computed with.
    scorecard : Scorecard or None
        pdo, base score and base odds (None when only ``scale`` is known).
    slope : float or None
        The calibration slope (None when unknown).
    """

    features: tuple[FeaturePoints, ...]
    base_points: int | None = None
    party: str = ""
    scale: float | None = None
    scorecard: Scorecard | None = None
    slope: float | None = None

    def __post_init__(self) -> None:
        _validate_table(self)

    @property
    def names(self) -> list[str]:
        """Feature names, in table order."""
        return [f.name for f in self.features]

    def points_per_feature(self, X_raw: Any) -> IntArray:
        """Points of every value, shape ``(n_rows, n_features)`` (base not included)."""
        X = _raw_matrix(X_raw, self.names)
        idx = _bin_index(X, tuple(f.cuts for f in self.features))
        out = np.empty(idx.shape, dtype=np.int64)
        for j, f in enumerate(self.features):
            out[:, j] = np.asarray([*f.points, f.missing_points], dtype=np.int64)[idx[:, j]]
        return out

    def score(self, X_raw: Any) -> IntArray:
        """This party's integer points per row: its bins' points, plus the base row if any.

        ``X_raw`` is an array in feature order or a DataFrame with the
        feature columns (any order, extra columns ignored). NaN = missing.
        """
        total: IntArray = self.points_per_feature(X_raw).sum(axis=1, dtype=np.int64)
        if self.base_points is not None:
            total = total + np.int64(self.base_points)
        return total

    # ---- CSV

    def to_frame(self) -> pd.DataFrame:
        """The table for CSV: a ``base`` row (if any), then each feature's bins and missing row.

        Columns: ``kind`` (base/bin/missing), ``feature``, ``bin`` (1..k+1),
        ``lower``, ``upper`` (``-inf``/``inf`` at the open ends; a bin holds
        ``lower < x <= upper``), ``points`` (int64).
        """
        rows: list[dict[str, Any]] = []
        if self.base_points is not None:
            rows.append({"kind": "base", "feature": None, "bin": None, "lower": None,
                         "upper": None, "points": self.base_points})
        for f in self.features:
            for b, ((lo, hi), p) in enumerate(zip(f.bins(), f.points, strict=True)):
                rows.append({"kind": "bin", "feature": f.name, "bin": b + 1, "lower": lo,
                             "upper": hi, "points": p})
            rows.append({"kind": "missing", "feature": f.name, "bin": None, "lower": None,
                         "upper": None, "points": f.missing_points})
        df = pd.DataFrame(rows, columns=CSV_COLUMNS)
        df["bin"] = df["bin"].astype("Int64")
        df["lower"] = df["lower"].astype("float64")
        df["upper"] = df["upper"].astype("float64")
        df["points"] = df["points"].astype("int64")
        return df

    def to_csv(self) -> str:
        """:meth:`to_frame` as CSV text (cut points written exactly, open ends as ``-inf``/``inf``)."""
        text: str = self.to_frame().to_csv(index=False, lineterminator="\n")
        return text

    @classmethod
    def from_csv(cls, text: str, *, party: str = "") -> PointsTable:
        """Read :meth:`to_csv` back (the scaling parameters are not in the CSV)."""
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        return cls.from_frame(df, party=party)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, party: str = "") -> PointsTable:
        """Rebuild a table from :meth:`to_frame` (or the CSV read as strings); validates it.

        Raises
        ------
        ConfigError
            Naming the row and column that do not fit.
        """
        missing_cols = [c for c in CSV_COLUMNS if c not in frame.columns]
        if missing_cols:
            raise ConfigError(f"The points table lacks column(s) {missing_cols}.")
        if len(frame) > MAX_FEATURES * (MAX_BINS + 1) + 1:
            raise ConfigError("The points table has too many rows.")
        base: int | None = None
        feats: list[FeaturePoints] = []
        cur: dict[str, Any] | None = None
        for r, row in enumerate(frame[CSV_COLUMNS].itertuples(index=False)):
            where = f"points table row {r + 1}"
            kind = _cell_str(row.kind)
            if kind == "base":
                if r != 0:
                    raise ConfigError(f"{where}: the base row must come first.")
                base = _cell_int(row.points, f"{where}, column points")
                continue
            if kind not in ("bin", "missing"):
                raise ConfigError(f"{where}, column kind: expected base, bin or missing; "
                                  f"got {kind!r}.")
            name = _name(_cell_str(row.feature), f"{where}, column feature")
            if cur is None:
                cur = {"name": name, "bins": []}
            elif cur["name"] != name:
                raise ConfigError(f"{where}: feature {cur['name']!r} has no missing row before "
                                  f"feature {name!r}.")
            pts = _cell_int(row.points, f"{where}, column points")
            if kind == "missing":
                feats.append(_feature_from_bins(cur["name"], cur["bins"], pts, where))
                cur = None
                continue
            b = _cell_int(row.bin, f"{where}, column bin")
            if b != len(cur["bins"]) + 1:
                raise ConfigError(f"{where}, column bin: expected {len(cur['bins']) + 1}; got {b}.")
            cur["bins"].append((_cell_float(row.lower, f"{where}, column lower"),
                                _cell_float(row.upper, f"{where}, column upper"), pts))
        if cur is not None:
            raise ConfigError(f"The points table ends without feature {cur['name']!r}'s missing row.")
        return cls(tuple(feats), base_points=base, party=party)

    # ---- JSON

    def to_dict(self) -> dict[str, Any]:
        """The decision-engine document (see :meth:`to_json`)."""
        sc = self.scorecard
        return {
            "format": TABLE_FORMAT, "version": VERSION, "party": self.party,
            "interval": INTERVAL, "rounding": ROUNDING,
            "scorecard": {"pdo": sc.pdo if sc else None,
                          "base_score": sc.base_score if sc else None,
                          "base_odds": sc.base_odds if sc else None,
                          "slope": self.slope, "scale": self.scale},
            "base_points": self.base_points,
            "features": [
                {"name": f.name,
                 "bins": [{"lower": None if math.isinf(lo) else lo,
                           "upper": None if math.isinf(hi) else hi, "points": p}
                          for (lo, hi), p in zip(f.bins(), f.points, strict=True)],
                 "missing_points": f.missing_points}
                for f in self.features],
        }

    def to_json(self) -> str:
        """One JSON document a decision engine can load.

        A customer's points from this party: ``base_points`` (if not null)
        plus, for every feature, the points of the bin with
        ``lower < x <= upper`` (null = open end) or ``missing_points`` when
        the value is absent. All points are integers.
        """
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> PointsTable:
        """Inverse of :meth:`to_json`; refuses malformed input naming the field."""
        if not isinstance(text, str | bytes) or len(text) > MAX_JSON_CHARS:
            raise ConfigError(f"A scorecard JSON must be text of at most {MAX_JSON_CHARS} characters.")
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"The scorecard is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> PointsTable:
        """Inverse of :meth:`to_dict`; validates every field.

        Raises
        ------
        ConfigError
            Naming the first bad field, e.g. ``scorecard.features[0].bins[2].points``.
        """
        w = "scorecard"
        d = _obj(data, w, {"format", "version", "party", "interval", "rounding", "scorecard",
                           "base_points", "features"})
        if d["format"] != TABLE_FORMAT:
            raise ConfigError(f"{w}.format must be {TABLE_FORMAT!r}; got {d['format']!r}.")
        _version(d["version"], f"{w}.version")
        _interval(d["interval"], f"{w}.interval")
        if d["rounding"] != ROUNDING:
            raise ConfigError(f"{w}.rounding must be {ROUNDING!r}; got {d['rounding']!r}.")
        if not isinstance(d["party"], str) or len(d["party"]) > MAX_NAME_CHARS:
            raise ConfigError(f"{w}.party must be a string of at most {MAX_NAME_CHARS} characters.")
        p = _obj(d["scorecard"], f"{w}.scorecard", {"pdo", "base_score", "base_odds", "slope",
                                                      "scale"})
        opt = {k: (None if p[k] is None else _number(p[k], f"{w}.scorecard.{k}")) for k in p}
        pdo, bs, bo = opt["pdo"], opt["base_score"], opt["base_odds"]
        sc: Scorecard | None = None
        if pdo is not None and bs is not None and bo is not None:
            try:
                sc = Scorecard(base_score=bs, base_odds=bo, pdo=pdo)
            except ConfigError as exc:
                raise ConfigError(f"{w}.scorecard: {exc}") from None
        elif (pdo, bs, bo) != (None, None, None):
            raise ConfigError(f"{w}.scorecard: give all of pdo, base_score and base_odds, or none.")
        base = None if d["base_points"] is None else _int(d["base_points"], f"{w}.base_points")
        feats = []
        for i, f in enumerate(_list(d["features"], f"{w}.features", 1, MAX_FEATURES)):
            fw = f"{w}.features[{i}]"
            fd = _obj(f, fw, {"name", "bins", "missing_points"})
            name = _name(fd["name"], f"{fw}.name")
            bins = []
            for b, bn in enumerate(_list(fd["bins"], f"{fw}.bins", 1, MAX_BINS)):
                bw = f"{fw}.bins[{b}]"
                bd = _obj(bn, bw, {"lower", "upper", "points"})
                lo = -math.inf if bd["lower"] is None else _number(bd["lower"], f"{bw}.lower")
                hi = math.inf if bd["upper"] is None else _number(bd["upper"], f"{bw}.upper")
                bins.append((lo, hi, _int(bd["points"], f"{bw}.points")))
            feats.append(_feature_from_bins(name, bins, _int(fd["missing_points"],
                                                             f"{fw}.missing_points"), fw))
        try:
            return cls(tuple(feats), base_points=base, party=d["party"], scale=opt["scale"],
                       scorecard=sc, slope=opt["slope"])
        except ConfigError as exc:
            raise ConfigError(f"{w}: {exc}") from None


# ---------------------------------------------------------------- model vs table


@dataclass(frozen=True)
class ScoreGap:
    """How far a party's integer table score is from its continuous model points.

    Attributes
    ----------
    rows : int
    max_abs, mean_abs, p99_abs : float
        Max, mean and 99th percentile of ``|table score - continuous points|``,
        in points (for raw columns the max comes from outliers in the
        open-ended bins; the percentile says how typical rows fare).
    rounding_bound : float
        ``0.5 * (n_features + 1 if base row else n_features)``: the whole gap
        when the bins are exact (WOE columns); raw columns add the binning error.
    """

    rows: int
    max_abs: float
    mean_abs: float
    p99_abs: float
    rounding_bound: float

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form."""
        return {"rows": self.rows, "max_abs": self.max_abs, "mean_abs": self.mean_abs,
                "p99_abs": self.p99_abs, "rounding_bound": self.rounding_bound}


def continuous_points(X_raw: npt.ArrayLike, coef: npt.ArrayLike,
                      preprocessor: _Preprocessor | None, *, scale: float,
                      woe: WoeEncoder | None = None, base: float = 0.0) -> FloatArray:
    """A party's unrounded model points: ``base - scale * (z . coef)``.

    ``z`` is exactly what the estimator computes (WOE encoding if any, then
    ``preprocessor``). For the guest pass ``base=`` :meth:`Scorecard.base_value`.
    """
    X = np.asarray(X_raw, dtype=np.float64)
    if woe is not None:
        X = woe.transform(X)
    Z = preprocessor.transform(X) if preprocessor is not None else np.nan_to_num(X)
    out: FloatArray = float(base) - float(scale) * (Z @ np.asarray(coef, dtype=np.float64))
    return out


def approximation_gap(table: PointsTable, X_raw: Any, continuous: npt.ArrayLike) -> ScoreGap:
    """Compare ``table.score(X_raw)`` with the party's ``continuous`` points on the same rows."""
    t = table.score(X_raw).astype(np.float64)
    c = np.asarray(continuous, dtype=np.float64)
    if c.shape != t.shape:
        raise DataError(f"continuous has shape {c.shape}; the table scored {t.shape[0]} rows.")
    gap = np.abs(t - c)
    n_terms = len(table.features) + (1 if table.base_points is not None else 0)
    if not t.size:
        return ScoreGap(0, 0.0, 0.0, 0.0, 0.5 * n_terms)
    return ScoreGap(int(t.size), float(gap.max()), float(gap.mean()),
                    float(np.quantile(gap, 0.99)), 0.5 * n_terms)


def points_table(estimator: GuestLogisticRegression | HostLogisticRegression,
                 table: PartyTable, woe: WoeEncoder | None = None,
                 scorecard: Scorecard | None = None, *, party: str = "", slope: float = 1.0,
                 calibration_intercept: float = 0.0, max_bins: int = 10) -> pd.DataFrame:
    """One party's points table (:meth:`PointsTable.to_frame`) from its weights and rows.

    ``table`` holds the party's aligned training rows (raw columns); ``woe``
    its WOE encoding, if it trained on WOE columns. A guest estimator (one
    with ``intercept_``) gets the base-points row. For a fitted estimator in
    memory; the jobs save :class:`ScoreBins` in each model part and build
    tables from the part (:func:`part_points_table`).
    """
    sc = scorecard or Scorecard()
    bins = ScoreBins.fit(table.feature_names, table.X, estimator.preprocessor_, woe, max_bins)
    intercept = getattr(estimator, "intercept_", None)
    if intercept is not None:
        pt = sc.guest_table(bins, estimator.coef_, float(intercept), party=party, slope=slope,
                            calibration_intercept=calibration_intercept)
    else:
        pt = sc.host_table(bins, estimator.coef_, party=party, slope=slope)
    return pt.to_frame()


# ---------------------------------------------------------------- model parts

#: Where a model part keeps its :class:`ScoreBins` (``part.preprocessing[SCORE_BINS_KEY]``).
SCORE_BINS_KEY = "score_bins"


def part_score_bins(part: ModelPart) -> ScoreBins:
    """The :class:`ScoreBins` a model part saved at fit (validated: the part is a file).

    Raises
    ------
    DataError
        For a part written before deployable scorecards (no score bins: retrain),
        or bins that do not fit the part's features.
    """
    pre = part.preprocessing if isinstance(part.preprocessing, dict) else {}
    data = pre.get(SCORE_BINS_KEY)
    if data is None:
        raise DataError(f"{part.party}: this model part predates deployable scorecards (it "
                        "holds no score bins); retrain the model (vfl fit, or vfl run on every "
                        "party) to score with --score.")
    try:
        bins = ScoreBins.from_dict(data)
    except ConfigError as exc:
        raise DataError(f"{part.party}'s model part: {exc}") from None
    if list(bins.names) != list(part.features):
        raise DataError(f"{part.party}'s model part: its score bins are for other features "
                        "than its weights; retrain the model.")
    return bins


def part_calibration(part: ModelPart) -> tuple[float, float]:
    """``(slope, intercept)`` of the part's calibration; ``(1.0, 0.0)`` if uncalibrated."""
    cal = part.calibration
    if cal is None:
        return 1.0, 0.0
    return float(cal["slope"]), float(cal["intercept"])


def part_points_table(part: ModelPart, scorecard: Scorecard | None = None, *,
                      slope: float | None = None, scale: float | None = None) -> PointsTable:
    """A party's points table from its saved model part alone.

    Parameters
    ----------
    part : ModelPart
        A guest part gets the base-points row, and its own calibration sets
        the slope (``slope``/``scale`` must not be given).
    scorecard : Scorecard, optional
        Default :class:`Scorecard()` (600 points at 50:1, 20 to double).
    slope : float, optional
        A host's table: the guest's calibration slope, when this process
        knows it (one machine). The table then records the whole scaling.
    scale : float, optional
        A host's table: ``factor * slope`` as the guest sent it in its
        ``lr.ScoreRequest/2`` (then ``scorecard`` is not used: a host does not
        learn the guest's pdo or base score, only the scale).

    Without ``slope`` and ``scale`` a host's table uses the uncalibrated
    scale ``factor`` and records the slope as unknown (null).
    """
    bins = part_score_bins(part)
    sc = scorecard or Scorecard()
    if part.role == "guest":
        if slope is not None or scale is not None:
            raise ConfigError("A guest's points table takes its slope from its own calibration.")
        a, c = part_calibration(part)
        return sc.guest_table(bins, part.coef, float(part.intercept or 0.0), party=part.party,
                              slope=a, calibration_intercept=c)
    if slope is not None and scale is not None:
        raise ConfigError("Give a host's table the calibration slope or the scale, not both.")
    if scale is not None:
        return bins.points(part.coef, scale, party=part.party)
    if slope is not None:
        return sc.host_table(bins, part.coef, party=part.party, slope=slope)
    return bins.points(part.coef, sc.factor, party=part.party, scorecard=sc)


# ---------------------------------------------------------------- helpers


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _raw_matrix(X_raw: Any, names: Sequence[str]) -> FloatArray:
    if isinstance(X_raw, pd.DataFrame):
        absent = [n for n in names if n not in X_raw.columns]
        if absent:
            raise DataError(f"The rows lack feature column(s) {absent[:5]}"
                            f"{' ...' if len(absent) > 5 else ''}.")
        X_raw = X_raw[list(names)].to_numpy(dtype=np.float64, na_value=np.nan)
    X = np.asarray(X_raw, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise DataError(f"Expected rows with {len(names)} feature columns; got shape {X.shape}.")
    return X


def _bin_index(X: FloatArray, edges: Sequence[Sequence[float]]) -> IntArray:
    """Per column, :func:`vfl.binning.core.assign_bins` (the WOE encoder's own rule)."""
    out = np.empty(X.shape, dtype=np.int64)
    for j, e in enumerate(edges):
        out[:, j] = assign_bins(X[:, j], np.asarray(e, dtype=np.float64))
    return out


def _validate_cuts(cuts: Sequence[float], where: str) -> None:
    if len(cuts) > MAX_BINS - 1:
        raise ConfigError(f"{where}: at most {MAX_BINS - 1} cut points; got {len(cuts)}.")
    for k, v in enumerate(cuts):
        if not isinstance(v, float) or not math.isfinite(v):
            raise ConfigError(f"{where}[{k}] must be a finite float; got {v!r}.")
        if k and not v > cuts[k - 1]:
            raise ConfigError(f"{where} must be strictly increasing (at index {k}).")


def _validate_bins(names: Any, edges: Any, z: Any, z_missing: Any, source: Any, w: str) -> None:
    if source not in _SOURCES:
        raise ConfigError(f"{w}.source must be one of {list(_SOURCES)}; got {source!r}.")
    for field, v in (("names", names), ("edges", edges), ("z", z), ("z_missing", z_missing)):
        if not isinstance(v, tuple):
            raise ConfigError(f"{w}.{field} must be a tuple; got {type(v).__name__}.")
    if not 1 <= len(names) <= MAX_FEATURES:
        raise ConfigError(f"{w}.names must hold 1..{MAX_FEATURES} features; got {len(names)}.")
    if not len(edges) == len(z) == len(z_missing) == len(names):
        raise ConfigError(f"{w}: names, edges, z and z_missing must have one entry per feature.")
    seen: set[str] = set()
    for j, name in enumerate(names):
        _name(name, f"{w}.names[{j}]")
        if name in seen:
            raise ConfigError(f"{w}.names[{j}]: duplicate feature {name!r}.")
        seen.add(name)
        if not isinstance(edges[j], tuple) or not isinstance(z[j], tuple):
            raise ConfigError(f"{w}.edges[{j}] and {w}.z[{j}] must be tuples.")
        _validate_cuts(edges[j], f"{w}.edges[{j}]")
        if len(z[j]) != len(edges[j]) + 1:
            raise ConfigError(f"{w}.z[{j}] must hold {len(edges[j]) + 1} values (one per bin); "
                              f"got {len(z[j])}.")
        for k, v in enumerate((*z[j], z_missing[j])):
            if not isinstance(v, float) or not math.isfinite(v):
                raise ConfigError(f"{w}.z[{j}] / z_missing[{j}]: value {k} must be a finite float.")


def _validate_table(t: PointsTable) -> None:
    w = "PointsTable"
    if not isinstance(t.features, tuple) or not 1 <= len(t.features) <= MAX_FEATURES:
        raise ConfigError(f"{w}.features must be a tuple of 1..{MAX_FEATURES} features.")
    if t.base_points is not None:
        _int(t.base_points, f"{w}.base_points")
    if not isinstance(t.party, str) or len(t.party) > MAX_NAME_CHARS:
        raise ConfigError(f"{w}.party must be a string of at most {MAX_NAME_CHARS} characters.")
    for field in ("scale", "slope"):
        v = getattr(t, field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not math.isfinite(v) or not v > 0):
            raise ConfigError(f"{w}.{field} must be a finite float > 0 or None; got {v!r}.")
    if t.scorecard is not None and not isinstance(t.scorecard, Scorecard):
        raise ConfigError(f"{w}.scorecard must be a Scorecard or None.")
    if t.scorecard is not None and t.slope is not None and t.scale is not None:
        expect = t.scorecard.factor * t.slope
        if not math.isclose(t.scale, expect, rel_tol=1e-9):
            raise ConfigError(f"{w}.scale ({t.scale!r}) is not pdo / ln 2 * slope ({expect!r}).")
    seen: set[str] = set()
    for j, f in enumerate(t.features):
        fw = f"{w}.features[{j}]"
        if not isinstance(f, FeaturePoints):
            raise ConfigError(f"{fw} must be a FeaturePoints.")
        _name(f.name, f"{fw}.name")
        if f.name in seen:
            raise ConfigError(f"{fw}.name: duplicate feature {f.name!r}.")
        seen.add(f.name)
        if not isinstance(f.cuts, tuple) or not isinstance(f.points, tuple):
            raise ConfigError(f"{fw}.cuts and {fw}.points must be tuples.")
        _validate_cuts(f.cuts, f"{fw}.cuts")
        if len(f.points) != len(f.cuts) + 1:
            raise ConfigError(f"{fw}.points must hold {len(f.cuts) + 1} values; got {len(f.points)}.")
        for k, p in enumerate(f.points):
            _int(p, f"{fw}.points[{k}]")
        _int(f.missing_points, f"{fw}.missing_points")


def _feature_from_bins(name: str, bins: list[tuple[float, float, int]], missing: int,
                       where: str) -> FeaturePoints:
    """Check ``(lower, upper, points)`` bins are contiguous and open-ended; build the feature."""
    if not bins:
        raise ConfigError(f"{where}: feature {name!r} has no bins.")
    if len(bins) > MAX_BINS:
        raise ConfigError(f"{where}: feature {name!r} has more than {MAX_BINS} bins.")
    if bins[0][0] != -math.inf:
        raise ConfigError(f"{where}: feature {name!r}'s first bin must be open below "
                          "(lower = null / -inf).")
    if bins[-1][1] != math.inf:
        raise ConfigError(f"{where}: feature {name!r}'s last bin must be open above "
                          "(upper = null / inf).")
    for k in range(1, len(bins)):
        if bins[k][0] != bins[k - 1][1]:
            raise ConfigError(f"{where}: feature {name!r} bin {k + 1}'s lower must equal bin "
                              f"{k}'s upper.")
    cuts = tuple(b[1] for b in bins[:-1])
    _validate_cuts(cuts, f"{where}: feature {name!r} cut points")
    return FeaturePoints(name, cuts, tuple(b[2] for b in bins), missing)


def _reject_constant(token: str) -> Any:
    raise ConfigError(f"The scorecard JSON holds {token}; numbers must be finite.")


def _obj(v: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(f"{where} must be an object; got {type(v).__name__}.")
    missing, extra = keys - v.keys(), v.keys() - keys
    if missing:
        raise ConfigError(f"{where} lacks field(s) {sorted(missing)}.")
    if extra:
        raise ConfigError(f"{where} has unknown field(s) {sorted(map(str, extra))[:5]}.")
    return v


def _list(v: Any, where: str, lo: int, hi: int) -> list[Any]:
    if not isinstance(v, list):
        raise ConfigError(f"{where} must be a list; got {type(v).__name__}.")
    if not lo <= len(v) <= hi:
        raise ConfigError(f"{where} must hold {lo}..{hi} entries; got {len(v)}.")
    return v


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{where} must be a finite number; got {v!r}.")
    return float(v)


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or abs(int(v)) > MAX_ABS_POINTS:
        raise ConfigError(f"{where} must be an integer of at most {MAX_ABS_POINTS:g} in "
                          f"magnitude; got {v!r}.")
    return int(v)


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not 1 <= len(v) <= MAX_NAME_CHARS:
        raise ConfigError(f"{where} must be a non-empty string of at most {MAX_NAME_CHARS} "
                          f"characters.")
    return v


def _version(v: Any, where: str) -> None:
    if isinstance(v, bool) or v != VERSION:
        raise ConfigError(f"{where}: this vfl reads version {VERSION}; got {v!r}.")


def _interval(v: Any, where: str) -> None:
    if v != INTERVAL:
        raise ConfigError(f"{where} must be {INTERVAL!r}; got {v!r}.")


def _cell_str(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    return str(v)


def _cell_float(v: Any, where: str) -> float:
    s = _cell_str(v).strip()
    try:
        x = float(s)
    except ValueError:
        raise ConfigError(f"{where} must be a number (or -inf/inf); got {s!r}.") from None
    if math.isnan(x):
        raise ConfigError(f"{where} must be a number (or -inf/inf); got {s!r}.")
    return x


def _cell_int(v: Any, where: str) -> int:
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        return _int(int(v), where)
    s = _cell_str(v).strip()
    if not s.lstrip("-").isdigit():
        raise ConfigError(f"{where} must be an integer; got {s!r}.")
    return _int(int(s), where)
