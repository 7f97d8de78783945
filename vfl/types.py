"""Array aliases used in signatures across vfl (one definition each)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["FloatArray", "IntArray"]

#: A float64 ndarray (features, weights, scores, probabilities).
FloatArray = npt.NDArray[np.float64]
#: An int64 ndarray (row indices, counts, quantised values).
IntArray = npt.NDArray[np.int64]
