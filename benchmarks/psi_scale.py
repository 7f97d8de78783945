"""PSI at bank scale: two parties, each its own OS process, over gRPC + mutual TLS.

    python -m benchmarks.psi_scale [--n 10000000] [--overlap 0.5] [--workers 2]
        [--workdir /tmp/vfl-psi-scale] [--format parquet] [--out benchmarks/psi_scale.json]

Writes each party's ID table (``--format``, one ``id`` column plus one feature),
then runs the guest and the host as two processes on this machine; each reads
its IDs from its file in chunks (:class:`vfl.psi.spill.IdSource`) and runs the
bucketed protocol. Reports wall time, IDs/s/core, and each party's peak
resident memory: its whole process tree (main process and blinding workers),
sampled every 0.2 s, and the kernel's high-water mark of its main process. IDs/s/core
is one party's IDs per wall second per core (the unit of the README's PSI 1M x 1M). Checks
the result against the known overlap. One run; the CPU is named.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

# (nothing from vfl at module level: the parties' worker processes re-import this module)


def _write_ids(path: Path, start: int, n: int, fmt: str) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out = path.with_suffix(f".{fmt}")
    chunk = 1_000_000
    writer = None
    try:
        for a in range(start, start + n, chunk):
            b = min(a + chunk, start + n)
            # IDs in a scrambled order (a bank's extract is not sorted like its partner's)
            nums = np.arange(a, b, dtype=np.int64)
            ids = pa.array([f"CUST{(v * 2654435761) % 10**12:012d}" for v in nums.tolist()])
            table = pa.table({"id": ids, "x": pa.array(np.zeros(b - a))})
            if writer is None:
                writer = (pq.ParquetWriter(out, table.schema) if fmt == "parquet"
                          else pacsv.CSVWriter(out, table.schema))
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return out


def _party(role: str, path: str, ports: dict[str, int], certs: str, workers: int,
           workdir: str, bucket_rows: int, result: mp.Queue) -> None:  # type: ignore[type-arg]
    from vfl.psi.driver import run_psi_guest, run_psi_host
    from vfl.psi.spill import IdSource
    from vfl.transport.grpc import GrpcEndpoint, PeerAddress, TlsFiles

    peer = "host" if role == "guest" else "guest"
    c = Path(certs)
    ep = GrpcEndpoint(role, f"127.0.0.1:{ports[role]}",
                      [PeerAddress(peer, f"127.0.0.1:{ports[peer]}")], "psi-scale",
                      TlsFiles(c / "ca.pem", c / f"{role}.pem", c / f"{role}.key"),
                      default_timeout=3600)
    marks: dict[str, float] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if done == total:
            marks[f"{phase}_done"] = time.perf_counter()
        if role == "guest" and phase == "buckets" and (done % 16 == 0 or done == total):
            print(f"  {role}: bucket {done}/{total}", flush=True)

    import threading

    import psutil  # installed with distributed (the test extras)

    peak = {"tree": 0, "main": 0, "workers": 0}
    stop = threading.Event()

    def sample() -> None:  # resident memory of this party's process tree, every 0.2 s
        me = psutil.Process()
        while not stop.is_set():
            try:
                main = me.memory_info().rss
                kids = sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                continue
            peak["tree"] = max(peak["tree"], main + kids)
            peak["main"] = max(peak["main"], main)
            peak["workers"] = max(peak["workers"], kids)
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    source = IdSource.from_file(path, "id")
    try:
        if role == "guest":
            rows = run_psi_guest(ep, source, ["host"], workers=workers, workdir=workdir,
                                 progress=progress, bucket_rows=bucket_rows)
        else:
            rows = run_psi_host(ep, source, "guest", workers=workers, workdir=workdir,
                                progress=progress, bucket_rows=bucket_rows)
    finally:
        ep.close()
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    mb = 1 << 20
    result.put({"role": role, "seconds": round(seconds, 1), "rows": len(rows),
                "hash_seconds": round(marks.get("hash_done", t0) - t0, 1),
                # sampled every 0.2 s: the party's whole process tree, its main process, and
                # its worker processes together
                "party_peak_mb": round(peak["tree"] / mb), "main_peak_mb": round(peak["main"] / mb),
                "workers_peak_mb": round(peak["workers"] / mb),
                "cpu_seconds": round(sum(getattr(resource.getrusage(who), f)
                                         for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                                         for f in ("ru_utime", "ru_stime")), 1),
                "main_cpu_seconds": round(sum(getattr(resource.getrusage(resource.RUSAGE_SELF), f)
                                              for f in ("ru_utime", "ru_stime")), 1),
                # the kernel's own high-water mark of the main process (not sampled)
                "main_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "first_rows": rows[:3].tolist(), "spill_left": any(Path(workdir).iterdir())})


def _run(files: dict[str, Path], wd: Path, workers: int, bucket_rows: int, n: int,
         shared: int) -> dict[str, object]:
    from vfl.demo import free_ports

    ports = dict(zip(["guest", "host"], free_ports(2), strict=True))
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    procs = [ctx.Process(target=_party, args=(role, str(files[role]), ports, str(wd / "certs"),
                                              workers, str(wd / f"spill-{role}"), bucket_rows,
                                              queue))
             for role in ("host", "guest")]
    for p in procs:
        p.start()
    out = {}
    for _ in procs:
        r = queue.get(timeout=7200)
        out[r["role"]] = r
    for p in procs:
        p.join()
    wall = time.perf_counter() - t
    cores = os.cpu_count() or 1
    assert out["guest"]["rows"] == out["host"]["rows"] == shared, out
    return {"wall_seconds": round(wall, 1),
            # as the README states PSI 1M x 1M: IDs of one party per second of wall time per core
            "ids_per_second_per_core": round(n / wall / cores),
            "load_average_before": load0, "load_average_after": os.getloadavg()[0],
            "parties": out}




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="IDs per party")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="blinding processes per party")
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    ap.add_argument("--workdir", default="/tmp/vfl-psi-scale")
    ap.add_argument("--out", default=str(Path(__file__).with_name("psi_scale.json")))
    ap.add_argument("--compare-single", action="store_true",
                    help="also run the single-message protocol on the same IDs (small n only)")
    args = ap.parse_args()
    wd = Path(args.workdir)
    shutil.rmtree(wd, ignore_errors=True)
    (wd / "spill-guest").mkdir(parents=True)
    (wd / "spill-host").mkdir()
    n, shared = args.n, int(args.n * args.overlap)
    t = time.perf_counter()
    files = {"guest": _write_ids(wd / "guest", 0, n, args.format),
             "host": _write_ids(wd / "host", n - shared, n, args.format)}
    print(f"wrote 2 x {n:,} IDs ({args.format}) in {time.perf_counter() - t:.0f} s")
    from benchmarks._data import cpu_model
    from vfl.certs import write_party_certs
    from vfl.psi.buckets import BUCKET_ROWS

    write_party_certs(wd / "certs", ["guest", "host"])
    result = {"cpu": cpu_model(), "cores": os.cpu_count() or 1, "n_per_party": n,
              "overlap": args.overlap, "format": args.format,
              "workers_per_party": args.workers, "runs": {}}
    protocols = {"bucketed": BUCKET_ROWS}
    if args.compare_single:
        protocols["single-message"] = n + 1  # one bucket: the protocol of psi.md steps 1-10
    for label, bucket_rows in protocols.items():
        result["runs"][label] = _run(files, wd, args.workers, bucket_rows, n, shared)
        r = result["runs"][label]
        print(f"{label}: {r['wall_seconds']} s, {r['ids_per_second_per_core']:,} IDs/s/core; "
              f"peak MB guest {r['parties']['guest']['party_peak_mb']}, host "
              f"{r['parties']['host']['party_peak_mb']}", flush=True)
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    main()
