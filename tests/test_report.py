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
                     "coefficients", "iv"}
    for name, b64 in imgs:
        data = base64.b64decode(b64)
        assert _png_ok(data), name
        assert (out / f"{name}.png").read_bytes() == data
    assert "stability index" in page and "Information value" in page
    # report numbers equal the metrics of the training scores
    report = json.loads((model / "report.json").read_text())
    assert f"{report['auc']:.4f}" in page
    assert "<script" not in page  # a static page: nothing to execute
