"""Issue 25: the guest's scoring API refuses callers it cannot name, over a real socket.

A real uvicorn server on a loopback port, a real HTTP client (httpx), the real host scorer
behind the guest scorer. Refusals by case: no credentials and an unknown or malformed key
(401, with WWW-Authenticate), a revoked key (403, after a reload of the clients file), over
the client's rate or daily quota (429, with Retry-After); one client cannot spend another's
quota; /healthz and /readyz stay open, /metrics and /docs need a key unless opened; every
request of a known client is in the audit trail, and no key is stored in clear.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from vfl.demo import free_ports
from vfl.serving.api import ScorerHolder, make_app
from vfl.serving.auth import ClientRegistry, add_client, key_digest
from vfl.serving.guest import GuestScorer
from vfl.serving.host import HostModel, HostScorer, ServeLimits

from ..serving.conftest import trained  # noqa: F401 - fixture
from ..serving.test_guest_scorer import LocalHost, _applicants


class Reply:
    """A real HTTP exchange over the socket (urllib), any status."""

    def __init__(self, method: str, url: str, body=None, headers=None) -> None:
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            **({"Content-Type": "application/json"} if data is not None else {}),
            **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                self.status_code, self.headers = resp.status, resp.headers
                self.text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            self.status_code, self.headers = exc.code, exc.headers
            self.text = exc.read().decode()

    def json(self):
        return json.loads(self.text)


def get(url, headers=None):
    return Reply("GET", url, headers=headers)


class Server:
    def __init__(self, app) -> None:
        import uvicorn

        (self.port,) = free_ports(1)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def api(trained, tmp_path_factory):  # noqa: F811
    d = tmp_path_factory.mktemp("api-auth")
    clients = d / "clients.toml"
    keys = {"engine": add_client(clients, "engine", requests_per_second=1000, burst=1000,
                                 daily_applicants=10**6),
            "tiny": add_client(clients, "tiny", requests_per_second=1, burst=2,
                               daily_applicants=3),
            "old": add_client(clients, "old")}
    registry = ClientRegistry.load(clients, audit=d / "api_audit.jsonl")
    host = HostScorer([HostModel(trained.host_part, trained.host)], guest="guest",
                      limits=ServeLimits(requests_per_second=1e6, burst=10**6))
    holder = ScorerHolder(GuestScorer(trained.guest_part, [LocalHost(host)]))
    server = Server(make_app(holder, clients=registry))
    apps = _applicants(trained, 3)
    body = {"customer_id": apps[0].customer_id,
            "features": {k: (None if v != v else float(v)) for k, v in apps[0].features.items()}}
    yield server, keys, clients, registry, body, d
    server.stop()
    registry.close()


def _post(server, body, key=None, header=None):
    headers = {"Authorization": header} if header else (
        {"Authorization": f"Bearer {key}"} if key else {})
    return Reply("POST", f"{server.url}/v1/score", body, headers)


def test_refusals_by_case(api):
    server, keys, clients, registry, body, d = api
    ok = _post(server, body, keys["engine"])
    assert ok.status_code == 200 and 0 < ok.json()["probability"] < 1
    # no credentials
    r = _post(server, body)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "no credentials" in r.json()["detail"]
    # an unknown key of the right form, a malformed one, another scheme
    r = _post(server, body, "vfl_" + "A" * 43)
    assert r.status_code == 401 and r.json()["detail"] == "unknown API key"
    assert _post(server, body, "letmein").status_code == 401
    assert _post(server, body, header=f"Basic {keys['engine']}").status_code == 401
    # a revoked key: the file says so, a reload (SIGHUP in vfl serve) applies it
    text = clients.read_text()
    digest = key_digest(keys["old"])
    assert _post(server, body, keys["old"]).status_code == 200
    block = text[text.index(digest):]
    clients.write_text(text.replace(block, block.replace("revoked = false", "revoked = true", 1)))
    registry.reload()
    r = _post(server, body, keys["old"])
    assert r.status_code == 403 and "'old' is revoked" in r.json()["detail"]
    assert _post(server, body, keys["engine"]).status_code == 200
    # the file keeps no key in clear
    assert not any(k in clients.read_text() for k in keys.values())


def test_over_quota_and_no_spending_of_another_clients_quota(api):
    server, keys, _, _, body, d = api
    codes = [_post(server, body, keys["tiny"]).status_code for _ in range(4)]
    # burst 2, then one a second; at most 3 applicants a day
    assert codes[:2] == [200, 200] and codes[2] == 429, codes
    time.sleep(1.1)
    assert _post(server, body, keys["tiny"]).status_code == 200
    time.sleep(1.1)
    r = _post(server, body, keys["tiny"])
    assert r.status_code == 429 and "used up" in r.json()["detail"]
    assert int(r.headers["Retry-After"]) >= 1
    # the other client is untouched
    assert all(_post(server, body, keys["engine"]).status_code == 200 for _ in range(5))
    # the trail names the client of every request, refused ones too
    lines = [json.loads(x) for x in (d / "api_audit.jsonl").read_text().splitlines()]
    tiny = [x for x in lines if x["client"] == "tiny"]
    assert [x["status"] for x in tiny].count(429) >= 2
    assert all(x["customers"] == [body["customer_id"]] for x in tiny)


def test_probes_open_and_metrics_and_docs_closed(api):
    server, keys, *_ = api
    assert get(f"{server.url}/healthz").status_code == 200
    assert get(f"{server.url}/readyz").status_code in (200, 503)
    assert get(f"{server.url}/metrics").status_code == 401
    assert get(f"{server.url}/docs").status_code == 401
    assert get(f"{server.url}/openapi.json").status_code == 401
    auth = {"Authorization": f"Bearer {keys['engine']}"}
    assert get(f"{server.url}/metrics", headers=auth).status_code == 200


def test_out_of_range_applicants_are_refused_naming_the_feature(api, trained):  # noqa: F811
    """Issue 25's absurd applicants (a percentage typed for a fraction, 1e308, a negative
    age) get 422 naming the feature and its training range; in-range ones are scored."""
    server, keys, _, _, body, _ = api
    feats = body["features"]
    lo = {n: float(v) for n, v in zip(trained.guest_part.features,
                                       trained.guest_part.preprocessing["ranges"]["mins"],
                                       strict=True)}
    hi = {n: float(v) for n, v in zip(trained.guest_part.features,
                                       trained.guest_part.preprocessing["ranges"]["maxs"],
                                       strict=True)}
    for name, value in [("utilization", 27.5), ("age", 1e308), ("age", -5.0)]:
        bad = {**body, "features": {**feats, name: value}}
        r = _post(server, bad, keys["engine"])
        assert r.status_code == 422, (name, value, r.text)
        (err,) = r.json()["detail"]
        assert err["loc"] == ["body", "features", name] and err["type"] == "out_of_range"
        assert f"{lo[name]:.6g} to {hi[name]:.6g}" in err["msg"]
    # the ends of the training range, and a missing value, are scored
    for name in ("age", "utilization"):
        for v in (lo[name], hi[name], None):
            ok = _post(server, {**body, "features": {**feats, name: v}}, keys["engine"])
            assert ok.status_code == 200 and ok.json()["out_of_range"] == []


# ------------------------------------------------------------------ auth = "mtls"
@pytest.fixture(scope="module")
def mtls_api(trained, tmp_path_factory):  # noqa: F811
    import datetime as dt

    import uvicorn

    from vfl.certs import issue_party_cert, write_party_certs
    from vfl.model import atomic_write_text
    from vfl.serving.api import cert_aware_http

    d = tmp_path_factory.mktemp("api-mtls")
    write_party_certs(d, ["guest", "engine", "outsider", "old"])
    write_party_certs(d / "other", ["engine"])  # the same name from another CA
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    key, cert = issue_party_cert("engine", ca_key, ca_cert, days=1,
                                 valid_from=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    atomic_write_text(d / "expired" / "engine.key", key.decode())
    atomic_write_text(d / "expired" / "engine.pem", cert.decode())
    clients = d / "clients.toml"
    clients.write_text('[[client]]\nname = "engine"\ncert_name = "engine"\n\n'
                       '[[client]]\nname = "old"\ncert_name = "old"\nrevoked = true\n')
    registry = ClientRegistry.load(clients, audit=d / "api_audit.jsonl")
    host = HostScorer([HostModel(trained.host_part, trained.host)], guest="guest",
                      limits=ServeLimits(requests_per_second=1e6, burst=10**6))
    holder = ScorerHolder(GuestScorer(trained.guest_part, [LocalHost(host)]))
    import ssl

    (port,) = free_ports(1)
    server = uvicorn.Server(uvicorn.Config(
        make_app(holder, clients=registry), host="127.0.0.1", port=port, log_level="critical",
        access_log=False, ssl_certfile=str(d / "guest.pem"), ssl_keyfile=str(d / "guest.key"),
        ssl_ca_certs=str(d / "ca.pem"), ssl_cert_reqs=ssl.CERT_REQUIRED,
        http=cert_aware_http()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    apps = _applicants(trained, 1)
    body = {"customer_id": apps[0].customer_id,
            "features": {k: (None if v != v else float(v)) for k, v in apps[0].features.items()}}
    yield port, d, body
    server.should_exit = True
    thread.join(10)
    registry.close()


def _tls_post(port, d, body, cert=None):
    """POST over TLS as the client ``cert`` (a (pem, key) pair, or None); the status, or
    the TLS error when the handshake refuses."""
    import http.client
    import ssl

    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    conn._context.check_hostname = False  # the server's certificate names "guest"
    try:
        conn.request("POST", "/v1/score", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return "tls-refused", type(exc).__name__
    finally:
        conn.close()


def test_mtls_refusals_by_case(mtls_api):
    port, d, body = mtls_api
    ok, text = _tls_post(port, d, body, (d / "engine.pem", d / "engine.key"))
    assert ok == 200, text
    # no certificate, another CA's, an expired one: the handshake fails, no HTTP at all
    for cert in (None, (d / "other" / "engine.pem", d / "other" / "engine.key"),
                 (d / "expired" / "engine.pem", d / "expired" / "engine.key")):
        assert _tls_post(port, d, body, cert)[0] == "tls-refused", cert
    # a valid certificate of the CA that is no client, and a revoked client: 403
    status, text = _tls_post(port, d, body, (d / "outsider.pem", d / "outsider.key"))
    assert status == 403 and "'outsider' is not a client" in text
    status, text = _tls_post(port, d, body, (d / "old.pem", d / "old.key"))
    assert status == 403 and "'old' is revoked" in text
    lines = [json.loads(x) for x in (d / "api_audit.jsonl").read_text().splitlines()]
    assert [x["client"] for x in lines] == ["engine"]
