"""``vfl serve`` for real (issue 14): the host's scoring service and the guest's HTTP API as two
OS processes, mutual TLS between them, and a real HTTP client (urllib, over a socket) in front:
scores equal ``vfl predict``'s; unknown customers, a host that goes down, a model the host does
not serve, and malformed requests each get their documented answer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from vfl.demo import free_ports, write_party_toml
from vfl.pipeline import predict_local


def _configs(trained, pki: Path, tmp: Path, *, fallback: str = "host_average",
             host_model: Path | None = None,
             guest_model: Path | None = None) -> tuple[Path, Path, str, str]:
    """The guest's and host1's TOMLs (vfl.demo.write_party_toml), with [serve] sections."""
    p_train_g, p_train_h, p_arb, p_serve_h, p_http = free_ports(5)
    addr = {"guest": f"127.0.0.1:{p_train_g}", "host1": f"127.0.0.1:{p_train_h}",
            "arbiter": f"127.0.0.1:{p_arb}"}
    roles = {"guest": "guest", "host1": "host", "arbiter": "arbiter"}
    data = {"guest": {"path": str(trained.guest_csv), "id_column": "customer_id",
                      "label_column": "default"},
            "host1": {"path": str(trained.host_csv), "id_column": "customer_id"}}
    serve = {"host1": {"listen": f"127.0.0.1:{p_serve_h}",
                       "model": str(host_model or trained.model_dir / "host1.json"),
                       "audit_log": f"{tmp}/audit.jsonl"},
             "guest": {"listen": f"127.0.0.1:{p_http}",
                       "model": str(guest_model or trained.model_dir / "guest.json"),
                       "fallback": fallback, "max_batch": 500, "host_timeout_seconds": 2,
                       "auth": "none"}}
    paths = {}
    for name in ("host1", "guest"):
        peers = [{"name": p, "role": roles[p], "address": addr[p]} for p in addr if p != name]
        if name == "guest":
            peers[0]["serve_address"] = f"127.0.0.1:{p_serve_h}"
        paths[name] = tmp / f"{name}.toml"
        write_party_toml(paths[name], job={"id": "serve-test", "output": f"{tmp}/out"},
                         party={"name": name, "role": roles[name], "listen": addr[name]},
                         tls={"ca": f"{pki}/ca.pem", "cert": f"{pki}/{name}.pem",
                              "key": f"{pki}/{name}.key"},
                         peers=peers, data=data[name], serve=serve[name])
    return paths["guest"], paths["host1"], f"http://127.0.0.1:{p_http}", f"127.0.0.1:{p_serve_h}"


def _spawn(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vfl.cli", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _http(url: str, body: object | bytes | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
            return resp.status, (json.loads(text) if text.startswith(("{", "[")) else {"text": text})
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read().decode() or "{}")


def _wait_ready(url: str, procs: list[subprocess.Popen[str]], timeout: float = 60,
                path: str = "/readyz") -> None:
    """Until ``path`` answers 200 (``/healthz``: the API is up, whatever its hosts say)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"vfl serve exited {p.returncode}: {p.stderr.read()}")
        try:
            status, _ = _http(url + path)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the scoring API did not come up")


def _stop(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def _applicant(trained, i: int) -> dict:
    g = trained.guest.select(trained.guest_part.features)
    return {"customer_id": g.ids[i],
            "features": {n: (None if np.isnan(v) else float(v))
                         for n, v in zip(g.feature_names, g.X[i], strict=True)}}


@pytest.fixture(scope="module")
def running(trained, pki, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    guest_cfg, host_cfg, url, _ = _configs(trained, pki, tmp)
    host = _spawn(host_cfg)
    guest = _spawn(guest_cfg)
    try:
        _wait_ready(url, [host, guest])
        yield url, host, guest, tmp
    finally:
        _stop(guest, host)


def test_served_probabilities_equal_vfl_predict(trained, running):
    url, _, _, tmp = running
    status, ready = _http(url + "/readyz")
    assert status == 200 and ready["hosts"] == {"host1": "ok"}, ready
    from vfl.scorecard import Scorecard

    batch = predict_local(trained.model_dir, trained.guest, [trained.host],
                          scorecard=Scorecard())
    want = dict(zip(batch["id"].astype(str), batch["probability"], strict=True))
    want_score = dict(zip(batch["id"].astype(str), batch["score"], strict=True))
    want_points = dict(zip(batch["id"].astype(str), batch["points"], strict=True))
    shared = set(trained.host.ids)
    idx = [i for i, c in enumerate(trained.guest.ids) if c in shared][:120]
    status, one = _http(url + "/v1/score", _applicant(trained, idx[0]))
    assert status == 200, one
    assert abs(one["probability"] - want[one["customer_id"]]) <= 1e-12
    assert one["host_features_available"] and one["fallback"] is None
    assert one["model_id"] == trained.guest_part.model_id and one["model_version"] == 1
    assert set(one["points"]) == set(trained.guest_part.features)
    assert one["points_total"] == (one["base_points"] + sum(one["points"].values())
                                   + one["host_points"])
    assert one["score"] == int(Scorecard().decision_score(np.array([one["probability"]]))[0])
    assert len(one["reason_codes"]) <= 4
    status, many = _http(url + "/v1/score:batch",
                         {"applicants": [_applicant(trained, i) for i in idx]})
    assert status == 200, many
    got = np.asarray([r["probability"] for r in many["results"]])
    ref = np.asarray([want[r["customer_id"]] for r in many["results"]])
    assert np.max(np.abs(got - ref)) <= 1e-12
    # and the score and the points are vfl predict --score's, point for point
    assert [r["score"] for r in many["results"]] == [int(want_score[r["customer_id"]])
                                                     for r in many["results"]]
    assert [r["points_total"] for r in many["results"]] == [
        int(want_points[r["customer_id"]]) for r in many["results"]]
    audit = [json.loads(line) for line in (tmp / "audit.jsonl").read_text().splitlines()]
    # the batch of 120 reached the host as requests of 100 and 20 (its limit is 100)
    assert [len(a["customers"]) for a in audit[-2:]] == [100, 20]
    assert audit[-2]["customers"] + audit[-1]["customers"] == [trained.guest.ids[i] for i in idx]
    status, metrics = _http(url + "/metrics")
    assert 'vfl_score_requests_total{endpoint="score_batch",status="200"} 1.0' in metrics["text"]


def test_an_unknown_customer_is_scored_without_the_host_and_flagged(trained, running):
    url, _, _, _ = running
    body = _applicant(trained, 0)
    body["customer_id"] = "never-seen-at-the-host"
    status, out = _http(url + "/v1/score", body)
    assert status == 200, out
    assert out["host_features_available"] is False and out["fallback"] == "host_average"
    assert out["hosts_missing"] == ["host1"] and out["host_points"] == 0


@pytest.mark.parametrize(("change", "match"), [
    ("missing", "missing feature"), ("extra", "unknown feature"), ("string", "valid number"),
    ("nan", "finite number"), ("json", "JSON"), ("no_id", "customer_id"),
])
def test_bad_requests_get_422_naming_the_problem(trained, running, change, match):
    url, _, _, _ = running
    body: object = _applicant(trained, 0)
    feats = body["features"]  # type: ignore[index]
    name = next(iter(feats))
    if change == "missing":
        del feats[name]
    elif change == "extra":
        feats["shoe_size"] = 42.0
    elif change == "string":
        feats[name] = "1.5"
    elif change == "no_id":
        del body["customer_id"]  # type: ignore[attr-defined]
    elif change == "nan":
        feats[name] = float("nan")  # json.dumps writes the NaN token, which JSON does not have
    raw = json.dumps(body).encode()
    if change == "json":
        raw = b'{"customer_id": "a", "features": {'
    status, out = _http(url + "/v1/score", raw)
    assert status == 422, out
    assert match in json.dumps(out), out


def test_a_batch_above_the_limit_is_refused(trained, running):
    url, _, _, _ = running
    status, out = _http(url + "/v1/score:batch",
                        {"applicants": [_applicant(trained, 0)] * 501})
    assert status == 422 and "500" in json.dumps(out)


def test_a_host_serving_another_model_is_refused_and_a_down_host_is_survived(
        trained, pki, tmp_path):
    """The host serves a part with another model id: the guest's readiness check says so and
    a score is refused (503), not computed from mismatched parts. Then the host stops: in the
    default fallback the guest scores without it and says so; with fallback "error", 503."""
    from vfl.model import load_model_part, save_model_part

    other = load_model_part(trained.model_dir / "host1.json")
    other.model_id = "another-model"
    save_model_part(other, tmp_path / "other_host1.json")
    guest_cfg, host_cfg, url, _ = _configs(trained, pki, tmp_path,
                                           host_model=tmp_path / "other_host1.json")
    host, guest = _spawn(host_cfg), _spawn(guest_cfg)
    try:
        _wait_ready(url, [host, guest], path="/healthz")
        end = time.monotonic() + 30
        while "another-model" not in (ready := _http(url + "/readyz")[1])["hosts"]["host1"]:
            assert time.monotonic() < end, ready  # the host may still be starting
            time.sleep(0.3)
        assert ready["status"] == "not ready", ready
        status, out = _http(url + "/v1/score", _applicant(trained, 0))
        assert status == 503 and "serves model" in out["detail"], out
        _stop(host)
        status, out = _http(url + "/v1/score", _applicant(trained, 0))
        assert status == 200 and out["fallback"] == "host_average", out
        status, metrics = _http(url + "/metrics")
        assert 'vfl_host_call_failures_total{host="host1"}' in metrics["text"]
    finally:
        _stop(guest, host)
    strict = tmp_path / "strict"
    strict.mkdir()
    guest_cfg, _, url, _ = _configs(trained, pki, strict, fallback="error")
    guest = _spawn(guest_cfg)  # no host at all
    try:
        _wait_ready(url, [guest], path="/healthz")
        status, out = _http(url + "/v1/score", _applicant(trained, 0))
        assert status == 503 and "host1" in out["detail"], out
    finally:
        _stop(guest)


def test_a_new_model_pair_is_hot_reloaded_without_downtime(trained, pki, tmp_path):
    """New parts (model "model-v2") are written where [serve] model points while a client
    keeps scoring. SIGHUP to the guest first is refused (the host does not serve v2 yet) and
    v1 keeps serving; SIGHUP to the host, then to the guest: the guest switches to v2
    (model_version 2), and no request failed meanwhile."""
    import shutil
    import threading

    from vfl.model import load_model_part, save_model_part

    g_path, h_path = tmp_path / "guest.json", tmp_path / "host1.json"
    shutil.copy(trained.model_dir / "guest.json", g_path)
    shutil.copy(trained.model_dir / "host1.json", h_path)
    guest_cfg, host_cfg, url, _ = _configs(trained, pki, tmp_path, host_model=h_path,
                                           guest_model=g_path)
    host, guest = _spawn(host_cfg), _spawn(guest_cfg)
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def client() -> None:
        body = _applicant(trained, 0)
        while not stop.is_set():
            status, out = _http(url + "/v1/score", body)
            seen.append((status, out.get("model_id", "")))
            # about 100 requests a second: under the host's default rate limit (200 a second,
            # bursts of 400), which a client looping flat out on a quiet machine exceeds
            time.sleep(0.01)

    try:
        _wait_ready(url, [host, guest])
        t = threading.Thread(target=client)
        t.start()
        for path in (g_path, h_path):
            part = load_model_part(path)
            part.model_id = "model-v2"
            part.coef = [0.5 * c for c in part.coef]
            save_model_part(part, path)
        guest.send_signal(signal.SIGHUP)  # too early: the host does not serve v2
        time.sleep(1.5)
        assert _http(url + "/readyz")[1]["model_id"] == trained.guest_part.model_id
        host.send_signal(signal.SIGHUP)
        # the guest switches once the host serves v2 (it refuses until then: ask again)
        end = time.monotonic() + 30
        while _http(url + "/readyz")[1].get("model_version") != 2:
            assert time.monotonic() < end, "the guest did not switch"
            guest.send_signal(signal.SIGHUP)
            time.sleep(1.0)
        time.sleep(0.5)
        stop.set()
        t.join(timeout=30)
        status, ready = _http(url + "/readyz")
        assert status == 200 and ready["model_id"] == "model-v2", ready
    finally:
        stop.set()
        _stop(guest, host)
    assert seen and all(code == 200 for code, _ in seen), [s for s in seen if s[0] != 200][:3]
    models = [m for _, m in seen]
    assert models[0] == trained.guest_part.model_id and models[-1] == "model-v2"
    # no request mixed the models: once switched, every answer is v2's
    first_v2 = models.index("model-v2")
    assert set(models[first_v2:]) == {"model-v2"}
    err = guest.stderr.read() if guest.stderr else ""
    assert "reload refused" in err and "model-v2" in err, err


def test_a_host_keeps_the_model_just_before_the_new_one_across_reloads(trained, pki, tmp_path):
    """Reloads M1 -> M2 -> M3: the host serves [M2, M1], then [M3, M2] (the model the guest
    may still be on), never M1 and M3 alone; a retired DuckDB store is deleted only after
    requests in flight had their time."""
    import shutil

    from vfl.config import load_party_config
    from vfl.model import load_model_part, save_model_part
    from vfl.serving import service as svc

    h_path = tmp_path / "host1.json"
    shutil.copy(trained.model_dir / "host1.json", h_path)
    _, host_cfg, _, _ = _configs(trained, pki, tmp_path, host_model=h_path)
    host_cfg.write_text(host_cfg.read_text().replace('audit_log =', 'store = "duckdb"\naudit_log ='))
    service = svc.HostService(load_party_config(host_cfg))
    retired: list[tuple[object, bool]] = []
    service._retire = lambda m, delete: retired.append((m, delete))  # type: ignore[method-assign]
    try:
        first = service.scorer.model_ids
        for name in ("m2", "m3"):
            part = load_model_part(h_path)
            part.model_id = name
            save_model_part(part, h_path)
            service.reload()
        assert service.scorer.model_ids == ["m3", "m2"]
        assert [m.model_id for m, _ in retired] == first  # M1 only, and its store kept: the
        assert retired[0][1] is False                       # table (and its store) is shared
    finally:
        service.stop()


def test_a_body_without_a_length_or_too_long_is_refused_before_it_is_read(running):
    """411 for a chunked POST (no Content-Length), 413 for one that says more than 8 MiB;
    both counted in the metrics."""
    import http.client

    url, _, _, _ = running
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/v1/score")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"2\r\n{}\r\n0\r\n\r\n")
    assert conn.getresponse().status == 411
    conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/v1/score:batch")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(1 << 30))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and b"8388608" in resp.read()
    conn.close()
    _, metrics = _http(url + "/metrics")
    assert 'vfl_score_requests_total{endpoint="score",status="411"} 1.0' in metrics["text"]
    assert 'vfl_score_requests_total{endpoint="score_batch",status="413"} 1.0' in metrics["text"]


def test_a_party_started_twice_is_refused_at_once(trained, running):
    """Issue 25: the second `vfl serve` of a running party exits at once, naming the cause
    (its output folder is held; its port would be too), and the first keeps serving."""
    url, host, guest, tmp = running
    host_cfg = tmp / "host1.toml"
    second = subprocess.run([sys.executable, "-m", "vfl.cli", "serve", "--config",
                             str(host_cfg)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second
    assert re.search(r"in use by another 'vfl serve' \(pid \d+, host1\): is host1 already "
                     r"running\?", second.stderr), second.stderr
    assert host.poll() is None and guest.poll() is None
    assert _http(url + "/v1/score", _applicant(trained, 0))[0] == 200


def test_the_guest_api_does_not_start_without_authentication(trained, pki, tmp_path):
    guest_cfg, _, _, _ = _configs(trained, pki, tmp_path)
    text = guest_cfg.read_text()
    guest_cfg.write_text(text.replace('auth = "none"\n', ""))
    r = subprocess.run([sys.executable, "-m", "vfl.cli", "serve", "--config", str(guest_cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "[serve] auth is not set: the scoring API refuses to start without " \
           "authentication" in " ".join(r.stderr.split())
