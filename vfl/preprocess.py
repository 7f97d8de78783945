"""Each party's local preparation of its own columns: impute, then standardise.

Fitted on the party's training rows only and saved with its model part; no
statistics ever leave the party.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vfl.exceptions import DataError
from vfl.types import FloatArray

__all__ = ["Standardizer"]



@dataclass
class Standardizer:
    """Median imputation followed by z-scoring, per column.

    Attributes
    ----------
    medians, means, scales : ndarray of shape (n_features,)
        Learned on the training rows. Constant columns get scale 1.
    """

    medians: FloatArray
    means: FloatArray
    scales: FloatArray

    @classmethod
    def fit(cls, X: FloatArray) -> Standardizer:
        """Learn imputation values and scales from ``X`` (NaN = missing)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise DataError("Cannot fit preprocessing on an empty table.")
        all_missing = np.all(np.isnan(X), axis=0)
        if np.any(all_missing):
            raise DataError(
                f"Column(s) {np.flatnonzero(all_missing).tolist()} have no values in the training rows."
            )
        medians = np.nanmedian(X, axis=0)
        filled = np.where(np.isnan(X), medians, X)
        means = filled.mean(axis=0)
        scales = filled.std(axis=0)
        scales[scales < 1e-12] = 1.0
        return cls(medians, means, scales)

    def transform(self, X: FloatArray) -> FloatArray:
        """Impute and standardise ``X`` with the learned values."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.medians.shape[0]:
            raise DataError(
                f"Expected {self.medians.shape[0]} feature columns, got shape {X.shape}."
            )
        filled = np.where(np.isnan(X), self.medians, X)
        return (filled - self.means) / self.scales

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": "median-impute+standardize", "medians": self.medians.tolist(),
                "means": self.means.tolist(), "scales": self.scales.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardizer:
        """Inverse of :meth:`to_dict`."""
        if data.get("kind") != "median-impute+standardize":
            raise DataError(f"Unknown preprocessing kind {data.get('kind')!r}.")
        return cls(np.asarray(data["medians"], float), np.asarray(data["means"], float),
                   np.asarray(data["scales"], float))
