"""examples/two_banks: the committed configs are valid and run end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

from vfl.certs import write_party_certs
from vfl.config import load_party_config
from vfl.demo import free_ports
from vfl.runner import run_fit

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "two_banks"


def test_two_banks_example_runs(tmp_path):
    work = tmp_path / "two_banks"
    shutil.copytree(EXAMPLE, work)
    subprocess.run([sys.executable, str(work / "make_data.py"), "--rows", "1200"], check=True)
    write_party_certs(work / "certs", ["bank_a", "bank_b", "arbiter"])
    # the example's fixed ports may be taken on a test machine: move them, and use small keys
    ports = dict(zip(["50051", "50052", "50053"], map(str, free_ports(3)), strict=True))
    for name in ("bank_a", "bank_b", "arbiter"):
        p = work / f"{name}.toml"
        text = p.read_text()
        for old, new in ports.items():
            text = text.replace(old, new)
        text = text.replace("key_bits = 2048", "key_bits = 512")
        if "\n[security]\n" in text:
            text = text.replace("\n[security]\n", "\n[security]\nallow_insecure_key_size = true\n", 1)
        else:
            text = text.replace("[job]", "[security]\nallow_insecure_key_size = true\n\n[job]", 1)
        p.write_text(text)
    configs = [load_party_config(work / f"{n}.toml") for n in ("bank_a", "bank_b", "arbiter")]
    errors, results = [], {}

    def go(cfg):
        try:
            results[cfg.name] = run_fit(cfg)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(c,)) for c in configs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert results["bank_a"]["n_intersection"] == 900
    assert results["bank_a"]["auc"] > results["bank_a"]["baseline"]["guest_only_auc"]
    assert (work / "out" / "bank_b" / "bank_b.json").is_file()
