"""Issue 13, item 0: a party's worker processes die with it; SIGTERM stops a party cleanly.

Real processes: ``vfl run`` parties over gRPC + mutual TLS, ``vfl fit``, and a bare
worker pool, stopped the way a supervisor or an operator would (SIGTERM, SIGKILL). Each
test records the party's process tree while it works and checks that no process of it
outlives the party by more than a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vfl.demo import write_demo_job

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="reads the process tree from /proc (Linux)")

#: How long a party's workers may outlive it.
WORKERS_GONE_WITHIN_S = 5.0


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid``."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            info = _ppid_and_state(int(d.name))
            if info is not None:
                children.setdefault(info[0], []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return alive(out)


def alive(pids: list[int]) -> list[int]:
    """The processes of ``pids`` that still run (a zombie has exited)."""
    out = []
    for p in pids:
        info = _ppid_and_state(p)
        if info is not None and info[1] != "Z":
            out.append(p)
    return out


def wait_gone(pids: list[int], within: float) -> tuple[list[int], float]:
    """Poll until none of ``pids`` runs; returns the survivors and the seconds waited."""
    t0 = time.monotonic()
    while alive(pids) and time.monotonic() - t0 < within:
        time.sleep(0.05)
    return alive(pids), time.monotonic() - t0


def spawned_workers(pid: int) -> list[int]:
    """The multiprocessing workers below ``pid``."""
    out = []
    for p in descendants(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes():
                out.append(p)
        except OSError:
            pass
    return out


def test_pool_workers_exit_when_their_party_is_killed(tmp_path):
    """SIGKILL leaves no chance to clean up: the workers notice their parent is gone."""
    script = tmp_path / "party.py"
    script.write_text(
        "import os, sys, time\n"
        "from vfl.procs import worker_pool\n"
        "if __name__ == '__main__':\n"
        "    pool = worker_pool(2)\n"
        "    busy = pool.submit(time.sleep, 120)   # one worker busy, one idle\n"
        "    pool.submit(os.getpid).result()\n"
        "    print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "    time.sleep(120)\n")
    party = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert party.stdout is not None
        workers = [int(p) for p in party.stdout.readline().split()]
        assert len(workers) == 2 and alive(workers) == workers
        party.send_signal(signal.SIGKILL)
        party.wait(timeout=10)
        left, waited = wait_gone(workers, WORKERS_GONE_WITHIN_S)
        assert not left, f"workers {left} outlived their killed party by {waited:.1f} s"
        print(f"\nSIGKILL of a pool's parent: its workers were gone {waited:.3f} s later")
    finally:
        if party.poll() is None:
            party.kill()


def _spawn(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vfl.cli", "run", "--config", str(config),
                             "--status-json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _job(tmp_path: Path, rows: int = 3000) -> tuple[Any, dict[str, str]]:
    job = write_demo_job(tmp_path / "job", rows=rows, key_bits=1024, insecure=True, epochs=30,
                         batch_size=256, link_grace=5)
    for name in ("bank_a", "bank_b"):  # a pool of two workers per party, whatever the rows
        with open(job.configs[name], "a") as f:
            f.write("\n[compute]\nworkers = 2\n")
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    return job, env


def _wait_training(proc: subprocess.Popen[str], batches: int = 2, timeout: float = 120) -> None:
    assert proc.stdout is not None
    deadline = time.time() + timeout
    for line in proc.stdout:
        status = json.loads(line)
        if status.get("stage") == "training" and status.get("batch", 0) >= batches:
            return
        assert time.time() < deadline, "the party never started training"
    raise AssertionError("the party ended before training")


@pytest.mark.parametrize("sig", [
    signal.SIGTERM,
    pytest.param(signal.SIGKILL, marks=pytest.mark.slow),
])
def test_a_party_stopped_mid_training_takes_its_workers_and_the_job_down(tmp_path, sig):
    """``vfl run`` parties over gRPC + mTLS; the host is stopped during training.

    SIGTERM: the host stops cleanly (exit 143, a one-line error, peers told). SIGKILL: it
    cannot; the peers see it go away. Either way its workers are gone within seconds, the
    peers exit 2 naming it, and no model part, report or temporary file is left.
    """
    job, env = _job(tmp_path)
    procs = {name: _spawn(cfg, env) for name, cfg in job.configs.items()}
    try:
        _wait_training(procs["bank_b"])
        workers = spawned_workers(procs["bank_b"].pid)
        assert len(workers) >= 2, "the host runs a pool of two workers"
        t0 = time.monotonic()
        procs["bank_b"].send_signal(sig)
        try:
            host_rc = procs["bank_b"].wait(timeout=30)
        except subprocess.TimeoutExpired:  # where is it stuck? every thread's stack, then fail
            procs["bank_b"].send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            procs["bank_b"].kill()
            raise AssertionError("the host did not stop within 30 s:\n"
                                 + procs["bank_b"].stderr.read()[-6000:]) from None
        stopped_in = time.monotonic() - t0
        left, waited = wait_gone(workers, WORKERS_GONE_WITHIN_S)
        guest_rc = procs["bank_a"].wait(timeout=60)
        arbiter_rc = procs["arbiter"].wait(timeout=60)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    errs = {name: p.stderr.read() for name, p in procs.items()}  # type: ignore[union-attr]
    assert not left, f"host workers {left} outlived it by {waited:.1f} s"
    print(f"\n{signal.Signals(sig).name} of the host: it stopped in {stopped_in:.2f} s, its "
          f"workers were gone {waited:.2f} s later")
    assert guest_rc == 2 and arbiter_rc == 2, errs
    if sig == signal.SIGTERM:
        assert host_rc == 143, errs["bank_b"]
        assert stopped_in < 15, f"the host took {stopped_in:.1f} s to stop"
        # (multiprocessing's own resource tracker may add a warning line after it)
        assert "error: stopped by SIGTERM" in errs["bank_b"], errs["bank_b"]
        # the peers learn that bank_b stopped the job (its abort), not only a broken link
        assert "bank_b" in errs["bank_a"] and "bank_b" in errs["arbiter"], errs
    else:
        assert host_rc == -signal.SIGKILL
        # which of the guest's links notices first is a race: its own link to bank_b (a
        # receive: "went away", a send: "could not deliver") or the arbiter's abort
        assert "bank_b" in errs["bank_a"] and any(
            w in errs["bank_a"] for w in ("went away", "could not deliver", "stopped the job")
        ), errs["bank_a"]
        # the arbiter hears of it from the guest's abort, or sees bank_b go itself
        assert ("bank_a stopped the job" in errs["arbiter"]
                or "bank_b" in errs["arbiter"]), errs["arbiter"]
    for name, err in errs.items():
        assert "Traceback" not in err, (name, err)
    for out in job.outputs.values():
        assert not list(Path(out).glob("*.json")), list(Path(out).iterdir())
    assert not list(tmp_path.rglob("*.tmp"))
    assert not list((tmp_path / "tmpdir").iterdir()), "temporary files left behind"


def test_sigterm_stops_a_one_machine_fit_and_its_workers(tmp_path):
    """``vfl fit`` runs every party in threads of one process: SIGTERM stops them all."""
    job, env = _job(tmp_path, rows=4000)  # 2,400 training rows: a pool of workers per party
    out = tmp_path / "model"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vfl.cli", "fit", "--guest", str(job.data["bank_a"]),
         "--host", str(job.data["bank_b"]), "--id", "customer_id", "--label", "default",
         "--out", str(out), "--quiet", "--key-bits", "1024", "--insecure-key-size",
         "--epochs", "30", "--batch-size", "256"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 4 and time.monotonic() < deadline:  # guest's and host's pools
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
            workers = spawned_workers(proc.pid)
        assert len(workers) >= 4, "the parties' pools never started"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        left, waited = wait_gone(workers, WORKERS_GONE_WITHIN_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert rc == 143, err
    assert "error: stopped by SIGTERM" in err, err
    assert "Traceback" not in err
    assert not left, f"workers {left} outlived vfl fit by {waited:.1f} s"
    assert not out.exists() or not list(out.glob("*.json"))
    assert not list((tmp_path / "tmpdir").iterdir()), "temporary files left behind"
