"""Train on default_credit as three processes over gRPC + mutual TLS; report traffic per epoch.

    python -m benchmarks.networked_default_credit [--data ../shared/data] [--epochs 2]
        [--key-bits 2048] [--workdir /tmp/vfl-dc]

Prints each party's bytes sent per training epoch (messages of the training
protocol only, from the per-message-type counters), plus PSI and scoring bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from vfl.demo import run_demo_processes
from vfl.outputs import run_file

from ._jobs import PARTIES, write_job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--workdir", default="/tmp/vfl-default-credit")
    args = ap.parse_args()
    wd = Path(args.workdir).resolve()
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    data = {"bank_a": Path(args.data) / "default_credit_hetero_guest.csv",
            "bank_b": Path(args.data) / "default_credit_hetero_host.csv"}
    # public benchmark data: the guest scores the training rows (AUC, scoring traffic) and
    # the host allows it; both are off by default
    job = write_job(wd, data, prefix="dc", timeout=1800, allow_training_scores=True,
                    train={"epochs": args.epochs, "tol": 0.0, "key_bits": args.key_bits,
                           "score_training_rows": True})
    outputs = job.outputs
    procs, wall = run_demo_processes(job)
    for name, p in procs.items():
        if p.proc.returncode != 0:
            raise SystemExit(f"{name} failed: {p.last_error()}")
    report = json.loads((outputs["bank_a"] / "report.json").read_text())
    print(f"wall {wall:.1f} s; training {report['train_seconds']:.1f} s for {report['epochs_run']} "
          f"epochs; AUC {report['auc']:.4f}")
    epochs = report["epochs_run"]
    print("party    per-epoch training MB   PSI MB   scoring MB   total MB")
    for name in PARTIES:
        summary = json.loads((outputs[name] / "report.json" if name == "bank_a"
                              else run_file(outputs[name], name)).read_text())
        t = summary["traffic"][name] if name == "bank_a" else summary["traffic"]
        by = t["sent_by_message_type"]
        psi = sum(v for k, v in by.items() if k.startswith("psi."))
        score = sum(v for k, v in by.items() if k.startswith(("lr.ScoreRequest/", "lr.PartialScores/")))
        setup = sum(v for k, v in by.items() if k in ("lr.HostHello/1", "lr.TrainSetup/2",
                                                      "lr.PublicKey/1"))
        train = t["sent_bytes"] - psi - score - setup
        mem = summary.get("peak_memory_mb", {})
        print(f"{name:8s} {train / epochs / 1e6:20.2f} {psi / 1e6:8.2f} {score / 1e6:12.2f} "
              f"{t['sent_bytes'] / 1e6:10.2f}   peak memory of the process: "
              f"{mem.get('process', 0):.0f} MB")


if __name__ == "__main__":
    main()
