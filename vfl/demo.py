"""The two-bank demo: three OS processes over gRPC with mutual TLS, or threads.

``write_demo_job`` lays out everything a real deployment has — each bank's
data, a CA with one certificate per party, and one TOML per party —
``run_demo_processes`` starts ``vfl run --config ...`` for each party and
follows their progress, and :func:`run_demo` does it all in one call and
gathers what the parties wrote into one :class:`DemoResult` (``demo.json``).
Each party writes its own outputs (:mod:`vfl.outputs`); the demo only reads
them, and adds the pooled-data yardstick, which it alone can compute because
it generated both banks' data.
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
from vfl.exceptions import ConfigError, VFLError
from vfl.model import atomic_write_text
from vfl.outputs import REPORT, prepare_output_dir, run_file
from vfl.progress import ProgressHook
from vfl.roles import Role
from vfl.synthetic import make_two_banks
from vfl.transport.base import LINK_GRACE

__all__ = ["DemoJob", "DemoResult", "free_ports", "write_demo_job", "run_demo_processes",
           "run_demo", "DemoPartyError", "replay_in_memory", "serve_demo"]
#: The demo scoring API's clients file and its one key (the demo's workdir, 0600).
API_CLIENTS = "api_clients.toml"
API_KEY = "api_key.txt"

#: the demo's party names: bank A is the guest, bank B the host
BANK_A, BANK_B, ARBITER = "bank_a", "bank_b", "arbiter"


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


def replay_in_memory(job: DemoJob) -> tuple[Any, Any, Any]:
    """Train a finished networked job once more in this process, from the guest's secret start.

    Reads every party's config, data and model part; returns ``(FitResult,
    guest part, host part)``: the in-memory fit and the networked parts, to
    compare weight for weight (equal to the rounding of each weight share,
    ~2^-32 a step under protocol shared; bit for bit under reveal-gradients).
    The job must hold no validation share (its draw is secret, so no replay
    repeats it) and one host.
    """
    import numpy as np

    from vfl.config import load_party_config
    from vfl.data import load_table
    from vfl.model import load_model_part
    from vfl.pipeline import fit_local
    from vfl.runner import part_path

    cfg = {n: load_party_config(p) for n, p in job.configs.items()}
    g_part = load_model_part(part_path(cfg[BANK_A]))
    h_part = load_model_part(part_path(cfg[BANK_B]))

    def table(name: str) -> Any:
        d = cfg[name].data
        if d is None:
            raise ConfigError(f"{job.configs[name]}: no [data] to replay.")
        return load_table(d.path, id_column=d.id_column, label_column=d.label_column)

    local = fit_local(table(BANK_A), [table(BANK_B)], cfg[BANK_A].train, baselines=False,
                      coef_init=np.asarray(g_part.training["coef_init"]),
                      intercept_init=g_part.training["intercept_init"])
    return local, g_part, h_part


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def write_party_toml(path: Path, *, job: dict[str, Any], party: dict[str, Any],
                     tls: dict[str, Any], peers: list[dict[str, Any]],
                     data: dict[str, Any] | None = None, train: dict[str, Any] | None = None,
                     security: dict[str, Any] | None = None,
                     checkpoint: dict[str, Any] | None = None,
                     serve: dict[str, Any] | None = None) -> None:
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
    if checkpoint:
        section("checkpoint", checkpoint)
    if serve:
        section("serve", serve)
    atomic_write_text(path, "\n".join(lines))


def write_demo_job(workdir: str | Path, *, rows: int = 8000, overlap: float = 0.75,
                   key_bits: int = 2048, insecure: bool = False, epochs: int = 10,
                   batch_size: int = 512, job_id: str | None = None,
                   ports: list[int] | None = None, seed: int = 7,
                   validation_fraction: float | None = None,
                   link_grace: float | None = None, connect_timeout: float = 60,
                   dial: dict[str, str] | None = None,
                   checkpoint_every: int = 0) -> DemoJob:
    """Generate data, certificates and three party configs under ``workdir``.

    ``validation_fraction``: written to the guest's ``[train]`` when given
    (default: the library default, 0.2). ``link_grace``: every party's
    ``[job] link_grace_seconds`` when given; ``connect_timeout`` its
    ``connect_timeout_seconds``. ``dial``: for a party name, the
    address its peers dial instead of its listen address (e.g. a
    :class:`vfl.netfaults.FaultProxy` in front of it). ``checkpoint_every``:
    the guest's ``[checkpoint] every_batches`` when not 0. The guest's and the
    host's configs also get a ``[serve]`` section (free loopback ports), so
    ``vfl serve`` runs on them once the model is trained (:func:`serve_demo`).
    """
    wd = Path(workdir).resolve()
    g_df, h_df = make_two_banks(rows, overlap, seed=seed)
    data = {BANK_A: wd / "data" / "bank_a.csv", BANK_B: wd / "data" / "bank_b.csv"}
    atomic_write_text(data[BANK_A], g_df.to_csv(index=False))
    atomic_write_text(data[BANK_B], h_df.to_csv(index=False))
    write_party_certs(wd / "certs", [BANK_A, BANK_B, ARBITER])
    ports = ports or free_ports(3)
    addr = {BANK_A: f"127.0.0.1:{ports[0]}", BANK_B: f"127.0.0.1:{ports[1]}",
            ARBITER: f"127.0.0.1:{ports[2]}"}
    roles = {BANK_A: Role.GUEST.value, BANK_B: Role.HOST.value, ARBITER: Role.ARBITER.value}
    serve_ports = free_ports(2)
    serve_addr = {BANK_B: f"127.0.0.1:{serve_ports[0]}", BANK_A: f"127.0.0.1:{serve_ports[1]}"}
    job_id = job_id or f"demo-{int(time.time())}"
    # the scoring API's one client: its key (shown by serve_demo) and the clients file
    # that keeps only its hash; a new demo makes a new key
    from vfl.serving.auth import add_client

    (wd / API_CLIENTS).unlink(missing_ok=True)
    key = add_client(wd / API_CLIENTS, "demo-client")
    fd = os.open(wd / API_KEY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    configs, outputs = {}, {}
    for name in (BANK_A, BANK_B, ARBITER):
        outputs[name] = wd / "out" / name
        # the demo owns its workdir: each demo replaces the previous one's outputs
        prepare_output_dir(outputs[name], force=True)
        peers = [{"name": p, "role": roles[p], "address": (dial or {}).get(p, addr[p])}
                 for p in (BANK_A, BANK_B, ARBITER) if p != name]
        if name == BANK_A:  # where bank B's scoring service answers (vfl serve)
            peers[0]["serve_address"] = serve_addr[BANK_B]
        d = None
        if name == BANK_A:
            d = {"path": "data/bank_a.csv", "id_column": "customer_id", "label_column": "default"}
        elif name == BANK_B:
            d = {"path": "data/bank_b.csv", "id_column": "customer_id"}
        # the demo compares the joint model with the pooled yardstick on the training rows,
        # so the guest asks for training-row scoring and the host allows it (off by default:
        # it reveals the host's partial score of every training customer to the guest)
        train: dict[str, Any] | None = (
            {"epochs": epochs, "batch_size": batch_size, "key_bits": key_bits,
             "score_training_rows": True, "iv_bins": 10} if name == BANK_A else None)
        if train is not None and validation_fraction is not None:
            train["validation_fraction"] = validation_fraction
        security: dict[str, Any] = {"allow_insecure_key_size": insecure}
        if name == BANK_B:
            security["allow_training_scores"] = True
        configs[name] = wd / f"{name}.toml"
        job_table: dict[str, Any] = {"id": job_id, "output": f"out/{name}",
                                     "timeout_seconds": 900,
                                     "connect_timeout_seconds": connect_timeout}
        if link_grace is not None:
            job_table["link_grace_seconds"] = link_grace
        write_party_toml(
            configs[name],
            job=job_table,
            party={"name": name, "role": roles[name], "listen": addr[name]},
            tls={"ca": "certs/ca.pem", "cert": f"certs/{name}.pem", "key": f"certs/{name}.key"},
            peers=peers, data=d, train=train,
            security=security,
            checkpoint={"every_batches": checkpoint_every}
            if name == BANK_A and checkpoint_every else None,
            serve=({"listen": serve_addr[name], "auth": "api_keys", "clients": API_CLIENTS}
                   if name == BANK_A else {"listen": serve_addr[name]}
                   if name in serve_addr else None),
        )
    return DemoJob(wd, configs, data, outputs)


def serve_demo(job: DemoJob, *, seconds: float | None = None, examples: int = 3,
               say: Any = print) -> list[dict[str, Any]]:
    """Start ``vfl serve`` for bank B, then bank A, on a trained demo job; score a few of
    bank A's applicants over HTTP and show how (curl); serve ``seconds`` more (None: until
    Ctrl-C); stop both. Returns the decisions shown."""
    import urllib.error
    import urllib.request

    import pandas as pd

    from vfl.config import load_party_config

    guest_cfg = load_party_config(job.configs[BANK_A])
    url = f"http://{guest_cfg.serve.listen}"
    key = (job.workdir / API_KEY).read_text().strip()
    logs = job.workdir / "logs"
    logs.mkdir(exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    out: list[dict[str, Any]] = []

    def call(path: str, body: bytes | None = None) -> tuple[int, Any]:
        # http:// on loopback, from the demo's own config
        req = urllib.request.Request(url + path, data=body,  # noqa: S310
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    try:
        for name in (BANK_B, BANK_A):
            with open(logs / f"{name}.serve.log", "wb") as log:
                procs[name] = subprocess.Popen(  # noqa: S603 - this interpreter, our own CLI
                    [sys.executable, "-m", "vfl.cli", "serve", "--config", str(job.configs[name])],
                    stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 60
        while True:
            for name, p in procs.items():
                if p.poll() is not None:
                    raise VFLError(f"vfl serve for {name} exited {p.returncode}; see "
                                   f"{logs / f'{name}.serve.log'}")
            try:
                if call("/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                raise VFLError(f"the scoring services did not come up; see {logs}/")
            time.sleep(0.2)
        g = pd.read_csv(job.data[BANK_A], dtype={"customer_id": str})
        shared = set(pd.read_csv(job.data[BANK_B], dtype={"customer_id": str})["customer_id"])
        feats = [c for c in g.columns if c not in ("customer_id", "default")]
        pick = [*g.index[g["customer_id"].isin(shared)][:examples - 1],
                *g.index[~g["customer_id"].isin(shared)][:1]]
        for i in pick:
            row = g.loc[i]
            body = {"customer_id": row["customer_id"],
                    "features": {f: None if pd.isna(row[f]) else float(row[f]) for f in feats}}
            status, decision = call("/v1/score", json.dumps(body).encode())
            if status != 200:
                raise VFLError(f"the scoring API answered {status}: {decision}")
            out.append(decision)
            reasons = ", ".join(r["feature"] for r in decision["reason_codes"]) or "none"
            say(f"{decision['customer_id']}: probability {decision['probability']:.4f}, score "
                f"{decision['score']}, reasons: {reasons}"
                + ("" if decision["host_features_available"] else
                   " (bank B does not know this customer: scored with its average)"))
        first = g.loc[pick[0]]
        example = json.dumps({"customer_id": first["customer_id"],
                              "features": {f: None if pd.isna(first[f]) else round(float(first[f]), 4)
                                           for f in feats}})
        say(f"try it: curl -s {url}/v1/score -H \"Authorization: Bearer $(cat "
            f"{job.workdir / API_KEY})\" -H 'content-type: application/json' -d '{example}'")
        say(f"OpenAPI docs: {url}/docs; metrics: {url}/metrics; logs: {logs}/")
        if seconds is None:
            say("serving until Ctrl-C")
            while all(p.poll() is None for p in procs.values()):
                time.sleep(0.5)
        elif seconds > 0:
            time.sleep(seconds)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    return out


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


def run_demo_processes(job: DemoJob, *, on_tick: Any = None, timeout: float = 1800,
                       extra_args: tuple[str, ...] = (), logs: str = "logs"
                       ) -> tuple[dict[str, PartyProcess], float]:
    """Start the three parties as separate processes; wait for them all.

    Returns the processes (with exit codes) and the wall time. If one party
    fails, the others stop on their own (they receive its abort or see it go
    away); any still running :data:`SURVIVOR_WAIT` s later are terminated. If
    the demo itself is stopped (SIGTERM, Ctrl-C), every party gets SIGTERM,
    and any still running 15 s later SIGKILL, before the stop is re-raised.
    ``extra_args`` go to every ``vfl run`` (e.g. ``("--resume",)``); each
    party's stderr goes to ``<workdir>/<logs>/<party>.log``.
    """
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    (job.workdir / logs).mkdir(parents=True, exist_ok=True)
    procs: dict[str, PartyProcess] = {}
    t0 = time.perf_counter()
    for name, cfg in job.configs.items():
        log = job.workdir / logs / f"{name}.log"
        fh = open(log, "w")  # noqa: SIM115 - closed when the process ends
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "vfl.cli", "run", "--config", str(cfg), "--status-json",
             *extra_args],
            stdout=subprocess.PIPE, stderr=fh, text=True, env=env, cwd=job.workdir)
        procs[name] = PartyProcess(name, proc, log)
    readers = [threading.Thread(target=p.follow, daemon=True) for p in procs.values()]
    for r in readers:
        r.start()
    try:
        _wait_parties(procs, t0, timeout, on_tick)
    except BaseException as exc:
        # Ctrl-C in the terminal already reached every party: give them time to stop on
        # their own before SIGTERM; anything else (SIGTERM to the demo) is passed on now
        _stop_parties(procs, settle=15.0 if isinstance(exc, KeyboardInterrupt) else 0.0)
        raise
    for r in readers:
        r.join(timeout=5)
    if on_tick:
        on_tick(procs)
    return procs, time.perf_counter() - t0


def _stop_parties(procs: dict[str, PartyProcess], grace: float = 15.0,
                  settle: float = 0.0) -> None:
    """SIGTERM every running party (each stops cleanly), then SIGKILL what is left.

    ``settle``: seconds to let the parties stop on their own first.
    """
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline and any(p.proc.poll() is None for p in procs.values()):
        time.sleep(0.1)
    for p in procs.values():
        if p.proc.poll() is None:
            p.proc.terminate()
    deadline = time.monotonic() + grace
    for p in procs.values():
        try:
            p.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()


#: seconds the other parties get to stop on their own once one failed: a peer that vanished
#: is re-dialled for the link grace (30 s by default) before it is given up on
SURVIVOR_WAIT = LINK_GRACE + 15.0


def _wait_parties(procs: dict[str, PartyProcess], t0: float, timeout: float,
                  on_tick: Any) -> None:
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
        if (failed_at is not None and now - failed_at > SURVIVOR_WAIT) or now - t0 > timeout:
            _stop_parties(procs)
            return
        time.sleep(0.2)


@dataclass
class DemoResult:
    """What the demo produced.

    ``report`` is the guest's ``report.json`` with every party's traffic and
    the pooled-data yardstick added (saved as ``<workdir>/demo.json``; the
    guest's own report is left as the guest wrote it).
    """

    job: DemoJob
    report: dict[str, Any]
    wall_seconds: float
    guest_output: Path
    html_report: Path | None
    processes: dict[str, PartyProcess] | None = None


def _pooled_baseline(job: DemoJob) -> dict[str, float]:
    """The pooled-data yardstick: possible only because the demo generated both banks."""
    from vfl.baselines import centralized_baselines
    from vfl.data import load_table

    g = load_table(job.data[BANK_A], id_column="customer_id", label_column="default",
                   require_label=True)
    h = load_table(job.data[BANK_B], id_column="customer_id")
    shared = sorted(set(g.ids) & set(h.ids))
    g_pos = {c: i for i, c in enumerate(g.ids)}
    h_pos = {c: i for i, c in enumerate(h.ids)}
    import numpy as np

    g_al = g.take(np.asarray([g_pos[c] for c in shared], dtype=np.int64))
    h_al = h.take(np.asarray([h_pos[c] for c in shared], dtype=np.int64))
    return {k: v for k, v in centralized_baselines(g_al, [h_al]).items()
            if k.startswith("centralized")}


def run_demo(workdir: str | Path, *, rows: int = 8000, overlap: float = 0.75, epochs: int = 10,
             key_bits: int = 2048, insecure: bool = False, in_process: bool = False,
             progress: ProgressHook | None = None,
             on_psi_done: Any = None, on_tick: Any = None) -> DemoResult:
    """Generate the two banks and train the joint model, end to end.

    By default the three parties run as separate processes talking gRPC with
    mutual TLS on loopback (``on_tick(processes)`` is called while they
    run); ``in_process`` runs them as threads of this process instead
    (``progress``/``on_psi_done`` as for :func:`vfl.pipeline.fit_local`).

    Raises
    ------
    DemoPartyError
        If a party process fails (naming the party, its exit code and last
        error line).
    """
    from vfl.crypto.paillier import check_key_size

    check_key_size(key_bits, allow_insecure_key_size=insecure)
    job = write_demo_job(workdir, rows=rows, overlap=overlap, key_bits=key_bits,
                         insecure=insecure, epochs=epochs)
    t0 = time.perf_counter()
    if in_process:
        from vfl.data import load_table
        from vfl.jobs import JobOptions
        from vfl.lr.config import TrainConfig
        from vfl.pipeline import fit_local

        g = load_table(job.data[BANK_A], id_column="customer_id", label_column="default",
                       require_label=True)
        h = load_table(job.data[BANK_B], id_column="customer_id")
        config = TrainConfig(epochs=epochs, key_bits=key_bits, batch_size=512,
                             allow_insecure_key_size=insecure)
        out = job.workdir / "out" / "in-process"
        result = fit_local(g, [h], config, out_dir=out, progress=progress,
                           on_psi_done=on_psi_done, html_report=True, force=True,
                           options=JobOptions(iv_bins=10))
        report = result.report
        demo = DemoResult(job, report, time.perf_counter() - t0, out,
                          Path(report["html_report"]) if "html_report" in report else None)
    else:
        procs, wall = run_demo_processes(job, on_tick=on_tick)
        failed = {n: p for n, p in procs.items() if p.proc.returncode != 0}
        if failed:
            raise DemoPartyError({n: (p.proc.returncode, p.last_error())
                                  for n, p in failed.items()})
        out = job.outputs[BANK_A]
        report = json.loads((out / REPORT).read_text())
        traffic = {BANK_A: report["traffic"][BANK_A]}
        for name in (BANK_B, ARBITER):
            traffic[name] = json.loads(run_file(job.outputs[name], name).read_text())["traffic"]
        report["traffic"] = traffic
        report["baseline"] = {**report.get("baseline", {}), **_pooled_baseline(job)}
        demo = DemoResult(job, report, wall, out,
                          Path(report["html_report"]) if "html_report" in report else None,
                          procs)
    atomic_write_text(job.workdir / "demo.json", json.dumps(
        {**demo.report, "wall_seconds": demo.wall_seconds, "in_process": in_process}, indent=2))
    return demo


class DemoPartyError(VFLError):
    """A party process of the demo failed."""

    def __init__(self, failures: dict[str, tuple[int | None, str]]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{n} exited with {code}: {line}"
                                   for n, (code, line) in failures.items()))
