"""Online scoring latency and throughput (issue 14): ``vfl serve`` over loopback.

Trains a two-bank model (default_credit from ``../shared/data`` when present,
else the demo's synthetic banks), starts the host's scoring service and the
guest's HTTP API as two ``vfl serve`` processes (mutual TLS between them),
and measures from real HTTP clients (``http.client``, one keep-alive
connection per client thread):

* single-applicant latency, p50 / p99, with 1 client and with 32 concurrent clients;
* batch throughput: applicants per second in ``/v1/score:batch`` calls of 100;

each twice in one run: with the API's authentication off (``auth = "none"``, the
figures before issue 25) and on (``auth = "api_keys"``: a Bearer key per request,
its SHA-256 looked up, the client's quota taken, an audit line written).

The load generator runs on the same 2-core machine as both services, so the
figures include its cost. Writes ``benchmarks/serving_latency.json``.

    python -m benchmarks.serving_latency [--requests 2000] [--batches 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._data import cpu_model

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data"


def _train(wd: Path) -> tuple[Path, Path, Path, str, str]:
    """A trained model's folder, the guest's and the host's tables, ID and label columns."""
    from vfl.lr.config import TrainConfig
    from vfl.pipeline import fit_files
    from vfl.synthetic import make_two_banks

    g_csv, h_csv = DATA / "default_credit_hetero_guest.csv", DATA / "default_credit_hetero_host.csv"
    id_col, label = "id", "y"
    if not g_csv.is_file():
        g, h = make_two_banks(20_000, 0.8, seed=3)
        g_csv, h_csv = wd / "bank_a.csv", wd / "bank_b.csv"
        g.to_csv(g_csv, index=False)
        h.to_csv(h_csv, index=False)
        id_col, label = "customer_id", "default"
    config = TrainConfig(epochs=2, batch_size=2048, key_bits=1024, allow_insecure_key_size=True)
    fit_files(g_csv, [h_csv], id_column=id_col, label=label, out_dir=wd / "model",
              config=config, html_report=False)
    return wd / "model", g_csv, h_csv, id_col, label


def _configs(wd: Path, model: Path, g_csv: Path, h_csv: Path, id_col: str, label: str,
             ports: list[int], auth: dict[str, str]) -> tuple[Path, Path]:
    from vfl.certs import write_party_certs
    from vfl.demo import write_party_toml

    if not (wd / "certs" / "ca.pem").is_file():
        write_party_certs(wd / "certs", ["guest", "host1", "arbiter"])
    p_g, p_h, p_a, p_serve, p_http = ports
    addr = {"guest": f"127.0.0.1:{p_g}", "host1": f"127.0.0.1:{p_h}",
            "arbiter": f"127.0.0.1:{p_a}"}
    roles = {"guest": "guest", "host1": "host", "arbiter": "arbiter"}
    data = {"guest": {"path": str(g_csv), "id_column": id_col, "label_column": label},
            "host1": {"path": str(h_csv), "id_column": id_col}}
    serve = {"host1": {"listen": f"127.0.0.1:{p_serve}", "model": f"{model}/host1.json",
                       "max_ids_per_request": 1000, "requests_per_second": 100000,
                       "burst": 100000, "daily_id_budget": 100000000},
             "guest": {"listen": f"127.0.0.1:{p_http}", "model": f"{model}/guest.json",
                       "max_batch": 1000, **auth}}
    for name in ("host1", "guest"):
        peers = [{"name": p, "role": roles[p], "address": addr[p]} for p in addr if p != name]
        if name == "guest":
            peers[0]["serve_address"] = f"127.0.0.1:{p_serve}"
        write_party_toml(wd / f"{name}.toml", job={"id": "bench", "output": f"{wd}/out"},
                         party={"name": name, "role": roles[name], "listen": addr[name]},
                         tls={"ca": f"{wd}/certs/ca.pem", "cert": f"{wd}/certs/{name}.pem",
                              "key": f"{wd}/certs/{name}.key"},
                         peers=peers, data=data[name], serve=serve[name])
    return wd / "guest.toml", wd / "host1.toml"


def _applicants(model: Path, g_csv: Path, id_col: str, label: str, n: int) -> list[dict[str, Any]]:
    from vfl.data import load_table
    from vfl.model import load_model_part

    part = load_model_part(model / "guest.json")
    t = load_table(g_csv, id_column=id_col, label_column=label).select(part.features)
    rows = np.arange(min(n, t.n_rows))
    return [{"customer_id": t.ids[i],
             "features": {f: (None if np.isnan(v) else float(v))
                          for f, v in zip(part.features, t.X[i], strict=True)}} for i in rows]


#: Headers of every request (the Bearer key when authentication is on).
HEADERS: dict[str, str] = {"Content-Type": "application/json"}


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    t0 = time.perf_counter()
    conn.request("POST", path, body, HEADERS)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{resp.status}: {data[:200]!r}")
    return time.perf_counter() - t0


def _load(port: int, bodies: list[bytes], path: str, clients: int) -> tuple[list[float], float]:
    """Send ``bodies`` from ``clients`` threads; every latency, and the wall time."""
    lat: list[float] = []
    lock = threading.Lock()
    parts = [bodies[i::clients] for i in range(clients)]

    def run(mine: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        got = [_post(conn, path, b) for b in mine]
        conn.close()
        with lock:
            lat.extend(got)

    threads = [threading.Thread(target=run, args=(p,)) for p in parts]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def _measure(wd: Path, trained: tuple[Path, Path, Path, str, str], args: argparse.Namespace,
             auth: dict[str, str], key: str | None) -> dict[str, Any]:
    """Start both services with ``auth``, measure, stop them."""
    from vfl.demo import free_ports

    model, g_csv, h_csv, id_col, label = trained
    ports = free_ports(5)
    out = wd / ("out-" + auth["auth"])
    guest_cfg, host_cfg = _configs(wd, model, g_csv, h_csv, id_col, label, ports, auth)
    for cfg in (guest_cfg, host_cfg):  # each mode writes its own audit trail
        cfg.write_text(cfg.read_text().replace(f'output = "{wd}/out"', f'output = "{out}"'))
    HEADERS.pop("Authorization", None)
    if key is not None:
        HEADERS["Authorization"] = f"Bearer {key}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "vfl.cli", "serve", "--config", str(c)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for c in (host_cfg, guest_cfg)]
    try:
        port = ports[4]
        end = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                raise SystemExit("the services did not come up")
            time.sleep(0.2)
        apps = _applicants(model, g_csv, id_col, label, 10_000)
        singles = [json.dumps(apps[i % len(apps)]).encode() for i in range(args.requests)]
        _load(port, singles[:200], "/v1/score", 1)  # warm-up
        one, _ = _load(port, singles, "/v1/score", 1)
        many, wall32 = _load(port, singles, "/v1/score", 32)
        batches = [json.dumps({"applicants": [apps[(b * 100 + i) % len(apps)]
                                              for i in range(100)]}).encode()
                   for b in range(args.batches)]
        _, wall_b = _load(port, batches, "/v1/score:batch", 2)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=15)
    return {
        "single_1_client": {"requests": len(one), "p50_ms": round(_pct(one, 50), 2),
                            "p99_ms": round(_pct(one, 99), 2),
                            "mean_ms": round(statistics.mean(one) * 1000, 2)},
        "single_32_clients": {"requests": len(many), "p50_ms": round(_pct(many, 50), 2),
                              "p99_ms": round(_pct(many, 99), 2),
                              "requests_per_second": round(len(many) / wall32, 1)},
        "batch_100": {"batches": len(batches), "clients": 2,
                      "applicants_per_second": round(len(batches) * 100 / wall_b, 1)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--batches", type=int, default=200)
    args = ap.parse_args()
    from vfl.serving.auth import add_client

    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        trained = _train(wd)
        key = add_client(wd / "clients.toml", "bench", requests_per_second=100_000,
                         burst=100_000, daily_applicants=10**9)
        modes = {"auth_none": ({"auth": "none"}, None),
                 "auth_api_keys": ({"auth": "api_keys", "clients": str(wd / "clients.toml")},
                                   key)}
        measured = {name: _measure(wd, trained, args, auth, k)
                    for name, (auth, k) in modes.items()}
    result = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "data": "default_credit" if (
            DATA / "default_credit_hetero_guest.csv").is_file() else "synthetic",
        **measured,
        "command": "python -m benchmarks.serving_latency",
    }
    (ROOT / "serving_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
