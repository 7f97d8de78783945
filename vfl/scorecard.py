"""Scorecard points from the joint model, each party from its own weights.

Convention (the one credit-risk teams use): the score is linear in the log
odds of *good*, ``score = offset + factor * ln(odds_good)``, with
``factor = pdo / ln 2`` (points to double the odds) and
``offset = base_score - factor * ln(base_odds)`` (``base_score`` points at
odds ``base_odds``:1). The model gives ``ln(odds_good) = -(b + sum_k x_k . w_k)``,
so the total splits exactly into per-party points:

* guest: ``offset - factor * (b + x_g . w_g)``
* host k: ``-factor * x_k . w_k``

and each party's points further split per feature (``-factor * w_j * z_j``
on the party's standardised column ``z_j``). Per-feature points tables stay
with the party that owns the feature; only per-customer party totals reach
the guest, which adds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from vfl.exceptions import ConfigError
from vfl.types import FloatArray

if TYPE_CHECKING:  # pragma: no cover
    from vfl.binning.woe import WoeEncoder
    from vfl.data import PartyTable
    from vfl.lr.estimator import GuestLogisticRegression, HostLogisticRegression

__all__ = ["Scorecard", "points_table"]


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
        if not (self.pdo > 0 and self.base_odds > 0 and math.isfinite(self.base_score)):
            raise ConfigError(
                f"Scorecard needs pdo > 0 and base_odds > 0; got pdo={self.pdo}, "
                f"base_odds={self.base_odds}."
            )

    @property
    def factor(self) -> float:
        """Points per unit of log odds."""
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        """Points at log odds 0."""
        return self.base_score - self.factor * math.log(self.base_odds)

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

    def add_points(self, scores: pd.DataFrame) -> pd.DataFrame:
        """``scores`` (with a ``probability`` column) plus ``score``: points, to 0.01.

        The sum of every party's points equals the score of the joint
        probability, so the guest gets the total without any party's table.
        """
        out = scores.copy()
        out["score"] = self.from_probability(out["probability"].to_numpy()).round(2)
        return out

    def feature_table(self, names: list[str], coef: FloatArray, z_values: FloatArray,
                      raw_values: FloatArray, bins: int = 5) -> list[dict[str, Any]]:
        """Per-feature points at quantile bins of the party's own data.

        ``z_values`` are the standardised columns the weights apply to and
        ``raw_values`` the same columns before preprocessing (for the bin
        labels). Each row: feature, bin, raw range, points at the bin's median.
        """
        rows = []
        qs = np.linspace(0, 1, bins + 1)
        for j, name in enumerate(names):
            raw = raw_values[:, j]
            z = z_values[:, j]
            edges = np.unique(np.nanquantile(raw, qs))
            idx = np.clip(np.searchsorted(edges, raw, side="right") - 1, 0, max(len(edges) - 2, 0))
            for b in range(max(len(edges) - 1, 1)):
                m = (idx == b) & ~np.isnan(raw)
                if not m.any():
                    continue
                rows.append({"feature": name, "bin": b + 1,
                             "from": float(edges[b]), "to": float(edges[min(b + 1, len(edges) - 1)]),
                             "points": float(-self.factor * coef[j] * np.median(z[m]))})
            if np.isnan(raw).any():
                rows.append({"feature": name, "bin": "missing", "from": None, "to": None,
                             "points": float(-self.factor * coef[j]
                                             * np.median(z[np.isnan(raw)]))})
        return rows


def points_table(estimator: GuestLogisticRegression | HostLogisticRegression,
                 table: PartyTable, woe: WoeEncoder | None = None,
                 scorecard: Scorecard | None = None) -> pd.DataFrame:
    """One party's scorecard points per feature and bin, from its own weights and rows.

    ``table`` holds the party's aligned training rows (raw columns); ``woe``
    its WOE encoding, if it trained on WOE columns. The table stays with the
    party.
    """
    sc = scorecard or Scorecard()
    X = woe.transform(table.X) if woe is not None else table.X
    pre = estimator.preprocessor_
    z = pre.transform(X) if pre is not None else np.nan_to_num(X)
    return pd.DataFrame(sc.feature_table(table.feature_names, estimator.coef_, z, table.X))
