"""Platt scaling of a joint score and the calibration figures a model validator asks for.

Pure numpy, no I/O. In a federated run the arbiter calls these on the
validation rows' joint scores in an order it cannot link to customers
(``protocols/specs/hetero_lr.md``, "Validation without per-row scores");
the guest stores the fitted ``(slope, intercept)`` in its model part and
applies ``p = sigmoid(slope * s + intercept)`` at scoring.

Figures (all over the given rows):

* **Brier score**: mean of ``(p - y)^2``.
* **log-loss**: mean negative log-likelihood (``p`` clipped to ``[1e-15, 1 - 1e-15]``).
* **calibration-in-the-large**: mean predicted PD minus the observed default
  rate (0 is calibrated; positive over-predicts risk).
* **calibration slope**: ``b`` of the logistic fit ``logit P(y=1) = a + b logit(p)``
  (1 is calibrated; below 1 the predictions are too extreme, above 1 too timid),
  fitted as :func:`platt_fit` does (Platt's smoothed targets).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vfl.types import FloatArray

__all__ = ["platt_fit", "sigmoid", "brier_and_log_loss", "calibration_figures",
           "cross_fitted_platt", "score_bands", "FIGURES"]

#: Names of :func:`calibration_figures`' values, in order.
FIGURES = ("brier", "log_loss", "calibration_in_the_large", "calibration_slope")

_EPS = 1e-15


def sigmoid(s: npt.ArrayLike) -> FloatArray:
    """The logistic function, without overflow warnings."""
    x = np.clip(np.asarray(s, dtype=np.float64), -700.0, 700.0)
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


def platt_fit(s: npt.ArrayLike, y: npt.ArrayLike, *, max_iter: int = 100,
              ridge: float = 1e-9) -> tuple[float, float]:
    """Platt's ``(slope, intercept)`` of ``P(y=1) = sigmoid(slope * s + intercept)``.

    Maximum likelihood against Platt's (1999) smoothed targets
    ``(n_1 + 1) / (n_1 + 2)`` for defaults and ``1 / (n_0 + 2)`` for the
    others, so the fit stays finite when the scores separate the classes
    (it then differs from the unsmoothed fit by ``O(1/n)``). Newton's method
    on the two parameters. Needs both classes.
    """
    x = np.asarray(s, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    if x.shape != t.shape or x.ndim != 1:
        raise ValueError("s and y must be 1-d arrays of one length.")
    if not (np.any(t == 1) and np.any(t == 0)):
        raise ValueError("Platt scaling needs both classes.")
    n1 = float(np.sum(t == 1))
    n0 = float(len(t) - n1)
    t = np.where(t == 1, (n1 + 1) / (n1 + 2), 1 / (n0 + 2))
    A = np.column_stack([x, np.ones_like(x)])
    beta = np.array([1.0, 0.0])
    for _ in range(max_iter):
        p = sigmoid(A @ beta)
        grad = A.T @ (p - t) + ridge * beta
        w = p * (1 - p)
        hess = (A * w[:, None]).T @ A + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta = beta - step
        if np.max(np.abs(step)) < 1e-12:
            break
    return float(beta[0]), float(beta[1])


def brier_and_log_loss(p: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, float]:
    """Brier score and log-loss of probabilities ``p`` (the per-epoch figures; no fit)."""
    pp = np.asarray(p, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    c = np.clip(pp, _EPS, 1 - _EPS)
    return (float(np.mean((pp - t) ** 2)),
            float(-np.mean(t * np.log(c) + (1 - t) * np.log(1 - c))))


def calibration_figures(p: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
    """``[brier, log_loss, calibration_in_the_large, calibration_slope]`` (see the module doc)."""
    pp = np.asarray(p, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    brier, log_loss = brier_and_log_loss(pp, t)
    c = np.clip(pp, _EPS, 1 - _EPS)
    slope, _ = platt_fit(np.log(c / (1 - c)), t)
    return np.array([brier, log_loss, float(np.mean(pp) - np.mean(t)), slope])


def cross_fitted_platt(s: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
    """Calibrated probabilities out of sample: each half's from a Platt fit on the other half.

    The halves are the even and the odd positions of ``s`` (rows arrive in a
    random order). Falls back to the whole set's fit for a half whose
    complement lacks a class.
    """
    x = np.asarray(s, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    out = np.empty_like(x)
    whole = platt_fit(x, t)
    for half in (0, 1):
        fit_on = np.arange(len(x)) % 2 != half
        try:
            a, b = platt_fit(x[fit_on], t[fit_on])
        except ValueError:
            a, b = whole
        out[~fit_on] = sigmoid(a * x[~fit_on] + b)
    return out


def score_bands(s: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    """Band index per row, 0 = lowest joint score (safest), ``n`` equal-count bands."""
    x = np.asarray(s, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    out = np.empty(len(x), dtype=np.int64)
    out[order] = np.arange(len(x)) * n // max(len(x), 1)
    return out
