"""What a curious host learns about the labels, measured on the current code (issue 8, findings 1-2).

Runs the attacks of ``tests/security/attacks.py`` against the real protocol:

1. First-batch lattice attack: one real training epoch in memory (1024-bit
   keys, Gaussian features, labels logistic in the guest's columns only, so
   the host's own columns predict them no better than the majority class);
   the first host's exact view of batch 0 is attacked. Also shown: the
   least-squares estimate any host gets linearly from ``X^T d`` (the leak the
   batch-size guardrail bounds but does not remove).
2. Noise sweep: the same attack on a first-batch gradient computed in the
   clear, with the guest's unknown scores of standard deviation sigma: how
   large the guest's secret random start must be.
3. Validation replay for 100/200/500 validation rows (fraction 0.2): the
   current split, and the pre-issue-8 seeded split for comparison.

    python -m benchmarks.attacks [--no-bkz] [--quick]

BKZ (fpylll) strengthens the lattice attack when installed; python-flint's
LLL always runs. "labels" counts the better of the labels and their
complement (:func:`tests.security.attacks.label_accuracy`). About 40 s (LLL)
to 70 s (BKZ).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tests.security import attacks
from vfl.crypto.encoding import quantize
from vfl.exceptions import ConfigError
from vfl.lr.config import TrainConfig

F, G = 32, 20


def first_batch_table(batches: list[int], columns: list[int], use_bkz: bool) -> None:
    print("1. First-batch lattice attack, real protocol (1 epoch, 2 batches, 1024-bit keys)")
    print("     b   k  | lattice: labels  certain  count found | majority  chance bound | "
          "least-squares | secs")
    for b in batches:
        for k in columns:
            Xg, y, Xh = attacks.synthetic_labels_data(2 * b, 4, k, seed=1000 * b + k)
            cfg = TrainConfig(key_bits=1024, allow_insecure_key_size=True, epochs=1,
                              batch_size=b, tol=0.0, score_frac_bits=F, feature_frac_bits=G)
            t0 = time.perf_counter()
            try:
                view = attacks.host_view_first_batch(Xg, y, Xh, cfg)
            except ConfigError:
                print(f"  {b:4d} {k:3d}  | refused by the batch-size guardrail (b < 4k)")
                continue
            truth = y[list(view.rows)]
            out = attacks.lattice_attack_detailed(view.Q, view.gradient, F, n_train=view.n_train,
                                                  n_rows=view.n_rows, own_scores=view.own_scores,
                                                  use_bkz=use_bkz)
            acc = attacks.label_accuracy(None if out is None else out.labels, truth)
            ls = attacks.label_accuracy(
                attacks.least_squares_attack(view.Q, view.gradient, F, own_scores=view.own_scores,
                                             positive_rate=float(np.mean(truth))), truth)
            majority = max(float(np.mean(truth)), 1.0 - float(np.mean(truth)))
            certain = bool(out is not None and out.certain)
            found = "-" if out is None or out.positives is None else (
                f"{out.positives} ({'right' if out.positives == int(y.sum()) else 'wrong'})")
            print(f"  {b:4d} {k:3d}  | {round(acc * len(truth)):4d}/{len(truth):<4d}  "
                  f"{'yes' if certain else 'no ':7s} {found:>12s} | {majority:8.3f}  "
                  f"{attacks.chance_bound(truth):12.3f} | {ls:13.3f} | "
                  f"{time.perf_counter() - t0:5.1f}")


def noise_sweep(shapes: list[tuple[int, int]], sigmas: list[float], use_bkz: bool) -> None:
    print("\n2. Noise sweep: first batch computed in the clear, guest scores of std sigma unknown "
          "to the host")
    print("     b   k  sigma  | lattice accuracy  certain | least-squares | chance bound")
    for b, k in shapes:
        rng = np.random.default_rng(b + k)
        Q = quantize(rng.normal(size=(b, k)), G)
        Xg = rng.normal(size=(b, 4))
        y = (rng.random(b) < 1.0 / (1.0 + np.exp(-(Xg @ rng.normal(0, 0.8, 4) - 0.6)))).astype(int)
        for sigma in sigmas:
            gs = None
            if sigma:
                z = Xg @ rng.normal(size=4)
                gs = sigma * z / np.std(z)
            grad = attacks.simulate_first_batch_gradient(Q, y, F, 2.0 * (2.0 * y.mean() - 1.0),
                                                         guest_scores=gs)
            out = attacks.lattice_attack_detailed(Q, grad, F, use_bkz=use_bkz)
            acc = attacks.label_accuracy(None if out is None else out.labels, y)
            ls = attacks.label_accuracy(attacks.least_squares_attack(
                Q, grad, F, positive_rate=float(y.mean())), y)
            certain = "yes" if out is not None and out.certain else "no"
            print(f"  {b:4d} {k:3d} {sigma:6g}  | {acc:16.3f}  {certain:7s} | {ls:13.3f} | "
                  f"{attacks.chance_bound(y):12.3f}")


def validation_table(sizes: list[int], fraction: float) -> None:
    print(f"\n3. Validation replay (fraction {fraction}, public seed 0, 30 % positives)")
    print("  split      rows   val | consistent counts | labels determined (val / all) | wrong")
    current = attacks.current_split()
    for label, split in (("current", current), ("seeded-v1", attacks.seeded_validation_split_v1)):
        for nv in sizes:
            n = int(round(nv / fraction))
            rng = np.random.default_rng(nv)
            y = (rng.random(n) < 0.3).astype(np.int64)
            rows = split(y, fraction, 0)
            out = attacks.validation_replay_attack(n, rows, fraction, 0, split=split)
            wrong = sum(1 for r, lab in out.determined.items() if y[r] != lab)
            counts = ",".join(str(c) for c in out.consistent_counts[:3]) or "none"
            print(f"  {label:9s} {n:5d} {len(rows):5d} | {counts:>17s} | "
                  f"{out.determined_among(rows):6d}/{len(rows):<4d} {len(out.determined):6d}/{n:<5d}"
                  f"        | {wrong}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-bkz", action="store_true", help="LLL only, even if fpylll is installed")
    ap.add_argument("--quick", action="store_true", help="b = 64 only")
    args = ap.parse_args()
    use_bkz = attacks.bkz_available() and not args.no_bkz
    print(f"reduction: python-flint LLL{' + fpylll BKZ' if use_bkz else ''}\n")
    t0 = time.perf_counter()
    batches = [64] if args.quick else [64, 128]
    first_batch_table(batches, [4, 8, 16, 32], use_bkz)
    noise_sweep([(64, 16)] if args.quick else [(64, 16), (128, 32)],
                [0.0, 1e-3, 1e-2, 0.1, 1.0], use_bkz)
    validation_table([100, 200, 500], 0.2)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
