"""Coordinate-wise optimisers: each party updates its own slice of the weights.

All four rules act element by element, so running them separately on each
party's slice is exactly the joint optimiser.
"""

from __future__ import annotations

import numpy as np

from vfl.exceptions import ConfigError
from vfl.types import FloatArray

__all__ = ["Optimizer"]



class Optimizer:
    """Stateful update rule for one party's weights.

    Parameters
    ----------
    kind : {"sgd", "momentum", "adam", "rmsprop"}
    learning_rate, decay : float
        Step size ``learning_rate / (1 + decay * epoch)``.
    penalty : {"none", "l1", "l2"}
    alpha : float
    n_weights : int
    unpenalized : int or None
        Index of the intercept, which is never penalised.
    """

    def __init__(self, kind: str, learning_rate: float, decay: float, penalty: str, alpha: float,
                 n_weights: int, unpenalized: int | None = None) -> None:
        if kind not in ("sgd", "momentum", "adam", "rmsprop"):
            raise ConfigError(f"Unknown optimizer {kind!r}.")
        self.kind = kind
        self.learning_rate = learning_rate
        self.decay = decay
        self.penalty = penalty
        self.alpha = alpha
        self.t = 0
        self.m = np.zeros(n_weights)
        self.v = np.zeros(n_weights)
        self.penalty_mask = np.ones(n_weights)
        if unpenalized is not None:
            self.penalty_mask[unpenalized] = 0.0

    def step(self, w: FloatArray, grad: FloatArray, epoch: int) -> FloatArray:
        """Return the updated weights after one gradient ``grad`` of the data loss."""
        g = grad.copy()
        if self.penalty == "l2":
            g += self.alpha * w * self.penalty_mask
        elif self.penalty == "l1":
            g += self.alpha * np.sign(w) * self.penalty_mask
        lr = self.learning_rate / (1.0 + self.decay * epoch)
        self.t += 1
        if self.kind == "sgd":
            return w - lr * g
        if self.kind == "momentum":
            self.m = 0.9 * self.m + g
            return w - lr * self.m
        if self.kind == "rmsprop":
            self.v = 0.9 * self.v + 0.1 * g * g
            return w - lr * g / (np.sqrt(self.v) + 1e-8)
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        m_hat = self.m / (1 - 0.9**self.t)
        v_hat = self.v / (1 - 0.999**self.t)
        return w - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
