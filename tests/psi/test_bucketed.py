"""Bucketed PSI: the same rows in the same order as the single-message protocol, and its checks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy.stats import binom

from vfl.exceptions import DataError, RemoteProtocolError
from vfl.psi import run_psi_guest, run_psi_host
from vfl.psi.buckets import (
    BucketClient,
    BucketServer,
    bucket_plan,
    check_plan,
    secret_permutation,
)
from vfl.psi.ecdh import BlindingPool
from vfl.psi.messages import PsiBucketResult, PsiBuckets
from vfl.psi.spill import IdSource, SpilledSet
from vfl.transport import InMemoryNetwork


def _ids(prefix: str, a: int, b: int) -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(a, b)]


def _run(guest_ids, host_sets, *, bucket_rows, workers=1, record=False):
    names = [f"host{i + 1}" for i in range(len(host_sets))]
    net = InMemoryNetwork(["guest", *names], timeout=120)
    transcripts = {n: net.endpoint(n).record_transcript() for n in ["guest", *names]} if record else {}
    out, errors = {}, []

    def host(name, ids):
        try:
            out[name] = run_psi_host(net.endpoint(name), ids, "guest", bucket_rows=bucket_rows,
                                     workers=workers)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=host, args=(n, ids)) for n, ids in zip(names, host_sets, strict=True)]
    for t in threads:
        t.start()
    out["guest"] = run_psi_guest(net.endpoint("guest"), guest_ids, names, bucket_rows=bucket_rows,
                                 workers=workers)
    for t in threads:
        t.join()
    assert not errors, errors
    return out, names, transcripts


def test_bucketed_equals_single_message_psi_order_included():
    rng = np.random.default_rng(11)
    universe = _ids("C", 0, 6000)
    guest = [universe[i] for i in rng.permutation(6000)[:4000]]
    host = [universe[i] for i in rng.permutation(6000)[:3500]]
    single, _, _ = _run(guest, [host], bucket_rows=1 << 20)
    bucketed, _, _ = _run(guest, [host], bucket_rows=300)
    assert bucket_plan(4000, 3500, 300).buckets == 16
    np.testing.assert_array_equal(bucketed["guest"], single["guest"])
    np.testing.assert_array_equal(bucketed["host1"], single["host1"])
    g = [guest[i] for i in bucketed["guest"]]
    assert g == [host[i] for i in bucketed["host1"]]
    assert set(g) == set(guest) & set(host)


def test_bucketed_with_two_hosts_and_with_worker_processes():
    rng = np.random.default_rng(5)
    universe = _ids("X", 0, 9000)
    a = [universe[i] for i in rng.permutation(9000)[:5000]]
    b = [universe[i] for i in rng.permutation(9000)[:6000]]
    c = [universe[i] for i in rng.permutation(9000)[:4500]]
    single, _, _ = _run(a, [b, c], bucket_rows=1 << 20)
    bucketed, _, _ = _run(a, [b, c], bucket_rows=700, workers=2)
    for party in ("guest", "host1", "host2"):
        np.testing.assert_array_equal(bucketed[party], single[party])
    assert len(single["guest"]) == len(set(a) & set(b) & set(c)) > 0


def test_a_small_host_beside_a_bucketed_one_is_bucketed_too():
    # guest and host1 fit one bucket (a single-message pair alone); host2 needs buckets, so the
    # guest buckets both hosts with host2's bits (one lockstep run, no host left waiting)
    a = _ids("K", 0, 250)
    small = _ids("K", 100, 300)
    big = _ids("K", 0, 1200)
    single, _, _ = _run(a, [small, big], bucket_rows=1 << 20)
    mixed, _, _ = _run(a, [small, big], bucket_rows=260)
    assert bucket_plan(250, 200, 260) is None and bucket_plan(250, 1200, 260) is not None
    for party in ("guest", "host1", "host2"):
        np.testing.assert_array_equal(mixed[party], single[party])


def test_file_source_streams_the_same_ids(tmp_path):
    pd = pytest.importorskip("pandas")
    guest = _ids("F", 0, 3000)
    host = _ids("F", 1000, 5000)
    path = tmp_path / "host.csv"
    pd.DataFrame({"id": host, "x": np.arange(len(host))}).to_csv(path, index=False)
    pytest.importorskip("vfl.tableio", reason="vfl.tableio (chunked table reading) not built yet")
    single, _, _ = _run(guest, [host], bucket_rows=1 << 20)
    streamed, _, _ = _run(guest, [IdSource.from_file(path, "id", batch_rows=500)],
                          bucket_rows=400)
    np.testing.assert_array_equal(streamed["host1"], single["host1"])
    np.testing.assert_array_equal(streamed["guest"], single["guest"])


def test_padding_hides_the_bucket_histogram():
    """Every bucket message has the same size whatever the IDs' spread over buckets."""
    guest = _ids("G", 0, 2000)
    spread = _ids("H", 0, 2000)
    # a host set of the same size whose IDs crowd into the first buckets (within the cap)
    from vfl.psi.ecdh import order_key
    want = [380, 380, 380, 380, 200, 150, 80, 50]
    crowded: list[str] = []
    for i in range(100_000):
        b = order_key(f"Z{i}")[0] >> 5
        if want[b]:
            want[b] -= 1
            crowded.append(f"Z{i}")
    assert len(crowded) == 2000
    sizes = []
    for host in (spread, crowded):
        _, _, tr = _run(guest, [host], bucket_rows=300, record=True)
        sizes.append([len(data) for kind, _, data in tr["host1"] if kind == "sent"])
    assert sizes[0] == sizes[1]
    assert len(sizes[0]) == 1 + 8  # hello and one response per bucket


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000, 10_000_000, 50_000_000])
@pytest.mark.parametrize("other", [500, 2_000_000, 20_000_000])
def test_padded_cap_overflows_with_negligible_probability(n, other):
    plan = bucket_plan(n, other)
    if plan is None:
        return
    # the probability that any of the B buckets exceeds the cap (union bound), exact binomial tail
    p = plan.buckets * binom.sf(plan.client_cap, n, 1 / plan.buckets)
    assert p < 1e-12
    assert plan.client_cap <= n
    # and the padding costs a few percent at bank scale
    if n >= 1_000_000 and n >= other:
        assert plan.buckets * plan.client_cap < 1.06 * n


def test_duplicate_ids_are_refused_with_their_lines(tmp_path):
    ids = _ids("D", 0, 500) + ["D0000007"]
    with BlindingPool(1) as pool, \
            pytest.raises(DataError, match=r"duplicate IDs \(line\(s\) 9, 502\)"):
        SpilledSet(IdSource.from_sequence(ids, "bank.csv"), 2, pool, cap=500, workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_permutation_is_a_permutation():
    p = secret_permutation(1000)
    assert sorted(p.tolist()) == list(range(1000))
    assert not np.array_equal(p, secret_permutation(1000))


# ------------------------------------------------------------------------- deviating peers
def test_server_refuses_a_plan_with_too_few_or_too_many_buckets():
    plan = bucket_plan(5000, 5000, 500)
    assert check_plan(plan.message(), 5000, 5000, peer="guest", bucket_rows=500,
                   max_points=10**9) == plan
    fewer = bucket_plan(5000, 5000, 500, bits=plan.bits - 1)
    with pytest.raises(RemoteProtocolError, match="guest proposed 2\\^3 PSI buckets"):
        check_plan(fewer.message(), 5000, 5000, peer="guest", bucket_rows=500,
                   max_points=10**9)
    many = bucket_plan(5000, 5000, 500, bits=12)
    with pytest.raises(RemoteProtocolError, match="more than triple"):
        check_plan(many.message(), 5000, 5000, peer="guest", bucket_rows=500,
                   max_points=10**9)
    with pytest.raises(RemoteProtocolError, match="caps"):
        check_plan(PsiBuckets(plan.bits, plan.client_cap + 50, plan.server_cap), 5000, 5000,
                   peer="guest", bucket_rows=500, max_points=10**9)


def _pair(tmp_path, guest, host, bucket_rows):
    plan = bucket_plan(len(guest), len(host), bucket_rows)
    pool_c, pool_s = BlindingPool(1), BlindingPool(1)
    sc = SpilledSet(IdSource.from_sequence(guest), plan.bits, pool_c, cap=plan.client_cap,
                    workdir=tmp_path)
    ss = SpilledSet(IdSource.from_sequence(host), plan.bits, pool_s, cap=plan.server_cap,
                    workdir=tmp_path)
    return plan, BucketClient(sc, {"host1": plan}, pool_c), BucketServer(ss, plan, pool_s)


def test_server_refuses_results_that_keep_padding_or_skip_buckets(tmp_path):
    plan, client, server = _pair(tmp_path, _ids("P", 0, 1000), _ids("P", 500, 1500), 200)
    server.on_request(client.request())
    with pytest.raises(RemoteProtocolError, match="bucket 1; expected 0"):
        server.on_result(PsiBucketResult(1, np.zeros(0, dtype=np.int64)))
    plan, client, server = _pair(tmp_path, _ids("P", 0, 1000), _ids("P", 500, 1500), 200)
    server.on_request(client.request())
    # the server's padding entries sit at the positions its permutation gave them; an attacker
    # keeping every position must hit one
    everything = np.arange(plan.server_cap, dtype=np.int64)
    if plan.server_cap <= plan.client_cap:
        with pytest.raises(RemoteProtocolError, match="padding"):
            server.on_result(PsiBucketResult(0, everything))


def test_client_and_server_count_points_before_blinding(tmp_path):
    from vfl.psi.messages import PsiBucketRequest, PsiBucketResponse
    plan, client, server = _pair(tmp_path, _ids("Q", 0, 1000), _ids("Q", 0, 1000), 200)
    req = client.request()
    with pytest.raises(RemoteProtocolError, match="expected"):
        server.on_request(PsiBucketRequest(0, req.blinded[:-32]))
    with pytest.raises(RemoteProtocolError, match="bucket 3; expected 0"):
        server.on_request(PsiBucketRequest(3, req.blinded))
    resp = server.on_request(req)
    with pytest.raises(RemoteProtocolError, match="expected"):
        client.on_response("host1", PsiBucketResponse(0, resp.double_blinded,
                                                      resp.blinded + resp.blinded[:32]))
    client.on_response("host1", resp)
    results, rows = client.finish()
    kept = server.on_result(results["host1"])
    assert len(kept) == len(rows) > 0


def test_pool_blinding_equals_openssl_x25519_and_refuses_small_order():
    """libsodium (the pool) against cryptography's OpenSSL X25519, an independent reference."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    from vfl.psi.ecdh import hash_to_point
    points = b"".join(hash_to_point(f"id{i}") for i in range(300))
    with BlindingPool(1) as pool:
        reference = X25519PrivateKey.from_private_bytes(pool._scalar)
        want = b"".join(reference.exchange(X25519PublicKey.from_public_bytes(points[i:i + 32]))
                        for i in range(0, len(points), 32))
        assert pool.blind(points) == want
        with pytest.raises(RemoteProtocolError, match="Point 2 from mallory is of small order"):
            pool.blind(points[:64] + bytes(32), peer="mallory")


def test_padded_slots_count_against_the_servers_set_size_limit():
    """A deviating client asking for many small buckets fills their padding with guesses.

    1,000 announced IDs against 1M: the honest plan (2^3 buckets) pads to 1,784 points; a plan
    of 2^14 buckets, within the 3x work rule, would give the client 180,224 membership answers.
    The server counts the padded total against its max_psi_set_size.
    """
    honest = bucket_plan(1000, 1_000_000)
    assert honest.bits == 3 and honest.buckets * honest.client_cap == 1784
    assert check_plan(honest.message(), 1000, 1_000_000, peer="guest", max_points=50_000) == honest
    greedy = bucket_plan(1000, 1_000_000, bits=14)
    assert greedy.buckets * (greedy.client_cap + greedy.server_cap) <= 3 * 1_001_000 + 64
    with pytest.raises(RemoteProtocolError, match=r"180,224 points .* limit of 50,000"):
        check_plan(greedy.message(), 1000, 1_000_000, peer="guest", max_points=50_000)


def test_the_client_counts_a_hosts_padded_buckets_against_its_own_limit():
    from vfl.policy import DEFAULT_POLICY
    net = InMemoryNetwork(["guest", "host1"], timeout=30)
    errors = []

    def host():
        try:
            run_psi_host(net.endpoint("host1"), _ids("L", 0, 5000), "guest", bucket_rows=300,
                         workers=1)
        except Exception as exc:  # noqa: BLE001 - the guest's refusal reaches the host
            errors.append(exc)

    th = threading.Thread(target=host)
    th.start()
    guest_ep = net.endpoint("guest")
    with pytest.raises(RemoteProtocolError, match=r"host1's PSI buckets would hold 8,480 points"):
        try:
            run_psi_guest(guest_ep, _ids("L", 0, 3000), ["host1"], bucket_rows=300, workers=1,
                          policy=DEFAULT_POLICY.replace(max_psi_set_size=5500))
        except RemoteProtocolError:
            guest_ep.abort("protocol")
            raise
    th.join()
    assert errors  # the host stopped too, having blinded nothing


def test_a_server_repeating_double_blinded_points_is_refused(tmp_path):
    """Copying one matching value everywhere would make every client ID 'match' this server."""
    from vfl.psi import PsiClient, PsiServer
    from vfl.psi.messages import PsiBucketResponse, PsiResponse

    plan, client, server = _pair(tmp_path, _ids("R", 0, 1000), _ids("R", 0, 1000), 200)
    resp = server.on_request(client.request())
    first = resp.double_blinded[:32]
    with pytest.raises(RemoteProtocolError, match="repeats double-blinded points"):
        client.on_response("host1", PsiBucketResponse(0, first * plan.client_cap, resp.blinded))
    # the single-message protocol too
    c, s = PsiClient(["a", "b", "c"], ["host1"]), PsiServer(["a", "x"])
    c.on_hello("host1", s.on_hello(c.hello()))
    r = s.on_request(c.request())
    with pytest.raises(RemoteProtocolError, match="repeats double-blinded points"):
        c.on_response("host1", PsiResponse(r.double_blinded[:32] * 3, r.blinded))
