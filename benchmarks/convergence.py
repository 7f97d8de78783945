"""Per-epoch AUC of the default training settings on default_credit (plaintext reference).

The plaintext reference runs exactly the algorithm the encrypted protocol runs
(tests require equal weights to 1e-6; measured ~1e-16), so this shows how many
epochs the encrypted run needs to reach the Taylor-loss optimum.

    python -m benchmarks.convergence [--data ../shared/data] [--epochs 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import roc_auc_score

from benchmarks._data import default_credit
from vfl.lr import TrainConfig
from vfl.lr.reference import fit_reference
from vfl.preprocess import Standardizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    Xg, y, Xh = default_credit(args.data)
    Xg = Standardizer.fit(Xg).transform(Xg)
    Xh = Standardizer.fit(Xh).transform(Xh)
    X = np.hstack([Xg, Xh])
    exact = roc_auc_score(y, LogisticRegression(max_iter=5000).fit(X, y).decision_function(X))
    taylor = roc_auc_score(y, LinearRegression().fit(X, 2 * y - 1).predict(X))
    guest = roc_auc_score(y, LogisticRegression(max_iter=5000).fit(Xg, y).decision_function(Xg))
    print(f"sklearn LogisticRegression (pooled): AUC {exact:.4f}")
    print(f"Taylor-loss optimum (least squares on +-1): AUC {taylor:.4f}")
    print(f"guest-only LogisticRegression: AUC {guest:.4f}")
    print("epoch  AUC     gap to Taylor optimum  loss")
    for e in range(1, args.epochs + 1):
        r = fit_reference(Xg, y, [Xh], TrainConfig(epochs=e, tol=0.0))
        s = Xg @ r.guest_coef[:-1] + r.guest_coef[-1] + Xh @ r.host_coefs[0]
        auc = roc_auc_score(y, s)
        print(f"{e:5d}  {auc:.4f}  {auc - taylor:+.4f}                {r.loss_history[-1]:.5f}")


if __name__ == "__main__":
    main()
