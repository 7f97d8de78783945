"""Run one party of a job over gRPC with mutual TLS (``vfl run`` / networked ``vfl predict``).

The runner opens this party's endpoint, runs its job function
(:mod:`vfl.jobs`, the same ones the one-machine pipeline runs in threads)
and writes its outputs through :mod:`vfl.outputs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from vfl import jobs, outputs
from vfl.baselines import guest_only_baseline
from vfl.certs import check_party_tls
from vfl.config import PartyConfig
from vfl.data import PartyTable, load_table
from vfl.exceptions import ConfigError
from vfl.model import atomic_write_text, load_model_part
from vfl.progress import ProgressHook
from vfl.roles import Role
from vfl.scorecard import Scorecard
from vfl.transport.base import abort_code
from vfl.transport.grpc import GrpcEndpoint, PeerAddress, TlsFiles

__all__ = ["open_endpoint", "run_fit", "run_predict", "part_path"]

T = TypeVar("T")


def open_endpoint(cfg: PartyConfig, job_id: str | None = None) -> GrpcEndpoint:
    """This party's gRPC endpoint, serving on ``cfg.listen``.

    Its own TLS files are checked first (:func:`vfl.certs.check_party_tls`),
    so a wrong key, CA, name or validity fails here, naming the cause,
    instead of as a handshake failure at a peer.
    """
    check_party_tls(cfg.ca, cfg.cert, cfg.key, cfg.name)
    peers = [PeerAddress(p.name, p.address, p.cert.read_bytes() if p.cert else None)
             for p in cfg.peers]
    return GrpcEndpoint(cfg.name, cfg.listen, peers, job_id or cfg.job_id,
                        TlsFiles(cfg.ca, cfg.cert, cfg.key),
                        connect_timeout=cfg.connect_timeout, default_timeout=cfg.timeout,
                        policy=cfg.policy)


def part_path(cfg: PartyConfig) -> Path:
    """Where this party's model part lives (``<output>/<name>.json``)."""
    return outputs.model_part_file(cfg.output, cfg.name)


def _load_data(cfg: PartyConfig, path: str | Path | None = None,
               require_label: bool = True) -> PartyTable:
    assert cfg.data is not None
    d = cfg.data
    return load_table(path or d.path, id_column=d.id_column,
                      label_column=d.label_column, features=None if path else d.features,
                      exclude=d.exclude,
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


def _guarded(cfg: PartyConfig, job_id: str | None,
             work: Callable[[GrpcEndpoint], T]) -> tuple[T, dict[str, Any]]:
    """Run ``work`` on this party's endpoint; on any failure tell the peers, then re-raise.

    Returns the work's result and this endpoint's traffic.
    """
    ep = open_endpoint(cfg, job_id)
    try:
        result = work(ep)
        return result, _traffic(ep)
    except BaseException as exc:
        ep.abort(abort_code(exc))
        raise
    finally:
        ep.close()


def run_fit(cfg: PartyConfig, progress: ProgressHook | None = None, *,
            force: bool = False) -> dict[str, Any]:
    """Run this party's side of a training job; write its outputs; return its summary.

    The summary is what the party wrote as ``report.json`` (guest) or
    ``<name>_run.json`` (hosts, arbiter). The output folder is checked
    before any work: an earlier run's outputs there are refused unless
    ``force`` (which removes them first).
    """
    outputs.prepare_output_dir(cfg.output, force=force)
    if cfg.role == Role.ARBITER:
        arbiter, traffic = _guarded(cfg, None, lambda ep: jobs.arbiter_fit_job(
            ep, guest=cfg.guest, progress=progress, policy=cfg.policy))
        summary = outputs.arbiter_summary(cfg.name, arbiter, traffic=traffic)
        summary["peak_memory_mb"] = _peak_memory_mb()
        outputs.write_arbiter_outputs(cfg.output, cfg.name, summary)
        return summary

    table = _load_data(cfg)
    assert cfg.data is not None
    valid = (_load_data(cfg, cfg.data.validation_path).select(table.feature_names)
             if cfg.data.validation_path else None)
    if cfg.role == Role.HOST:
        host, traffic = _guarded(cfg, None, lambda ep: jobs.host_fit_job(
            ep, table, guest=cfg.guest, arbiter=cfg.arbiter, progress=progress, valid=valid,
            policy=cfg.policy))
        summary = outputs.host_summary(host, n_rows=table.n_rows, traffic=traffic)
        summary["peak_memory_mb"] = _peak_memory_mb()
        outputs.write_host_outputs(cfg.output, host, summary)
        return summary

    t0 = time.perf_counter()
    guest, traffic = _guarded(cfg, None, lambda ep: jobs.guest_fit_job(
        ep, table, cfg.train, hosts=cfg.hosts, arbiter=cfg.arbiter, progress=progress,
        valid=valid, options=cfg.options, policy=cfg.policy))
    report = outputs.guest_report(guest, n_guest=table.n_rows, hosts=cfg.hosts, config=cfg.train,
                          options=cfg.options, traffic={cfg.name: traffic},
                          baseline=guest_only_baseline(guest.aligned))
    report["wall_seconds"] = time.perf_counter() - t0
    report["peak_memory_mb"] = _peak_memory_mb()
    outputs.write_guest_outputs(cfg.output, guest, report, html_report=True)
    return report


def run_predict(cfg: PartyConfig, data: str | Path, *, out: str | Path | None = None,
                job_id: str | None = None, scorecard: Scorecard | None = None,
                force: bool = False) -> dict[str, Any]:
    """Run this party's side of a scoring job with its saved model part.

    The guest writes the scores of the shared customers to ``out`` (with
    ``scorecard``, also their points); each host sends its partial scores.
    """
    if cfg.role == Role.ARBITER:
        raise ConfigError("The arbiter takes no part in scoring.")
    part = load_model_part(part_path(cfg))
    table = _load_data(cfg, data, require_label=False)
    job = job_id or f"{cfg.job_id}/predict"
    if cfg.role == Role.HOST:
        rows, traffic = _guarded(cfg, job, lambda ep: jobs.host_predict_job(
            ep, table, part, guest=cfg.guest, policy=cfg.policy))
        return {"party": cfg.name, "rows_scored": rows, "traffic": traffic,
                "peak_memory_mb": _peak_memory_mb()}
    if out is None:
        raise ConfigError("The guest needs --out for the scores file.")
    outputs.prepare_output_file(out, force=force)
    scores, traffic = _guarded(cfg, job, lambda ep: jobs.guest_predict_job(
        ep, table, part, hosts=cfg.hosts, policy=cfg.policy))
    if scorecard is not None:
        scores = scorecard.add_points(scores)
    atomic_write_text(out, scores.to_csv(index=False))
    scored = int(scores["matched"].sum())
    return {"party": cfg.name, "rows_scored": scored, "rows_in_file": len(scores),
            "scores": str(out),
            "mean_probability": float(np.nanmean(scores["probability"])) if scored else None,
            "traffic": traffic, "peak_memory_mb": _peak_memory_mb()}
