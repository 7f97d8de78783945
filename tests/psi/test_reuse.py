"""Reusing the intersection of an interrupted job (protocols/specs/psi.md, "Reusing the
intersection"): a resumed job whose IDs did not change takes the rows it kept, without a PSI
run; any change, on any party, runs PSI again; the result is what PSI would give."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from vfl.checkpoint import CheckpointError, CheckpointStore
from vfl.codec import decode_envelope
from vfl.psi import run_psi_guest, run_psi_host
from vfl.transport import InMemoryNetwork

JOB = "job-psi-reuse"


def _ids(prefix: str, a: int, b: int) -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(a, b)]


def _store(root: Path, party: str, resume: bool, job: str = JOB) -> CheckpointStore:
    return CheckpointStore(root / party, party=party, role="guest" if party == "guest" else "host",
                           job=job, resume=resume)


def _run(root: Path, guest_ids, host_sets, *, resume: bool, bucket_rows: int = 1 << 20,
         job: str = JOB):
    """PSI as guest_fit_job/host_fit_job run it: offer what was kept, keep what ran."""
    names = [f"host{i + 1}" for i in range(len(host_sets))]
    net = InMemoryNetwork(["guest", *names])
    sent = {n: net.endpoint(n).record_transcript() for n in ["guest", *names]}
    out, used = {}, {}

    def party(name, ids, fn):
        store = _store(root, name, resume, job)
        peers = names if name == "guest" else ["guest"]
        offer = store.kept_psi("train", ids, peers)
        rows = fn(net.endpoint(name), ids, offer)
        used[name] = offer is not None and offer.used
        if not used[name]:
            store.keep_psi("train", ids, rows, peers)
        out[name] = rows

    threads = [threading.Thread(target=party, args=(n, ids, lambda ch, i, o: run_psi_host(
        ch, i, "guest", bucket_rows=bucket_rows, reuse=o)))
        for n, ids in zip(names, host_sets, strict=True)]
    for t in threads:
        t.start()
    party("guest", guest_ids, lambda ch, i, o: run_psi_guest(ch, i, names,
                                                              bucket_rows=bucket_rows, reuse=o))
    for t in threads:
        t.join()
    types = {n: [decode_envelope(d, peer=n).body.__class__.__name__ for direction, _, d in tr
                 if direction == "sent"] for n, tr in sent.items()}
    return out, used, types


@pytest.mark.parametrize("bucket_rows", [1 << 20, 300])
def test_a_resumed_job_takes_the_kept_rows_and_exchanges_no_point(tmp_path, bucket_rows):
    guest = _ids("C", 0, 900)
    host = _ids("C", 500, 1400)
    first, used, _ = _run(tmp_path, guest, [host], resume=False, bucket_rows=bucket_rows)
    assert not any(used.values())
    again, used, types = _run(tmp_path, guest, [host], resume=True, bucket_rows=bucket_rows)
    assert all(used.values())
    assert types == {"guest": ["PsiHello", "PsiReuse"], "host1": ["PsiHello"]}  # no point
    for name in first:
        assert np.array_equal(again[name], first[name])
    assert [guest[i] for i in again["guest"]] == [host[i] for i in again["host1"]]


def test_changed_ids_on_either_side_run_psi_again_with_the_new_result(tmp_path):
    guest = _ids("C", 0, 900)
    host = _ids("C", 500, 1400)
    _run(tmp_path, guest, [host], resume=False)
    host2 = host + ["C000100"]  # the host gained a customer the guest has
    out, used, types = _run(tmp_path, guest, [host2], resume=True)
    assert not any(used.values()) and "PsiRequest" in types["guest"]
    assert len(out["guest"]) == 401
    guest2 = guest[:-1]  # the guest lost one: the hosts' kept results no longer match
    out, used, _ = _run(tmp_path, guest2, [host2], resume=True)
    assert not any(used.values()) and len(out["guest"]) == 400
    out, used, _ = _run(tmp_path, guest2, [host2], resume=True)  # unchanged now: reused
    assert all(used.values()) and len(out["guest"]) == 400


def test_one_host_without_a_kept_result_makes_every_party_run_psi(tmp_path):
    guest, h1, h2 = _ids("C", 0, 900), _ids("C", 300, 1200), _ids("C", 600, 1500)
    first, _, _ = _run(tmp_path, guest, [h1, h2], resume=False)
    (tmp_path / "host2" / "host2.psi-train").unlink()
    again, used, types = _run(tmp_path, guest, [h1, h2], resume=True)
    assert not any(used.values()) and "PsiRequest" in types["guest"]
    for name in first:
        assert np.array_equal(again[name], first[name])


def test_a_kept_result_of_another_job_or_without_resume_is_not_offered(tmp_path):
    guest, host = _ids("C", 0, 300), _ids("C", 100, 400)
    _run(tmp_path, guest, [host], resume=False)
    assert _store(tmp_path, "guest", resume=False).kept_psi("train", guest, ["host1"]) is None
    with pytest.raises(CheckpointError, match="not guest's kept PSI result of job 'other'"):
        _store(tmp_path, "guest", resume=True, job="other").kept_psi("train", guest, ["host1"])


def test_a_kept_result_stores_no_id_and_an_altered_one_is_refused(tmp_path):
    guest, host = _ids("CUST", 0, 300), _ids("CUST", 100, 400)
    _run(tmp_path, guest, [host], resume=False)
    path = tmp_path / "guest" / "guest.psi-train"
    data = path.read_bytes()
    assert b"CUST" not in data  # row indices and digests only
    assert path.stat().st_mode & 0o077 == 0
    store = _store(tmp_path, "guest", resume=True)
    assert store.kept_psi("train", guest, ["host1"]) is not None
    # the rows swapped for others of the same count: the digest no longer matches
    env = decode_envelope(data, peer="test")
    import dataclasses

    from vfl.codec import Envelope, encode_envelope
    kept = env.body
    forged = dataclasses.replace(kept, rows=np.arange(len(kept.rows), dtype=np.int64))
    path.write_bytes(encode_envelope(Envelope(env.job, 0, "guest", "guest", forged)))
    with pytest.raises(CheckpointError, match="does not match its own digest"):
        store.kept_psi("train", guest, ["host1"])
    path.write_bytes(data[:-5])
    with pytest.raises(CheckpointError, match="damaged"):
        store.kept_psi("train", guest, ["host1"])


def test_a_guest_whose_hosts_changed_does_not_offer_the_old_intersection(tmp_path):
    """Hosts A and B ran PSI; the job is resumed with B left out. Host A's IDs did not change,
    so it would echo the old digest of guest ∩ A ∩ B: the guest must not offer it, and PSI
    runs again, giving the larger guest ∩ A."""
    guest, h1, h2 = _ids("C", 0, 900), _ids("C", 300, 1200), _ids("C", 600, 1500)
    first, _, _ = _run(tmp_path, guest, [h1, h2], resume=False)
    assert len(first["guest"]) == 300
    again, used, types = _run(tmp_path, guest, [h1], resume=True)
    assert not any(used.values()) and "PsiRequest" in types["guest"]
    assert len(again["guest"]) == 600
