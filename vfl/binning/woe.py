"""Weight-of-evidence encoding of a party's own columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vfl.binning.core import assign_bins, bin_stats_clear, quantile_bins, woe_iv
from vfl.exceptions import DataError
from vfl.types import FloatArray

__all__ = ["WoeEncoder"]



@dataclass
class WoeEncoder:
    """Per column: cut points and the WOE of each bin (the last bin holds missing values)."""

    cuts: list[FloatArray]
    woe: list[FloatArray]

    @classmethod
    def fit(cls, X: FloatArray, y: npt.ArrayLike, n_bins: int) -> WoeEncoder:
        """Bin and encode columns whose labels this party holds (the guest)."""
        yy = np.asarray(y).astype(np.int64)
        cuts, woes = [], []
        for j in range(X.shape[1]):
            st = bin_stats_clear(str(j), X[:, j], yy, n_bins)
            w, _ = woe_iv(st.counts, st.events, int(yy.sum()), len(yy))
            cuts.append(quantile_bins(X[:, j], n_bins))
            woes.append(np.asarray(w, dtype=np.float64))
        return cls(cuts, woes)

    def transform(self, X: FloatArray) -> FloatArray:
        """Replace every value by the WOE of its bin."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.cuts):
            raise DataError(f"WOE encoding expects {len(self.cuts)} columns; got shape {X.shape}.")
        out = np.empty_like(X)
        for j, (c, w) in enumerate(zip(self.cuts, self.woe, strict=True)):
            out[:, j] = w[assign_bins(X[:, j], c)]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": "woe", "cuts": [c.tolist() for c in self.cuts],
                "woe": [w.tolist() for w in self.woe]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WoeEncoder:
        """Inverse of :meth:`to_dict`."""
        if data.get("kind") != "woe":
            raise DataError("Not a WOE encoding.")
        return cls([np.asarray(c, dtype=np.float64) for c in data["cuts"]],
                   [np.asarray(w, dtype=np.float64) for w in data["woe"]])
