"""The Dask engine (issue 12, item 3): same results as the local engine, on a TLS cluster
that admits only the party's own certificates.

One real ``distributed.LocalCluster`` (2 worker processes, one thread each,
mutual TLS with certificates from :func:`vfl.certs.write_compute_certs`) serves
the whole module.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time

import gmpy2
import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
# real TLS clusters of worker processes (~40 s in all): the full suite and CI's first phase run
# them; the quick loop (-m "not slow", CI's newest-Python phase) leaves them out
pytestmark = pytest.mark.slow

from vfl.certs import check_compute_tls, write_compute_certs, write_party_certs  # noqa: E402
from vfl.crypto import dask_engine as de  # noqa: E402
from vfl.crypto import quantize  # noqa: E402
from vfl.crypto.engine import (  # noqa: E402
    CipherEngine,
    ComputeConfig,
    compute_context,
    make_engine,
)
from vfl.exceptions import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("compute_pki")
    write_compute_certs(d / "own", "bank_a")
    write_compute_certs(d / "foreign", "bank_b")  # another party's cluster CA, same file names
    return d


@pytest.fixture(scope="module")
def cluster(pki):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  protocol="tls", security=de.cluster_security(pki / "own"),
                                  dashboard_address=":0") as c:
        yield c


def _compute(cluster, folder, ca_folder=None, **kw):
    ca = (ca_folder or folder) / "ca.pem"
    return ComputeConfig(engine="dask", scheduler=cluster.scheduler_address, ca=ca,
                         cert=folder / "client.pem", key=folder / "client.key", **kw)


@pytest.fixture(scope="module")
def compute(cluster, pki):
    return _compute(cluster, pki / "own")


@pytest.fixture(scope="module")
def engine(keypair, compute):
    eng = de.DaskEngine.connect(keypair[0], compute)
    yield eng
    eng.close()


def _worker_tables(client):
    """Per worker: {engine tag: id of its randomiser's fixed-base table}."""
    def probe():
        from vfl.crypto import dask_engine

        return {tag: id(s.randomizer._base) for (tag, _), s in dask_engine._STATES.items()}
    return client.run(probe)


# ------------------------------------------------------------------ engine ops
@pytest.mark.parametrize("rows", [700, 5, 0])
def test_dask_matches_local(keypair, engine, rows):
    pub, priv = keypair
    local = CipherEngine(pub)
    rng = np.random.default_rng(rows)
    vals = rng.integers(-2**40, 2**40, rows)
    enc = engine.encrypt(vals, 7)
    assert enc.frac_bits == 7 and enc.decrypt(priv) == vals.tolist()
    again = engine.rerandomize(enc)
    assert again.decrypt(priv) == vals.tolist()
    assert set(again.ciphertexts).isdisjoint(enc.ciphertexts)
    X = quantize(rng.normal(size=(rows, 3)), 12)
    offs = np.maximum(0, -X.min(axis=0)) if rows else np.zeros(3, np.int64)
    a, a_sum = engine.matvec_t_and_sum(X + offs, offs, enc, 12)
    b, b_sum = local.matvec_t_and_sum(X + offs, offs, enc, 12)
    assert a.frac_bits == b.frac_bits == 19
    assert a.ciphertexts == b.ciphertexts and a_sum.ciphertexts == b_sum.ciphertexts  # bit for bit
    ks = [rng.integers(-2**20, 2**20, rows), rng.integers(-2**16, 2**16, rows)]
    c = engine.combine_rows([enc, again], ks, 7)
    assert c.ciphertexts == local.combine_rows([enc, again], ks, 7).ciphertexts
    assert c.to_bytes() == local.combine_rows([enc, again], ks, 7).to_bytes()


def test_prefilled_randomisers_are_fresh(keypair, engine):
    pub, priv = keypair
    engine.prefill(200)
    time.sleep(0.2)
    zeros = engine.encrypt(np.zeros(300, dtype=np.int64), 0)
    assert len(set(zeros.ciphertexts)) == 300
    assert zeros.decrypt(priv) == [0] * 300


def test_tables_are_built_once_per_worker_and_freed_at_close(keypair, compute, cluster):
    eng = de.DaskEngine.connect(keypair[0], compute)
    tag = eng._spec.tag
    with distributed.Client(cluster.scheduler_address, security=de.cluster_security(
            compute.ca.parent), set_as_default=False) as probe:
        before = _worker_tables(probe)
        assert len(before) == 2 and all(tag in t for t in before.values())  # built at start
        for _ in range(3):
            eng.rerandomize(eng.encrypt(np.arange(300, dtype=np.int64), 0))
        assert {w: t[tag] for w, t in _worker_tables(probe).items()} == {
            w: t[tag] for w, t in before.items()}  # same table objects: not rebuilt per task
        eng.close()
        assert all(tag not in t for t in _worker_tables(probe).values())


def test_make_engine_follows_the_compute_choice(keypair, compute):
    eng = make_engine(keypair[0], None, 10, compute=compute)
    try:
        assert isinstance(eng, de.DaskEngine)
    finally:
        eng.close()
    with compute_context(compute):
        eng = make_engine(keypair[0], 4, 10**6)
        try:
            assert isinstance(eng, de.DaskEngine)
        finally:
            eng.close()
    assert type(make_engine(keypair[0], None, 10**6, compute=ComputeConfig(workers=1))) \
        is CipherEngine


# ------------------------------------------------------------- bit-identical training
def _train(Xg, y, Xh, compute, mode, start=None, protocol="reveal-gradients"):
    from vfl import Arbiter, GuestLogisticRegression, HostLogisticRegression, InMemoryNetwork

    net = InMemoryNetwork(["guest", "host", "arbiter"])
    host = HostLogisticRegression(allow_insecure_key_size=True, compute=compute)
    arbiter = Arbiter(allow_insecure_key_size=True)
    errors = []

    def run(fn, **kw):
        def go():
            try:
                fn(**kw)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        return threading.Thread(target=go)

    threads = [run(host.fit, X=Xh, channel=net.endpoint("host")),
               run(arbiter.run, channel=net.endpoint("arbiter"))]
    for t in threads:
        t.start()
    # protocol reveal-gradients: its weights are a deterministic function of the data and the
    # start, so the engines must agree bit for bit (under protocol shared each share's rounding
    # depends on the run's secret masks: test_shared_training_through_dask below)
    guest = GuestLogisticRegression(epochs=2, batch_size=128, key_bits=512,
                                    allow_insecure_key_size=True, validation_fraction=0.0,
                                    patience=0, mode=mode, compute=compute, protocol=protocol,
                                    **({"optimizer": "adam", "learning_rate": 0.1, "decay": 1.0}
                                       if protocol == "reveal-gradients" else {}))
    kw = {} if start is None else {"coef_init": start[0], "intercept_init": start[1]}
    guest.fit(Xg, y, channel=net.endpoint("guest"), hosts=["host"], **kw)
    for t in threads:
        t.join(60)
    assert not errors, errors
    return guest, host


@pytest.mark.parametrize("mode", ["accurate", "taylor"])
def test_training_through_dask_gives_bit_identical_weights(compute, mode):
    rng = np.random.default_rng(3)
    Xg, Xh = rng.normal(size=(400, 2)), rng.normal(size=(400, 3))
    y = (Xg[:, 0] + Xh[:, 0] - Xh[:, 2] + rng.normal(size=400) > 0).astype(int)
    g_local, h_local = _train(Xg, y, Xh, None, mode)
    assert g_local.n_iter_ == 2
    start = (g_local.coef_init_, g_local.intercept_init_)
    g_dask, h_dask = _train(Xg, y, Xh, compute, mode, start)
    assert g_dask.coef_.tobytes() == g_local.coef_.tobytes()
    assert g_dask.intercept_ == g_local.intercept_
    assert h_dask.coef_.tobytes() == h_local.coef_.tobytes()


def test_shared_training_through_dask(compute):
    """Protocol shared (the default), its row multi-exponentiations on the Dask workers: the
    weights of the in-process run to the rounding of each share (~2^-32 a step)."""
    rng = np.random.default_rng(4)
    Xg, Xh = rng.normal(size=(400, 2)), rng.normal(size=(400, 3))
    y = (Xg[:, 0] + Xh[:, 0] - Xh[:, 2] + rng.normal(size=400) > 0).astype(int)
    g_local, h_local = _train(Xg, y, Xh, None, "accurate", protocol="shared")
    start = (g_local.coef_init_, g_local.intercept_init_)
    g_dask, h_dask = _train(Xg, y, Xh, compute, "accurate", start, protocol="shared")
    np.testing.assert_allclose(g_dask.coef_, g_local.coef_, atol=1e-8, rtol=0)
    assert abs(g_dask.intercept_ - g_local.intercept_) <= 1e-8
    np.testing.assert_allclose(h_dask.coef_, h_local.coef_, atol=1e-8, rtol=0)


# ------------------------------------------------------------------ who may join
@pytest.mark.parametrize("case", ["foreign CA and certificate", "our CA, foreign certificate"])
def test_a_client_with_another_cas_certificate_is_refused(cluster, pki, case):
    own, foreign = pki / "own", pki / "foreign"
    compute = _compute(cluster, foreign, own if "our CA" in case else None, connect_timeout=3)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=f"Cannot reach the Dask scheduler "
                                          f"{cluster.scheduler_address}"):
        de.open_client(compute)
    assert time.perf_counter() - t0 < 10


def test_a_worker_with_another_cas_certificate_cannot_join(cluster, pki, tmp_path):
    """``dask worker`` with another party's cluster certificate (trusting either CA) is refused."""
    own, foreign = pki / "own", pki / "foreign"
    logs = [tmp_path / "foreign_ca.log", tmp_path / "own_ca.log"]
    procs = []
    try:
        for ca, log in zip((foreign, own), logs, strict=True):
            with log.open("wb") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker",
                     cluster.scheduler_address, "--no-nanny", "--nthreads", "1",
                     "--no-dashboard", "--death-timeout", "4",
                     "--tls-ca-file", str(ca / "ca.pem"),
                     "--tls-cert", str(foreign / "worker.pem"),
                     "--tls-key", str(foreign / "worker.key")],
                    stdout=subprocess.DEVNULL, stderr=err))
        codes = [p.wait(timeout=45) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [log.read_text() for log in logs]
    assert all(code != 0 for code in codes), texts
    assert all("Timed out starting worker" in t for t in texts), texts  # the handshakes fail
    assert len(cluster.scheduler.workers) == 2  # nobody joined


def test_an_unreachable_scheduler_fails_fast_naming_it(pki):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    own = pki / "own"
    compute = ComputeConfig(engine="dask", scheduler=f"tls://127.0.0.1:{port}",
                            ca=own / "ca.pem", cert=own / "client.pem", key=own / "client.key",
                            connect_timeout=1)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"Cannot reach the Dask scheduler tls://127.0.0.1:{port} "
                                          r"\(\[compute\] scheduler\) within 1 s"):
        de.open_client(compute)
    assert time.perf_counter() - t0 < 6


def test_a_worker_with_several_threads_is_refused(keypair, pki):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  protocol="tls", security=de.cluster_security(pki / "own"),
                                  dashboard_address=":0") as c:
        with pytest.raises(ConfigError, match="runs 2 threads.*--nthreads 1"):
            de.DaskEngine.connect(keypair[0], _compute(c, pki / "own"))


# ------------------------------------------------------------------ certificates
def test_compute_certificates(pki, tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    own = pki / "own"
    cert = x509.load_pem_x509_certificate((own / "worker.pem").read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    check_compute_tls(own / "ca.pem", own / "client.pem", own / "client.key", "bank_a")
    # more certificates later, from the same CA, with the machines' names
    more = write_compute_certs(own, "bank_a", names=["worker2"], hostnames=["gpu-7", "10.0.0.9"])
    c2 = x509.load_pem_x509_certificate(more["worker2"].read_bytes())
    assert c2.issuer == cert.issuer
    san = c2.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gpu-7" in san.get_values_for_type(x509.DNSName)
    assert "10.0.0.9" in {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    with pytest.raises(ConfigError, match="not signed by the CA|was issued by"):
        check_compute_tls(own / "ca.pem", pki / "foreign" / "client.pem",
                          pki / "foreign" / "client.key", "bank_a")
    # the federation's CA can never be the cluster's
    fed = write_party_certs(tmp_path / "fed", ["bank_a"])
    with pytest.raises(ConfigError, match=r"\[compute\] ca .* is the federation's CA"):
        check_compute_tls(fed["ca"], fed["bank_a"], tmp_path / "fed" / "bank_a.key", "bank_a",
                          federation_ca=fed["ca"])


# ------------------------------------------------------------------ a networked party
def test_a_networked_host_runs_its_work_on_its_cluster(tmp_path, cluster, pki, monkeypatch):
    from vfl.demo import write_demo_job
    from vfl.runner import run_fit

    from ..conftest import run_parties

    job = write_demo_job(tmp_path / "job", rows=300, key_bits=512, insecure=True, epochs=1)
    own = pki / "own"
    path = job.configs["bank_b"]
    path.write_text(path.read_text() + f'''
[compute]
engine = "dask"
scheduler = "{cluster.scheduler_address}"
ca = "{own / 'ca.pem'}"
cert = "{own / 'client.pem'}"
key = "{own / 'client.key'}"
''')
    used = []
    connect = de.DaskEngine.connect.__func__

    def spy(cls, public_key, compute, exponent_bits=None):
        used.append(compute.scheduler)
        return connect(cls, public_key, compute, exponent_bits)

    monkeypatch.setattr(de.DaskEngine, "connect", classmethod(spy))
    results, errors = run_parties(job.configs, run_fit)
    assert not errors, errors
    assert used == [cluster.scheduler_address]  # bank_b's engine only
    assert results["bank_a"]["epochs_run"] == 1


def test_a_party_whose_scheduler_is_down_stops_before_psi(tmp_path, pki):
    from vfl.config import load_party_config
    from vfl.demo import write_demo_job
    from vfl.runner import run_fit

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = write_demo_job(tmp_path / "job", rows=300, key_bits=512, insecure=True, epochs=1)
    own = pki / "own"
    path = job.configs["bank_b"]
    path.write_text(path.read_text() + f'''
[compute]
engine = "dask"
scheduler = "tls://127.0.0.1:{port}"
ca = "{own / 'ca.pem'}"
cert = "{own / 'client.pem'}"
key = "{own / 'client.key'}"
connect_timeout_seconds = 1
''')
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"bank_b: Cannot reach the Dask scheduler "
                                          rf"tls://127.0.0.1:{port}"):
        run_fit(load_party_config(path))
    assert time.perf_counter() - t0 < 15


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_documented_dask_commands_make_a_cluster_the_engine_uses(keypair, pki, tmp_path):
    """``dask scheduler`` / ``dask worker`` as in examples/dask_party/README.md, on loopback."""
    import os
    import signal

    own = pki / "own"
    port = _free_port()
    tls = ["--tls-ca-file", str(own / "ca.pem")]
    address = f"tls://127.0.0.1:{port}"
    cmds = [
        ["distributed.cli.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1",
         "--port", str(port), "--no-dashboard", *tls, "--tls-cert", str(own / "scheduler.pem"),
         "--tls-key", str(own / "scheduler.key")],
        ["distributed.cli.dask_worker", address, "--nworkers", "2", "--nthreads", "1",
         "--no-dashboard", *tls, "--tls-cert", str(own / "worker.pem"),
         "--tls-key", str(own / "worker.key")],
    ]
    procs = []
    try:
        for i, cmd in enumerate(cmds):
            with (tmp_path / f"{i}.log").open("wb") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", *cmd], stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        compute = ComputeConfig(engine="dask", scheduler=address, ca=own / "ca.pem",
                                cert=own / "client.pem", key=own / "client.key",
                                connect_timeout=30)
        eng = de.DaskEngine.connect(keypair[0], compute)
        try:
            deadline = time.time() + 30
            while len(eng.client.nthreads()) < 2 and time.time() < deadline:
                time.sleep(0.2)
            assert len(eng.client.nthreads()) == 2
            vals = np.arange(-300, 300, dtype=np.int64)
            assert eng.encrypt(vals, 0).decrypt(keypair[1]) == vals.tolist()
        finally:
            eng.close()
    finally:
        for p in reversed(procs):  # workers (nanny + its worker processes), then the scheduler
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_bucketed_psi_on_the_cluster_equals_the_local_psi(compute):
    """Both parties blind on (their own) Dask workers: same rows, same order as in-process."""
    import threading

    from vfl.crypto.dask_engine import DaskBlinder
    from vfl.psi import run_psi_guest, run_psi_host
    from vfl.transport import InMemoryNetwork

    guest = [f"P{i:06d}" for i in range(0, 6000)]
    host = [f"P{i:06d}" for i in range(2500, 9000)]

    def run(blinders):
        net = InMemoryNetwork(["guest", "host"], timeout=120)
        out = {}
        th = threading.Thread(target=lambda: out.__setitem__("host", run_psi_host(
            net.endpoint("host"), host, "guest", bucket_rows=1000, workers=1,
            blinder=blinders["host"])))
        th.start()
        out["guest"] = run_psi_guest(net.endpoint("guest"), guest, ["host"], bucket_rows=1000,
                                     workers=1, blinder=blinders["guest"])
        th.join()
        return out

    local = run({"guest": None, "host": None})
    with DaskBlinder.connect(compute) as g, DaskBlinder.connect(compute) as h:
        assert g.workers == 2
        on_dask = run({"guest": g, "host": h})
    for party in ("guest", "host"):
        np.testing.assert_array_equal(on_dask[party], local[party])
    assert len(local["guest"]) == 3500


def test_federated_binning_on_the_cluster_equals_the_local_run(compute, cluster):
    """Proofs made on the guest's cluster verify; the host's verification and per-bin sums on
    its cluster give the local sums bit for bit; a forged proof is still caught, row named."""
    import dataclasses

    from vfl.binning import BinningGuest, BinningHost, proof_context
    from vfl.crypto.zkp import prover_tasks, verify_bits
    from vfl.exceptions import RemoteProtocolError
    from vfl.policy import SecurityPolicy

    rng = np.random.default_rng(12)
    n = 700
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 3))
    names = ["h0", "h1", "h2"]
    policy = SecurityPolicy(allow_insecure_key_size=True).validate()
    ctx = proof_context("job-dask-binning", "guest")

    guest = BinningGuest(y, key_bits=512, allow_insecure_key_size=True, n_bins=5,
                         compute=compute)
    labels = guest.labels_message(context=ctx)  # proved on the cluster, in 2 chunks
    pk, sk = guest.public_key, guest._private_key
    assert verify_bits(pk, labels.labels.data, labels.proofs, context=ctx, workers=1) is None

    on_dask = BinningHost(X, names, party="host", policy=policy, compute=compute)
    local = BinningHost(X, names, party="host", policy=policy, workers=1)
    a = on_dask.on_labels(labels, peer="guest", context=ctx)
    b = local.on_labels(labels, peer="guest", context=ctx)
    assert a.bins_per_feature == b.bins_per_feature
    np.testing.assert_array_equal(a.counts, b.counts)
    w = pk.ciphertext_bytes
    sums = [[int(sk.raw_decrypt(gmpy2.mpz.from_bytes(m.event_sums.data[i:i + w], "big")))
             for i in range(0, len(m.event_sums.data), w)] for m in (a, b)]
    assert sums[0] == sums[1]
    # ... and they are the events per bin, computed in the clear
    from vfl.binning.core import assign_bins
    clear = []
    for j, cuts in enumerate(local.cuts):
        clear += np.bincount(assign_bins(X[:, j], cuts), weights=y,
                             minlength=len(cuts) + 2).astype(int).tolist()
    assert sums[0] == clear

    # before re-randomisation the products are the same ciphertexts
    from vfl.crypto.vector import EncryptedVector
    enc = EncryptedVector.from_bytes(pk, labels.labels.data, 0, expected_len=n)
    with prover_tasks(pk, n, compute=compute) as tasks:
        assert tasks.parallelism == 2
        dask_sums = on_dask._bin_sums(enc, labels.labels.data, 5, tasks)[2]
    with prover_tasks(pk, n, workers=1) as tasks:
        local_sums = local._bin_sums(enc, labels.labels.data, 5, tasks)[2]
    assert dask_sums.to_bytes() == local_sums.to_bytes()

    # a forged proof: the batch check on the cluster fails, the bisection names the row
    pw = len(labels.proofs) // n
    forged = bytearray(labels.proofs)
    forged[417 * pw + pw - 1] ^= 1
    with pytest.raises(RemoteProtocolError, match="label 417 is 0 or 1"):
        on_dask.on_labels(dataclasses.replace(labels, proofs=bytes(forged)), peer="guest",
                          context=ctx)



def test_one_cluster_switches_keys_between_proofs(compute):
    """Prove under key A, verify under key B, prove under A again, on the same workers: each
    chunk runs with its own key's state (the per-worker cache never serves a stale one)."""
    from vfl.crypto.paillier import generate_keypair
    from vfl.crypto.tasks import SecretBytes
    from vfl.crypto.zkp import prove_bits, verify_bits

    ctx = b"job-switch"
    (pa, _), (pb, _) = (generate_keypair(512, allow_insecure_key_size=True) for _ in range(2))
    bits = [i % 3 == 0 for i in range(300)]
    a1 = prove_bits(pa, bits, context=ctx, compute=compute)
    b1 = prove_bits(pb, bits, context=ctx, compute=compute)
    assert verify_bits(pb, *b1, context=ctx, compute=compute) is None
    a2 = prove_bits(pa, bits, context=ctx, compute=compute)
    for cts, proofs in (a1, a2):
        assert verify_bits(pa, cts, proofs, context=ctx, workers=1) is None
    assert verify_bits(pa, *a2, context=ctx, compute=compute) is None
    assert verify_bits(pb, *a2, context=ctx, workers=1) is not None  # not B's proofs
    assert "\\x" not in repr(SecretBytes(bytes(range(40)))) and "40 secret bytes" in repr(
        SecretBytes(bytes(range(40))))
