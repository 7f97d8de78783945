"""ECDH PSI: exact intersection, alignment, multi-host, what the transcript shows."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vfl.exceptions import DataError, LocalProtocolError, RemoteProtocolError
from vfl.psi import PsiClient, PsiServer, hash_to_point, run_psi_guest, run_psi_host
from vfl.psi.messages import PsiHello, PsiRequest, PsiResponse, PsiResult
from vfl.transport import InMemoryNetwork


def _run(guest_ids, host_ids_list, record=False):
    names = [f"host{i + 1}" for i in range(len(host_ids_list))]
    net = InMemoryNetwork(["guest", *names])
    transcripts = {n: net.endpoint(n).record_transcript() for n in ["guest", *names]} if record else {}
    out = {}

    def host(name, ids):
        out[name] = run_psi_host(net.endpoint(name), ids, "guest")

    threads = [threading.Thread(target=host, args=(n, ids))
               for n, ids in zip(names, host_ids_list, strict=True)]
    for t in threads:
        t.start()
    out["guest"] = run_psi_guest(net.endpoint("guest"), guest_ids, names)
    for t in threads:
        t.join()
    return out, names, transcripts


def test_exact_intersection_and_common_order():
    guest = [f"C-{i:06d}" for i in range(0, 2000)]
    host = [f"C-{i:06d}" for i in range(1500, 4000)] + ["only-host"]
    out, names, _ = _run(guest, [host])
    g = [guest[i] for i in out["guest"]]
    h = [host[i] for i in out["host1"]]
    assert g == h
    assert set(g) == set(guest) & set(host)
    assert len(g) == 500


def test_three_parties_intersect_over_all():
    rng = np.random.default_rng(3)
    universe = [f"id{i}" for i in range(3000)]
    a = [universe[i] for i in rng.choice(3000, 1500, replace=False)]
    b = [universe[i] for i in rng.choice(3000, 2000, replace=False)]
    c = [universe[i] for i in rng.choice(3000, 2500, replace=False)]
    out, names, _ = _run(a, [b, c])
    ga = [a[i] for i in out["guest"]]
    assert ga == [b[i] for i in out["host1"]] == [c[i] for i in out["host2"]]
    assert set(ga) == set(a) & set(b) & set(c)


def test_empty_intersection():
    out, _, _ = _run(["a", "b"], [["c", "d"]])
    assert len(out["guest"]) == 0 and len(out["host1"]) == 0


def test_transcript_contains_no_raw_ids_or_unblinded_hashes():
    guest = [f"guest-secret-{i:05d}" for i in range(300)]
    host = [f"guest-secret-{i:05d}" for i in range(150, 450)]
    _, _, transcripts = _run(guest, [host], record=True)
    for party, ids in (("guest", guest), ("host1", host)):
        sent = b"".join(data for direction, _, data in transcripts[party] if direction == "sent")
        assert sent, "nothing recorded"
        for x in ids:
            assert x.encode() not in sent
            assert hash_to_point(x) not in sent


def test_common_order_is_shuffled():
    ids = [f"x{i}" for i in range(500)]
    out, _, _ = _run(ids, [list(ids)])
    assert sorted(out["guest"].tolist()) == list(range(500))
    assert out["guest"].tolist() != list(range(500))


def test_hash_to_point_is_deterministic_and_separates():
    assert hash_to_point("abc") == hash_to_point("abc")
    assert hash_to_point("abc") != hash_to_point("abd")
    assert int.from_bytes(hash_to_point("abc"), "little") < 2**255 - 19


def test_duplicates_refused():
    with pytest.raises(DataError):
        PsiClient(["a", "a"], ["host1"])
    with pytest.raises(DataError):
        PsiServer(["a", "a"])


def test_malformed_peer_messages():
    client = PsiClient(["a", "b"], ["host1"])
    client.on_hello("host1", PsiHello(0))
    client.request()
    with pytest.raises(RemoteProtocolError, match="multiple of 32"):
        client.on_response("host1", PsiResponse(b"\x01" * 33, b""))
    with pytest.raises(RemoteProtocolError, match="expected 2"):
        client.on_response("host1", PsiResponse(b"\x09" * 32, b""))
    server = PsiServer(["a", "b", "c"])
    server.on_hello(PsiHello(1))
    server.on_request(PsiRequest(hash_to_point("z")))
    with pytest.raises(RemoteProtocolError, match="out of range"):
        server.on_result(PsiResult(np.array([5], dtype=np.int64)))
    server = PsiServer(["a", "b", "c"])
    server.on_hello(PsiHello(2))
    server.on_request(PsiRequest(hash_to_point("y") + hash_to_point("z")))
    with pytest.raises(RemoteProtocolError, match="repeats"):
        server.on_result(PsiResult(np.array([1, 1], dtype=np.int64)))


def test_small_order_point_refused():
    server = PsiServer(["a"])
    server.on_hello(PsiHello(1))
    with pytest.raises(RemoteProtocolError, match="small order"):
        server.on_request(PsiRequest(bytes(32)))


def test_steps_out_of_order_refused():
    client = PsiClient(["a"], ["host1"])
    with pytest.raises(LocalProtocolError, match="No PSI hello yet from host1"):
        client.request()
    client.on_hello("host1", PsiHello(1))
    with pytest.raises(RemoteProtocolError, match="Second PSI hello from host1"):
        client.on_hello("host1", PsiHello(1))
    server = PsiServer(["a"])
    with pytest.raises(RemoteProtocolError, match="before its set size"):
        server.on_request(PsiRequest(hash_to_point("a")))
    assert server.on_hello(PsiHello(1)) == PsiHello(1)
    with pytest.raises(RemoteProtocolError, match="Second PSI hello from guest"):
        server.on_hello(PsiHello(1))


def test_hello_round_trips_and_sizes_are_exchanged():
    from vfl.codec import Envelope, decode_envelope, encode_envelope
    env = Envelope("job", 0, "guest", "host1", PsiHello(300))
    assert decode_envelope(encode_envelope(env)).body == PsiHello(300)
    client = PsiClient([f"g{i}" for i in range(3)], ["host1"])
    server = PsiServer([f"g{i}" for i in range(5)])
    client.on_hello("host1", server.on_hello(client.hello()))
    assert server.client_size == 3 and client.server_size("host1") == 5
