"""Parties over gRPC with mutual TLS: same model as in memory; failures end cleanly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from vfl.demo import write_demo_job
from vfl.runner import run_fit, run_predict

from .conftest import replay_demo_job_in_memory, run_parties


def test_grpc_training_equals_in_memory_training(tmp_path):
    # no validation share: its draw is secret, so the in-memory replay could not repeat it
    job = write_demo_job(tmp_path / "job", rows=1500, key_bits=512, insecure=True, epochs=3,
                         batch_size=256, validation_fraction=0.0)
    results, errors = run_parties(job.configs, run_fit)
    assert not errors, errors
    report = results["bank_a"]
    # the same job in memory, same seed and the networked guest's secret start (from its part)
    local, g_part, h_part = replay_demo_job_in_memory(job)
    assert g_part.model_id == h_part.model_id == report["model_id"]
    assert set(g_part.features).isdisjoint(h_part.features)
    # equal to the rounding of each weight share (protocol shared: ~2^-32 a step, the split
    # depending on each run's secret masks)
    np.testing.assert_allclose(local.guest.coef_, np.asarray(g_part.coef), atol=1e-8, rtol=0)
    assert abs(local.guest.intercept_ - g_part.intercept) <= 1e-8
    np.testing.assert_allclose(local.hosts[0].coef_, np.asarray(h_part.coef), atol=1e-8, rtol=0)
    assert abs(local.report["auc"] - report["auc"]) <= 1e-6
    # traffic was counted on the wire
    assert report["traffic"]["bank_a"]["sent_bytes"] > 100_000

    # networked scoring with the saved parts
    scores = tmp_path / "scores.csv"

    def predict(cfg):
        return run_predict(cfg, cfg.data.path, out=scores)

    configs = {k: v for k, v in job.configs.items() if k != "arbiter"}
    results, errors = run_parties(configs, predict)
    assert not errors, errors
    assert results["bank_a"]["rows_scored"] == results["bank_b"]["rows_scored"] == 1125
    import pandas as pd

    s = pd.read_csv(scores)
    s = s[s["matched"]]
    trained = dict(zip(local.aligned_guest.ids, local.proba, strict=True))
    # (the networked and in-memory weights agree to each share's rounding, protocol shared)
    assert max(abs(trained[i] - p) for i, p in zip(s["id"], s["probability"], strict=True)) < 1e-8


def test_vfl_run_with_bad_config_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[job]\nid = "x"\n[party]\nname = "a"\nrole = "guest"\n')
    proc = subprocess.run([sys.executable, "-m", "vfl.cli", "run", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "bad.toml: [tls]: missing section" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_vfl_run_interactive_mode_all_roles(tmp_path):
    """`vfl run --config X.toml` as a person types it in three terminals (progress bars on)."""
    job = write_demo_job(tmp_path / "job", rows=600, key_bits=512, insecure=True, epochs=2,
                         batch_size=128)
    procs = {name: subprocess.Popen([sys.executable, "-m", "vfl.cli", "run", "--config",
                                     str(cfg)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, cfg in job.configs.items()}
    outs = {name: p.communicate(timeout=180) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, (name, outs[name][1][-2000:])
    assert "joint federated model" in outs["bank_a"][0]
    assert (job.outputs["bank_a"] / "report" / "index.html").is_file()
    assert (job.outputs["bank_a"] / "bank_a_points.csv").is_file()
    assert (job.outputs["bank_b"] / "bank_b_points.csv").is_file()
    assert "bank_b: done" in outs["bank_b"][0] and "arbiter: done" in outs["arbiter"][0]
