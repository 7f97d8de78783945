"""Plain scikit-learn yardsticks for the joint model (computed where the rows are).

The guest can always fit a model on its own columns (``guest_only``). A
model on the pooled columns of every party (``centralized``) needs all the
tables in one place: only a one-machine run or the demo, which generated
both banks' data, can compute it.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from vfl.data import PartyTable
from vfl.metrics import evaluate
from vfl.preprocess import Standardizer
from vfl.types import FloatArray

__all__ = ["guest_only_baseline", "centralized_baselines"]


def _standardized(X: FloatArray) -> FloatArray:
    out: FloatArray = Standardizer.fit(X).transform(X)
    return out


def _fit_evaluate(key: str, X: FloatArray, y: np.ndarray) -> dict[str, float]:
    clf = LogisticRegression(max_iter=2000).fit(X, y)
    m = evaluate(y, clf.predict_proba(X)[:, 1])
    return {f"{key}_auc": m["auc"], f"{key}_ks": m["ks"]}


def guest_only_baseline(guest: PartyTable) -> dict[str, float]:
    """AUC/KS of a model on the guest's own aligned columns (in-sample)."""
    assert guest.y is not None
    return _fit_evaluate("guest_only", _standardized(guest.X), guest.y)


def centralized_baselines(guest: PartyTable, hosts: list[PartyTable]) -> dict[str, float]:
    """Pooled-data and guest-only models on the aligned tables (all tables local)."""
    assert guest.y is not None
    pooled = np.hstack([_standardized(guest.X)] + [_standardized(h.X) for h in hosts])
    return {**_fit_evaluate("centralized", pooled, guest.y), **guest_only_baseline(guest)}
