"""Each party's local preparation of its own columns: impute, then standardise.

Fitted on the party's training rows only and saved with its model part; no
statistics ever leave the party.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vfl.exceptions import DataError
from vfl.types import FloatArray

__all__ = ["Standardizer", "FeatureRanges", "RangePolicy", "RANGE_POLICIES", "OutOfRange",
           "RANGE_MARGIN"]

#: What scoring does with a value outside the range a feature had in training:
#: ``refuse`` (the default: the applicant is not scored, the error names the feature and
#: its range), ``clip`` (scored at the nearest end of the range, and flagged), ``flag``
#: (scored as given, and flagged).
RangePolicy = Literal["refuse", "clip", "flag"]
RANGE_POLICIES: tuple[str, ...] = ("refuse", "clip", "flag")
#: The accepted range is the training range widened by this share of its width on each
#: side (an applicant a little older than every training customer is still scored).
RANGE_MARGIN = 0.1


class OutOfRange(DataError):
    """A value outside a feature's accepted range under the ``refuse`` policy."""

    def __init__(self, message: str, feature: str, row: int) -> None:
        super().__init__(message)
        self.feature = feature
        self.row = row


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


@dataclass
class FeatureRanges:
    """Each raw feature's smallest and largest value in the training rows (saved in the
    model part as ``preprocessing["ranges"]``; a party's own, never sent)."""

    mins: FloatArray
    maxs: FloatArray

    @classmethod
    def fit(cls, X: FloatArray) -> FeatureRanges:
        """The ranges of ``X``'s columns (NaN ignored; an all-missing column: +-inf)."""
        X = np.asarray(X, dtype=np.float64)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mins, maxs = np.nanmin(X, axis=0), np.nanmax(X, axis=0)
        return cls(np.where(np.isnan(mins), -np.inf, mins), np.where(np.isnan(maxs), np.inf, maxs))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"mins": self.mins.tolist(), "maxs": self.maxs.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureRanges:
        """Inverse of :meth:`to_dict`."""
        mins, maxs = np.asarray(data["mins"], float), np.asarray(data["maxs"], float)
        if mins.shape != maxs.shape or mins.ndim != 1 or np.any(mins > maxs):
            raise DataError("A model part's feature ranges are malformed.")
        return cls(mins, maxs)

    def accepted_ranges(self, margin: float = RANGE_MARGIN) -> tuple[FloatArray, FloatArray]:
        """The lowest and highest value accepted per feature: the training range widened by
        ``margin`` of its width on each side."""
        width = self.maxs - self.mins
        return self.mins - margin * width, self.maxs + margin * width

    def check_ranges(self, X: FloatArray, names: list[str], policy: RangePolicy = "refuse",
                     margin: float = RANGE_MARGIN) -> tuple[FloatArray, list[list[str]]]:
        """``X`` checked against the accepted ranges: the values to score and, per row, the
        features outside their range (missing values are never out of range).

        Raises
        ------
        OutOfRange
            Under ``refuse``, for the first value outside its range (row and feature named,
            with the value and the training range).
        """
        if policy not in RANGE_POLICIES:
            raise DataError(f"range policy must be one of {', '.join(RANGE_POLICIES)}; got "
                            f"{policy!r}")
        X = np.asarray(X, dtype=np.float64)
        lo, hi = self.accepted_ranges(margin)
        with np.errstate(invalid="ignore"):
            bad = (X < lo) | (X > hi)  # NaN compares False: missing is never out of range
        flags = [[names[j] for j in np.flatnonzero(row)] for row in bad]
        if policy == "refuse" and bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise OutOfRange(f"{names[j]} = {X[i, j]:.6g} is outside the range the model was "
                             f"trained on ({self.mins[j]:.6g} to {self.maxs[j]:.6g}; accepted "
                             f"{lo[j]:.6g} to {hi[j]:.6g}): not scored", names[j], i)
        if policy == "clip":
            X = np.where(bad, np.clip(X, lo, hi), X)
        return X, flags
