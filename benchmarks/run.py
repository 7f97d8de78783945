"""vfl benchmarks: Paillier primitives vs phe, an encrypted epoch on default_credit, PSI.

    python -m benchmarks.run [--quick] [--data ../shared/data] [--skip-psi-1m]
                             [--compare-ref GIT_REF]

``--compare-ref`` also times one epoch of the code at ``GIT_REF`` (checked out
into a temporary git worktree) alternately with the current code, each in its
own process, so a protocol change is measured side by side in one run.

Everything in one table is measured in the same run (the machine is shared and
noisy: compare ratios, not absolute figures across runs). Writes
benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import threading
import time
from pathlib import Path

import gmpy2
import numpy as np
from phe import paillier

from benchmarks._data import cpu_model
from vfl.crypto import EncryptedVector, Randomizer, matvec_t, quantize
from vfl.crypto.paillier import PaillierPrivateKey

ROOT = Path(__file__).resolve().parent


def _rate(fn, count: int) -> float:
    t = time.perf_counter()
    fn()
    return count / (time.perf_counter() - t)


def primitives(key_bits: int, quick: bool) -> dict[str, dict[str, float]]:
    """Operations per second, ours vs phe+gmpy2, same key."""
    phe_pub, phe_priv = paillier.generate_paillier_keypair(n_length=key_bits)
    priv = PaillierPrivateKey.from_phe(phe_priv)
    pub = priv.public_key
    rnd = Randomizer(pub)
    k = 1 if quick else 4
    n_enc, n_phe_enc = 500 * k, 50 * k
    vals = [secrets.randbelow(2**40) - 2**39 for _ in range(n_enc)]
    out: dict[str, dict[str, float]] = {}

    ours = _rate(lambda: EncryptedVector.encrypt(pub, vals, 0, rnd), n_enc)
    phe_nums = []
    theirs = _rate(lambda: phe_nums.extend(phe_pub.encrypt(v) for v in vals[:n_phe_enc]), n_phe_enc)
    out["encrypt"] = {"vfl": ours, "phe": theirs}

    vec = EncryptedVector.encrypt(pub, vals, 0, rnd)
    n_dec = 100 * k
    sub = EncryptedVector(pub, vec.ciphertexts[:n_dec], 0)
    out["decrypt"] = {"vfl": _rate(lambda: sub.decrypt(priv), n_dec),
                      "phe": _rate(lambda: [phe_priv.decrypt(e) for e in phe_nums[:n_dec]],
                                   min(n_dec, len(phe_nums)))}
    m = len(phe_nums)
    small = EncryptedVector(pub, vec.ciphertexts[:m], 0)
    out["add"] = {"vfl": _rate(lambda: small.add(small), m),
                  "phe": _rate(lambda: [a + b for a, b in zip(phe_nums, phe_nums, strict=True)], m)}
    floats = [v / 2**20 for v in vals[:m]]
    ints = quantize(floats, 20)
    out["add_plain"] = {"vfl": _rate(lambda: small.add_plain(ints), m),
                        "phe": _rate(lambda: [a + f for a, f in zip(phe_nums, floats, strict=True)], m)}
    scal = [secrets.randbelow(2**20) for _ in range(m)]
    out["scalar_multiply"] = {
        "vfl": _rate(lambda: small.mul_elementwise(scal), m),
        "phe": _rate(lambda: [a * (s / 2**10) for a, s in zip(phe_nums, scal, strict=True)], m)}
    # X^T [[d]]: rows x 10 columns of standardised features at 2^-20
    rows = 1000 * k
    X = np.random.default_rng(0).normal(size=(rows, 10))
    q = quantize(X, 20)
    offs = np.maximum(0, -q.min(axis=0))
    big = EncryptedVector.encrypt(pub, vals[:rows] * (rows // len(vals[:rows]) or 1), 0, rnd)
    big = EncryptedVector(pub, (big.ciphertexts * 2)[:rows], 0)
    t = time.perf_counter()
    matvec_t(q + offs, offs, big, 20)
    ours = rows * 10 / (time.perf_counter() - t)
    n2 = pub.nsquare
    per = min(rows, 200 * k)
    t = time.perf_counter()
    for j in range(10):
        acc = gmpy2.mpz(1)
        for i in range(per):
            e = int(q[i, j])
            c = big.ciphertexts[i]
            acc = acc * (gmpy2.powmod(c, e, n2) if e >= 0 else
                         gmpy2.powmod(gmpy2.invert(c, n2), -e, n2)) % n2
    powmod_rate = per * 10 / (time.perf_counter() - t)
    t = time.perf_counter()
    for j in range(10):
        acc = phe_nums[0] * float(X[0, j])
        for i in range(1, min(per, m)):
            acc = acc + phe_nums[i] * float(X[i, j])
    phe_rate = min(per, m) * 10 / (time.perf_counter() - t)
    out["XT_d (per element)"] = {"vfl": ours, "phe": phe_rate, "powmod_per_element": powmod_rate}
    return out


def epoch(data: Path, key_bits: int, quick: bool, short_exponent: int | None = 448
          ) -> dict[str, object]:
    """Seconds per epoch on default_credit (all three roles on this machine) vs phe scaled.

    Both training modes, epoch by epoch in one run. The accurate mode (the
    default) sends no squares in epoch 0 (every host weight is zero); from
    epoch 1 on each epoch refreshes a share ``1/curvature_every`` of the rows'
    squares, so its epochs 2-5 are its steady cost.
    """
    from benchmarks._data import default_credit
    from benchmarks.phe_baseline import phe_epoch_seconds_per_row
    from vfl.lr import TrainConfig

    Xg, y, Xh = default_credit(data)
    n_epochs = 2 if quick else 5
    shared = TrainConfig(epochs=n_epochs, tol=0.0, key_bits=key_bits, patience=0,
                         allow_insecure_key_size=key_bits < 2048)
    # issue 24: the former default (protocol reveal-gradients with Adam) beside the new one
    cfg = shared.replace(protocol="reveal-gradients", optimizer="adam", learning_rate=0.1,
                         decay=1.0)
    result: dict[str, object] = {"rows": len(y), "curvature_every": cfg.curvature_every}
    result["taylor_epochs_seconds"] = _epochs(Xg, y, Xh, cfg.replace(mode="taylor"), key_bits,
                                              None)
    result["accurate_epochs_seconds"] = _epochs(Xg, y, Xh, cfg, key_bits, None)
    split: dict[str, float] = {}
    traffic: dict[str, int] = {}
    result["shared_epochs_seconds"] = timed_run(Xg, y, Xh, shared, split=split,
                                                traffic=traffic)[1]
    result["shared_cost_split_seconds"] = {k: v / n_epochs for k, v in split.items()}
    result["shared_traffic_bytes_per_epoch"] = {k: v // n_epochs for k, v in traffic.items()}
    before: dict[str, int] = {}
    timed_run(Xg, y, Xh, cfg.replace(epochs=2), traffic=before)
    result["accurate_traffic_bytes_per_epoch"] = {k: v // 2 for k, v in before.items()}
    taylor = sorted(result["taylor_epochs_seconds"])  # type: ignore[arg-type]
    acc: list[float] = result["accurate_epochs_seconds"]  # type: ignore[assignment]
    sh: list[float] = result["shared_epochs_seconds"]  # type: ignore[assignment]
    result["vfl_epoch_seconds"] = taylor[len(taylor) // 2]  # Taylor median, as before issue 11
    if not quick:
        # epoch 0 has no squares (host weights are zero); from epoch 1 on every epoch refreshes
        # a share 1/curvature_every of the rows' squares: the accurate mode's steady epoch
        result["accurate_epoch_seconds"] = sum(acc[1:]) / len(acc[1:])
        result["accurate_to_taylor_ratio"] = result["accurate_epoch_seconds"] / \
            result["vfl_epoch_seconds"]
        result["shared_epoch_seconds"] = sum(sh[1:]) / len(sh[1:])
        result["shared_to_accurate_ratio"] = result["shared_epoch_seconds"] / \
            result["accurate_epoch_seconds"]
    if short_exponent:
        result["vfl_epoch_seconds_short_exponent"] = _epochs(
            Xg, y, Xh, cfg.replace(epochs=1, mode="taylor"), key_bits, short_exponent)[0]
    rows = 64 if quick else 256
    per_row = phe_epoch_seconds_per_row(Xg, y, Xh, rows=rows, key_bits=key_bits)
    result.update({"phe_seconds_per_row": per_row, "phe_epoch_seconds_scaled": per_row * len(y),
                   "phe_rows_measured": rows, "short_exponent_bits": short_exponent or 0})
    return result


def _one_epoch(Xg, y, Xh, cfg, key_bits: int, exponent_bits: int | None) -> float:
    """Seconds of the first epoch of ``cfg`` (used by ``--compare-ref``)."""
    return _epochs(Xg, y, Xh, cfg.replace(epochs=1), key_bits, exponent_bits)[0]


def _epochs(Xg, y, Xh, cfg, key_bits: int, exponent_bits: int | None) -> list[float]:
    """Seconds of each epoch of one run of ``cfg`` (key generation and worker start excluded)."""
    return timed_run(Xg, y, Xh, cfg, exponent_bits=exponent_bits)[1]


def timed_run(Xg, y, Xh, cfg, *, exponent_bits: int | None = None,
              split: dict[str, float] | None = None, traffic: dict[str, int] | None = None,
              **guest_kwargs) -> tuple[dict[str, object], list[float]]:
    """One run of the three roles (threads, in-memory transport): each role's result, and the
    seconds of each epoch. ``guest_kwargs`` go to ``run_guest_training`` (e.g. a start).

    ``split``: filled with the seconds spent in the shared protocol's own work (the
    parties' ``X [[V]]`` multi-exponentiations, the arbiter's answers to masked gradients:
    decryption, share step, share and square encryptions; the guest's unmasking of the
    squares). ``traffic``: filled with the bytes each party sent."""
    import contextlib

    from vfl.crypto.engine import ChunkedEngine, CipherEngine
    from vfl.lr import run_arbiter, run_guest_training, run_host_training
    from vfl.lr.arbiter import ArbiterParty
    from vfl.lr.guest import GuestParty
    from vfl.pipeline import run_threads
    from vfl.transport import InMemoryNetwork

    net = InMemoryNetwork(["guest", "host", "arbiter"])
    if traffic is not None:
        logs = {p: net.endpoint(p).record_transcript() for p in net.parties}
    patches = contextlib.ExitStack()
    if split is not None:
        from unittest import mock

        lock = threading.Lock()

        def timer(owner: type, name: str, label: str) -> None:
            orig = getattr(owner, name)

            def wrapped(*a, **k):
                t = time.perf_counter()
                try:
                    return orig(*a, **k)
                finally:
                    with lock:
                        split[label] = split.get(label, 0.0) + time.perf_counter() - t
            patches.enter_context(mock.patch.object(owner, name, wrapped))

        timer(CipherEngine, "project", "X [[V]] multi-exponentiations (guest and host)")
        timer(ChunkedEngine, "project", "X [[V]] multi-exponentiations (guest and host)")
        timer(ArbiterParty, "on_masked_gradient",
              "arbiter: masked gradients (decrypt, step, encrypt shares and squares)")
        timer(ArbiterParty, "_squares", "  of which the squares (decrypt, encrypt)")
        timer(GuestParty, "on_share_update", "guest: new share and unmasking the squares")
    marks: list[float] = []
    insecure = cfg.key_bits < 2048

    class Clock:
        def on_start(self, n_epochs, n_batches):
            marks.append(time.perf_counter())

        def on_batch(self, *a):
            pass

        def on_epoch(self, epoch, loss):
            marks.append(time.perf_counter())

    with patches:
        res = run_threads(net, {
            "guest": lambda ch: run_guest_training(ch, "guest", Xg, y, cfg, hosts=["host"],
                                                   arbiter="arbiter", progress=Clock(),
                                                   exponent_bits=exponent_bits, **guest_kwargs),
            "host": lambda ch: run_host_training(ch, "host", Xh, guest="guest",
                                                 arbiter="arbiter",
                                                 allow_insecure_key_size=insecure,
                                                 exponent_bits=exponent_bits),
            "arbiter": lambda ch: run_arbiter(ch, guest="guest",
                                              allow_insecure_key_size=insecure),
        })
    if traffic is not None:
        for p, log in logs.items():
            traffic[p] = traffic.get(p, 0) + sum(len(b) for d, _, b in log if d == "sent")
    return res, [b - a for a, b in zip(marks, marks[1:], strict=False)]


_EPOCH_SNIPPET = """
import json, sys
from pathlib import Path
from benchmarks._data import default_credit
from benchmarks.run import _one_epoch
from vfl.lr import TrainConfig
data, bits = Path(sys.argv[1]), int(sys.argv[2])
Xg, y, Xh = default_credit(data)
cfg = TrainConfig(epochs=1, tol=0.0, key_bits=bits, allow_insecure_key_size=bits < 2048)
print(json.dumps(_one_epoch(Xg, y, Xh, cfg, bits, None)))
"""


def epoch_vs_ref(data: Path, key_bits: int, ref: str, rounds: int = 2) -> dict[str, object]:
    """Seconds per epoch of this tree and of ``ref``, alternated, each in a fresh process."""
    import statistics
    import subprocess
    import sys
    import tempfile

    here = ROOT.parent
    with tempfile.TemporaryDirectory(prefix="vfl-ref-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", "-q", str(tree),
                        ref], check=True)
        try:
            times: dict[str, list[float]] = {"current": [], ref: []}
            for _ in range(rounds):
                for label, root in ((ref, tree), ("current", here)):
                    env = dict(os.environ, PYTHONPATH=str(root))
                    out = subprocess.run([sys.executable, "-c", _EPOCH_SNIPPET, str(data),
                                          str(key_bits)], cwd=root, env=env, check=True,
                                         capture_output=True, text=True)
                    times[label].append(float(out.stdout.strip().splitlines()[-1]))
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(tree)],
                           check=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"ref": ref, "seconds": times, "median": med,
            "ratio_current_to_ref": med["current"] / med[ref]}


def psi(n: int) -> dict[str, float]:
    """Wall seconds of a two-party PSI with n IDs each and 50 % overlap."""
    from vfl.psi import run_psi_guest, run_psi_host
    from vfl.transport import InMemoryNetwork

    guest = [f"C{i:09d}" for i in range(n)]
    host = [f"C{i:09d}" for i in range(n // 2, n // 2 + n)]
    net = InMemoryNetwork(["guest", "host"])
    out: dict[str, object] = {}
    t = time.perf_counter()
    th = threading.Thread(target=lambda: out.__setitem__(
        "h", run_psi_host(net.endpoint("host"), host, "guest")))
    th.start()
    rows = run_psi_guest(net.endpoint("guest"), guest, ["host"])
    th.join()
    dt = time.perf_counter() - t
    assert len(rows) == n // 2
    return {"n": n, "seconds": dt}




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--data", default=str(ROOT.parents[1] / "shared" / "data"))
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--skip-psi-1m", action="store_true")
    ap.add_argument("--skip-epoch", action="store_true")
    ap.add_argument("--compare-ref", default=None,
                    help="also time an epoch of this git ref, alternating with the current code")
    ap.add_argument("--compare-rounds", type=int, default=2,
                    help="epochs of each side with --compare-ref (alternated)")
    args = ap.parse_args()
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "cpu_model": cpu_model(),
                    "processor": platform.processor() or platform.machine(),
                    "gmpy2": gmpy2.version()},
        "key_bits": args.key_bits,
    }
    prim = primitives(args.key_bits, args.quick)
    results["primitives_ops_per_second"] = prim
    print(f"Paillier primitives, {args.key_bits}-bit key, ops/s (one core)")
    print(f"{'operation':22s} {'vfl':>12s} {'phe+gmpy2':>12s} {'ratio':>8s}")
    for op, r in prim.items():
        print(f"{op:22s} {r['vfl']:12,.0f} {r['phe']:12,.0f} {r['vfl'] / r['phe']:7.1f}x")
    xt = prim["XT_d (per element)"]
    print(f"{'XT_d vs powmod/elt':22s} {xt['vfl']:12,.0f} {xt['powmod_per_element']:12,.0f} "
          f"{xt['vfl'] / xt['powmod_per_element']:7.1f}x")
    if not args.skip_epoch:
        ep = epoch(Path(args.data), args.key_bits, args.quick)
        results["epoch_default_credit"] = ep
        print(f"\nOne epoch on default_credit ({ep['rows']:,} rows), all parties on this machine:")
        phe_s = ep["phe_epoch_seconds_scaled"]
        print(f"  phe protocol (measured on {ep['phe_rows_measured']} rows, scaled): {phe_s:.0f} s")
        print(f"  vfl Taylor mode, randomiser exponent |n|/2 (median of "
              f"{len(ep['taylor_epochs_seconds'])}): {ep['vfl_epoch_seconds']:.1f} s "
              f"({phe_s / ep['vfl_epoch_seconds']:.0f}x)")
        print("  per epoch, Taylor:   " + " ".join(f"{t:5.1f}" for t in ep["taylor_epochs_seconds"]))
        print("  per epoch, accurate: " + " ".join(f"{t:5.1f}" for t in ep["accurate_epochs_seconds"]))
        print("  per epoch, shared (new default): "
              + " ".join(f"{t:5.1f}" for t in ep["shared_epochs_seconds"]))
        if "shared_to_accurate_ratio" in ep:
            print(f"  protocol shared, accurate mode (the new default), epochs 2-"
                  f"{len(ep['shared_epochs_seconds'])}: mean {ep['shared_epoch_seconds']:.1f} s "
                  f"= {ep['shared_to_accurate_ratio']:.2f}x the former default's (reveal-"
                  "gradients, accurate, Adam)")
        for k, v in ep["shared_cost_split_seconds"].items():
            print(f"    {k}: {v:.1f} s per epoch")
        for label, key in (("former default", "accurate_traffic_bytes_per_epoch"),
                           ("shared", "shared_traffic_bytes_per_epoch")):
            print(f"  traffic per epoch, {label}: " + ", ".join(
                f"{p} {b / 1e6:.1f} MB" for p, b in ep[key].items()))
        if "accurate_to_taylor_ratio" in ep:
            print(f"  accurate mode (default), epochs 2-{len(ep['accurate_epochs_seconds'])} "
                  f"(each refreshes 1/{ep['curvature_every']} of the rows' squares): mean "
                  f"{ep['accurate_epoch_seconds']:.1f} s = {ep['accurate_to_taylor_ratio']:.2f}x "
                  "the Taylor epoch")
        if "vfl_epoch_seconds_short_exponent" in ep:
            s = ep["vfl_epoch_seconds_short_exponent"]
            print(f"  vfl Taylor, {ep['short_exponent_bits']}-bit exponent option: {s:.1f} s "
                  f"({phe_s / s:.0f}x)")
    if args.compare_ref:
        cmp = epoch_vs_ref(Path(args.data), args.key_bits, args.compare_ref,
                           rounds=args.compare_rounds)
        results["epoch_vs_ref"] = cmp
        med = cmp["median"]
        assert isinstance(med, dict)
        print(f"\nOne epoch, current code vs {args.compare_ref} (alternated, median of "
              f"{len(cmp['seconds']['current'])} each, separate processes): "  # type: ignore[index]
              f"{med['current']:.1f} s vs {med[args.compare_ref]:.1f} s "
              f"(ratio {cmp['ratio_current_to_ref']:.3f})")
    from benchmarks.zkp import run as zkp_run

    z = zkp_run(100 if args.quick else 300, args.key_bits, 1)
    results["binning_zero_one_proofs"] = z
    print(f"\nBinning 0/1 proofs ({args.key_bits}-bit key, {z['rows']} rows, one core), per row: "
          f"encrypt+prove {z['prove_ms_per_row_1core']:.2f} ms (encrypt alone "
          f"{z['encrypt_only_ms_per_row']:.2f} ms), batched verify "
          f"{z['verify_batched_ms_per_row_1core']:.2f} ms; {z['proof_bytes_per_row']} B/row")
    sizes = [10_000 if args.quick else 100_000] + ([] if args.skip_psi_1m or args.quick
                                                   else [1_000_000])
    results["psi"] = [psi(n) for n in sizes]
    for r in results["psi"]:
        print(f"PSI {r['n']:,} x {r['n']:,} IDs (50 % overlap): {r['seconds']:.1f} s")
    (ROOT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {ROOT / 'results.json'}")


if __name__ == "__main__":
    main()
