"""Issue 24's quality check: the new defaults (protocol shared, momentum 0.4, decay 0.5)
against the former ones (protocol reveal-gradients, Adam 0.1, decay 1), side by side.

Each case runs both with the plaintext reference of its exact algorithm
(``vfl.lr.reference.fit_reference``: the encrypted protocol equals it to ~1e-9, tests
``tests/lr/test_shared.py`` and ``test_protocol.py``), the same secret start and the same
validation draw (20 %, stratified), with the protocol's early stopping: patience 5 on the
validation figure of :func:`~vfl.lr.config.selection_key`, the best epoch kept. Reported:
AUC and log-loss of the kept model's own probabilities on the validation rows and on all
rows, and the differences (new - former)::

    python -m benchmarks.shared_quality [--data ../shared/data] [--draws 3]

Writes ``benchmarks/shared_quality.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from benchmarks.accurate_mode import cases
from vfl.calibration import sigmoid
from vfl.lr import TrainConfig
from vfl.lr.config import selection_key, validation_split
from vfl.lr.guest import initial_guest_coef
from vfl.lr.reference import fit_reference

ROOT = Path(__file__).resolve().parent
NEW = TrainConfig()
FORMER = TrainConfig(protocol="reveal-gradients", optimizer="adam", learning_rate=0.1,
                     decay=1.0)


def kept_scores(Xg, y, Xh, cfg: TrainConfig, start, val) -> tuple[np.ndarray, int]:
    """Joint scores of every row with the epoch the protocol keeps, and that epoch."""
    best: tuple[tuple[bool, float], int, np.ndarray] | None = None
    history: list[tuple[bool, float]] = []

    def on_epoch(epoch: int, wg: np.ndarray, wh: list[np.ndarray]) -> bool:
        nonlocal best
        s = Xg @ wg[:-1] + wg[-1] + Xh @ wh[0]
        sv, yv = s[val], y[val]
        key = selection_key(cfg, epoch, round(roc_auc_score(yv, sv), 4),
                            round(log_loss(yv, sigmoid(sv)), 4))
        history.append(key)
        if best is None or key > best[0]:
            best = (key, epoch, s)
        # the guest's patience: stop after `patience` epochs without a better eligible one
        first_best = max(range(len(history)), key=lambda i: (history[i], -i))
        return bool(history[-1][0] and len(history) - 1 - first_best >= cfg.patience)

    fit_reference(Xg, y, [Xh], cfg, initial_guest_coef=start, validation_rows=val,
                  on_epoch=on_epoch)
    assert best is not None
    return best[2], best[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parents[1] / "shared" / "data"))
    ap.add_argument("--draws", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for name, (Xg, y, Xh) in cases(Path(args.data)).items():
        if name == "breast swapped":
            continue
        for draw in range(args.draws):
            val = validation_split(y, 0.2)
            train = np.setdiff1d(np.arange(len(y)), val)
            start = initial_guest_coef(Xg[train], 2 * y[train] - 1, fit_intercept=True)
            row: dict[str, object] = {"case": name, "draw": draw}
            for label, cfg in (("former", FORMER), ("new", NEW)):
                s, kept = kept_scores(Xg, y, Xh, cfg, start, val)
                p = sigmoid(s)
                row[label] = {"kept_epoch": kept,
                              "val_auc": roc_auc_score(y[val], s[val]),
                              "val_log_loss": log_loss(y[val], p[val]),
                              "auc": roc_auc_score(y, s), "log_loss": log_loss(y, p)}
            f, n = row["former"], row["new"]
            assert isinstance(f, dict) and isinstance(n, dict)
            row["d_auc"] = n["auc"] - f["auc"]
            row["d_log_loss_pct"] = 100 * (n["log_loss"] / f["log_loss"] - 1)
            row["d_val_auc"] = n["val_auc"] - f["val_auc"]
            row["d_val_log_loss_pct"] = 100 * (n["val_log_loss"] / f["val_log_loss"] - 1)
            rows.append(row)
            print(f"{name:24s} draw {draw}: all rows AUC {f['auc']:.4f} -> {n['auc']:.4f} "
                  f"({row['d_auc']:+.4f}), log-loss {f['log_loss']:.4f} -> {n['log_loss']:.4f} "
                  f"({row['d_log_loss_pct']:+.1f} %); validation AUC {row['d_val_auc']:+.4f}, "
                  f"log-loss {row['d_val_log_loss_pct']:+.1f} %; kept epochs "
                  f"{f['kept_epoch']} / {n['kept_epoch']}", flush=True)
    (ROOT / "shared_quality.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
