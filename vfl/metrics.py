"""Evaluation metrics computed on the guest: AUC, KS, accuracy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["auc", "ks", "accuracy", "evaluate"]


def auc(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve."""
    return float(roc_auc_score(y, scores))


def ks(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Kolmogorov–Smirnov statistic: max distance between the classes' score CDFs."""
    fpr, tpr, _ = roc_curve(y, scores)
    return float(np.max(tpr - fpr))


def accuracy(y: npt.ArrayLike, proba: npt.ArrayLike, threshold: float = 0.5) -> float:
    """Share of correct labels when predicting 1 for probability >= threshold."""
    y = np.asarray(y)
    return float(np.mean((np.asarray(proba) >= threshold).astype(int) == y))


def evaluate(y: npt.ArrayLike, proba: npt.ArrayLike) -> dict[str, float]:
    """AUC, KS and accuracy at 0.5."""
    return {"auc": auc(y, proba), "ks": ks(y, proba), "accuracy": accuracy(y, proba)}
