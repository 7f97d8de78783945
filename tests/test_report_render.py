"""The report renders in headless Chromium: a screenshot of the page is not blank."""

from __future__ import annotations

import shutil
import subprocess

import matplotlib.image as mpimg
import numpy as np
import pytest

from vfl.data import load_table
from vfl.lr import TrainConfig
from vfl.pipeline import fit_local
from vfl.report import write_report
from vfl.synthetic import make_two_banks

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it "
                                             "with apt-get; on a laptop: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    g, h = make_two_banks(1200)
    res = fit_local(load_table(g, id_column="customer_id", label_column="default"),
                    [load_table(h, id_column="customer_id")],
                    TrainConfig(epochs=2, batch_size=128, key_bits=512,
                                allow_insecure_key_size=True),
                    out_dir=tmp_path / "model", baselines=False)
    assert res.report["auc"] > 0.6
    index = write_report(tmp_path / "model", tmp_path / "report")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
         f"--screenshot={shot}", index.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    img = mpimg.imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    rgb = img[..., :3]
    assert float(np.std(rgb)) > 0.05  # text and charts, not a blank page
    # the charts are drawn: a good share of pixels is neither white nor near-white
    assert float(np.mean(rgb.mean(axis=2) < 0.9)) > 0.05
