"""The HTML report: every chart is embedded, is a real PNG and is not blank."""

from __future__ import annotations

import base64
import io
import json
import re

import matplotlib.image as mpimg
import numpy as np
from click.testing import CliRunner

from vfl.cli import main

from .conftest import shared_csv

FAST = ["--key-bits", "512", "--insecure-key-size"]


def _png_ok(data: bytes) -> bool:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(io.BytesIO(data), format="png")
    return img.shape[0] > 100 and img.shape[1] > 100 and float(np.std(img[..., :3])) > 0.02


def test_fit_writes_report_and_report_command_adds_iv_and_stability(tmp_path):
    guest, host = shared_csv("breast_hetero_guest.csv"), shared_csv("breast_hetero_host.csv")
    model = tmp_path / "model"
    runner = CliRunner()
    r = runner.invoke(main, ["fit", "--guest", str(guest), "--host", str(host), "--id", "id",
                             "--label", "y", "--out", str(model), "--epochs", "3",
                             "--batch-size", "128", "--quiet", *FAST], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    index = model / "report" / "index.html"
    assert index.is_file()
    # vfl fit wrote the default IV table (10 bins); vfl iv writes another one on request
    assert (model / "iv.json").is_file()
    r = runner.invoke(main, ["iv", "--guest", str(guest), "--host", str(host), "--id", "id",
                             "--label", "y", "--out", str(model / "iv.json"), *FAST])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(main, ["iv", "--guest", str(guest), "--host", str(host), "--id", "id",
                             "--label", "y", "--out", str(model / "iv.json"), "--monotonic",
                             "--force", *FAST])
    assert r.exit_code == 0, r.output
    scores = tmp_path / "scores.csv"
    r = runner.invoke(main, ["predict", "--model", str(model), "--guest", str(guest), "--host",
                             str(host), "--id", "id", "--out", str(scores), "--score"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "report"
    r = runner.invoke(main, ["report", "--model", str(model), "--scores", str(scores),
                             "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = (out / "index.html").read_text()
    imgs = re.findall(r'<img alt="([a-z_]+)" src="data:image/png;base64,([^"]+)"', page)
    names = {n for n, _ in imgs}
    assert names == {"roc", "ks", "score_distribution", "loss", "lift_gain", "calibration",
                     "coefficients", "iv", "reliability"}
    for name, b64 in imgs:
        data = base64.b64decode(b64)
        assert _png_ok(data), name
        assert (out / f"{name}.png").read_bytes() == data
    assert "stability index" in page and "Information value" in page
    # report numbers equal the metrics of the training scores
    report = json.loads((model / "report.json").read_text())
    assert f"{report['auc']:.4f}" in page
    assert "<script" not in page  # a static page: nothing to execute


def test_report_of_a_job_without_training_row_scores_shows_validation_and_calibration(tmp_path):
    """A networked guest has no training-row scores: the report is built from the arbiter's
    validation figures (headline, calibration before/after, bands) and the yardsticks."""
    guest, host = shared_csv("breast_hetero_guest.csv"), shared_csv("breast_hetero_host.csv")
    model = tmp_path / "model"
    r = CliRunner().invoke(main, ["fit", "--guest", str(guest), "--host", str(host), "--id", "id",
                                  "--label", "y", "--out", str(model), "--epochs", "3",
                                  "--batch-size", "128", "--quiet", "--no-report", *FAST],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (model / "train_scores.csv").unlink()  # as on a guest whose hosts allow no such scoring
    out = tmp_path / "report"
    r = CliRunner().invoke(main, ["report", "--model", str(model), "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = (out / "index.html").read_text()
    report = json.loads((model / "report.json").read_text())
    v = report["validation"]
    cal = v["calibration"]
    # validation first, then nothing in-sample (there are no training scores)
    assert page.index("validation AUC") < page.index("Joint model against the yardsticks")
    assert "in-sample" not in page
    assert f"{v['auc']:.4f}" in page and f"{report['baseline']['guest_only_auc']:.4f}" in page
    assert "Calibration (validation rows, out of sample)" in page
    for name in ("brier", "calibration_slope"):
        assert f"{cal['before'][name]:.4f}" in page and f"{cal['after'][name]:.4f}" in page
    # the band table: every validation row once, the defaults add up
    assert sum(b["rows"] for b in cal["bands"]) == v["rows"]
    assert "Bad rate and count by score band" in page
    imgs = dict(re.findall(r'<img alt="([a-z_]+)" src="data:image/png;base64,([^"]+)"', page))
    assert set(imgs) == {"loss", "reliability", "coefficients", "iv"}
    assert all(_png_ok(base64.b64decode(b)) for b in imgs.values())
