"""Issue 11's lead, in plaintext: expanding the logistic loss around the guest's own score.

Mini-batch Adam with the protocol's batch plan (learning rate 0.1, decay 1,
batch 2048, 30 epochs) on default_credit, with the residual ``d`` of

* ``taylor``: today's protocol, ``d = (s_g + h)/4 + 1/2 - y``;
* ``accurate``: first order around ``s_g``: ``d = σ(s_g) - y + σ'(s_g)·h``;
* ``second order, clip c``: ``+ ½σ''(s_g)·clip(h, ±c)²`` (``c = inf``: unclipped);
* ``exact``: ``σ(s_g + h) - y`` (a yardstick; the protocol cannot compute it),

with the guest's and host's columns as given and swapped, against sklearn's
unpenalised logistic regression on the joined table::

    python -m benchmarks.accurate_mode_lead [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from benchmarks._data import default_credit
from vfl.calibration import sigmoid
from vfl.lr.config import batch_plan
from vfl.lr.optim import Optimizer


def _std(X: np.ndarray) -> np.ndarray:
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 0, sd, 1)


def train(Xg: np.ndarray, y: np.ndarray, Xh: np.ndarray, mode: str, clip: float = math.inf,
          epochs: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Joint scores and weights (guest's, then host's) after ``epochs``."""
    n, kg = Xg.shape
    wg, wh = np.zeros(kg + 1), np.zeros(Xh.shape[1])
    og = Optimizer("adam", 0.1, 1.0, "none", 0.0, kg + 1, kg)
    oh = Optimizer("adam", 0.1, 1.0, "none", 0.0, Xh.shape[1])
    for e in range(epochs):
        for rows in batch_plan(n, 2048, 0, e):
            g = Xg[rows] @ wg[:kg] + wg[kg]
            h = Xh[rows] @ wh
            t = y[rows]
            p = sigmoid(g)
            if mode == "taylor":
                d = (g + h) / 4 + 0.5 - t
            elif mode == "accurate":
                d = p - t + p * (1 - p) * h
            elif mode == "second":
                hc = np.clip(h, -clip, clip)
                d = p - t + p * (1 - p) * h + 0.5 * p * (1 - p) * (1 - 2 * p) * hc * hc
            else:
                d = sigmoid(g + h) - t
            b = len(rows)
            wg = og.step(wg, np.append(Xg[rows].T @ d, d.sum()) / b, e)
            wh = oh.step(wh, Xh[rows].T @ d / b, e)
    return Xg @ wg[:kg] + wg[kg] + Xh @ wh, np.concatenate([wg[:kg], wh])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = ap.parse_args()
    Xg, y, Xh = default_credit(args.data)
    Xg, Xh = _std(Xg), _std(Xh)
    X = np.hstack([Xg, Xh])
    sk = LogisticRegression(C=np.inf, max_iter=5000).fit(X, y)
    print(f"sklearn: AUC {roc_auc_score(y, sk.decision_function(X)):.4f} "
          f"log-loss {log_loss(y, sk.predict_proba(X)[:, 1]):.4f}")
    variants = [("taylor", math.inf), ("accurate", math.inf), ("second", 2.0),
                ("second", math.inf), ("exact", math.inf)]
    for swap in (False, True):
        A, B = (Xh, Xg) if swap else (Xg, Xh)
        ref = (np.concatenate([sk.coef_[0][Xg.shape[1]:], sk.coef_[0][:Xg.shape[1]]]) if swap
               else sk.coef_[0])
        for mode, clip in variants:
            s, coef = train(A, y, B, mode, clip)
            name = mode if mode != "second" else f"second order, clip {clip:g}"
            print(f"{'swapped' if swap else 'as given':8s} {name:22s} AUC "
                  f"{roc_auc_score(y, s):.4f} log-loss {log_loss(y, sigmoid(s)):.4f} "
                  f"max |coef - sklearn| {np.abs(coef - ref).max():.3f}", flush=True)


if __name__ == "__main__":
    main()
