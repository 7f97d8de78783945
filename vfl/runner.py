"""Run one party of a job over gRPC with mutual TLS (``vfl run`` / networked ``vfl predict``).

The runner opens this party's endpoint, runs its job function
(:mod:`vfl.jobs`, the same ones the one-machine pipeline runs in threads)
and writes its outputs through :mod:`vfl.outputs`.

The endpoint opens *before* the local checks (output folder, data files), so
a mistake found there reaches the peers at once as an abort, like any other
failure, instead of leaving them to wait for the connect timeout; binding the
listen port first also keeps a second copy of a running party from touching
the first one's outputs or aborting its job. On any failure the peers are told
a value-free reason code; the party's own error names the party, the cause and
the fix (a key below this party's minimum is explained in terms of the TOMLs).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from vfl import jobs, outputs
from vfl.baselines import guest_only_baseline
from vfl.certs import check_compute_tls, check_party_tls
from vfl.checkpoint import PASSPHRASE_ENV, CheckpointStore, read_passphrase
from vfl.config import PartyConfig
from vfl.crypto.paillier import MIN_SECURE_KEY_BITS
from vfl.data import PartyTable, load_table
from vfl.exceptions import ConfigError, InsecureKeySizeError
from vfl.jobs import GuestOutcome, HostOutcome
from vfl.lr.estimator import Arbiter
from vfl.model import ModelPart, load_model_part
from vfl.preprocess import RangePolicy
from vfl.progress import ProgressHook
from vfl.roles import Role
from vfl.scorecard import PointsTable, Scorecard, part_points_table
from vfl.tableio import table_format, write_frame
from vfl.transport.base import abort_code
from vfl.transport.grpc import GrpcEndpoint, LinkEvent, PeerAddress, TlsFiles

__all__ = ["open_endpoint", "run_fit", "run_predict", "part_path", "check_compute",
           "open_checkpoints"]

T = TypeVar("T")

#: how vfl.crypto.paillier.check_key_size states a refused key's size (the error has no
#: fields to read it from; if the text changes, _explain keeps the original error)


def open_endpoint(cfg: PartyConfig, job_id: str | None = None) -> GrpcEndpoint:
    """This party's gRPC endpoint, serving on ``cfg.listen``.

    Its own TLS files are checked first (:func:`vfl.certs.check_party_tls`),
    so a wrong key, CA, name or validity fails here, naming the cause,
    instead of as a handshake failure at a peer.
    """
    check_party_tls(cfg.ca, cfg.cert, cfg.key, cfg.name)
    peers = [PeerAddress(p.name, p.address, p.cert.read_bytes() if p.cert else None)
             for p in cfg.peers]
    def tell(event: LinkEvent) -> None:  # on stderr, beside the progress display
        print(f"warning: {event.text(cfg.name, cfg.link_grace)}", file=sys.stderr, flush=True)

    return GrpcEndpoint(cfg.name, cfg.listen, peers, job_id or cfg.job_id,
                        TlsFiles(cfg.ca, cfg.cert, cfg.key),
                        connect_timeout=cfg.connect_timeout, default_timeout=cfg.timeout,
                        policy=cfg.policy, link_grace=cfg.link_grace, on_link_event=tell)


def check_compute(cfg: PartyConfig) -> None:
    """Check, before any work, that this party's ``[compute]`` engine can be used.

    For ``engine = "dask"``: the party's compute TLS files
    (:func:`vfl.certs.check_compute_tls`: key matches certificate, issued by
    the party's own compute CA, valid now, and that CA is not the
    federation's ``[tls] ca``), then a connection to the scheduler with at
    least one worker, so a cluster that is not there stops the job now, not
    after PSI. Nothing for the local engine.

    Raises
    ------
    ConfigError
        Naming the party, the file or the scheduler address, and the fix.
    """
    compute = cfg.compute
    if not compute.uses_dask:
        return
    if compute.ca is not None and compute.cert is not None and compute.key is not None:
        check_compute_tls(compute.ca, compute.cert, compute.key, cfg.name, federation_ca=cfg.ca)
    try:
        from vfl.crypto.dask_engine import open_client
    except ImportError:
        raise ConfigError(f"{cfg.name}: [compute] engine = \"dask\" needs the dask extra "
                          "(pip install 'vfl[dask]').") from None
    try:
        open_client(compute).close()
    except ConfigError as exc:
        raise ConfigError(f"{cfg.name}: {exc}") from None


def open_checkpoints(cfg: PartyConfig, *, resume: bool = False) -> CheckpointStore | None:
    """This party's checkpoint folder (``[checkpoint]``), or ``None`` when it keeps none.

    The arbiter keeps checkpoints only with a passphrase (``[checkpoint]
    passphrase_file`` or the ``VFL_CHECKPOINT_PASSPHRASE`` environment
    variable), which seals its key pair; without one it warns that the job
    cannot be resumed.

    Raises
    ------
    ConfigError
        ``resume`` with checkpoints disabled, or an arbiter resuming without
        its passphrase; a passphrase file readable by others.
    """
    if not cfg.checkpoint.enabled:
        if resume:
            raise ConfigError(f"{cfg.name}: --resume needs checkpoints; [checkpoint] enabled "
                              f"is false in {cfg.source}.")
        return None
    passphrase = None
    if cfg.role == Role.ARBITER:
        passphrase = read_passphrase(cfg.checkpoint.passphrase_file)
        if passphrase is None:
            if resume:
                raise ConfigError(f"{cfg.name}: --resume needs the checkpoint passphrase that "
                                  f"sealed the arbiter's key ({PASSPHRASE_ENV} or [checkpoint] "
                                  "passphrase_file).")
            warnings.warn(f"{cfg.name} keeps no checkpoints: no passphrase to seal its key "
                          f"pair ({PASSPHRASE_ENV} or [checkpoint] passphrase_file), so this "
                          "job cannot be resumed if it stops.", UserWarning, stacklevel=2)
            return None
    return CheckpointStore(cfg.checkpoint_folder, party=cfg.name, role=cfg.role.value,
                           job=cfg.job_id, passphrase=passphrase, resume=resume,
                           every_batches=cfg.checkpoint.every_batches)


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
    """Peak resident memory of this process, in MB (the kernel's high-water mark).

    Worker processes are not included: a spawned worker's own high-water
    mark starts from a copy of this process's at fork time, so the kernel's
    figure for them overstates them; ``benchmarks/train_scale.py`` samples a
    party's whole process tree instead.
    """
    import resource

    return {"process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _traffic(ep: GrpcEndpoint) -> dict[str, Any]:
    return {"sent_bytes": ep.stats.total_sent, "received_bytes": ep.stats.total_received,
            "sent_by_peer": dict(ep.stats.sent_bytes),
            "sent_by_message_type": dict(ep.stats.sent_by_type), "links": ep.link_summary()}


def _explain(cfg: PartyConfig, exc: BaseException) -> BaseException | None:
    """A clearer error for ``exc`` in a networked job, naming this party and the TOML fix.

    Handles a Paillier key below this party's minimum (refused when this
    party's ``[security] allow_insecure_key_size`` is false): from the
    arbiter's key announcement, the guest's binning key (raised as a
    protocol error whose context is the key-size error), or the arbiter's
    own key generation. None if ``exc`` is not such an error.
    """
    cause = exc if isinstance(exc, InsecureKeySizeError) else exc.__context__
    if not isinstance(cause, InsecureKeySizeError) or cfg.policy.allow_insecure_key_size:
        return None
    if cause.bits is None or cause.minimum != MIN_SECURE_KEY_BITS:
        return None  # another key-size rule (e.g. a secret exponent): keep its own text
    guest = cfg.name if cfg.role == Role.GUEST else cfg.guest
    return InsecureKeySizeError(
        f"{cfg.name} ({cfg.role.value}) refused the job's Paillier key: key too small "
        f"(got {cause.bits} bits, need >= {MIN_SECURE_KEY_BITS}). Fix: set [train] "
        f"key_bits to at least {MIN_SECURE_KEY_BITS} in the guest's TOML ({guest}); only "
        "for a test with small keys, set allow_insecure_key_size = true under [security] in "
        f"every party's TOML ({cfg.name}'s is {cfg.source}).", bits=cause.bits,
        minimum=MIN_SECURE_KEY_BITS)


def _guarded(cfg: PartyConfig, job_id: str | None,
             work: Callable[[GrpcEndpoint], T]) -> tuple[T, dict[str, Any]]:
    """Run ``work`` on this party's endpoint; on any failure tell the peers, then raise.

    ``work`` starts with this party's local checks (output folder, data):
    they run once the endpoint listens, so their errors reach the peers at
    once too. The peers get a value-free reason code; this party raises the
    error, explained by :func:`_explain` where that applies. Returns the
    work's result and this endpoint's traffic.
    """
    ep = open_endpoint(cfg, job_id)
    try:
        result = work(ep)
        return result, _traffic(ep)
    except BaseException as exc:
        clearer = _explain(cfg, exc)
        ep.abort(abort_code(clearer or exc))
        if clearer is not None:
            raise clearer from exc
        raise
    finally:
        ep.close()


def run_fit(cfg: PartyConfig, progress: ProgressHook | None = None, *,
            force: bool = False, resume: bool = False) -> dict[str, Any]:
    """Run this party's side of a training job; write its outputs; return its summary.

    The summary is what the party wrote as ``report.json`` (guest) or
    ``<name>_run.json`` (hosts, arbiter). The output folder is checked
    before any work: an earlier run's outputs there are refused unless
    ``force`` (which removes them first). Every party writes a checkpoint
    after each epoch (:func:`open_checkpoints`); ``resume`` continues from
    the newest epoch every party holds (each party must be started with it).
    The output folder is held for the whole run (:func:`vfl.outputs.output_lock`): a
    second process writing into it is refused at once.
    """
    with outputs.output_lock(cfg.output, cfg.name, "run"):
        return _run_fit(cfg, progress, force=force, resume=resume)


def _run_fit(cfg: PartyConfig, progress: ProgressHook | None, *, force: bool,
             resume: bool) -> dict[str, Any]:
    def prepare(store: CheckpointStore | None) -> None:
        # a resumed job replaces what an earlier run of the same job wrote (e.g. the arbiter's
        # summary, when it finished before a peer failed), once its checkpoints are there
        resuming = store is not None and store.resume and any(map(any, store.positions_held()))
        outputs.prepare_output_dir(cfg.output, force=force,
                                   resume_job=cfg.job_id if resuming else None)

    def tables() -> tuple[PartyTable, PartyTable | None]:
        check_compute(cfg)
        table = _load_data(cfg)
        assert cfg.data is not None
        valid = (_load_data(cfg, cfg.data.validation_path).select(table.feature_names)
                 if cfg.data.validation_path else None)
        return table, valid

    if cfg.role == Role.ARBITER:
        def arbiter_work(ep: GrpcEndpoint) -> Arbiter:
            store = open_checkpoints(cfg, resume=resume)
            prepare(store)
            return jobs.arbiter_fit_job(ep, guest=cfg.guest, progress=progress,
                                        policy=cfg.policy, checkpoints=store)

        arbiter, traffic = _guarded(cfg, None, arbiter_work)
        summary = outputs.arbiter_summary(cfg.name, arbiter, traffic=traffic)
        summary["job"] = cfg.job_id
        summary["peak_memory_mb"] = _peak_memory_mb()
        outputs.write_arbiter_outputs(cfg.output, cfg.name, summary)
        return summary

    if cfg.role == Role.HOST:
        def host_work(ep: GrpcEndpoint) -> tuple[HostOutcome, int]:
            store = open_checkpoints(cfg, resume=resume)
            prepare(store)
            table, valid = tables()
            return jobs.host_fit_job(ep, table, guest=cfg.guest, arbiter=cfg.arbiter,
                                     progress=progress, valid=valid,
                                     policy=cfg.policy, compute=cfg.compute,
                                     checkpoints=store), table.n_rows

        (host, n_rows), traffic = _guarded(cfg, None, host_work)
        summary = outputs.host_summary(host, n_rows=n_rows, traffic=traffic)
        summary["job"] = cfg.job_id
        summary["peak_memory_mb"] = _peak_memory_mb()
        outputs.write_host_outputs(cfg.output, host, summary)
        return summary

    def guest_work(ep: GrpcEndpoint) -> tuple[GuestOutcome, PartyTable, float]:
        store = open_checkpoints(cfg, resume=resume)
        prepare(store)
        table, valid = tables()
        t0 = time.perf_counter()
        return jobs.guest_fit_job(ep, table, cfg.train, hosts=cfg.hosts, arbiter=cfg.arbiter,
                                  progress=progress, valid=valid, options=cfg.options,
                                  policy=cfg.policy, compute=cfg.compute,
                                  checkpoints=store), table, t0

    (guest, table, t0), traffic = _guarded(cfg, None, guest_work)
    report = outputs.guest_report(guest, n_guest=table.n_rows, hosts=cfg.hosts, config=cfg.train,
                          options=cfg.options, traffic={cfg.name: traffic},
                          baseline=guest_only_baseline(guest.aligned))
    report["job"] = cfg.job_id
    report["wall_seconds"] = time.perf_counter() - t0
    report["peak_memory_mb"] = _peak_memory_mb()
    outputs.write_guest_outputs(cfg.output, guest, report, html_report=True)
    return report


def run_predict(cfg: PartyConfig, data: str | Path, *, out: str | Path | None = None,
                job_id: str | None = None, scorecard: Scorecard | None = None,
                force: bool = False, range_policy: RangePolicy = "refuse") -> dict[str, Any]:
    """Run this party's side of a scoring job with its saved model part.

    The guest writes the scores of the shared customers to ``out``; with
    ``scorecard`` also their integer points (``score``: its own points table
    plus the points every host computes from its table at the scale the guest
    sends). Each host sends its partial scores (and points when asked). A
    party whose saved points table gives other points than the ones it just
    computed rewrites ``<name>_points.csv``/``.json`` in its output folder
    (a host learns the calibrated scale only here), so the files reproduce
    the scores.
    """
    if cfg.role == Role.ARBITER:
        raise ConfigError("The arbiter takes no part in scoring.")
    job = job_id or f"{cfg.job_id}/predict"

    def inputs() -> tuple[PartyTable, ModelPart]:
        part = load_model_part(part_path(cfg))
        return _load_data(cfg, data, require_label=False), part

    if cfg.role == Role.HOST:
        used: list[PointsTable] = []

        def host_work(ep: GrpcEndpoint) -> int:
            table, part = inputs()
            return jobs.host_predict_job(ep, table, part, guest=cfg.guest, policy=cfg.policy,
                                         on_points_table=used.append)

        rows, traffic = _guarded(cfg, job, host_work)
        summary: dict[str, Any] = {"party": cfg.name, "rows_scored": rows, "traffic": traffic,
                                   "peak_memory_mb": _peak_memory_mb()}
        if used:
            summary["points_scale"] = used[-1].scale
            summary["points_files"] = [
                str(p) for p in outputs.refresh_points(cfg.output, cfg.name, used[-1])]
        return summary

    def guest_work(ep: GrpcEndpoint) -> tuple[pd.DataFrame, ModelPart]:
        if out is None:
            raise ConfigError(f"{cfg.name}: the guest needs --out for the scores file.")
        table_format(out)  # an unknown suffix is refused before any work
        outputs.prepare_output_file(out, force=force)
        table, part = inputs()
        return jobs.guest_predict_job(ep, table, part, hosts=cfg.hosts, policy=cfg.policy,
                                      scorecard=scorecard, range_policy=range_policy), part

    (scores, part), traffic = _guarded(cfg, job, guest_work)
    assert out is not None  # guest_work refused a missing --out
    write_frame(scores, out)
    scored = int(scores["matched"].sum())
    result = {"party": cfg.name, "rows_scored": scored, "rows_in_file": len(scores),
              "scores": str(out),
              "mean_probability": float(np.nanmean(scores["probability"])) if scored else None,
              "traffic": traffic, "peak_memory_mb": _peak_memory_mb(),
              "out_of_range": scores.attrs.get("out_of_range")}
    if scorecard is not None:
        result["points_files"] = [str(p) for p in outputs.refresh_points(
            cfg.output, cfg.name, part_points_table(part, scorecard))]
    return result
