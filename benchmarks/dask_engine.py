"""The Dask engine (issue 12, item 3): epoch throughput with 1 vs 2 Dask workers per party.

    python -m benchmarks.dask_engine [--data ../shared/data] [--rows N] [--key-bits 2048]
                                     [--workers 1,2] [--epochs 1] [--repeats 1]
                                     [--out benchmarks/dask_engine.json]

One training epoch of default_credit (30,000 rows, 13 + 10 columns; ``--rows``
takes the first N), one party's share of a PSI (``--psi-ids``: hash its IDs,
blind them, blind as many peer points) and the federated binning's heavy steps
(``--binning-rows``: the guest's 0/1 proofs, the host's verification and
per-bin sums), with guest, host and arbiter driven step by step in this
process as ``benchmarks.profile_epoch`` does (no transport), through:

* the **Dask engine**: the guest and the host each get their own
  ``distributed.LocalCluster`` (worker processes, one thread each, mutual TLS
  with certificates from that party's own compute CA, as in production), with
  1 and then 2 workers per party;
* the **local engine** for comparison: in-process (1) and a pool of 2 processes.

The parties take turns (as in a real epoch, each waits for the other's
message), so a party's heavy step has its whole cluster to itself; the
arbiter's decryption runs in this process in every configuration. Prints and
writes wall time per epoch, rows per second and the ratios (target: 2 Dask
workers >= 1.7x the throughput of 1, on an idle machine; the load average at
start and end is recorded so a busy run can be told apart). Table building
(``setup_s``: worker start, fixed-base tables) happens once per job and is
reported apart from the epoch.

On one 2-core machine the two parties' clusters share the same two cores:
with one worker each, the guest's worker stocks randomisers while the host's
computes (and the reverse), so the 1-worker epoch already keeps both cores
busy part of the time. Besides the epoch's wall time the script therefore
times each party's own steps (``party_steps_s_per_epoch``: the wall time of
its step calls, which wait for its tasks), the figure that says whether a
party with more workers finishes its share proportionally faster.

A smoke run: ``python -m benchmarks.dask_engine --rows 600 --key-bits 512 --out /tmp/d.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._data import DEFAULT_DATA, cpu_model, default_credit
from vfl.certs import write_compute_certs
from vfl.crypto.engine import ComputeConfig, compute_context
from vfl.lr import ArbiterParty, GuestParty, HostParty, TrainConfig, batch_plan
from vfl.lr.messages import HostHello

ROOT = Path(__file__).resolve().parent




@contextmanager
def party_cluster(party: str, workers: int, pki_root: Path) -> Iterator[ComputeConfig]:
    """A TLS LocalCluster of ``workers`` processes for ``party``, with its own compute CA."""
    from distributed import LocalCluster

    from vfl.crypto.dask_engine import cluster_security

    pki = pki_root / party
    if not (pki / "ca.pem").exists():
        write_compute_certs(pki, party)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, protocol="tls",
                      security=cluster_security(pki), dashboard_address=":0") as cluster:
        yield ComputeConfig(engine="dask", scheduler=cluster.scheduler_address,
                            ca=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client.key")


def run_epochs(Xg: np.ndarray, y: np.ndarray, Xh: np.ndarray, cfg: TrainConfig, epochs: int,
               guest_compute: ComputeConfig | None, host_compute: ComputeConfig | None,
               local_workers: int) -> dict[str, Any]:
    """``epochs`` epochs with each party's engine; wall seconds of setup and of each epoch."""
    insecure = cfg.key_bits < 2048
    start = np.append(np.linspace(-0.4, 0.6, Xg.shape[1]), 0.0)  # fixed: same weights every run
    with compute_context(guest_compute):
        guest = GuestParty("guest", Xg, y, cfg, ["host"], workers=local_workers,
                           initial_coef=start)
    setup = guest.setup({"host": HostHello(len(y), Xh.shape[1])})
    with compute_context(host_compute):
        host = HostParty("host", Xh, setup, 0, workers=local_workers)
    arbiter = ArbiterParty(guest.arbiter_setup(setup), "guest", allow_insecure_key_size=insecure)
    try:
        t = time.perf_counter()
        for p in (guest, host):
            p.on_public_key(arbiter.announce(), peer="arbiter", allow_insecure_key_size=insecure)
        setup_s = time.perf_counter() - t
        times = []
        steps = {"guest": 0.0, "host": 0.0}

        def timed(party: str, fn: Any, *a: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*a)
            steps[party] += time.perf_counter() - t0
            return out

        for e in range(epochs):
            t = time.perf_counter()
            for b, rows in enumerate(batch_plan(len(y), cfg.batch_size, cfg.seed, e)):
                scores = timed("host", host.forward, e, b, rows)
                timed("guest", guest.on_forward, "host", scores, e, b)
                res = timed("guest", guest.residuals, e, b, rows)
                masked_h, _ = timed("host", host.on_residual, res["host"])
                masked_g = timed("guest", guest.masked_gradient)
                guest.close_batch()
                dg = arbiter.on_masked_gradient("guest", masked_g, e, b)
                dh = arbiter.on_masked_gradient("host", masked_h, e, b)
                guest.on_decrypted(dg, peer="arbiter")
                host.on_decrypted(dh, peer="arbiter")
            arbiter.on_epoch_loss(guest.epoch_loss(e), e)
            times.append(time.perf_counter() - t)
        return {"setup_s": setup_s, "epoch_s": times,
                "party_steps_s": {k: v / epochs for k, v in steps.items()},
                "coef": guest.coef.tolist() + host.coef.tolist()}
    finally:
        guest.close()
        host.close()


def engine_work(engine: Any, public_key: Any, X: np.ndarray) -> float:
    """Wall seconds of one batch-sized set of a party's heavy operations on ``engine``, repeated.

    Encrypt a column, re-randomise it, ``X^T [[d]]`` over it and the accurate
    mode's per-row combination: the operations the engine spreads over its
    workers, without the other parties' steps (and their idle time) around
    them, and with no prefill (each party's own throughput, alone).
    """
    rng = np.random.default_rng(5)
    rows = X.shape[0]
    values = rng.integers(-(2**40), 2**40, size=rows)
    xq = rng.integers(0, 2**20, size=X.shape).astype(np.int64)
    offsets = np.zeros(X.shape[1], dtype=np.int64)
    factors = [rng.integers(-(2**16), 2**16, size=rows), rng.integers(-(2**16), 2**16, size=rows)]
    t = time.perf_counter()
    enc = engine.encrypt(values, 20)
    enc = engine.rerandomize(enc)
    engine.matvec_t_and_sum(xq, offsets, enc, 20)
    engine.combine_rows([enc, enc], factors, 40)
    return time.perf_counter() - t


def psi_work(blinder: Any, n: int) -> float:
    """Wall seconds of one party's share of a PSI of ``n`` x ``n`` IDs on ``blinder``.

    Hash its ``n`` IDs, blind them, and blind ``n`` peer points (the four
    X25519 multiplications per shared ID pair split evenly between parties).
    """
    ids = [f"CUST{i:012d}" for i in range(n)]
    t = time.perf_counter()
    _, points = blinder.hash_ids(ids)
    mine = blinder.blind(points)
    blinder.blind(mine, peer="peer")  # stands in for the peer's points (same cost)
    return time.perf_counter() - t


def binning_work(Xh: np.ndarray, y: np.ndarray, key_bits: int,
                 guest_where: dict[str, Any], host_where: dict[str, Any]) -> float:
    """Wall seconds of the federated binning's heavy steps over ``len(y)`` rows.

    The guest encrypts its labels and proves each is 0 or 1 (on
    ``guest_where``: ``{"compute": ...}`` or ``{"workers": ...}``), then the
    host verifies the proofs and sums the labels per bin of each of its
    columns (on ``host_where``). Key generation is left out.
    """
    from vfl.binning import BinningGuest, BinningHost, proof_context
    from vfl.policy import SecurityPolicy

    insecure = key_bits < 2048
    policy = SecurityPolicy(allow_insecure_key_size=insecure).validate()
    guest = BinningGuest(y, key_bits=key_bits, allow_insecure_key_size=insecure, n_bins=10,
                         **guest_where)
    host = BinningHost(Xh, [f"x{j}" for j in range(Xh.shape[1])], party="host", policy=policy,
                       **host_where)
    ctx = proof_context("benchmark", "guest")
    t = time.perf_counter()
    host.on_labels(guest.labels_message(context=ctx), peer="guest", context=ctx)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--rows", type=int, default=None, help="first N rows only (default: all)")
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--workers", default="1,2", help="Dask workers per party to compare")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per configuration")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds over all configurations (alternated; the median is reported)")
    ap.add_argument("--skip-local", action="store_true", help="Dask engine only")
    ap.add_argument("--engine-rows", type=int, default=8192,
                    help="rows of one party's engine work timed alone per configuration (0: skip)")
    ap.add_argument("--psi-ids", type=int, default=200_000,
                    help="IDs of one party's PSI work timed per configuration (0: skip)")
    ap.add_argument("--binning-rows", type=int, default=3000,
                    help="rows of the federated binning timed per configuration (0: skip)")
    ap.add_argument("--out", default=str(ROOT / "dask_engine.json"))
    args = ap.parse_args()
    Xg, y, Xh = default_credit(args.data)
    if args.rows:
        Xg, y, Xh = Xg[:args.rows], y[:args.rows], Xh[:args.rows]
    # standardised columns (what the estimators train on)
    Xg, Xh = [(X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1) for X in (Xg, Xh)]
    cfg = TrainConfig(epochs=args.epochs, tol=0.0, validation_fraction=0.0, patience=0,
                      key_bits=args.key_bits, allow_insecure_key_size=args.key_bits < 2048)
    counts = [int(w) for w in args.workers.split(",")]
    configs = [("dask", w) for w in counts]
    if not args.skip_local:
        configs += [("local", w) for w in counts]
    load_start = os.getloadavg()
    print(f"default_credit, {len(y):,} rows, {Xg.shape[1]} + {Xh.shape[1]} columns, "
          f"{args.key_bits}-bit keys, mode {cfg.mode}, batch {cfg.batch_size}; "
          f"{cpu_model()}, {os.cpu_count()} cores; load average {load_start[0]:.2f}")
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in configs}
    from vfl.crypto.paillier import generate_keypair
    pk, _ = generate_keypair(args.key_bits, allow_insecure_key_size=args.key_bits < 2048)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for engine, w in (configs if r % 2 == 0 else configs[::-1]):
                with ExitStack() as stack:
                    if engine == "dask":
                        gc = stack.enter_context(party_cluster("guest", w, Path(tmp)))
                        hc = stack.enter_context(party_cluster("host", w, Path(tmp)))
                        out = run_epochs(Xg, y, Xh, cfg, args.epochs, gc, hc, 1)
                        if args.engine_rows:
                            from vfl.crypto.dask_engine import DaskEngine
                            eng = DaskEngine.connect(pk, gc)
                            try:
                                out["engine_s"] = engine_work(eng, pk, Xg[:args.engine_rows])
                            finally:
                                eng.close()
                        if args.psi_ids:
                            from vfl.crypto.dask_engine import DaskBlinder
                            with DaskBlinder.connect(gc) as blinder:
                                out["psi_s"] = psi_work(blinder, args.psi_ids)
                        if args.binning_rows:
                            nb = args.binning_rows
                            out["binning_s"] = binning_work(Xh[:nb], y[:nb], args.key_bits,
                                                            {"compute": gc}, {"compute": hc})
                    else:
                        out = run_epochs(Xg, y, Xh, cfg, args.epochs, None, None, w)
                        if args.engine_rows:
                            from vfl.crypto.engine import make_engine
                            eng = make_engine(pk, w, 10**6)
                            try:
                                out["engine_s"] = engine_work(eng, pk, Xg[:args.engine_rows])
                            finally:
                                eng.close()
                        if args.psi_ids:
                            from vfl.psi.ecdh import BlindingPool
                            with BlindingPool(w) as pool:
                                out["psi_s"] = psi_work(pool, args.psi_ids)
                        if args.binning_rows:
                            nb = args.binning_rows
                            out["binning_s"] = binning_work(Xh[:nb], y[:nb], args.key_bits,
                                                            {"workers": w}, {"workers": w})
                samples[(engine, w)].append(out)
                print(f"  {engine:5s} engine, {w} worker(s) per party: setup "
                      f"{out['setup_s']:5.1f} s, epoch(s) "
                      + " ".join(f"{t:6.2f}" for t in out["epoch_s"]) + " s (guest steps "
                      + f"{out['party_steps_s']['guest']:.1f} s, host steps "
                      + f"{out['party_steps_s']['host']:.1f} s)"
                      + (f"; engine work {out['engine_s']:.1f} s" if "engine_s" in out else "")
                      + (f"; PSI work {out['psi_s']:.1f} s" if "psi_s" in out else "")
                      + (f"; binning {out['binning_s']:.1f} s" if "binning_s" in out else ""),
                      flush=True)
    load_end = os.getloadavg()
    coefs = {tuple(s["coef"]) for runs in samples.values() for s in runs}
    runs = []
    for (engine, w), outs in samples.items():
        epoch_s = statistics.median(t for o in outs for t in o["epoch_s"])
        psi_s = statistics.median(o["psi_s"] for o in outs) if "psi_s" in outs[0] else None
        engine_s = (statistics.median(o["engine_s"] for o in outs) if "engine_s" in outs[0]
                    else None)
        binning_s = (statistics.median(o["binning_s"] for o in outs) if "binning_s" in outs[0]
                     else None)
        steps = {p: statistics.median(o["party_steps_s"][p] for o in outs)
                 for p in ("guest", "host")}
        runs.append({"engine": engine, "workers_per_party": w, "epoch_s": epoch_s,
                     "party_steps_s_per_epoch": steps,
                     "rows_per_s": len(y) / epoch_s,
                     "psi_ids_per_s": args.psi_ids / psi_s if psi_s else None,
                     "engine_rows_per_s": args.engine_rows / engine_s if engine_s else None,
                     "binning_rows_per_s": args.binning_rows / binning_s if binning_s else None,
                     "setup_s": statistics.median(o["setup_s"] for o in outs),
                     "epochs_s_all": [t for o in outs for t in o["epoch_s"]]})
    by = {(run["engine"], run["workers_per_party"]): run["epoch_s"] for run in runs}
    psi_by = {(run["engine"], run["workers_per_party"]): run["psi_ids_per_s"] for run in runs}
    eng_by = {(run["engine"], run["workers_per_party"]): run["engine_rows_per_s"] for run in runs}
    steps_by = {(run["engine"], run["workers_per_party"]): run["party_steps_s_per_epoch"]
                for run in runs}
    bin_by = {(run["engine"], run["workers_per_party"]): run["binning_rows_per_s"] for run in runs}
    ratios: dict[str, float] = {}
    lo, hi = min(counts), max(counts)
    for engine in ("dask", "local"):
        if (engine, lo) in by and (engine, hi) in by and hi != lo:
            ratios[f"{engine}_{hi}_vs_{lo}_workers"] = by[(engine, lo)] / by[(engine, hi)]
            for p in ("guest", "host"):
                ratios[f"{engine}_{p}_steps_{hi}_vs_{lo}_workers"] = (
                    steps_by[(engine, lo)][p] / steps_by[(engine, hi)][p])
            if eng_by[(engine, lo)] and eng_by[(engine, hi)]:
                ratios[f"{engine}_engine_alone_{hi}_vs_{lo}_workers"] = (eng_by[(engine, hi)]
                                                                         / eng_by[(engine, lo)])
            if psi_by[(engine, lo)] and psi_by[(engine, hi)]:
                ratios[f"{engine}_psi_{hi}_vs_{lo}_workers"] = (psi_by[(engine, hi)]
                                                                / psi_by[(engine, lo)])
            if bin_by[(engine, lo)] and bin_by[(engine, hi)]:
                ratios[f"{engine}_binning_{hi}_vs_{lo}_workers"] = (bin_by[(engine, hi)]
                                                                    / bin_by[(engine, lo)])
    for w in counts:
        if ("dask", w) in by and ("local", w) in by:
            ratios[f"dask_vs_local_{w}_workers"] = by[("local", w)] / by[("dask", w)]
    result = {
        "machine": {"cpu_model": cpu_model(), "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_start": load_start, "load_average_end": load_end},
        "data": "default_credit", "rows": len(y), "columns": [Xg.shape[1], Xh.shape[1]],
        "key_bits": args.key_bits, "mode": cfg.mode, "batch_size": cfg.batch_size,
        "epochs_per_config": args.epochs, "repeats": args.repeats,
        "psi_ids": args.psi_ids, "binning_rows": args.binning_rows,
        "binning_work": "federated binning of binning_rows rows x the host's columns: the guest's "
                        "label encryption and 0/1 proofs on its engine, the host's verification "
                        "and per-bin sums on its own",
        "psi_work": "one party's share of a PSI of psi_ids x psi_ids: hash its IDs, blind them, "
                    "blind as many peer points (bucketed PSI's blinding on the engine)",
        "setup": "one TLS LocalCluster per party (processes, 1 thread each); parties driven in "
                 "turn in one process; arbiter decrypts in this process",
        "runs": runs,
        "throughput_ratios": ratios,
        "target": "dask 2 vs 1 workers per party >= 1.7x on an idle machine",
        "same_weights_in_every_run": len(coefs) == 1,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'engine':8s} {'workers':>7s} {'epoch s':>9s} {'rows/s':>9s} {'setup s':>8s} "
          f"{'PSI IDs/s':>10s}")
    for run in runs:
        print(f"{run['engine']:8s} {run['workers_per_party']:7d} {run['epoch_s']:9.2f} "
              f"{run['rows_per_s']:9.0f} {run['setup_s']:8.1f} {run['psi_ids_per_s'] or 0:10.0f}")
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    print(f"same weights in every run: {len(coefs) == 1}; load average {load_start[0]:.2f} -> "
          f"{load_end[0]:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
