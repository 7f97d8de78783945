"""Training at bank scale: three `vfl run` processes over gRPC + mutual TLS, 2048-bit keys.

    python -m benchmarks.train_scale [--rows 1000000] [--epochs 2] [--key-bits 2048]
        [--workdir /tmp/vfl-train-scale] [--out benchmarks/train_scale.json]

Generates a guest table (id, y, 13 features) and a host table (id, 10 features)
of ``--rows`` shared customers (Parquet; a logistic label from all 23 columns),
runs the guest, the host and the arbiter as three ``vfl run`` processes on this
machine with every setting at its default but ``epochs`` (and ``tol = 0``, so
every epoch runs), and reports: each epoch's wall time (from the guest's
progress lines), seconds per 1,000 rows, and each party's peak resident memory,
sampled every 0.2 s over its whole process tree (the party's process and its
ciphertext worker processes) and split into the part held by the raw table
(measured by loading it alone) and the rest. One run; the CPU is named.

Epoch 0 of the accurate mode sends no squares (their refresh starts at epoch 1),
so the steady-state epoch is the last one; run at least 2 epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks._data import cpu_model
from benchmarks._jobs import PARTIES, write_job


def _tables(rows: int, wd: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(20261126)
    ids = np.array([f"C{i:09d}" for i in range(rows)], dtype=object)
    xg = rng.normal(size=(rows, 13))
    xh = rng.normal(size=(rows, 10))
    beta_g = rng.normal(scale=0.3, size=13)
    beta_h = rng.normal(scale=0.3, size=10)
    logit = -1.3 + xg @ beta_g + xh @ beta_h
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    host_order = rng.permutation(rows)  # the host's extract is in another order
    g = {"id": pa.array(ids), "y": pa.array(y), **{f"x{j}": xg[:, j] for j in range(13)}}
    h = {"id": pa.array(ids[host_order]), **{f"x{j}": xh[host_order, j] for j in range(10)}}
    paths = {"bank_a": wd / "bank_a.parquet", "bank_b": wd / "bank_b.parquet"}
    pq.write_table(pa.table(g), paths["bank_a"], row_group_size=1 << 17)
    pq.write_table(pa.table(h), paths["bank_b"], row_group_size=1 << 17)
    return paths


def _table_mb(path: Path, label: str | None) -> float:
    """Resident memory of loading one party's table alone (what "besides the raw table" excludes)."""
    import subprocess
    import sys

    code = ("import psutil; from vfl.data import load_table; "
            "a = psutil.Process().memory_info().rss; "
            f"t = load_table({str(path)!r}, id_column='id', label_column={label!r}); "
            "print((psutil.Process().memory_info().rss - a) / 2**20)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())




def main() -> None:
    import psutil  # installed with distributed (the test extras)

    from vfl.demo import run_demo_processes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--workdir", default="/tmp/vfl-train-scale")
    ap.add_argument("--out", default=str(Path(__file__).with_name("train_scale.json")))
    args = ap.parse_args()
    wd = Path(args.workdir).resolve()
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    t = time.perf_counter()
    data = _tables(args.rows, wd)
    print(f"wrote {args.rows:,} rows per bank in {time.perf_counter() - t:.0f} s", flush=True)
    parties = PARTIES
    job = write_job(wd, data, prefix="scale", timeout=7200,
                    train={"epochs": args.epochs, "tol": 0.0, "key_bits": args.key_bits})
    outputs = job.outputs
    peaks = {n: {"tree": 0, "main": 0, "workers": 0} for n in parties}
    epoch_marks: list[tuple[int, float]] = []
    lock = threading.Lock()

    def on_tick(procs: dict) -> None:  # type: ignore[type-arg]
        now = time.perf_counter()
        with lock:
            for name, p in procs.items():
                try:
                    me = psutil.Process(p.proc.pid)
                    main = me.memory_info().rss
                    kids = sum(c.memory_info().rss for c in me.children(recursive=True))
                except psutil.Error:
                    continue
                pk = peaks[name]
                pk["tree"], pk["main"] = max(pk["tree"], main + kids), max(pk["main"], main)
                pk["workers"] = max(pk["workers"], kids)
            st = procs["bank_a"].status
            if st.get("stage") == "training" and st.get("batch") == 1:
                if not epoch_marks or epoch_marks[-1][0] != st["epoch"]:
                    epoch_marks.append((st["epoch"], now))
            if st.get("stage") == "epoch" and (not epoch_marks or epoch_marks[-1][0] != -st["epoch"]):
                epoch_marks.append((-st["epoch"], now))

    load0 = os.getloadavg()[0]
    procs, wall = run_demo_processes(job, on_tick=on_tick, timeout=7200)
    for name, p in procs.items():
        if p.proc.returncode != 0:
            raise SystemExit(f"{name} failed: {p.last_error()}")
    report = json.loads((outputs["bank_a"] / "report.json").read_text())
    starts = {e: t for e, t in epoch_marks if e > 0}
    ends = {-e: t for e, t in epoch_marks if e < 0}
    epochs = [round(ends[e] - starts[e], 1) for e in sorted(starts) if e in ends]
    train_rows = int(report["n_intersection"]) - int(report["validation"].get("rows", 0))
    mb = 1 << 20
    table_mb = {n: round(_table_mb(data[n], "y" if n == "bank_a" else None))
                for n in data}
    result = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "rows": args.rows, "key_bits": args.key_bits,
        "features": {"guest": 13, "host": 10}, "mode": report.get("mode", "accurate"),
        "wall_seconds": round(wall, 1), "psi_seconds": report.get("psi_seconds"),
        "train_seconds": report.get("train_seconds"), "training_rows": train_rows,
        "epoch_seconds": epochs,
        "seconds_per_1000_rows_last_epoch": round(epochs[-1] / train_rows * 1000, 3)
        if epochs else None,
        "auc": report.get("auc"),
        "peak_memory_mb": {n: {k: round(v / mb) for k, v in pk.items()} for n, pk in peaks.items()},
        "raw_table_mb": table_mb,
        "load_average_before": load0, "load_average_after": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
