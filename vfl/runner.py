"""Run one party of a job over gRPC with mutual TLS (``vfl run`` / networked ``vfl predict``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from vfl.config import PartyConfig
from vfl.data import PartyTable, load_table
from vfl.exceptions import ConfigError, VFLError
from vfl.jobs import (
    arbiter_fit_job,
    guest_fit_job,
    guest_predict_job,
    host_fit_job,
    host_predict_job,
    points_table,
)
from vfl.metrics import evaluate
from vfl.model import atomic_write_text, load_model_part, save_model_part
from vfl.pipeline import guest_report, write_train_scores
from vfl.preprocess import Standardizer
from vfl.progress import ProgressHook
from vfl.roles import Role
from vfl.transport.base import abort_code
from vfl.transport.grpc import GrpcEndpoint, PeerAddress, TlsFiles

__all__ = ["open_endpoint", "run_fit", "run_predict", "part_path"]


def open_endpoint(cfg: PartyConfig, job_id: str | None = None) -> GrpcEndpoint:
    """This party's gRPC endpoint, serving on ``cfg.listen``."""
    peers = [PeerAddress(p.name, p.address, p.cert.read_bytes() if p.cert else None)
             for p in cfg.peers]
    return GrpcEndpoint(cfg.name, cfg.listen, peers, job_id or cfg.job_id,
                        TlsFiles(cfg.ca, cfg.cert, cfg.key),
                        connect_timeout=cfg.connect_timeout, default_timeout=cfg.timeout,
                        policy=cfg.policy)


def part_path(cfg: PartyConfig) -> Path:
    """Where this party's model part lives."""
    return cfg.output / f"{cfg.name}.json"


def _load_data(cfg: PartyConfig, path: str | Path | None = None,
               require_label: bool = True) -> PartyTable:
    assert cfg.data is not None
    d = cfg.data
    return load_table(path or d.path, id_column=d.id_column,
                      label_column=d.label_column, features=None if path else d.features,
                      lower_ids=d.lower_ids, strip_ids=d.strip_ids,
                      require_label=require_label and cfg.role == Role.GUEST)


def _peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest worker, in MB."""
    import resource

    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"process": self_kb / 1024, "largest_worker": child_kb / 1024}


def _traffic(ep: GrpcEndpoint) -> dict[str, Any]:
    return {"sent_bytes": ep.stats.total_sent, "received_bytes": ep.stats.total_received,
            "sent_by_peer": dict(ep.stats.sent_bytes),
            "sent_by_message_type": dict(ep.stats.sent_by_type)}


def _guarded(cfg: PartyConfig, job_id: str | None, work: Any) -> dict[str, Any]:
    ep = open_endpoint(cfg, job_id)
    try:
        result: dict[str, Any] = work(ep)
        result["traffic"] = _traffic(ep)
        result["peak_memory_mb"] = _peak_memory_mb()
        return result
    except (VFLError, OSError, ValueError) as exc:
        ep.abort(abort_code(exc))
        raise
    except BaseException as exc:
        ep.abort(abort_code(exc))
        raise
    finally:
        ep.close()


def run_fit(cfg: PartyConfig, progress: ProgressHook | None = None) -> dict[str, Any]:
    """Run this party's side of a training job; write its model part; return a summary."""
    if cfg.role == Role.ARBITER:
        def work(ep: GrpcEndpoint) -> dict[str, Any]:
            arb = arbiter_fit_job(ep, guest=cfg.guest, progress=progress, policy=cfg.policy)
            return {"party": cfg.name, "role": "arbiter", "epochs_run": arb.n_iter_,
                    "loss_history": arb.loss_history_}
        summary = _guarded(cfg, None, work)
        atomic_write_text(cfg.output / "run.json", json.dumps(summary, indent=2))
        return summary

    table = _load_data(cfg)
    assert cfg.data is not None
    valid = (_load_data(cfg, cfg.data.validation_path).select(table.feature_names)
             if cfg.data.validation_path else None)
    if cfg.role == Role.HOST:
        def work(ep: GrpcEndpoint) -> dict[str, Any]:
            out = host_fit_job(ep, table, guest=cfg.guest, arbiter=cfg.arbiter,
                               progress=progress, valid=valid, policy=cfg.policy)
            save_model_part(out.part(), part_path(cfg))
            atomic_write_text(cfg.output / f"{cfg.name}_points.csv",
                              points_table(out.estimator, out.aligned, out.woe).to_csv(index=False))
            return {"party": cfg.name, "role": "host", "n_rows": table.n_rows,
                    "n_intersection": out.aligned.n_rows, "epochs_run": out.estimator.n_iter_,
                    "model_part": str(part_path(cfg))}
        summary = _guarded(cfg, None, work)
        atomic_write_text(cfg.output / "run.json", json.dumps(summary, indent=2))
        return summary

    def guest_work(ep: GrpcEndpoint) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = guest_fit_job(ep, table, cfg.train, hosts=cfg.hosts, arbiter=cfg.arbiter,
                            progress=progress, valid=valid,
                            options=cfg.options, policy=cfg.policy)
        report = guest_report(out, n_guest=table.n_rows, hosts=cfg.hosts, config=cfg.train,
                              traffic={})
        # the guest-only yardstick uses the guest's own columns only
        Xg = Standardizer.fit(out.aligned.X).transform(out.aligned.X)
        assert out.aligned.y is not None
        clf = LogisticRegression(max_iter=2000).fit(Xg, out.aligned.y)
        m = evaluate(out.aligned.y, clf.predict_proba(Xg)[:, 1])
        report["baseline"] = {"guest_only_auc": m["auc"], "guest_only_ks": m["ks"]}
        report["wall_seconds"] = time.perf_counter() - t0
        save_model_part(out.part(), part_path(cfg))
        report["model_part"] = str(part_path(cfg))
        write_train_scores(cfg.output, out)
        atomic_write_text(cfg.output / f"{cfg.name}_points.csv",
                          points_table(out.estimator, out.aligned, out.woe).to_csv(index=False))
        if out.iv_table is not None:
            atomic_write_text(cfg.output / "iv.json", json.dumps(out.iv_table, indent=2))
        return report

    report = _guarded(cfg, None, guest_work)
    report["traffic"] = {cfg.name: report["traffic"]}
    atomic_write_text(cfg.output / "report.json", json.dumps(report, indent=2))
    from vfl.report import write_report

    if report.get("auc") is not None:
        report["html_report"] = str(write_report(cfg.output, cfg.output / "report"))
    return report


def run_predict(cfg: PartyConfig, data: str | Path, *, out: str | Path | None = None,
                job_id: str | None = None) -> dict[str, Any]:
    """Run this party's side of a scoring job with its saved model part."""
    if cfg.role == Role.ARBITER:
        raise ConfigError("The arbiter takes no part in scoring.")
    part = load_model_part(part_path(cfg))
    table = _load_data(cfg, data, require_label=False)
    job = job_id or f"{cfg.job_id}/predict"
    if cfg.role == Role.HOST:
        return _guarded(cfg, job, lambda ep: {"party": cfg.name, "rows_scored": host_predict_job(
            ep, table, part, guest=cfg.guest, policy=cfg.policy)})
    if out is None:
        raise ConfigError("The guest needs --out for the scores file.")

    def work(ep: GrpcEndpoint) -> dict[str, Any]:
        scores = guest_predict_job(ep, table, part, hosts=cfg.hosts, policy=cfg.policy)
        atomic_write_text(out, scores.to_csv(index=False))
        return {"party": cfg.name, "rows_scored": len(scores), "scores": str(out),
                "mean_probability": float(np.mean(scores["probability"])) if len(scores) else None}

    return _guarded(cfg, job, work)
