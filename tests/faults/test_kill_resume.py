"""Issue 13: kill -9 of a party in the middle of training, then ``vfl run --resume``.

Three ``vfl run`` processes over gRPC + mutual TLS. The host is killed without warning
during its third epoch; the guest and the arbiter stop on their own, naming it; the three
are started again with ``--resume`` and finish. The model equals the in-memory replay of
the same job (the guest's secret start, read from its model part), weight for weight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vfl.checkpoint import PASSPHRASE_ENV
from vfl.demo import write_demo_job

from ..conftest import replay_demo_job_in_memory


def _spawn(config: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vfl.cli", "run", "--config", str(config),
                             "--status-json", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_kill_9_of_the_host_mid_training_then_resume_gives_the_uninterrupted_weights(tmp_path):
    # no validation share: its draw is secret, so the in-memory replay could not repeat it
    job = write_demo_job(tmp_path / "job", rows=1500, key_bits=512, insecure=True, epochs=4,
                         batch_size=256, validation_fraction=0.0,
                         link_grace=5)
    env = {**os.environ, PASSPHRASE_ENV: "a passphrase only this test knows",
           "PYTHONUNBUFFERED": "1"}
    procs = {name: _spawn(cfg, env) for name, cfg in job.configs.items()}
    try:
        host = procs["bank_b"]
        assert host.stdout is not None
        deadline = time.time() + 120
        for line in host.stdout:
            status = json.loads(line)
            if status.get("stage") == "training" and status.get("epoch", 0) >= 3:
                break
            assert time.time() < deadline, "the host never reached its third epoch"
        host.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        rcs = {n: procs[n].wait(timeout=60) for n in ("bank_a", "arbiter")}
        detected = time.monotonic() - t0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    errs = {n: procs[n].stderr.read() for n in ("bank_a", "arbiter")}  # type: ignore[union-attr]
    assert rcs == {"bank_a": 2, "arbiter": 2}, errs
    assert "bank_b" in errs["bank_a"], errs["bank_a"]
    assert detected < 30, f"the survivors took {detected:.1f} s to stop"
    print(f"\nkill -9 of the host: guest and arbiter stopped {detected:.2f} s later")
    for out in job.outputs.values():  # nothing that looks like a finished model
        assert not list(Path(out).glob("*.json"))
    held = {name: sorted(int(p.name.rsplit(".e", 1)[1].split(".")[0]) for p in
                         (Path(job.outputs[name]) / "checkpoints").glob("*.ckpt"))
            for name in job.configs}
    assert all(h and h[-1] >= 2 for h in held.values()), held  # two epochs were done

    # every party again, with --resume: they agree on the newest epoch all of them hold
    procs = {name: _spawn(cfg, env, "--resume") for name, cfg in job.configs.items()}
    try:
        outs = {n: p.communicate(timeout=240) for n, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for name, p in procs.items():
        assert p.returncode == 0, (name, outs[name][1][-2000:])
    report = json.loads((Path(job.outputs["bank_a"]) / "report.json").read_text())
    assert report["epochs_run"] == 4

    # the same job in memory from the networked guest's secret start: the same weights
    local, g_part, h_part = replay_demo_job_in_memory(job)
    assert np.array_equal(local.guest.coef_, np.asarray(g_part.coef))
    assert local.guest.intercept_ == g_part.intercept
    assert np.array_equal(local.hosts[0].coef_, np.asarray(h_part.coef))
