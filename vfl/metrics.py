"""Metrics credit-risk teams use, computed on the guest.

AUC, Gini, KS (with the score where it peaks), lift and gain by decile,
calibration by decile, and the population stability index between two score
distributions — called :func:`stability_index` so it never collides with PSI
the private set intersection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "auc",
    "gini",
    "ks",
    "ks_detail",
    "accuracy",
    "evaluate",
    "decile_table",
    "calibration_table",
    "stability_index",
]


def auc(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve."""
    return float(roc_auc_score(y, scores))


def gini(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Gini coefficient (accuracy ratio): ``2 * AUC - 1``."""
    return 2.0 * auc(y, scores) - 1.0


def ks_detail(y: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[float, float]:
    """KS statistic and the score threshold at which it peaks."""
    fpr, tpr, thresholds = roc_curve(y, scores)
    i = int(np.argmax(tpr - fpr))
    return float(tpr[i] - fpr[i]), float(thresholds[i])


def ks(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Kolmogorov–Smirnov statistic: max distance between the classes' score CDFs."""
    return ks_detail(y, scores)[0]


def accuracy(y: npt.ArrayLike, proba: npt.ArrayLike, threshold: float = 0.5) -> float:
    """Share of correct labels when predicting 1 for probability >= threshold."""
    y = np.asarray(y)
    return float(np.mean((np.asarray(proba) >= threshold).astype(int) == y))


def evaluate(y: npt.ArrayLike, proba: npt.ArrayLike) -> dict[str, float]:
    """AUC, Gini, KS (and where it peaks) and accuracy at 0.5."""
    k, at = ks_detail(y, proba)
    a = auc(y, proba)
    return {"auc": a, "gini": 2 * a - 1, "ks": k, "ks_threshold": at,
            "accuracy": accuracy(y, proba)}


def _deciles(scores: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.int64]:
    """Decile index per row, 0 = highest scores (riskiest), equal counts."""
    order = np.argsort(-scores, kind="stable")
    out = np.empty(len(scores), dtype=np.int64)
    out[order] = np.arange(len(scores)) * n // max(len(scores), 1)
    return out


def decile_table(y: npt.ArrayLike, scores: npt.ArrayLike, n: int = 10) -> list[dict[str, Any]]:
    """Lift and gain by decile of the score (decile 1 = highest default score).

    Each row: ``decile, count, events, event_rate, lift, cumulative_gain,
    cumulative_lift``; gain is the share of all events captured so far.
    """
    yy = np.asarray(y, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    d = _deciles(s, n)
    total_events = yy.sum()
    base = total_events / len(yy)
    rows, cum_events, cum_count = [], 0.0, 0
    for k in range(n):
        m = d == k
        cnt, ev = int(m.sum()), float(yy[m].sum())
        cum_events += ev
        cum_count += cnt
        rate = ev / cnt if cnt else 0.0
        rows.append({"decile": k + 1, "count": cnt, "events": int(ev), "event_rate": rate,
                     "lift": rate / base if base else 0.0,
                     "cumulative_gain": cum_events / total_events if total_events else 0.0,
                     "cumulative_lift": (cum_events / cum_count) / base if base and cum_count
                     else 0.0})
    return rows


def calibration_table(y: npt.ArrayLike, proba: npt.ArrayLike, n: int = 10
                      ) -> list[dict[str, Any]]:
    """Mean predicted probability against the observed default rate, by decile."""
    yy = np.asarray(y, dtype=np.float64)
    p = np.asarray(proba, dtype=np.float64)
    d = _deciles(p, n)
    return [{"decile": k + 1, "count": int((d == k).sum()),
             "mean_predicted": float(p[d == k].mean()) if (d == k).any() else 0.0,
             "observed_rate": float(yy[d == k].mean()) if (d == k).any() else 0.0}
            for k in range(n)]


def stability_index(expected: npt.ArrayLike, actual: npt.ArrayLike, bins: int = 10,
                    eps: float = 1e-4) -> float:
    """Population stability index of ``actual`` scores against ``expected`` ones.

    Bins are the quantiles of ``expected``; ``sum (a - e) * ln(a / e)`` over
    bins, with empty bins floored at ``eps``. Rule of thumb: < 0.1 stable,
    0.1–0.25 some shift, > 0.25 a significant shift.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
    ce = np.bincount(np.searchsorted(edges, e, side="right"), minlength=len(edges) + 1)
    ca = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1)
    pe = np.maximum(ce / ce.sum(), eps)
    pa = np.maximum(ca / ca.sum(), eps)
    return float(np.sum((pa - pe) * np.log(pa / pe)))
