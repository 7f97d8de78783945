"""Issue 24's plaintext study: which optimiser and expansion schedule keep today's quality
when weights are secret-shared (no party sees a gradient or, the guest aside, its weights).

Float simulation of the protocol's batches, validation split, early stopping
(patience 5 on the validation log-loss from epoch ``curvature_every`` on, best
epoch kept) and accurate-mode residual, on the issue's four data sets, one
secret start and one validation draw per set for every variant::

    python -m benchmarks.shared_schedule [--data ../shared/data]

Variants: ``today`` (Adam, expansion around the guest's current score);
``shared`` with an optimiser that is linear in the gradient, the expansion
point the guest's score at the start of each epoch (the only time the guest
learns its weights), and the second-order term of the hosts' clipped squares.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from benchmarks.accurate_mode import cases
from vfl.calibration import sigmoid
from vfl.lr.config import batch_plan
from vfl.lr.guest import initial_guest_coef
from vfl.lr.optim import Optimizer

R = 4  # curvature_every


def run(Xg, y, Xh, train, val, start, *, opt: str, lr: float, decay: float,
        expand: str, epochs: int = 30, patience: int = 5, clip: float = 3.0,
        whiten: bool = False):
    kg = Xg.shape[1]
    wg, wh = start.copy(), np.zeros(Xh.shape[1])
    if whiten:
        Lg, Lh = _chol(Xg[train]), _chol(Xh[train])
        Xg = np.linalg.solve(Lg, Xg.T).T
        Xh = np.linalg.solve(Lh, Xh.T).T
        wg = np.append(Lg.T @ wg[:kg], wg[kg])
    og = Optimizer(opt, lr, decay, "none", 0.0, kg + 1, kg)
    oh = Optimizer(opt, lr, decay, "none", 0.0, Xh.shape[1])
    n = len(y)
    q = np.zeros(n)
    best, best_w, bad = math.inf, None, 0
    hist = []
    for e in range(epochs):
        wg_epoch = wg.copy()
        for b in batch_plan(len(train), 2048, 0, e):
            rows = train[b]
            g = Xg[rows] @ wg[:kg] + wg[kg]
            h = Xh[rows] @ wh
            due = rows[((rows - (e - 1)) % R == 0)] if e >= 1 else rows[:0]
            q[due] = np.clip(Xh[due] @ wh, -clip, clip) ** 2
            have = q[rows] > 0
            gt = g if expand == "current" else Xg[rows] @ wg_epoch[:kg] + wg_epoch[kg]
            p = sigmoid(gt)
            d = p - y[rows] + p * (1 - p) * (g - gt + h) + 0.5 * p * (1 - p) * (1 - 2 * p) * q[rows] * have
            m = len(rows)
            wg = og.step(wg, np.append(Xg[rows].T @ d, d.sum()) / m, e)
            wh = oh.step(wh, Xh[rows].T @ d / m, e)
        s = Xg @ wg[:kg] + wg[kg] + Xh @ wh
        vl = log_loss(y[val], sigmoid(s[val]))
        hist.append(vl)
        if e >= R or e == epochs - 1:
            if round(vl, 4) < best:
                best, best_w, bad = round(vl, 4), (wg.copy(), wh.copy(), e), 0
            else:
                bad += 1
                if bad >= patience:
                    break
    wg, wh, kept = best_w
    s = Xg @ wg[:kg] + wg[kg] + Xh @ wh
    return s, kept, len(hist)


def _chol(X):
    c = np.cov(X, rowvar=False) + 1e-6 * np.eye(X.shape[1])
    return np.linalg.cholesky(c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--variants", default="")
    args = ap.parse_args()
    variants = {
        "W momentum 0.1": dict(opt="momentum", lr=0.1, decay=1.0, expand="epoch", whiten=True),
        "W momentum 0.2": dict(opt="momentum", lr=0.2, decay=1.0, expand="epoch", whiten=True),
        "W momentum 0.3 d.5": dict(opt="momentum", lr=0.3, decay=0.5, expand="epoch", whiten=True),
        "W momentum 0.2 d.5": dict(opt="momentum", lr=0.2, decay=0.5, expand="epoch", whiten=True),
        "W sgd 2.0 d.5": dict(opt="sgd", lr=2.0, decay=0.5, expand="epoch", whiten=True),
        "W sgd 1.0 d.5": dict(opt="sgd", lr=1.0, decay=0.5, expand="epoch", whiten=True),
        "today adam 0.1": dict(opt="adam", lr=0.1, decay=1.0, expand="current"),
        "adam 0.1 epoch-start": dict(opt="adam", lr=0.1, decay=1.0, expand="epoch"),
        "momentum 0.1 epoch": dict(opt="momentum", lr=0.1, decay=1.0, expand="epoch"),
        "momentum 0.2 epoch": dict(opt="momentum", lr=0.2, decay=1.0, expand="epoch"),
        "momentum 0.3 d.5 epoch": dict(opt="momentum", lr=0.3, decay=0.5, expand="epoch"),
        "sgd 1.0 epoch": dict(opt="sgd", lr=1.0, decay=1.0, expand="epoch"),
        "sgd 2.0 epoch": dict(opt="sgd", lr=2.0, decay=0.5, expand="epoch"),
    }
    if args.variants:
        variants = {k: v for k, v in variants.items() if any(s in k for s in args.variants.split(","))}
    rng = np.random.default_rng(1)
    for name, (Xg, y, Xh) in cases(Path(args.data)).items():
        if "breast swapped" in name:
            continue
        n = len(y)
        val = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), round(0.2 * np.sum(y == c)),
                                                 replace=False) for c in (0, 1)]))
        train = np.setdiff1d(np.arange(n), val)
        start = initial_guest_coef(Xg[train], 2 * y[train] - 1, fit_intercept=True)
        for vname, kw in variants.items():
            s, kept, ran = run(Xg, y, Xh, train, val, start, **kw)
            print(f"{name:24s} {vname:24s} val AUC {roc_auc_score(y[val], s[val]):.4f} "
                  f"val LL {log_loss(y[val], sigmoid(s[val])):.4f} all AUC "
                  f"{roc_auc_score(y, s):.4f} all LL {log_loss(y, sigmoid(s)):.4f} "
                  f"kept {kept} ran {ran}", flush=True)


if __name__ == "__main__":
    main()
