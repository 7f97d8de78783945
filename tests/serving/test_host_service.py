"""The host's scoring service (issue 14, item 1): a real gRPC server with mutual TLS and the
guest's real client, against the batch predictions of the same model."""

from __future__ import annotations

import datetime as dt
import json
import time

import grpc
import numpy as np
import pytest

from vfl.demo import free_ports
from vfl.jobs import encode_for_part
from vfl.lr.estimator import GuestLogisticRegression
from vfl.pipeline import predict_local
from vfl.serving.grpc import HostClient, HostUnavailable, ScoringServer
from vfl.serving.host import AuditLog, HostModel, HostScorer, ServeLimits, ServingError
from vfl.serving.messages import PartialScoreRequest

from ..transport.conftest import tls


@pytest.fixture
def service(trained, pki, tmp_path):
    """The host's service on a free port; yields (client as guest, server, audit path)."""
    made = []

    def start(limits=None, caller="guest", **kw):
        audit = tmp_path / "audit.jsonl"
        scorer = HostScorer([HostModel(trained.host_part, trained.host)], guest="guest",
                            limits=limits or ServeLimits(), audit=AuditLog(audit), **kw)
        (port,) = free_ports(1)
        server = ScoringServer(scorer, party="host1", listen=f"127.0.0.1:{port}",
                               tls=tls(pki, "host1"))
        client = HostClient("host1", f"127.0.0.1:{server.port}", tls(pki, caller),
                            party=caller, timeout=5)
        made.append((server, client))
        return client, server, audit

    yield start
    for server, client in made:
        client.close()
        server.stop()


def test_served_scores_give_the_batch_probabilities(trained, service):
    """Guest partial score + the host's served partial score, calibrated, equals vfl predict's
    probability of the same customer to 1e-12, for every shared customer."""
    client, server, audit = service()
    batch = predict_local(trained.model_dir, trained.guest, [trained.host])
    batch = batch[batch["matched"]]
    ids = [str(i) for i in batch["id"]]
    g = trained.guest.select(trained.guest_part.features)
    at = {cid: i for i, cid in enumerate(g.ids)}
    rows = np.asarray([at[i] for i in ids])
    est = GuestLogisticRegression.from_part(trained.guest_part)
    own = est.partial_score(encode_for_part(trained.guest_part, g.X[rows]))
    host = np.concatenate([client.partial_scores(trained.host_part.model_id, ids[i:i + 100]).scores
                           for i in range(0, len(ids), 100)])
    cal = trained.guest_part.calibration
    s = own + host
    if cal is not None:
        s = cal["slope"] * s + cal["intercept"]
    served = 1.0 / (1.0 + np.exp(-s))
    assert len(ids) > 300
    assert np.max(np.abs(served - batch["probability"].to_numpy())) <= 1e-12
    assert server.counts["answered"] == -(-len(ids) // 100)
    lines = audit.read_text().splitlines()
    assert len(lines) == server.counts["answered"]
    first = json.loads(lines[0])
    assert first["caller"] == "guest" and first["customers"] == ids[:100]
    assert first["known"] == 100 and first["model_id"] == trained.host_part.model_id
    assert audit.stat().st_mode & 0o077 == 0


def test_an_unknown_customer_is_flagged_not_scored(trained, service):
    client, _, _ = service()
    known_id = trained.host.ids[0]
    reply = client.partial_scores(trained.host_part.model_id, ["no-such-customer", known_id])
    assert client.known(reply).tolist() == [False, True]
    assert reply.scores[0] == 0.0 and reply.scores[1] != 0.0


def test_points_come_at_the_scale_asked(trained, service):
    from vfl.scorecard import part_points_table

    client, _, _ = service()
    ids = trained.host.ids[:5]
    reply = client.partial_scores(trained.host_part.model_id, ids, scale=28.85)
    table = part_points_table(trained.host_part, scale=28.85)
    want = table.score(trained.host.select(trained.host_part.features).X[:5])
    assert reply.points.tolist() == want.tolist()
    assert client.partial_scores(trained.host_part.model_id, ids).points.size == 0


def test_a_wrong_model_id_is_refused(trained, service):
    client, server, audit = service()
    with pytest.raises(ServingError, match="serves model") as info:
        client.partial_scores("not-the-model", trained.host.ids[:2])
    assert info.value.code == "unknown_model"
    assert server.counts["unknown_model"] == 1 and not audit.read_text()


def test_a_caller_other_than_the_guest_is_refused(trained, service):
    """A valid certificate of the federation, but not the host's guest: refused, nothing
    scored or logged."""
    client, server, audit = service(caller="outsider")
    with pytest.raises(ServingError, match="from its guest only") as info:
        client.partial_scores(trained.host_part.model_id, trained.host.ids[:2])
    assert info.value.code == "forbidden" and not audit.read_text()


def test_a_caller_without_a_valid_certificate_never_reaches_the_scorer(trained, service, pki,
                                                                      tmp_path):
    from vfl.certs import write_party_certs

    _, server, audit = service()
    other = tmp_path / "other-ca"
    write_party_certs(other, ["guest"])  # a 'guest' certificate of another CA
    rogue = HostClient("host1", f"127.0.0.1:{server.port}", tls(other, "guest"), party="guest",
                       timeout=3)
    try:
        with pytest.raises(HostUnavailable):
            rogue.partial_scores(trained.host_part.model_id, trained.host.ids[:2])
    finally:
        rogue.close()
    # and without any client certificate
    ch = grpc.secure_channel(f"127.0.0.1:{server.port}", grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes()),
        options=[("grpc.ssl_target_name_override", "host1")])
    try:
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary("/vfl.v1.Scoring/PartialScore")(b"x", timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ch.close()
    assert sum(server.counts.values()) == 0 and not audit.read_text()


def test_the_rate_limit_and_the_daily_budget_are_enforced(trained, service):
    now = [0.0]
    day = [dt.date(2026, 11, 26)]
    client, server, _ = service(ServeLimits(max_ids_per_request=5, requests_per_second=1.0,
                                            burst=2, daily_id_budget=12),
                                clock=lambda: now[0], today=lambda: day[0])
    mid, ids = trained.host_part.model_id, trained.host.ids
    client.partial_scores(mid, ids[:5])
    client.partial_scores(mid, ids[:5])
    with pytest.raises(ServingError, match="requests per second") as info:  # burst of 2 used
        client.partial_scores(mid, ids[:1])
    assert info.value.code == "rate_limited"
    now[0] = 1.0  # one token back
    with pytest.raises(ServingError, match="budget of 12") as info:  # 10 used, 5 more > 12
        client.partial_scores(mid, ids[:5])
    assert info.value.code == "budget_exhausted"
    client.partial_scores(mid, ids[:2])  # 12 of 12
    day[0] = dt.date(2026, 11, 27)  # a new UTC day: the budget is back
    now[0] = 5.0
    client.partial_scores(mid, ids[:5])
    with pytest.raises(ServingError, match="at most 5") as info:
        client.partial_scores(mid, ids[:6])
    assert info.value.code == "invalid"
    assert server.counts["answered"] == 4


def test_malformed_requests_are_refused_with_the_reason(trained, pki, service):
    from vfl.codec import Envelope, encode_envelope

    _, server, _ = service()
    ca, cert, key = tls(pki, "guest").read()
    ch = grpc.secure_channel(f"127.0.0.1:{server.port}", grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert),
        options=[("grpc.ssl_target_name_override", "host1")])
    call = ch.unary_unary("/vfl.v1.Scoring/PartialScore")
    try:
        for data, match in [
            (b"\x00garbage", "malformed request"),
            (encode_envelope(Envelope("serve", 0, "guest", "host1",
                                      PartialScoreRequest("m", ["x" * 257]))), "1 to 256"),
            (encode_envelope(Envelope("serve", 0, "outsider", "host1",
                                      PartialScoreRequest("m", ["a"]))), "expected a serve"),
            (encode_envelope(Envelope("serve", 0, "guest", "host1",
                                      PartialScoreRequest(trained.host_part.model_id, ["a"],
                                                          -1.0))), "points scale"),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                call(data, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert match in info.value.details()
    finally:
        ch.close()
    assert server.counts["answered"] == 0


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_duckdb_store_scores_as_the_table_in_memory(trained, tmp_path, fmt):
    """store = "duckdb" (tables larger than memory): the same partial scores (to 1e-12) and
    points for known and unknown customers; the store is reused while the source is unchanged
    and rebuilt when it changes."""
    import pandas as pd

    from vfl.serving.host import StoredHostModel

    source = trained.host_csv
    if fmt == "parquet":
        source = tmp_path / "bank_b.parquet"
        pd.read_csv(trained.host_csv, dtype={"customer_id": str}).to_parquet(source)
    store = tmp_path / "store.duckdb"
    stored = StoredHostModel(trained.host_part, source, store, id_column="customer_id")
    memory = HostModel(trained.host_part, trained.host)
    ids = [*trained.host.ids[:40], "nobody", f"  {trained.host.ids[7]} "]
    for scale in (0.0, 28.85):
        k1, s1, p1 = stored.lookup(ids, scale)
        k2, s2, p2 = memory.lookup(ids, scale)
        assert k1.tolist() == k2.tolist() and k1.sum() == 41  # the padded ID is stripped
        assert np.max(np.abs(s1 - s2)) <= 1e-12
        assert p1.tolist() == p2.tolist()
    assert stored.n_customers == memory.n_customers
    path = stored.store  # named by a digest of the source file and the model's columns
    assert path.parent == tmp_path and path.stat().st_mode & 0o077 == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vfl-store-")]
    built = path.stat().st_mtime_ns
    again = StoredHostModel(trained.host_part, source, store, id_column="customer_id")
    assert again.store == path and path.stat().st_mtime_ns == built  # reused
    time.sleep(0.01)
    source.write_bytes(source.read_bytes())  # touched: a new store file
    fresh = StoredHostModel(trained.host_part, source, store, id_column="customer_id")
    assert fresh.store != path and fresh.lookup(ids, 0.0)[0].sum() == 41
    for m in (stored, again, fresh):
        m.close()


def test_a_duckdb_store_refuses_duplicate_ids(trained, tmp_path):
    import pandas as pd

    from vfl.exceptions import ConfigError
    from vfl.serving.host import StoredHostModel

    df = pd.read_csv(trained.host_csv, dtype={"customer_id": str})
    pd.concat([df, df.iloc[:2]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ConfigError, match="duplicate IDs on line"):
        StoredHostModel(trained.host_part, tmp_path / "dup.csv", tmp_path / "s.duckdb",
                        id_column="customer_id")


def test_a_pin_that_is_not_the_guests_valid_certificate_is_refused_at_start(trained, pki):
    """A pinned guest certificate is checked as training checks pins: an unreadable file or
    another party's certificate is a configuration error, never "no pin"."""
    from vfl.exceptions import ConfigError

    scorer = HostScorer([HostModel(trained.host_part, trained.host)], guest="guest")
    (port,) = free_ports(1)
    for pem, match in [(b"not a certificate", "not a PEM certificate"),
                       ((pki / "outsider.pem").read_bytes(), "not issued to 'guest'")]:
        with pytest.raises(ConfigError, match=match):
            ScoringServer(scorer, party="host1", listen=f"127.0.0.1:{port}",
                          tls=tls(pki, "host1"), pinned_guest=pem)
    server = ScoringServer(scorer, party="host1", listen=f"127.0.0.1:{port}",
                           tls=tls(pki, "host1"), pinned_guest=(pki / "guest.pem").read_bytes())
    client = HostClient("host1", f"127.0.0.1:{server.port}", tls(pki, "guest"), party="guest")
    try:
        assert client.partial_scores(trained.host_part.model_id, trained.host.ids[:1]).scores[0]
    finally:
        client.close()
        server.stop()


def test_the_daily_budget_survives_a_restart_of_the_host(trained, tmp_path):
    """Today's count is kept beside the audit log: a restarted host does not give the guest
    a fresh budget; a new UTC day does."""
    day = [dt.date(2026, 11, 26)]
    state = tmp_path / "audit.jsonl.budget.json"

    def scorer():
        return HostScorer([HostModel(trained.host_part, trained.host)], guest="guest",
                          limits=ServeLimits(daily_id_budget=10), today=lambda: day[0],
                          budget_file=state)

    first = scorer()
    first.score("guest", PartialScoreRequest(trained.host_part.model_id, trained.host.ids[:7]))
    first.save_budget(force=True)
    again = scorer()  # the host restarted
    assert again.used_today == 7
    with pytest.raises(ServingError, match="budget of 10"):
        again.score("guest", PartialScoreRequest(trained.host_part.model_id,
                                                 trained.host.ids[:4]))
    day[0] = dt.date(2026, 11, 27)
    assert scorer().used_today == 0
    state.write_text("not json")
    from vfl.exceptions import ConfigError
    with pytest.raises(ConfigError, match="daily-budget state"):
        scorer()


def test_the_limits_are_per_model(trained, tmp_path):
    """Issue 25: the daily budget and the rate limit are scoped per model (the caller is the
    one guest): using up one model's budget leaves the other's, and both are kept."""
    import dataclasses

    state = tmp_path / "audit.jsonl.budget.json"
    other = dataclasses.replace(trained.host_part, model_id="model-v2")
    day = [dt.date(2026, 12, 8)]

    def scorer():
        return HostScorer([HostModel(trained.host_part, trained.host),
                           HostModel(other, trained.host)], guest="guest",
                          limits=ServeLimits(daily_id_budget=10, burst=3,
                                             requests_per_second=1e-3),
                          today=lambda: day[0], budget_file=state)

    s = scorer()
    ids = trained.host.ids
    s.score("guest", PartialScoreRequest(trained.host_part.model_id, ids[:10]))
    with pytest.raises(ServingError, match="budget of 10 customer IDs for model"):
        s.score("guest", PartialScoreRequest(trained.host_part.model_id, ids[:1]))
    assert s.score("guest", PartialScoreRequest("model-v2", ids[:6])).scores.shape == (6,)
    # the rate limit too: three requests in a burst per model
    s.score("guest", PartialScoreRequest("model-v2", ids[:1]))
    s.score("guest", PartialScoreRequest("model-v2", ids[:1]))
    with pytest.raises(ServingError, match="requests per second for model model-v2"):
        s.score("guest", PartialScoreRequest("model-v2", ids[:1]))
    s.save_budget(force=True)
    again = scorer()
    assert again.used_today_by_model() == {trained.host_part.model_id: 10, "model-v2": 8}
    assert again.used_today == 18
