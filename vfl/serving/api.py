"""The guest's scoring API: HTTP JSON (FastAPI; OpenAPI documentation at ``/docs``).

Endpoints (``protocols/specs/serving.md``):

* ``POST /v1/score``: one applicant, ``{"customer_id": ..., "features": {...}}``;
* ``POST /v1/score:batch``: ``{"applicants": [...]}``, at most ``max_batch``;
* ``GET /healthz``: the process is up; ``GET /readyz``: a model is loaded and every
  host serves it (checked with an empty request, within the host timeout);
* ``GET /metrics``: Prometheus text: requests by endpoint and status, latency
  histograms, applicants scored, host failures and fallbacks.

Validation is strict: every feature of the model must be given (``null`` for a
missing value, imputed as in training), no other feature, numbers only
(``"1.5"`` or ``true`` is refused), finite (``NaN``/``Infinity`` are refused:
send ``null``); a refusal is HTTP 422 naming the field.
"""


import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from vfl.exceptions import ConfigError, RemoteProtocolError, VFLError
from vfl.preprocess import OutOfRange
from vfl.serving.auth import AuthError, ClientRegistry
from vfl.serving.guest import (
    Applicant,
    Decision,
    GuestScorer,
    HostBusy,
    HostDown,
    UnknownCustomer,
)
from vfl.serving.host import ServingError

__all__ = ["ScorerHolder", "make_app", "cert_aware_http"]


class ScorerHolder:
    """The model being served, swapped whole on a hot reload.

    :meth:`reload` checks that every host serves the new model id before the
    switch (both sides hold the new model before the guest uses it); requests
    in flight finish with the scorer they started with.
    """

    def __init__(self, scorer: GuestScorer, version: int = 1) -> None:
        self._current = (scorer, version)  # swapped whole: a decision never mixes the two
        self._lock = threading.Lock()
        self._ready: tuple[float, dict[str, str]] | None = None  # (when, hosts' state)

    @property
    def current(self) -> tuple[GuestScorer, int]:
        """The scorer and its version, read together."""
        return self._current

    @property
    def scorer(self) -> GuestScorer:
        """The scorer serving now."""
        return self._current[0]

    @property
    def version(self) -> int:
        """The model version serving now (1, then one more per reload)."""
        return self._current[1]

    def readiness(self, max_age: float = 5.0) -> dict[str, str]:
        """:meth:`hosts_serving` of the current scorer: a ready state at most ``max_age``
        seconds old, a not-ready one at most 1 s (a readiness probe must not spend the hosts'
        rate limits, nor keep a service "not ready" long after its hosts came up)."""
        now = time.monotonic()
        cached = self._ready
        if cached is not None:
            ok = all(v == "ok" for v in cached[1].values())
            if now - cached[0] < (max_age if ok else 1.0):
                return cached[1]
        state = self.hosts_serving(self.scorer)
        self._ready = (now, state)
        return state

    def hosts_serving(self, scorer: GuestScorer) -> dict[str, str]:
        """Per host: ``"ok"`` if it serves ``scorer``'s model, else why not."""
        out: dict[str, str] = {}
        for host in scorer.hosts:
            try:
                host.partial_scores(scorer.model_id, [])
                out[host.host] = "ok"
            except VFLError as exc:
                out[host.host] = str(exc)
        return out

    def reload(self, scorer: GuestScorer) -> int:
        """Serve ``scorer`` from now on, if every host serves its model; the new version.

        Raises
        ------
        ConfigError
            Naming the hosts that do not serve the new model (the old one stays).
        """
        status = self.hosts_serving(scorer)
        bad = {h: s for h, s in status.items() if s != "ok"}
        if bad:
            raise ConfigError(f"Model {scorer.model_id} not switched to: "
                              + "; ".join(f"{h}: {s}" for h, s in bad.items()))
        with self._lock:
            version = self._current[1] + 1
            self._current = (scorer, version)
            self._ready = None
            return version


#: Largest request body accepted (bytes); a request without a length is refused.
MAX_BODY_BYTES = 8 << 20
#: Most features one applicant may carry (any more is refused before it is looked at).
MAX_FEATURES = 1000


#: Paths any caller may reach (liveness and readiness probes).
OPEN_PATHS = ("/healthz", "/readyz")
#: Paths of the documentation (open only if ``open_docs``).
DOC_PATHS = ("/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")


def make_app(holder: ScorerHolder, *, max_batch: int = 100,
             clients: ClientRegistry | None = None, open_metrics: bool = False,
             open_docs: bool = False) -> Any:
    """The FastAPI application serving ``holder``'s model.

    ``clients``: the callers allowed and their quotas (:mod:`vfl.serving.auth`); None
    only where a gateway in front authenticates every caller (``[serve] auth = "none"``).
    ``/healthz`` and ``/readyz`` are always open; ``/metrics`` and the documentation
    only if ``open_metrics`` / ``open_docs`` (else they need a client's key, too).
    """
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily
    from pydantic import BaseModel, ConfigDict, Field

    if not 1 <= max_batch <= 10_000:
        raise ConfigError("max_batch must be 1 to 10000.")

    Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]

    class ApplicantIn(BaseModel):
        """One applicant: the shared customer ID and the guest's features by name."""

        model_config = ConfigDict(extra="forbid")
        customer_id: Annotated[str, Field(strict=True, min_length=1, max_length=256)]
        features: Annotated[dict[str, Number | None], Field(max_length=MAX_FEATURES)]

    class BatchIn(BaseModel):
        """Several applicants, scored with one request per host."""

        model_config = ConfigDict(extra="forbid")
        applicants: Annotated[list[ApplicantIn], Field(min_length=1, max_length=max_batch)]

    class ReasonOut(BaseModel):
        feature: str
        points_below_best: int

    class DecisionOut(BaseModel):
        """The decision for one applicant."""

        model_id: str
        model_version: int
        customer_id: str
        probability: float
        score: int
        points: dict[str, int]
        base_points: int
        host_points: int
        reason_codes: list[ReasonOut]
        host_features_available: bool
        fallback: str | None
        hosts_missing: list[str]
        host_feature_points: dict[str, dict[str, int]]
        out_of_range: list[str]
        points_total: int

    class BatchOut(BaseModel):
        results: list[DecisionOut]

    registry = CollectorRegistry()
    requests = Counter("vfl_score_requests", "Scoring API requests", ["endpoint", "status"],
                       registry=registry)
    latency = Histogram("vfl_score_request_seconds", "Scoring API latency", ["endpoint"],
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                        registry=registry)
    scored = Counter("vfl_applicants_scored", "Applicants scored", ["host_features"],
                     registry=registry)

    class _HostFailures:
        def collect(self) -> Iterator[CounterMetricFamily]:
            fam = CounterMetricFamily("vfl_host_call_failures", "Host calls that failed",
                                      labels=["host"])
            for host, n in holder.scorer.host_failures.items():
                fam.add_metric([host], n)
            yield fam

    registry.register(_HostFailures())

    app = FastAPI(title="vfl scoring API", version="1",
                  description="Credit decisions from the joint model: the guest's features "
                              "here, each host's partial score fetched live over mutual TLS. "
                              "See protocols/specs/serving.md.")

    def timed(endpoint: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        status = "200"
        try:
            return fn()
        except HTTPException as exc:
            status = str(exc.status_code)
            raise
        except Exception:
            status = "500"
            raise
        finally:
            latency.labels(endpoint).observe(time.perf_counter() - t0)
            requests.labels(endpoint, status).inc()

    def checked(scorer: GuestScorer, items: list[ApplicantIn]) -> list[Applicant]:
        want = set(scorer.features)
        errors = []
        for i, a in enumerate(items):
            missing = sorted(want - set(a.features))
            extra = sorted(set(a.features) - want)
            where = ["body"] if len(items) == 1 else ["body", "applicants", i]
            if missing:
                errors.append({"loc": [*where, "features"], "type": "missing",
                               "msg": f"missing feature(s): {', '.join(missing)} (send null "
                                      "for a missing value)"})
            if extra:
                errors.append({"loc": [*where, "features"], "type": "extra_forbidden",
                               "msg": f"unknown feature(s): {', '.join(extra[:10])}; the model "
                                      f"uses {', '.join(scorer.features)}"})
        if errors:
            raise HTTPException(422, detail=errors)
        return [Applicant(a.customer_id, a.features) for a in items]  # type: ignore[arg-type]

    def admitted(request: Request, endpoint: str, items: list[ApplicantIn]) -> str | None:
        """The authenticated client (None without authentication), its quota taken."""
        client = request.scope.get("vfl.client")
        if clients is None or client is None:
            return None
        try:
            clients.admit(client, len(items))
        except AuthError as exc:
            clients.record(client.name, endpoint, exc.status, [a.customer_id for a in items])
            headers = ({"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
                       if exc.retry_after is not None else None)
            raise HTTPException(exc.status, detail=str(exc), headers=headers) from None
        return str(client.name)

    def audited(name: str | None, endpoint: str, items: list[ApplicantIn],
                fn: Callable[[], Any]) -> Any:
        status = 200
        try:
            return fn()
        except HTTPException as exc:
            status = exc.status_code
            raise
        except Exception:
            status = 500
            raise
        finally:
            if clients is not None and name is not None:
                clients.record(name, endpoint, status, [a.customer_id for a in items])

    def decide(items: list[ApplicantIn]) -> tuple[list[Decision], GuestScorer, int]:
        scorer, version = holder.current
        applicants = checked(scorer, items)
        try:
            decisions = scorer.decide(applicants)
        except OutOfRange as exc:
            where = ["body"] if len(items) == 1 else ["body", "applicants", exc.row]
            raise HTTPException(422, detail=[{"loc": [*where, "features", exc.feature],
                                              "type": "out_of_range", "msg": str(exc)}]) from None
        except UnknownCustomer as exc:
            raise HTTPException(404, detail=str(exc)) from None
        except HostBusy as exc:  # the host's rate limit or daily budget: retry later
            raise HTTPException(429, detail=str(exc)) from None
        except (HostDown, ServingError, RemoteProtocolError) as exc:
            raise HTTPException(503, detail=str(exc)) from None
        for d in decisions:
            scored.labels("yes" if d.host_features_available else "fallback").inc()
        return decisions, scorer, version

    def out(d: Decision, scorer: GuestScorer, version: int) -> DecisionOut:
        return DecisionOut(model_id=scorer.model_id, model_version=version,
                           customer_id=d.customer_id, probability=d.probability, score=d.score,
                           points=d.points, base_points=d.base_points, host_points=d.host_points,
                           reason_codes=[ReasonOut(**r) for r in d.reason_codes],
                           host_features_available=d.host_features_available,
                           fallback=d.fallback, hosts_missing=d.hosts_missing,
                           host_feature_points=d.host_feature_points,
                           out_of_range=d.out_of_range, points_total=d.points_total)

    @app.post("/v1/score", response_model=DecisionOut)
    def score(applicant: ApplicantIn, request: Request) -> DecisionOut:
        """Score one applicant."""
        def run() -> DecisionOut:
            name = admitted(request, "score", [applicant])

            def scored_one() -> DecisionOut:
                decisions, scorer, version = decide([applicant])
                return out(decisions[0], scorer, version)
            return audited(name, "score", [applicant], scored_one)  # type: ignore[no-any-return]
        result: DecisionOut = timed("score", run)
        return result

    @app.post("/v1/score:batch", response_model=BatchOut)
    def score_batch(batch: BatchIn, request: Request) -> BatchOut:
        """Score up to ``max_batch`` applicants at once."""
        def run() -> BatchOut:
            name = admitted(request, "score_batch", batch.applicants)

            def scored() -> BatchOut:
                decisions, scorer, version = decide(batch.applicants)
                return BatchOut(results=[out(d, scorer, version) for d in decisions])
            return audited(name, "score_batch", batch.applicants, scored)  # type: ignore[no-any-return]
        result: BatchOut = timed("score_batch", run)
        return result

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """A model is loaded and every host serves it."""
        scorer, version = holder.current
        hosts = holder.readiness()
        ready = all(s == "ok" for s in hosts.values())
        return JSONResponse({"status": "ready" if ready else "not ready",
                             "model_id": scorer.model_id, "model_version": version,
                             "hosts": hosts}, status_code=200 if ready else 503)

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        """Prometheus metrics."""
        return PlainTextResponse(generate_latest(registry).decode(),
                                 media_type="text/plain; version=0.0.4")

    class _Bounded:
        """A body is read only if it says its length and the length is within bounds (a
        plain ASGI wrapper: Starlette's decorator middleware costs about a millisecond per
        request)."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and clients is not None:
                path = scope["path"]
                if not (path in OPEN_PATHS or (open_metrics and path == "/metrics")
                        or (open_docs and path in DOC_PATHS)):
                    auth = dict(scope["headers"]).get(b"authorization")
                    try:
                        if "vfl.client_cert" in scope:  # auth = "mtls": the handshake's name
                            scope["vfl.client"] = clients.authenticate_cert(
                                scope["vfl.client_cert"])
                        else:
                            scope["vfl.client"] = clients.authenticate(
                                auth.decode("latin-1") if auth is not None else None)
                    except AuthError as exc:
                        endpoint = ("score_batch" if path.endswith(":batch") else "score"
                                    if path.startswith("/v1/") else path.strip("/") or "root")
                        requests.labels(endpoint, str(exc.status)).inc()
                        headers = ({"WWW-Authenticate": 'Bearer realm="vfl"'}
                                   if exc.status == 401 else None)
                        await JSONResponse({"detail": str(exc)}, status_code=exc.status,
                                           headers=headers)(scope, receive, send)
                        return
            if scope["type"] == "http" and scope["method"] == "POST":
                endpoint = "score_batch" if scope["path"].endswith(":batch") else "score"
                length = dict(scope["headers"]).get(b"content-length")
                refusal = None
                if length is None or not length.isdigit():
                    refusal = (411, "a request body needs a Content-Length")
                elif int(length) > MAX_BODY_BYTES:
                    refusal = (413, f"request body above {MAX_BODY_BYTES} bytes")
                if refusal is not None:
                    requests.labels(endpoint, str(refusal[0])).inc()
                    await JSONResponse({"detail": refusal[1]},
                                       status_code=refusal[0])(scope, receive, send)
                    return
            await self.inner(scope, receive, send)

    app.add_middleware(_Bounded)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the reason and where, never the input itself: it may be personal data, and a
        # non-finite number cannot even be written back as JSON
        endpoint = "score_batch" if request.url.path.endswith(":batch") else "score"
        requests.labels(endpoint, "422").inc()
        return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                                         "type": e.get("type", "")} for e in exc.errors()]},
                            status_code=422)

    app.state.holder = holder
    app.state.registry = registry
    return app


def cert_aware_http() -> type:
    """uvicorn's HTTP/1.1 protocol, with the verified client certificate's common name in
    every request's scope (``scope["vfl.client_cert"]``; uvicorn itself does not pass it).
    For ``auth = "mtls"``: the handshake has checked the certificate against the client CA
    (``ssl.CERT_REQUIRED``) before any request is read."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class CertAwareH11(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            name = ""
            cert = transport.get_extra_info("peercert") or {}
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        name = str(value)
            inner = self.app

            async def app(scope: Any, receive: Any, send: Any) -> None:
                scope["vfl.client_cert"] = name
                await inner(scope, receive, send)

            self.app = app

    return CertAwareH11

