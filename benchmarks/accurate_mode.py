"""Issue 11: the accurate mode against the Taylor mode and exact logistic regression.

Each case trains both modes with the real encrypted protocol (three roles on
this machine over the in-memory transport, 2048-bit keys, every other setting
at its default: 20 % validation, patience 5, up to 30 epochs, the best epoch
kept) from one secret start and one validation draw, and compares them with
scikit-learn's unpenalised ``LogisticRegression`` on the joined, standardised
table:

* AUC and log-loss of the model's own probabilities (uncalibrated) on all
  rows, against sklearn fitted on all rows (the issue's yardstick, 0.7242 on
  default_credit), and on the held-out rows against sklearn fitted on the same
  training rows;
* the largest difference to sklearn's coefficients (standardised columns);
* epochs run, the kept epoch and the mean seconds per epoch;
* a plaintext yardstick: the exact gradient with the same start, batches and
  optimiser, for as many epochs as the accurate run kept (what is left to
  sklearn there is the optimiser's, not the approximation's).

Cases: default_credit, default_credit with the parties' columns swapped (the
host holds the strong ones), breast, breast swapped, and a synthetic set
where the host's score dominates (:func:`vfl.synthetic.host_dominant`)::

    python -m benchmarks.accurate_mode [--data ../shared/data] [--key-bits 2048]
                                       [--cases default_credit,breast,...]

About 40 minutes at 2048 bits on a 2-core machine (default_credit dominates).
Writes ``benchmarks/accurate_mode.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from benchmarks.run import timed_run
from vfl.lr import TrainConfig
from vfl.lr.config import validation_split
from vfl.lr.guest import initial_guest_coef
from vfl.synthetic import host_dominant

ROOT = Path(__file__).resolve().parent


def _std(X: np.ndarray) -> np.ndarray:
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 0, sd, 1)


def _fate(data: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = pd.read_csv(data / f"{name}_hetero_guest.csv")
    h = pd.read_csv(data / f"{name}_hetero_host.csv")
    h = h.rename(columns={c: f"h_{c}" for c in h.columns if c != "id"})
    m = g.merge(h, on="id")
    Xg = m[[c for c in g.columns if c not in ("id", "y")]].to_numpy(float)
    Xh = m[[c for c in h.columns if c != "id"]].to_numpy(float)
    return _std(Xg), m["y"].to_numpy(float), _std(Xh)


def cases(data: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    dc, br = _fate(data, "default_credit"), _fate(data, "breast")
    Xg, y, Xh = host_dominant(10000)
    return {
        "default_credit": dc,
        "default_credit swapped": (dc[2], dc[1], dc[0]),
        "breast": br,
        "breast swapped": (br[2], br[1], br[0]),
        "synthetic host-dominant": (Xg, y, Xh),
    }


def train(Xg, y, Xh, cfg: TrainConfig, start, val) -> dict[str, object]:
    """One encrypted run; its weights (best epoch), epochs and seconds per epoch."""
    res, times = timed_run(Xg, y, Xh, cfg, initial_coef=start, validation_rows=val)
    guest, epochs = res["guest"]  # type: ignore[misc]
    host = res["host"][0]  # type: ignore[index]
    return {"guest_coef": guest.coef.copy(), "host_coef": host.coef.copy(), "epochs": epochs,
            "best_epoch": guest.best_epoch, "seconds_per_epoch": sum(times) / len(times)}


def exact_gradient(Xg, y, Xh, cfg: TrainConfig, start, val, epochs: int) -> np.ndarray:
    """Yardstick in plaintext: the exact gradient ``σ(s) − y`` with the protocol's start,
    batches and optimiser for ``epochs`` epochs (separates the approximation's error from
    the optimiser's); returns the joint scores."""
    from vfl.lr.config import epoch_batches
    from vfl.lr.optim import Optimizer

    kg = Xg.shape[1]
    wg, wh = np.asarray(start, dtype=float).copy(), np.zeros(Xh.shape[1])
    og = Optimizer(cfg.optimizer, cfg.learning_rate, cfg.decay, cfg.penalty, cfg.alpha, kg + 1,
                   kg)
    oh = Optimizer(cfg.optimizer, cfg.learning_rate, cfg.decay, cfg.penalty, cfg.alpha,
                   Xh.shape[1])
    for e in range(epochs):
        for rows in epoch_batches(len(y), val, cfg, e):
            d = 1 / (1 + np.exp(-(Xg[rows] @ wg[:kg] + wg[kg] + Xh[rows] @ wh))) - y[rows]
            wg = og.step(wg, np.append(Xg[rows].T @ d, d.sum()) / len(rows), e)
            wh = oh.step(wh, Xh[rows].T @ d / len(rows), e)
    return Xg @ wg[:kg] + wg[kg] + Xh @ wh


def _figures(y, s) -> tuple[float, float]:
    return float(roc_auc_score(y, s)), float(log_loss(y, 1 / (1 + np.exp(-s))))


def run_case(name, Xg, y, Xh, key_bits: int) -> dict[str, object]:
    X = np.hstack([Xg, Xh])
    val = validation_split(y, 0.2)
    train_rows = np.setdiff1d(np.arange(len(y)), val)
    sk_all = LogisticRegression(C=np.inf, max_iter=10000).fit(X, y)
    sk_train = LogisticRegression(C=np.inf, max_iter=10000).fit(X[train_rows], y[train_rows])
    out: dict[str, object] = {"rows": len(y), "guest_columns": Xg.shape[1],
                              "host_columns": Xh.shape[1]}
    auc, loss = _figures(y, sk_all.decision_function(X))
    hauc, hloss = _figures(y[val], sk_train.decision_function(X[val]))
    out["sklearn"] = {"auc": auc, "log_loss": loss, "heldout_auc": hauc, "heldout_log_loss": hloss}
    start = initial_guest_coef(Xg[train_rows], 2 * y[train_rows] - 1, fit_intercept=True)
    for mode in ("taylor", "accurate"):
        cfg = TrainConfig(key_bits=key_bits, allow_insecure_key_size=key_bits < 2048, mode=mode)
        r = train(Xg, y, Xh, cfg, start, val)
        wg, wh = r["guest_coef"], r["host_coef"]
        s = Xg @ wg[:-1] + wg[-1] + Xh @ wh
        auc, loss = _figures(y, s)
        hauc, hloss = _figures(y[val], s[val])
        coef = np.concatenate([wg[:-1], wh])
        out[mode] = {"auc": auc, "log_loss": loss, "heldout_auc": hauc, "heldout_log_loss": hloss,
                     "max_coef_diff": float(np.abs(coef - sk_all.coef_[0]).max()),
                     "epochs": r["epochs"], "best_epoch": r["best_epoch"],
                     "seconds_per_epoch": r["seconds_per_epoch"]}
        print(f"  {name} {mode}: {out[mode]}", flush=True)
    acc = out["accurate"]
    s = exact_gradient(Xg, y, Xh, cfg, start, val, acc["best_epoch"] + 1)  # type: ignore[index]
    auc, loss = _figures(y, s)
    hauc, hloss = _figures(y[val], s[val])
    out["exact_gradient"] = {"auc": auc, "log_loss": loss, "heldout_auc": hauc,
                             "heldout_log_loss": hloss}
    return out


def table(results: dict[str, dict[str, object]]) -> str:
    lines = ["| case | model | AUC (all rows) | log-loss | held-out AUC | held-out log-loss | "
             "max coef diff | epochs (kept) | s/epoch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for case, r in results.items():
        sk = r["sklearn"]
        lines.append(f"| {case} | sklearn | {sk['auc']:.4f} | {sk['log_loss']:.4f} | "
                     f"{sk['heldout_auc']:.4f} | {sk['heldout_log_loss']:.4f} | – | – | – |")
        ex = r["exact_gradient"]
        lines.append(f"| | exact gradient, plaintext, same epochs | {ex['auc']:.4f} | "
                     f"{ex['log_loss']:.4f} | {ex['heldout_auc']:.4f} | "
                     f"{ex['heldout_log_loss']:.4f} | – | – | – |")
        for mode in ("taylor", "accurate"):
            m = r[mode]
            lines.append(
                f"| | {mode} | {m['auc']:.4f} ({m['auc'] - sk['auc']:+.4f}) | "
                f"{m['log_loss']:.4f} ({100 * (m['log_loss'] / sk['log_loss'] - 1):+.1f} %) | "
                f"{m['heldout_auc']:.4f} | {m['heldout_log_loss']:.4f} | "
                f"{m['max_coef_diff']:.3f} | {m['epochs']} ({m['best_epoch'] + 1}) | "
                f"{m['seconds_per_epoch']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parents[1] / "shared" / "data"))
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--cases", default="", help="comma-separated subset of the cases")
    args = ap.parse_args()
    chosen = [c for c in args.cases.split(",") if c]
    results = {}
    for name, (Xg, y, Xh) in cases(Path(args.data)).items():
        if chosen and name not in chosen:
            continue
        print(f"{name}: {len(y):,} rows", flush=True)
        results[name] = run_case(name, Xg, y, Xh, args.key_bits)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"\n{args.key_bits}-bit keys, {cpu}\n")
    print(table(results))
    (ROOT / "accurate_mode.json").write_text(json.dumps(
        {"key_bits": args.key_bits, "cpu": cpu, "results": results}, indent=2))


if __name__ == "__main__":
    main()
