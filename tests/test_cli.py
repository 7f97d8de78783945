"""The vfl command line: the demo, fit/predict/psi, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from vfl.cli import main

from .conftest import shared_csv

FAST = ["--key-bits", "512", "--insecure-key-size"]


def _run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result


def test_demo_in_process(tmp_path):
    out = tmp_path / "demo"
    # 6 epochs: on 900 training rows an epoch is one batch, and the default momentum needs
    # a few more steps than Adam did to pass the guest-only model (patience cannot stop a
    # run before epoch 4 + 5 in the accurate mode)
    r = _run(["demo", "--rows", "1500", "--workdir", str(out), "--epochs", "6", "--quiet",
              "--in-process", *FAST])
    assert r.exit_code == 0, r.output
    model = out / "out" / "in-process"
    report = json.loads((model / "report.json").read_text())
    assert report["n_intersection"] == round(1500 * 0.75)
    assert report["epochs_run"] == 6
    assert report["auc"] > report["baseline"]["guest_only_auc"]
    assert "joint federated model" in r.output
    # one naming scheme (vfl.outputs): <party>.json, <party>_points.csv, <party>_run.json
    assert {p.name for p in model.iterdir()} == {"guest.json", "host1.json", "report.json",
                                                 "train_scores.csv", "guest_points.csv",
                                                 "host1_points.csv", "guest_points.json",
                                                 "host1_points.json", "host1_run.json",
                                                 "arbiter_run.json", "report", "iv.json"}
    assert report["model_part"] == "guest.json"
    assert (model / "report" / "index.html").is_file()
    demo = json.loads((out / "demo.json").read_text())
    assert demo["auc"] == report["auc"] and demo["in_process"] is True
    host_points = pd.read_csv(model / "host1_points.csv")
    guest_points = pd.read_csv(model / "guest_points.csv")
    assert set(host_points["feature"]) == set(json.loads((model / "host1.json").read_text())[
        "features"])
    assert set(guest_points["feature"]).isdisjoint(host_points["feature"])


def test_demo_three_processes(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "vfl.cli", "demo", "--rows", "1500",
                           "--workdir", str(out), "--epochs", "3", "--quiet", *FAST,
                           "--serve", "--serve-for", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "every party exited 0" in proc.stdout
    # --serve: both banks' vfl serve came up, scored three applicants over HTTP (the last
    # one unknown to bank B), showed the curl line, and stopped
    served = [ln for ln in proc.stdout.splitlines() if ": probability " in ln]
    assert len(served) == 3, proc.stdout
    assert "bank B does not know this customer" in served[2]
    assert "curl -s http://127.0.0.1:" in proc.stdout
    # the API needs the demo client's key (issue 25); the clients file keeps only its hash
    key = (out / "api_key.txt").read_text().strip()
    assert f"Authorization: Bearer $(cat {out / 'api_key.txt'})" in proc.stdout
    assert key.startswith("vfl_") and key not in (out / "api_clients.toml").read_text()
    report = json.loads((out / "out" / "bank_a" / "report.json").read_text())
    assert report["n_intersection"] == round(1500 * 0.75) and report["epochs_run"] == 3
    assert (out / "out" / "bank_b" / "bank_b.json").is_file()
    assert (out / "certs" / "ca.pem").is_file() and (out / "bank_a.toml").is_file()
    report_dir = out / "out" / "bank_a" / "report"
    assert (report_dir / "index.html").is_file() and (report_dir / "roc.png").is_file()
    # predict reads what the networked parties wrote: the guest's folder or the one above
    for i, model in enumerate([out / "out" / "bank_a", out / "out"]):
        scores = out / f"scores{i}.csv"
        r = _run(["predict", "--model", str(model), "--guest", str(out / "data" / "bank_a.csv"),
                  "--host", str(out / "data" / "bank_b.csv"), "--id", "customer_id",
                  "--out", str(scores), "--quiet"])
        assert r.exit_code == 0, r.output
        s = pd.read_csv(scores)
        assert s["matched"].sum() == report["n_intersection"]


def test_fit_predict_psi_on_breast(tmp_path):
    guest, host = shared_csv("breast_hetero_guest.csv"), shared_csv("breast_hetero_host.csv")
    # drop some rows on each side so the intersection is partial
    g = pd.read_csv(guest).iloc[:500]
    h = pd.read_csv(host).iloc[100:]
    g.to_csv(tmp_path / "g.csv", index=False)
    h.to_csv(tmp_path / "h.csv", index=False)
    model = tmp_path / "model"
    r = _run(["fit", "--guest", str(tmp_path / "g.csv"), "--host", str(tmp_path / "h.csv"),
              "--id", "id", "--label", "y", "--out", str(model), "--epochs", "4",
              "--batch-size", "128", "--quiet", *FAST])
    assert r.exit_code == 0, r.output
    report = json.loads((model / "report.json").read_text())
    for key in ("n_guest", "n_hosts", "n_intersection", "epochs_run", "auc", "ks",
                "train_seconds", "loss_history"):
        assert key in report
    assert report["n_intersection"] == 400
    assert report["auc"] > 0.95

    scores = tmp_path / "scores.csv"
    r = _run(["predict", "--model", str(model), "--guest", str(tmp_path / "g.csv"),
              "--host", str(tmp_path / "h.csv"), "--id", "id",  # label column is ignored
              "--out", str(scores)])
    assert r.exit_code == 0, r.output
    s = pd.read_csv(scores, dtype={"id": str})
    # every guest row, in the guest file's order; only the 400 shared ones have a joint score
    assert list(s.columns) == ["id", "probability", "matched"]
    assert list(s["id"]) == list(g["id"].astype(str))
    shared = set(g["id"].astype(str)) & set(h["id"].astype(str))
    assert set(s.loc[s["matched"], "id"]) == shared and len(shared) == 400
    assert s.loc[s["matched"], "probability"].between(0, 1).all()
    assert s.loc[~s["matched"], "probability"].isna().all()
    assert "400 of 500 customers scored" in r.output and "100 are not at every bank" in r.output

    r = _run(["psi", "--guest", str(tmp_path / "g.csv"), "--host", str(tmp_path / "h.csv"),
              "--id", "id", "--label", "y", "--out", str(tmp_path / "psi")])
    assert r.exit_code == 0, r.output
    ga = pd.read_csv(tmp_path / "psi" / "guest.csv")
    ha = pd.read_csv(tmp_path / "psi" / "host1.csv")
    assert ga["id"].tolist() == ha["id"].tolist() and len(ga) == 400
    assert "y" in ga.columns and "y" not in ha.columns
    assert list(ha.columns[1:]) == list(h.columns[1:])


def _bad_inputs(tmp_path):
    ok_g = pd.DataFrame({"id": [f"c{i}" for i in range(300)], "y": [i % 2 for i in range(300)],
                         "a": range(300)})
    ok_h = pd.DataFrame({"id": [f"c{i}" for i in range(300)], "b": range(300)})
    cases = {
        "missing file": (ok_g, None, {"host": "/nonexistent/h.csv"}, "File not found"),
        "missing id": (ok_g.rename(columns={"id": "key"}), ok_h, {}, "ID column 'id' not found"),
        "missing label": (ok_g.drop(columns="y"), ok_h, {}, "label column 'y' not found"),
        "non-numeric": (ok_g.assign(a=["x"] * 300), ok_h, {}, "not numeric"),
        "label not binary": (ok_g.assign(y=[i % 3 for i in range(300)]), ok_h, {}, "0 or 1"),
        "duplicate ids": (ok_g, pd.concat([ok_h, ok_h.iloc[:2]]), {}, "duplicate IDs"),
        "empty intersection": (ok_g, ok_h.assign(id=[f"z{i}" for i in range(300)]), {},
                               "intersection is empty"),
        "key too small": (ok_g, ok_h, {"key_bits": "1024"}, "below the secure minimum"),
    }
    return cases


@pytest.mark.parametrize("case", list(_bad_inputs(None)))
def test_bad_input_gives_one_line_error(tmp_path, case):
    g, h, extra, message = _bad_inputs(tmp_path)[case]
    g.to_csv(tmp_path / "g.csv", index=False)
    host = extra.get("host")
    if host is None:
        h.to_csv(tmp_path / "h.csv", index=False)
        host = str(tmp_path / "h.csv")
    args = [sys.executable, "-m", "vfl.cli", "fit", "--guest", str(tmp_path / "g.csv"),
            "--host", host, "--id", "id", "--label", "y", "--out", str(tmp_path / "m"),
            "--quiet", "--batch-size", "0", "--epochs", "1",
            "--key-bits", extra.get("key_bits", "512")]
    if "key_bits" not in extra:
        args.append("--insecure-key-size")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3
    assert not (tmp_path / "m" / "guest.json").exists()


def test_iv_command_on_breast(tmp_path):
    guest, host = shared_csv("breast_hetero_guest.csv"), shared_csv("breast_hetero_host.csv")
    out = tmp_path / "iv.json"
    r = _run(["iv", "--guest", str(guest), "--host", str(host), "--id", "id", "--label", "y",
              "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    table = json.loads(out.read_text())
    assert len(table) == 10 + 20
    assert all(row["feature"].startswith("host1_f") for row in table if row["party"] == "host1")
    assert [row["iv"] for row in table] == sorted((row["iv"] for row in table), reverse=True)


def test_fit_with_iv_selection(tmp_path):
    guest, host = shared_csv("breast_hetero_guest.csv"), shared_csv("breast_hetero_host.csv")
    iv_file = tmp_path / "iv.json"
    assert _run(["iv", "--guest", str(guest), "--host", str(host), "--id", "id", "--label", "y",
                 "--out", str(iv_file), *FAST]).exit_code == 0
    table = json.loads(iv_file.read_text())
    top = sorted(table, key=lambda r: -r["iv"])[:6]
    model = tmp_path / "m"
    r = _run(["fit", "--guest", str(guest), "--host", str(host), "--id", "id", "--label", "y",
              "--out", str(model), "--iv", str(iv_file), "--top-k", "6", "--epochs", "2",
              "--batch-size", "64", "--quiet", "--no-report", *FAST])
    assert r.exit_code == 0, r.output
    g = json.loads((model / "guest.json").read_text())
    h = json.loads((model / "host1.json").read_text())
    assert sorted(g["features"]) == sorted(t["feature"] for t in top if t["party"] == "guest")
    assert len(h["features"]) == sum(t["party"] == "host1" for t in top)
    assert len(g["features"]) + len(h["features"]) == 6


# ------------------------------------------------------------------ Parquet tables
def _two_banks(tmp_path, rows=600):
    """The synthetic banks as CSV and as Parquet files: {fmt: (guest, host)}."""
    from vfl.synthetic import make_two_banks
    from vfl.tableio import write_frame

    g, h = make_two_banks(rows, 0.8, seed=5)
    return {fmt: (write_frame(g, tmp_path / f"bank_a.{fmt}"),
                  write_frame(h, tmp_path / f"bank_b.{fmt}")) for fmt in ("csv", "parquet")}


@pytest.mark.parametrize("command", ["fit", "predict", "psi", "iv"])
def test_help_says_tables_can_be_parquet(command):
    r = _run([command, "--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    from vfl.tableio import SUFFIXES

    assert "Parquet" in text and all(suffix in text for suffix in SUFFIXES)
    if command == "psi":
        assert "--format [csv|parquet]" in text
    if command == "predict":
        assert "Scores file (guest), written in the format of its name" in text


def test_fit_files_same_model_from_csv_and_parquet(tmp_path):
    """Same data, same start: the same weights to the bit, whichever the file format."""
    import numpy as np

    from vfl.jobs import JobOptions
    from vfl.lr.config import TrainConfig
    from vfl.pipeline import fit_files

    files = _two_banks(tmp_path)
    config = TrainConfig(key_bits=512, allow_insecure_key_size=True, epochs=2, batch_size=128,
                         validation_fraction=0.0, tol=0.0)
    weights = {}
    for fmt, (guest, host) in files.items():
        res = fit_files(guest, [host], id_column="customer_id", label="default",
                        out_dir=tmp_path / f"model_{fmt}", config=config,
                        options=JobOptions(iv_bins=0), html_report=False,
                        coef_init=np.linspace(-0.4, 0.6, 7), intercept_init=0.1)
        weights[fmt] = np.concatenate([res.guest.coef_, [res.guest.intercept_],
                                       res.hosts[0].coef_])
        assert res.report["n_intersection"] == res.aligned_guest.n_rows > 400
    # the same model (to the rounding of each weight share, ~2^-32 a step: protocol shared)
    np.testing.assert_allclose(weights["csv"], weights["parquet"], atol=1e-8, rtol=0)
    parts = {fmt: json.loads((tmp_path / f"model_{fmt}" / "guest.json").read_text())
             for fmt in files}
    np.testing.assert_allclose(parts["csv"]["coef"], parts["parquet"]["coef"], atol=1e-8)


def test_fit_and_predict_on_parquet_tables(tmp_path):
    files = _two_banks(tmp_path)
    g_pq, h_pq = files["parquet"]
    model = tmp_path / "model"
    r = _run(["fit", "--guest", str(g_pq), "--host", str(h_pq), "--id", "customer_id",
              "--label", "default", "--out", str(model), "--epochs", "2", "--batch-size", "0",
              "--iv-bins", "0", "--quiet", "--no-report", *FAST])
    assert r.exit_code == 0, r.output
    report = json.loads((model / "report.json").read_text())
    # scores of the same customers, read from CSV into CSV and from Parquet into Parquet
    out = {}
    for fmt, (guest, host) in files.items():
        out[fmt] = tmp_path / f"scores.{fmt}"
        r = _run(["predict", "--model", str(model), "--guest", str(guest), "--host", str(host),
                  "--id", "customer_id", "--out", str(out[fmt]), "--quiet"])
        assert r.exit_code == 0, r.output
        assert f"written to {out[fmt]}" in " ".join(r.output.split())
    from vfl.tableio import read_frame

    s_csv = pd.read_csv(out["csv"], dtype={"id": str})
    s_pq = read_frame(out["parquet"])
    assert out["parquet"].read_bytes()[:4] == b"PAR1"
    assert list(s_pq.columns) == list(s_csv.columns) == ["id", "probability", "matched"]
    assert s_pq["id"].tolist() == s_csv["id"].tolist()
    assert s_pq["matched"].tolist() == s_csv["matched"].tolist()
    assert int(s_pq["matched"].sum()) == report["n_intersection"]
    m = s_csv["matched"].to_numpy()
    assert s_pq["probability"].isna().tolist() == (~m).tolist()  # empty: not at every bank
    # the CSV holds the probability as text; both are the same model's numbers
    assert (abs(s_pq.loc[m, "probability"] - s_csv.loc[m, "probability"]) < 1e-15).all()


def test_psi_parquet_matches_csv(tmp_path):
    files = _two_banks(tmp_path, rows=400)
    outputs = {}
    for in_fmt, (guest, host) in files.items():
        for out_fmt in ("csv", "parquet"):
            out = tmp_path / f"psi_{in_fmt}_{out_fmt}"
            r = _run(["psi", "--guest", str(guest), "--host", str(host), "--id", "customer_id",
                      "--label", "default", "--out", str(out), "--format", out_fmt])
            assert r.exit_code == 0, r.output
            assert sorted(p.name for p in out.iterdir()) == [f"guest.{out_fmt}",
                                                             f"host1.{out_fmt}"]
            outputs[in_fmt, out_fmt] = out
    from vfl.tableio import read_frame

    def frames(out, fmt):
        return [read_frame(out / f"{n}.{fmt}", id_column="customer_id")
                for n in ("guest", "host1")]

    base = frames(outputs["csv", "csv"], "csv")
    assert base[0]["customer_id"].tolist() == base[1]["customer_id"].tolist()
    assert "default" in base[0].columns and "default" not in base[1].columns
    for (_, out_fmt), out in outputs.items():
        for got, want in zip(frames(out, out_fmt), base, strict=True):
            assert list(got.columns) == list(want.columns)
            assert got["customer_id"].tolist() == want["customer_id"].tolist()
            pd.testing.assert_frame_equal(got.drop(columns="customer_id"),
                                          want.drop(columns="customer_id"), check_dtype=False)
    # no silent overwrite in either format
    r = _run(["psi", "--guest", str(files["parquet"][0]), "--host", str(files["parquet"][1]),
              "--id", "customer_id", "--out", str(outputs["csv", "parquet"]),
              "--format", "parquet"])
    assert r.exit_code == 2 and "guest.parquet already exists" in r.output


@pytest.mark.parametrize("case", ["bad out suffix", "bad input suffix", "corrupt parquet"])
def test_table_format_errors_are_one_line(tmp_path, case):
    files = _two_banks(tmp_path, rows=300)
    guest, host = files["parquet"]
    out = tmp_path / "scores.parquet"
    if case == "bad out suffix":
        out, message = tmp_path / "scores.xlsx", "scores.xlsx: unknown table format"
    elif case == "bad input suffix":
        host = host.rename(tmp_path / "bank_b.dat")
        message = "bank_b.dat: unknown table format"
    else:
        host.write_bytes(b"PAR1 truncated")
        message = "as Parquet"
    proc = subprocess.run([sys.executable, "-m", "vfl.cli", "predict", "--model", str(tmp_path),
                           "--guest", str(guest), "--host", str(host), "--id", "customer_id",
                           "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_fit_on_breast_parquet(tmp_path):
    """FATE's breast data converted to Parquet trains as its CSV does (shared data)."""
    from vfl.tableio import write_frame

    guest, host = shared_csv("breast_hetero_guest.csv"), shared_csv("breast_hetero_host.csv")
    g = write_frame(pd.read_csv(guest), tmp_path / "g.parquet")
    h = write_frame(pd.read_csv(host).iloc[100:], tmp_path / "h.parquet")
    r = _run(["fit", "--guest", str(g), "--host", str(h), "--id", "id", "--label", "y",
              "--out", str(tmp_path / "m"), "--epochs", "2", "--batch-size", "0",
              "--iv-bins", "0", "--quiet", "--no-report", *FAST])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["n_intersection"] == len(pd.read_csv(host)) - 100


@pytest.mark.parametrize("mode", ["lines", "json"])
def test_fit_logs_progress_lines_when_stderr_is_not_a_terminal(tmp_path, mode):
    """Issue 25: a log file gets timestamped progress (a bar would print nothing there)."""
    g, h = _two_banks(tmp_path, rows=400)["csv"]
    env = {k: v for k, v in os.environ.items() if k != "VFL_PROGRESS"}
    if mode == "json":
        env["VFL_PROGRESS"] = "json"
    with open(tmp_path / "fit.log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "vfl.cli", "fit", "--guest", str(g),
                               "--host", str(h), "--id", "customer_id", "--label", "default",
                               "--out", str(tmp_path / "m"), "--epochs", "2", *FAST],
                              stdout=subprocess.PIPE, stderr=log, text=True, timeout=300, env=env)
    assert proc.returncode == 0
    lines = (tmp_path / "fit.log").read_text().splitlines()
    if mode == "json":
        events = [json.loads(x) for x in lines if x.startswith("{")]
        assert [e["stage"] for e in events if e["stage"] in ("psi_done", "epoch")] == [
            "psi_done", "epoch", "epoch"]
        assert all(e["time"].endswith("+00:00") for e in events)
        return
    stamped = [x for x in lines if re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 vfl: ", x)]
    text = "\n".join(stamped)
    assert "private set intersection: " in text and "epoch 1/2 done, loss " in text
    assert "epoch 2/2 done" in text
