"""The two-bank demo as three OS processes over gRPC with mutual TLS.

``write_demo_job`` lays out everything a real deployment has — each bank's
data, a CA with one certificate per party, and one TOML per party — and
``run_demo_processes`` starts ``vfl run --config ...`` for each party and
follows their progress.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfl.certs import write_party_certs
from vfl.model import atomic_write_text
from vfl.synthetic import make_two_banks

__all__ = ["DemoJob", "free_ports", "write_demo_job", "run_demo_processes"]

GUEST, HOST, ARBITER = "bank_a", "bank_b", "arbiter"


def free_ports(count: int) -> list[int]:
    """Ports that are free on 127.0.0.1 right now."""
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class DemoJob:
    """Paths of a generated demo job."""

    workdir: Path
    configs: dict[str, Path]
    data: dict[str, Path]
    outputs: dict[str, Path]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def write_party_toml(path: Path, *, job: dict[str, Any], party: dict[str, Any],
                     tls: dict[str, Any], peers: list[dict[str, Any]],
                     data: dict[str, Any] | None = None, train: dict[str, Any] | None = None,
                     security: dict[str, Any] | None = None) -> None:
    """Write one party's TOML."""
    lines: list[str] = []

    def section(name: str, values: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")

    section("job", job)
    section("party", party)
    section("tls", tls)
    for p in peers:
        lines.append("[[peers]]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in p.items())
        lines.append("")
    if data:
        section("data", data)
    if train:
        section("train", train)
    if security:
        section("security", security)
    atomic_write_text(path, "\n".join(lines))


def write_demo_job(workdir: str | Path, *, rows: int = 8000, overlap: float = 0.75,
                   key_bits: int = 2048, insecure: bool = False, epochs: int = 6,
                   batch_size: int = 512, job_id: str | None = None,
                   ports: list[int] | None = None, seed: int = 7) -> DemoJob:
    """Generate data, certificates and three party configs under ``workdir``."""
    wd = Path(workdir).resolve()
    g_df, h_df = make_two_banks(rows, overlap, seed=seed)
    data = {GUEST: wd / "data" / "bank_a.csv", HOST: wd / "data" / "bank_b.csv"}
    atomic_write_text(data[GUEST], g_df.to_csv(index=False))
    atomic_write_text(data[HOST], h_df.to_csv(index=False))
    write_party_certs(wd / "certs", [GUEST, HOST, ARBITER])
    ports = ports or free_ports(3)
    addr = {GUEST: f"127.0.0.1:{ports[0]}", HOST: f"127.0.0.1:{ports[1]}",
            ARBITER: f"127.0.0.1:{ports[2]}"}
    roles = {GUEST: "guest", HOST: "host", ARBITER: "arbiter"}
    job_id = job_id or f"demo-{int(time.time())}"
    configs, outputs = {}, {}
    for name in (GUEST, HOST, ARBITER):
        outputs[name] = wd / "out" / name
        peers = [{"name": p, "role": roles[p], "address": addr[p]}
                 for p in (GUEST, HOST, ARBITER) if p != name]
        d = None
        if name == GUEST:
            d = {"path": "data/bank_a.csv", "id_column": "customer_id", "label_column": "default"}
        elif name == HOST:
            d = {"path": "data/bank_b.csv", "id_column": "customer_id"}
        # the demo compares the joint model with the pooled yardstick on the training rows,
        # so the guest asks for training-row scoring and the host allows it (off by default:
        # it reveals the host's partial score of every training customer to the guest)
        train = ({"epochs": epochs, "batch_size": batch_size, "key_bits": key_bits,
                  "score_training_rows": True} if name == GUEST else None)
        security: dict[str, Any] = {"allow_insecure_key_size": insecure}
        if name == HOST:
            security["allow_training_scores"] = True
        configs[name] = wd / f"{name}.toml"
        write_party_toml(
            configs[name],
            job={"id": job_id, "output": f"out/{name}", "timeout_seconds": 900,
                 "connect_timeout_seconds": 60},
            party={"name": name, "role": roles[name], "listen": addr[name]},
            tls={"ca": "certs/ca.pem", "cert": f"certs/{name}.pem", "key": f"certs/{name}.key"},
            peers=peers, data=d, train=train,
            security=security,
        )
    return DemoJob(wd, configs, data, outputs)


@dataclass
class PartyProcess:
    """A running party and what it last reported."""

    name: str
    proc: subprocess.Popen[str]
    log: Path
    status: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def follow(self) -> None:
        """Read JSON status lines from the process's stdout until it ends."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self.status.update(json.loads(line))
            except json.JSONDecodeError:
                self.lines.append(line)

    def last_error(self) -> str:
        """The party's last error line, from its log."""
        try:
            text = self.log.read_text().strip().splitlines()
        except OSError:
            return ""
        errors = [t for t in text if t.startswith("error:")]
        return (errors or text or [""])[-1]


def run_demo_processes(job: DemoJob, *, on_tick: Any = None, timeout: float = 1800
                       ) -> tuple[dict[str, PartyProcess], float]:
    """Start the three parties as separate processes; wait for them all.

    Returns the processes (with exit codes) and the wall time. If one party
    fails, the others stop on their own (they receive its abort or see it go
    away); any still running after a grace period are terminated.
    """
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    (job.workdir / "logs").mkdir(parents=True, exist_ok=True)
    procs: dict[str, PartyProcess] = {}
    t0 = time.perf_counter()
    for name, cfg in job.configs.items():
        log = job.workdir / "logs" / f"{name}.log"
        fh = open(log, "w")  # noqa: SIM115 - closed when the process ends
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "vfl.cli", "run", "--config", str(cfg), "--status-json"],
            stdout=subprocess.PIPE, stderr=fh, text=True, env=env, cwd=job.workdir)
        procs[name] = PartyProcess(name, proc, log)
    readers = [threading.Thread(target=p.follow, daemon=True) for p in procs.values()]
    for r in readers:
        r.start()
    failed_at: float | None = None
    while True:
        codes = {n: p.proc.poll() for n, p in procs.items()}
        if on_tick:
            on_tick(procs)
        if all(c is not None for c in codes.values()):
            break
        if any(c not in (None, 0) for c in codes.values()) and failed_at is None:
            failed_at = time.perf_counter()
        now = time.perf_counter()
        if (failed_at is not None and now - failed_at > 30) or now - t0 > timeout:
            for p in procs.values():
                if p.proc.poll() is None:
                    p.proc.terminate()
        time.sleep(0.2)
    for r in readers:
        r.join(timeout=5)
    if on_tick:
        on_tick(procs)
    return procs, time.perf_counter() - t0
