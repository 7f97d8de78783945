"""``vfl serve --config party.toml``: a host's scoring service, or the guest's scoring API.

A host (its ``[serve] listen``, ``model``, limits and ``audit_log``) loads its
model part and its ``[data]`` table and answers its guest over gRPC with
mutual TLS (:class:`~vfl.serving.grpc.ScoringServer`). The guest loads its
part and serves the HTTP API (:func:`~vfl.serving.api.make_app`, uvicorn),
asking each host at the ``serve_address`` of its ``[[peers]]`` entry.

Hot reload (``SIGHUP``, or :meth:`HostService.reload` / :meth:`GuestService.reload`):
write the new model parts where ``[serve] model`` points, reload every host
first (a host then serves the new model *and* the one before it), then the
guest: it checks that every host serves the new model id and only then
switches; otherwise it keeps the old model and says why.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vfl.config import PartyConfig
from vfl.exceptions import ConfigError
from vfl.model import ModelPart, load_model_part
from vfl.outputs import model_part_file
from vfl.procs import Terminated
from vfl.roles import Role
from vfl.scorecard import Scorecard
from vfl.serving.auth import ClientRegistry
from vfl.serving.grpc import MAX_SHARED_FEATURES, HostClient, ScoringServer
from vfl.serving.guest import GuestScorer
from vfl.serving.host import (
    AuditLog,
    HostModel,
    HostScorer,
    ServeLimits,
    StoredHostModel,
    remove_stale_stores,
)
from vfl.transport.grpc import TlsFiles

__all__ = ["HostService", "GuestService", "serve_forever", "RETIRE_AFTER"]

#: Seconds a model no longer served stays open after a reload (requests in flight finish).
RETIRE_AFTER = 60.0


def _part(cfg: PartyConfig) -> ModelPart:
    path = cfg.serve.model or model_part_file(cfg.output, cfg.name)
    if not Path(path).is_file():
        raise ConfigError(f"{cfg.source}: no model part at {path} to serve ([serve] model, or "
                          "the part vfl run wrote under [job] output).")
    return load_model_part(path)


def _listen(cfg: PartyConfig) -> str:
    if cfg.serve.listen is None:
        raise ConfigError(f"{cfg.source}: [serve] listen is needed (the address vfl serve "
                          f"answers on{', over gRPC with mutual TLS' if cfg.role == Role.HOST else ''}).")
    return cfg.serve.listen


def _tls(cfg: PartyConfig) -> TlsFiles:
    return TlsFiles(cfg.ca, cfg.cert, cfg.key)


class HostService:
    """A host's scoring service from its config; :meth:`reload` on SIGHUP."""

    def __init__(self, cfg: PartyConfig) -> None:
        if cfg.role != Role.HOST or cfg.data is None:
            raise ConfigError(f"{cfg.source}: a host's scoring service needs a host's config.")
        from vfl.runner import _load_data

        self.cfg = cfg
        # the whole table in memory, or (store = "duckdb") a copy on disk read per request
        self.table = _load_data(cfg, require_label=False) if cfg.serve.store == "memory" else None
        s = cfg.serve
        self.limits = ServeLimits(s.max_ids_per_request, s.requests_per_second, s.burst,
                                  s.daily_id_budget)
        self.audit = AuditLog(s.audit_log or cfg.output / "scoring_audit.jsonl")
        self._reload_lock = threading.Lock()
        model = self._model()
        if isinstance(model, StoredHostModel):
            remove_stale_stores(model.store)
        if s.share_feature_points and len(model.part.features) > MAX_SHARED_FEATURES:
            raise ConfigError(f"{cfg.source}: [serve] share_feature_points: at most "
                              f"{MAX_SHARED_FEATURES} features' points are sent per customer; "
                              f"this model has {len(model.part.features)}.")
        self.scorer = HostScorer([model], guest=cfg.guest, limits=self.limits, audit=self.audit,
                                 share_feature_points=s.share_feature_points,
                                 budget_file=self.audit.path.with_name(
                                     self.audit.path.name + ".budget.json"),
                                 points_scale=s.points_scale,
                                 scales_file=self.audit.path.with_name(
                                     self.audit.path.name + ".scales.json"))
        guest_peer = next(p for p in cfg.peers if p.name == cfg.guest)
        pinned = guest_peer.cert.read_bytes() if guest_peer.cert else None
        self.server = ScoringServer(self.scorer, party=cfg.name, listen=_listen(cfg),
                                    tls=_tls(cfg), pinned_guest=pinned)

    def _model(self) -> HostModel | StoredHostModel:
        d = self.cfg.data
        assert d is not None
        if self.table is None:
            store = self.cfg.serve.store_path or self.cfg.output / "scoring_store.duckdb"
            return StoredHostModel(_part(self.cfg), d.path, store, id_column=d.id_column,
                                   lower_ids=d.lower_ids, strip_ids=d.strip_ids)
        return HostModel(_part(self.cfg), self.table, lower_ids=d.lower_ids,
                         strip_ids=d.strip_ids)

    def describe(self) -> str:
        """One line for the operator."""
        m = self.scorer.model_ids
        return (f"{self.cfg.name}: scoring service for {self.cfg.guest} on "
                f"{self.cfg.serve.listen} (gRPC, mutual TLS): model(s) {', '.join(m)}, "
                f"{self.scorer.models[0].n_customers:,} customers"
                f"{'' if self.table is not None else ' (DuckDB store)'}; audit log "
                f"{self.audit.path}")

    def reload(self) -> str:
        """Load the part at ``[serve] model`` (and, in memory, the table) again; serve it and
        the one served just before it; retire the rest (closed, and their stores deleted,
        only after :data:`RETIRE_AFTER` seconds: requests in flight finish with them)."""
        from vfl.runner import _load_data

        with self._reload_lock:  # two quick SIGHUPs: one reload after the other
            if self.table is not None:
                self.table = _load_data(self.cfg, require_label=False)
            new = self._model()
            before = self.scorer.models  # newest first
            keep = [m for m in before if m.model_id != new.model_id][:1]
            self.scorer.serve_models([new, *keep])
            in_use = {getattr(m, "store", None) for m in (new, *keep)}
            for m in before:
                if m is not new and m not in keep:
                    self._retire(m, getattr(m, "store", None) not in in_use)
            return f"{self.cfg.name}: now serving model(s) {', '.join(self.scorer.model_ids)}"

    def _retire(self, model: HostModel | StoredHostModel, delete_store: bool) -> None:
        def later() -> None:
            model.close()
            store = getattr(model, "store", None)
            if delete_store and store is not None:
                store.unlink(missing_ok=True)

        timer = threading.Timer(RETIRE_AFTER, later)
        timer.daemon = True
        timer.start()

    def stop(self) -> None:
        """Stop answering, keep today's budget count, and close the audit log."""
        self.server.stop()
        self.scorer.save_budget(force=True)
        self.audit.close()


class GuestService:
    """The guest's scoring API from its config; :meth:`reload` on SIGHUP."""

    def __init__(self, cfg: PartyConfig) -> None:
        if cfg.role != Role.GUEST:
            raise ConfigError(f"{cfg.source}: the scoring API is the guest's.")
        from vfl.serving.api import ScorerHolder, make_app

        self.cfg = cfg
        missing = [p.name for p in cfg.peers_with(Role.HOST) if p.serve_address is None]
        if missing:
            raise ConfigError(f"{cfg.source}: [[peers]] {', '.join(missing)} need a "
                              "serve_address (where that host's vfl serve answers).")
        self.clients = [HostClient(p.name, p.serve_address or "", _tls(cfg), party=cfg.name,
                                   timeout=cfg.serve.host_timeout,
                                   pinned=p.cert.read_bytes() if p.cert else None)
                        for p in cfg.peers_with(Role.HOST)]
        self.failures: dict[str, int] = {}  # host call failures, kept across reloads
        s = cfg.serve
        if s.auth is None:
            raise ConfigError(
                f"{cfg.source}: [serve] auth is not set: the scoring API refuses to start "
                "without authentication. Set auth = \"api_keys\" with clients = \"FILE\" "
                "(vfl serve-key --clients FILE --name NAME makes a key), or auth = \"none\" "
                "if a gateway in front of it authenticates every caller (README, "
                "\"Deploying the scoring API\").")
        self.registry: ClientRegistry | None = None
        if s.auth in ("api_keys", "mtls"):
            assert s.clients is not None
            self.registry = ClientRegistry.load(
                s.clients, audit=s.api_audit_log or cfg.output / "api_audit.jsonl")
            if not self.registry.clients:
                raise ConfigError(f"{s.clients}: no client; vfl serve-key --clients "
                                  f"{s.clients} --name NAME adds one.")
        self.holder = ScorerHolder(self._scorer())
        self.app = make_app(self.holder, max_batch=s.max_batch, clients=self.registry,
                            open_metrics=s.open_metrics, open_docs=s.open_docs)

    def _scorer(self) -> GuestScorer:
        s = self.cfg.serve
        return GuestScorer(_part(self.cfg), self.clients,
                           scorecard=Scorecard(s.base_score, s.base_odds, s.pdo),
                           fallback=s.fallback,  # type: ignore[arg-type]
                           ids_per_host_request=s.ids_per_host_request, failures=self.failures,
                           range_policy=s.range_policy,  # type: ignore[arg-type]
                           range_margin=s.range_margin)

    def describe(self) -> str:
        """One line for the operator."""
        s = self.holder.scorer
        hosts = self.holder.hosts_serving(s)
        state = "; ".join(f"{h}: {v}" for h, v in hosts.items())
        scheme = "https" if self.cfg.serve.auth == "mtls" else "http"
        return (f"{self.cfg.name}: scoring API on {scheme}://{self.cfg.serve.listen} (docs at "
                f"/docs): model {s.model_id} version {self.holder.version}; hosts: {state}")

    def reload(self) -> str:
        """Switch to the part at ``[serve] model`` once every host serves it."""
        clients = ""
        if self.registry is not None:  # revocations and new clients take effect now
            clients = f"; {self.registry.reload()} API client(s)"
        version = self.holder.reload(self._scorer())
        return (f"{self.cfg.name}: switched to model {self.holder.scorer.model_id} "
                f"(version {version}){clients}")

    def stop(self) -> None:
        """Close the host channels and the API's audit trail."""
        for c in self.clients:
            c.close()
        if self.registry is not None:
            self.registry.close()


def serve_forever(cfg: PartyConfig, *, say: Callable[[str], None] = print) -> None:
    """Run ``vfl serve`` for ``cfg`` until SIGTERM or SIGINT; SIGHUP reloads the model.

    The output folder (audit log, budget) is held for the whole time: a second
    ``vfl serve`` of the same party is refused at once (:func:`vfl.outputs.output_lock`).
    """
    from vfl.outputs import output_lock

    with output_lock(cfg.output, cfg.name, "serve"):
        _serve_forever(cfg, say)


def _serve_forever(cfg: PartyConfig, say: Callable[[str], None]) -> None:
    service: Any = HostService(cfg) if cfg.role == Role.HOST else GuestService(cfg)

    def reload() -> None:
        try:
            say(service.reload())
        except Exception as exc:  # noqa: BLE001 - reported; the old model keeps serving
            say(f"warning: reload refused: {exc}")

    def on_hup(signum: int, frame: object) -> None:
        # off the signal handler: a reload reads files and asks the hosts (seconds), and the
        # guest's handler runs on the HTTP event loop's thread
        threading.Thread(target=reload, name="vfl-serve-reload", daemon=True).start()

    signal.signal(signal.SIGHUP, on_hup)
    if cfg.role == Role.HOST:
        stop = threading.Event()
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, lambda signum, frame: stop.set())
        say(service.describe())
        try:
            stop.wait()
        finally:
            service.stop()
        say(f"{cfg.name}: stopped (a planned stop: SIGTERM or Ctrl-C)")
        return
    import uvicorn

    host, _, port = _listen(cfg).rpartition(":")
    tls: dict[str, Any] = {}
    if cfg.serve.auth == "mtls":  # the handshake checks the client's certificate
        import ssl

        from vfl.serving.api import cert_aware_http

        tls = {"ssl_certfile": str(cfg.serve.api_cert), "ssl_keyfile": str(cfg.serve.api_key),
               "ssl_ca_certs": str(cfg.serve.client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED,
               "http": cert_aware_http()}
    server = uvicorn.Server(uvicorn.Config(service.app, host=host.strip("[]"), port=int(port),
                                           log_level="warning", access_log=False, **tls))
    say(service.describe())
    try:
        server.run()
    except (Terminated, KeyboardInterrupt):
        pass  # uvicorn stops gracefully, then re-raises the signal it caught: a planned stop
    finally:
        service.stop()
    say(f"{cfg.name}: stopped (a planned stop: SIGTERM or Ctrl-C)")
