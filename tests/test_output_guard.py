"""No silent overwrite: an earlier run's outputs are refused unless --force (issue 10, item 5)."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from vfl.cli import main
from vfl.config import load_party_config
from vfl.demo import write_demo_job
from vfl.exceptions import ConfigError, OutputExistsError
from vfl.outputs import existing_outputs, prepare_output_dir, prepare_output_file
from vfl.runner import run_fit
from vfl.synthetic import make_two_banks

FAST = ["--key-bits", "512", "--insecure-key-size", "--epochs", "1", "--batch-size", "256",
        "--quiet", "--no-report"]


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    d = tmp_path_factory.mktemp("banks")
    g, h = make_two_banks(800, 0.8, seed=11)
    g.to_csv(d / "a.csv", index=False)
    h.to_csv(d / "b.csv", index=False)
    return d / "a.csv", d / "b.csv"


def _fit(banks, out, *extra, host=None):
    args = ["fit", "--guest", str(banks[0]), "--host", str(host or banks[1]), "--id",
            "customer_id", "--label", "default", "--out", str(out), *FAST, *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_fit_refuses_a_folder_with_a_model_before_any_work(banks, tmp_path):
    out = tmp_path / "model"
    assert _fit(banks, out).exit_code == 0
    model_id = json.loads((out / "report.json").read_text())["model_id"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # a missing host file would fail at load: the folder is refused first
    r = _fit(banks, out, host=tmp_path / "missing.csv")
    assert r.exit_code == 2
    assert f"already holds the outputs of model {model_id}" in r.output
    assert "--force" in r.output and "Traceback" not in r.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_force_removes_every_stale_file(banks, tmp_path):
    out = tmp_path / "model"
    assert _fit(banks, out).exit_code == 0
    # what an older two-host model with an HTML report left behind
    (out / "report").mkdir()
    (out / "report" / "index.html").write_text("<p>model 0ld</p>")
    (out / "host2.json").write_text(json.dumps({"model_id": "0ld", "coef": [1.0]}))
    (out / "host2_points.csv").write_text("feature,points\n")
    (out / "notes.txt").write_text("the user's own file")
    old_id = json.loads((out / "report.json").read_text())["model_id"]
    assert _fit(banks, out, "--force").exit_code == 0
    names = {p.name for p in out.iterdir()}
    assert not {"report", "host2.json", "host2_points.csv"} & names
    assert "notes.txt" in names  # not one of ours: left alone
    assert json.loads((out / "report.json").read_text())["model_id"] != old_id


def test_unwritable_output_is_refused_before_any_work(banks, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    t0 = time.perf_counter()
    r = _fit(banks, blocker / "model")
    assert r.exit_code == 2 and "Cannot write to the output folder" in r.output
    r = _fit(banks, blocker)
    assert r.exit_code == 2 and "is a file" in r.output
    assert time.perf_counter() - t0 < 10  # no PSI or training ran


def test_predict_iv_psi_refuse_existing_outputs(banks, tmp_path):
    model = tmp_path / "model"
    assert _fit(banks, model).exit_code == 0
    scores = tmp_path / "scores.csv"
    scores.write_text("earlier scores\n")
    args = ["predict", "--model", str(model), "--guest", str(banks[0]), "--host", str(banks[1]),
            "--id", "customer_id", "--out", str(scores)]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 2 and "already exists" in r.output
    assert scores.read_text() == "earlier scores\n"
    r = CliRunner().invoke(main, [*args, "--force"], catch_exceptions=False)
    assert r.exit_code == 0 and scores.read_text().startswith("id,probability")
    aligned = tmp_path / "aligned"
    psi = ["psi", "--guest", str(banks[0]), "--host", str(banks[1]), "--id", "customer_id",
           "--out", str(aligned)]
    assert CliRunner().invoke(main, psi, catch_exceptions=False).exit_code == 0
    r = CliRunner().invoke(main, psi, catch_exceptions=False)
    assert r.exit_code == 2 and "guest.csv already exists" in r.output


def test_networked_party_refuses_an_earlier_model_before_any_training(tmp_path):
    job = write_demo_job(tmp_path / "job", rows=300, key_bits=512, insecure=True, epochs=1)
    cfg = load_party_config(job.configs["bank_b"])
    cfg.output.mkdir(parents=True, exist_ok=True)
    (cfg.output / "bank_b.json").write_text(json.dumps({"model_id": "m1", "coef": [0.5]}))
    t0 = time.perf_counter()
    with pytest.raises(OutputExistsError, match="model m1"):
        run_fit(cfg)  # no peer is running: it must not wait for the job's timeouts
    # it opens its endpoint first (so the peers hear why it stopped) and gives the absent
    # peers at most 5 s to take the abort; the job's connect timeout is 60 s
    assert time.perf_counter() - t0 < 20


def test_prepare_output_helpers(tmp_path):
    assert prepare_output_dir(tmp_path / "new" / "dir").is_dir()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "data.json").write_text('{"not": "a model part"}')
    assert existing_outputs(tmp_path / "d") == []
    prepare_output_dir(tmp_path / "d")  # the user's files are not outputs
    f = tmp_path / "f.csv"
    f.write_text("x")
    with pytest.raises(OutputExistsError):
        prepare_output_file(f)
    assert prepare_output_file(f, force=True) == f
    with pytest.raises(ConfigError, match="is a folder"):
        prepare_output_file(tmp_path / "d")


@pytest.mark.parametrize("summary", ["arbiter_run.json", "report.json"])
def test_resume_replaces_only_what_the_same_job_wrote(tmp_path, summary):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("not an output")

    def earlier(job):
        (out / summary).write_text(json.dumps({"party": "arbiter", "job": job}))

    earlier("credit-2026-11")
    # the same job: accepted, and left until the resumed run overwrites it at its end (a
    # resume refused later, e.g. for changed data, loses nothing)
    prepare_output_dir(out, resume_job="credit-2026-11")
    assert (out / summary).exists() and (out / "keep.txt").exists()
    (out / "arbiter_b_run.json").write_text(json.dumps({"job": "credit-2026-10"}))
    with pytest.raises(OutputExistsError):  # a second summary of another job: refused
        prepare_output_dir(out, resume_job="credit-2026-11")
    (out / "arbiter_b_run.json").unlink()
    for other in ("credit-2026-10", 7, None):  # another job, a forged or a missing job id
        earlier(other)
        with pytest.raises(OutputExistsError, match="--force"):
            prepare_output_dir(out, resume_job="credit-2026-11")
        assert (out / summary).exists()
    with pytest.raises(OutputExistsError):  # without --resume: refused as before
        prepare_output_dir(out)
