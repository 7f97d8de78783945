"""Soak: a networked job trained through links that keep failing; does it finish, identically?

    python -m benchmarks.soak [--data ../shared/data | --data synthetic] [--epochs 20]
        [--key-bits 2048] [--fault-every 30] [--fault-seconds 1 5] [--grace 20]
        [--long-every 0] [--seed 1] [--workdir /tmp/vfl-soak] [--out benchmarks/soak.json]

Three ``vfl run`` processes (guest bank_a, host bank_b, arbiter) over gRPC with
mutual TLS, each reachable only through its own :class:`vfl.netfaults.FaultProxy`.
While they train, a fault is injected every ``--fault-every`` seconds on
average (exponential gaps): a cut (every connection to one party reset, new
ones refused), a stall (connections open, no byte moves) or a slow spell (5 ms
on every 64 kB chunk), for ``--fault-seconds`` seconds (uniform), on a party
chosen at random. With ``--long-every K``, every K-th fault is a cut longer than
the link grace: the job stops, and the script starts all three again with
``--resume``, as an operator would.

Reports epochs completed, faults injected, reconnects (the parties' ``is back``
lines), aborts, resumed runs, the wall time, and whether the final weights equal
those of the same job replayed in memory from the guest's secret start (bit for
bit). The fault schedule is drawn from ``random.Random(--seed)``: it is a test
schedule, not a secret, and a seed makes a run repeatable.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._data import DEFAULT_DATA, cpu_model
from benchmarks._jobs import PARTIES, replay_in_memory, write_job
from vfl.checkpoint import PASSPHRASE_ENV
from vfl.demo import free_ports, run_demo_processes
from vfl.netfaults import FaultProxy


class Injector:
    """Injects faults on the proxies at random, until stopped."""

    def __init__(self, proxies: dict[str, FaultProxy], rng: random.Random, every: float,
                 seconds: tuple[float, float], grace: float, long_every: int) -> None:
        self.proxies, self.rng, self.every = proxies, rng, every
        self.seconds, self.grace, self.long_every = seconds, grace, long_every
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-injector", daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for p in self.proxies.values():
            p.restore()
            p.delay = 0.0

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.rng.expovariate(1.0 / self.every)):
            n += 1
            party = self.rng.choice(sorted(self.proxies))
            proxy = self.proxies[party]
            seconds = self.rng.uniform(*self.seconds)
            kind = self.rng.choices(["cut", "stall", "slow"], weights=[6, 3, 1])[0]
            if self.long_every and n % self.long_every == 0:
                kind, seconds = "long cut", self.grace + 15.0
            at = round(time.monotonic() - self._t0, 1)
            self.events.append({"at": at, "kind": kind, "party": party,
                                "seconds": round(seconds, 2)})
            print(f"  [{at:7.1f} s] {kind} of {party}'s links for {seconds:.1f} s", flush=True)
            if kind in ("cut", "long cut"):
                proxy.cut(for_seconds=seconds)
            elif kind == "stall":
                proxy.stall(seconds)
            else:
                proxy.delay = 0.005
                if self._stop.wait(seconds):
                    break
                proxy.delay = 0.0


def _synthetic(wd: Path, rows: int) -> dict[str, Path]:
    from vfl.synthetic import make_two_banks

    g, h = make_two_banks(rows, 0.75, seed=11)
    out = {"bank_a": wd / "bank_a.csv", "bank_b": wd / "bank_b.csv"}
    g.rename(columns={"customer_id": "id", "default": "y"}).to_csv(out["bank_a"], index=False)
    h.rename(columns={"customer_id": "id"}).to_csv(out["bank_b"], index=False)
    return out


def _log_count(wd: Path, text: str) -> int:
    return sum(log.read_text().count(text) for log in wd.glob("logs/*/*.log"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA),
                    help="folder with default_credit_hetero_*.csv, or 'synthetic'")
    ap.add_argument("--rows", type=int, default=8000, help="rows per bank with --data synthetic")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the library's")
    ap.add_argument("--fault-every", type=float, default=30.0,
                    help="mean seconds between faults")
    ap.add_argument("--fault-seconds", type=float, nargs=2, default=(1.0, 5.0),
                    metavar=("LOW", "HIGH"))
    ap.add_argument("--grace", type=float, default=20.0, help="[job] link_grace_seconds")
    ap.add_argument("--long-every", type=int, default=0,
                    help="every K-th fault is a cut longer than the grace (0: none)")
    ap.add_argument("--max-runs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/vfl-soak")
    ap.add_argument("--out", default=str(Path(__file__).with_name("soak.json")))
    args = ap.parse_args()

    wd = Path(args.workdir).resolve()
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    if args.data == "synthetic":
        data, source = _synthetic(wd, args.rows), f"synthetic, {args.rows:,} rows per bank"
    else:
        data = {"bank_a": Path(args.data) / "default_credit_hetero_guest.csv",
                "bank_b": Path(args.data) / "default_credit_hetero_host.csv"}
        source = "default_credit (FATE's split, 30,000 rows)"
        for p in data.values():
            if not p.is_file():
                raise SystemExit(f"{p} not found: give --data FOLDER or --data synthetic")
    ports = dict(zip(PARTIES, free_ports(3), strict=True))
    proxies = {p: FaultProxy(f"127.0.0.1:{port}") for p, port in ports.items()}
    # no validation share: its draw is secret, so the in-memory replay could not repeat it
    job = write_job(wd, data, prefix="soak", timeout=1800, ports=ports,
                    dial={p: proxy.address for p, proxy in proxies.items()},
                    job={"link_grace_seconds": args.grace},
                    train={"epochs": args.epochs, "tol": 0.0, "key_bits": args.key_bits,
                           "validation_fraction": 0.0,
                           **({"batch_size": args.batch_size} if args.batch_size else {})})
    os.environ.setdefault(PASSPHRASE_ENV, "soak-" + os.urandom(8).hex())  # the arbiter seals
    injector = Injector(proxies, random.Random(args.seed), args.fault_every,
                        tuple(args.fault_seconds), args.grace, args.long_every)
    print(f"soak: {source}, {args.epochs} epochs, {args.key_bits}-bit key, a fault every "
          f"~{args.fault_every:.0f} s, link grace {args.grace:.0f} s", flush=True)
    t0 = time.perf_counter()
    injector.start()
    runs: list[dict[str, Any]] = []
    try:
        while True:
            resume = ("--resume",) if runs else ()
            procs, wall = run_demo_processes(job, timeout=4 * 3600, extra_args=resume,
                                             logs=f"logs/run{len(runs)}")
            codes = {n: p.proc.returncode for n, p in procs.items()}
            epoch = procs["bank_a"].status.get("epoch")
            runs.append({"resumed": bool(resume), "wall_seconds": round(wall, 1),
                         "exit_codes": codes, "last_epoch_seen": epoch,
                         "errors": {n: p.last_error() for n, p in procs.items() if codes[n]}})
            print(f"  run {len(runs)}: exit codes {codes} after {wall:.0f} s", flush=True)
            if all(c == 0 for c in codes.values()):
                break
            if len(runs) >= args.max_runs:
                raise SystemExit(f"gave up after {len(runs)} runs: {runs[-1]['errors']}")
    finally:
        injector.stop()
        for p in proxies.values():
            p.close()
    wall = time.perf_counter() - t0
    report = json.loads((job.outputs["bank_a"] / "report.json").read_text())
    print("replaying the job in memory from the guest's secret start...", flush=True)
    replay = replay_in_memory(job)
    kinds = [e["kind"] for e in injector.events]
    result = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "data": source, "epochs": args.epochs,
        "key_bits": args.key_bits, "batch_size": args.batch_size,
        "fault_every_seconds": args.fault_every, "fault_seconds": list(args.fault_seconds),
        "link_grace_seconds": args.grace, "long_every": args.long_every, "seed": args.seed,
        "epochs_completed": report["epochs_run"],
        "faults": {k: kinds.count(k) for k in ("cut", "stall", "slow", "long cut")},
        "reconnects": _log_count(wd, "is back after"),
        "drops_seen": _log_count(wd, "dropped; re-dialling"),
        "aborts": len(runs) - 1, "resumed_runs": sum(r["resumed"] for r in runs),
        "wall_seconds": round(wall, 1), "runs": runs,
        "weights_identical_to_clean_run": replay["identical"],
        "largest_weight_difference": replay["largest_difference"],
        "auc": report.get("auc"), "fault_log": injector.events,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['epochs_completed']} of {args.epochs} epochs in {wall:.0f} s; "
          f"{len(kinds)} faults {result['faults']}; {result['reconnects']} reconnects; "
          f"{result['aborts']} aborts, {result['resumed_runs']} resumed runs; weights identical "
          f"to the clean run: {replay['identical']} (largest difference "
          f"{replay['largest_difference']:.3g}); written to {args.out}")


if __name__ == "__main__":
    main()
