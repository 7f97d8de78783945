"""Issue 13: kill -9 of each role at a different point of one job, each time followed by
``vfl run --resume``, and the model equals the job replayed in memory, weight for weight.

Three ``vfl run`` processes over gRPC + mutual TLS (link grace 3 s). One job, four runs:

1. the guest is killed as PSI starts: nothing is held yet, so ``--resume`` starts afresh
   (if its peers never reached it, they give up after the connect timeout, 10 s here);
2. the host is killed during its second epoch (the guest's ``[checkpoint] every_batches``
   makes every party but the arbiter checkpoint every 2 batches too, so this resume may start
   within an epoch);
3. the arbiter is killed during the fourth epoch;
4. the guest is killed right after the last epoch, while it scores the training rows;

after each kill the two survivors stop on their own, exit 2 within the stated time with one
``error:`` line naming the killed party, and leave no model part or report; the checkpoints of
the last complete epoch are there. The last ``--resume`` finishes, and the model equals the
in-memory replay of the same job from the guest's secret start (read from its model part).
Each kill prints its detection time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vfl.checkpoint import PASSPHRASE_ENV
from vfl.demo import write_demo_job

from ..conftest import finish_parties, replay_demo_job_in_memory

EPOCHS = 5
GRACE = 3
#: a party killed before its peers reached it is given up on after the connect timeout (a
#: peer cannot tell one that died then from one still starting)
CONNECT_TIMEOUT = 10
#: survivors must stop this soon after the kill: the grace, 3 pings, and slack for a busy box
DETECTION_BOUND = 30.0


def _spawn(config: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vfl.cli", "run", "--config", str(config),
                             "--status-json", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _held(job: Any) -> dict[str, list[int]]:
    return {name: sorted(int(p.name.rsplit(".e", 1)[1].split(".")[0]) for p in
                         (Path(job.outputs[name]) / "checkpoints").glob("*.ckpt"))
            for name in job.configs}


def _kill_when(job: Any, env: dict[str, str], resume: bool, victim: str, watch: str,
               when: Callable[[dict[str, Any]], bool], done: tuple[str, ...] = ()
               ) -> tuple[float, dict[str, str]]:
    """Start every party; SIGKILL ``victim`` when a status line of ``watch`` satisfies
    ``when``; return the survivors' detection time and their stderr. ``done``: parties
    whose part of the job was over at that point (they exit 0 with their run summary)."""
    procs = {n: _spawn(cfg, env, *(("--resume",) if resume else ())) for n, cfg in
             job.configs.items()}
    try:
        out = procs[watch].stdout
        assert out is not None
        deadline = time.time() + 120
        for line in out:
            if when(json.loads(line)):
                break
            assert time.time() < deadline, f"{watch} never reached the point of the kill"
        else:
            raise AssertionError(f"{watch} ended before the point of the kill")
        procs[victim].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        survivors = [n for n in procs if n != victim and n not in done]
        rcs = {n: procs[n].wait(timeout=60) for n in survivors}
        assert all(procs[n].wait(timeout=60) == 0 for n in done)
        detected = time.monotonic() - t0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    errs = {n: procs[n].stderr.read() for n in survivors}  # type: ignore[union-attr]
    assert rcs == dict.fromkeys(survivors, 2), errs
    for err in errs.values():
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1, err  # one line, naming the cause
        assert victim in lines[0] or "stopped the job" in lines[0], lines[0]
    assert any(victim in e for e in errs.values()), errs  # someone names the killed party
    assert detected < DETECTION_BOUND, f"the survivors took {detected:.1f} s to stop"
    for name, out_dir in job.outputs.items():  # nothing that looks like a finished model
        if name not in done:
            assert not list(Path(out_dir).glob("*.json")), name
        assert not list(Path(out_dir).glob("*.tmp"))
    return detected, errs


def test_kill_9_of_each_role_at_four_points_then_resume_gives_the_uninterrupted_weights(tmp_path):
    # no validation share: its draw is secret, so the in-memory replay could not repeat it
    job = write_demo_job(tmp_path / "job", rows=1500, key_bits=512, insecure=True,
                         epochs=EPOCHS, batch_size=256, validation_fraction=0.0,
                         link_grace=GRACE, connect_timeout=CONNECT_TIMEOUT, checkpoint_every=2)
    env = {**os.environ, PASSPHRASE_ENV: "a passphrase only this test knows",
           "PYTHONUNBUFFERED": "1"}
    times = {}

    def training(epoch: int) -> Callable[[dict[str, Any]], bool]:
        return lambda s: s.get("stage") == "training" and s.get("epoch", 0) >= epoch

    times["guest during PSI"], _ = _kill_when(job, env, False, "bank_a", "bank_a",
                                              lambda s: s.get("stage") == "psi")
    assert not any(_held(job).values()), _held(job)  # no epoch done, nothing held

    times["host in epoch 2"], _ = _kill_when(job, env, True, "bank_b", "bank_b", training(2))
    assert all(h and h[-1] >= 1 for h in _held(job).values()), _held(job)
    for name in ("bank_a", "bank_b"):  # checkpoints within epochs: <party>.e<k>.b<j>.ckpt
        assert list((Path(job.outputs[name]) / "checkpoints").glob(f"{name}.e*.b*.ckpt")), name

    times["arbiter in epoch 4"], _ = _kill_when(job, env, True, "arbiter", "bank_a",
                                                training(4))
    assert all(h and h[-1] >= 3 for h in _held(job).values()), _held(job)

    times["guest scoring after the last epoch"], _ = _kill_when(
        job, env, True, "bank_a", "bank_a", lambda s: s.get("stage") == "scoring",
        done=("arbiter",))  # the arbiter's part ends with training
    assert all(h and h[-1] == EPOCHS for h in _held(job).values()), _held(job)

    finish_parties({name: _spawn(cfg, env, "--resume") for name, cfg in job.configs.items()})
    report = json.loads((Path(job.outputs["bank_a"]) / "report.json").read_text())
    assert report["epochs_run"] == EPOCHS
    assert report["psi_reused"] is True  # resumed runs took the intersection kept by the 2nd
    print("\n" + "\n".join(f"kill -9 of the {what}: the survivors stopped {s:.2f} s later"
                           for what, s in times.items()))

    # the same job in memory from the networked guest's secret start: the same weights
    local, g_part, h_part = replay_demo_job_in_memory(job)
    # equal to the rounding of each weight share (protocol shared: ~2^-32 a step, the split
    # depending on each run's secret masks)
    np.testing.assert_allclose(local.guest.coef_, np.asarray(g_part.coef), atol=1e-8, rtol=0)
    assert abs(local.guest.intercept_ - g_part.intercept) <= 1e-8
    np.testing.assert_allclose(local.hosts[0].coef_, np.asarray(h_part.coef), atol=1e-8, rtol=0)
