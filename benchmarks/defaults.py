"""Why the training defaults are what they are (issue 10): validation AUC per epoch.

Runs the plaintext reference (the exact algorithm of the encrypted protocol)
on the demo's synthetic banks and on default_credit, holding out the same
stratified 20 % for every setting of one data set, and prints the validation
AUC after 1, 2, 3, 5, 8, 12, 16, 20 and 30 epochs for the former defaults
(learning rate 0.05) and the current ones (0.1), both with ``decay`` 1::

    python -m benchmarks.defaults [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks._data import default_credit
from vfl.lr import TrainConfig
from vfl.lr.config import validation_split
from vfl.lr.reference import fit_reference
from vfl.preprocess import Standardizer
from vfl.synthetic import make_two_banks

EPOCHS = (1, 2, 3, 5, 8, 12, 16, 20, 30)
SETTINGS = {"former (lr 0.05)": dict(learning_rate=0.05), "current (lr 0.1)": dict(learning_rate=0.1)}


def _demo() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g, h = make_two_banks(8000, 0.75, seed=7)
    m = g.merge(h, on="customer_id")
    gc = [c for c in g.columns if c not in ("customer_id", "default")]
    hc = [c for c in h.columns if c != "customer_id"]
    Xg, Xh = (m[gc].to_numpy(float), m[hc].to_numpy(float))
    return (Standardizer.fit(Xg).transform(Xg), m["default"].to_numpy(float),
            Standardizer.fit(Xh).transform(Xh))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = ap.parse_args()
    sets = {"demo (6,000 shared rows)": _demo(), "default_credit": default_credit(args.data)}
    print("validation AUC after epochs " + ", ".join(map(str, EPOCHS)))
    for name, (Xg, y, Xh) in sets.items():
        val = validation_split(y, 0.2)
        start = np.append(np.random.default_rng(0).normal(0, 0.05, Xg.shape[1]), 0.0)
        for label, kw in SETTINGS.items():
            row = []
            for e in EPOCHS:
                cfg = TrainConfig(epochs=e, tol=0.0, patience=0, **kw)  # type: ignore[arg-type]
                r = fit_reference(Xg, y, [Xh], cfg, initial_guest_coef=start, validation_rows=val)
                s = Xg @ r.guest_coef[:-1] + r.guest_coef[-1] + Xh @ r.host_coefs[0]
                row.append(f"{roc_auc_score(y[val], s[val]):.4f}")
            print(f"{name:26s} {label:18s} " + " ".join(row), flush=True)


if __name__ == "__main__":
    main()
