"""Party TOML files: valid ones load, bad ones fail naming the file and key."""

from __future__ import annotations

import pytest

from vfl.config import load_party_config
from vfl.demo import write_demo_job
from vfl.exceptions import ConfigError
from vfl.roles import Role


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return write_demo_job(tmp_path_factory.mktemp("job"), rows=300, key_bits=512, insecure=True,
                          epochs=1)


def test_demo_configs_load(job):
    g = load_party_config(job.configs["bank_a"])
    assert g.role == Role.GUEST and g.hosts == ["bank_b"] and g.arbiter == "arbiter"
    assert g.train.epochs == 1 and g.train.allow_insecure_key_size
    assert g.data.path.is_file() and g.data.label_column == "default"
    h = load_party_config(job.configs["bank_b"])
    assert h.role == Role.HOST and h.guest == "bank_a" and h.data.label_column is None
    a = load_party_config(job.configs["arbiter"])
    assert a.data is None and a.hosts == ["bank_b"]


def _edit(job, party, tmp_path, old, new):
    text = job.configs[party].read_text()
    assert old in text
    p = job.workdir / f"edited_{tmp_path.name}.toml"
    p.write_text(text.replace(old, new))
    return p


@pytest.mark.parametrize(
    "party, old, new, match",
    [
        ("bank_a", 'path = "data/bank_a.csv"', 'path = "data/missing.csv"',
         r"data.path: file not found"),
        ("bank_a", 'cert = "certs/bank_a.pem"', 'cert = "certs/nope.pem"', r"tls.cert: file not found"),
        ("bank_a", 'role = "guest"', 'role = "leader"', r"party.role: must be guest, host or arbiter"),
        ("bank_a", "epochs = 1", "epochs = 0", r"\[train\].*epochs"),
        ("bank_a", "epochs = 1", "epoch = 1", r"train.epoch: unknown key; did you mean 'epochs'"),
        ("bank_a", 'label_column = "default"', "", r"data.label_column: the guest needs"),
        ("bank_b", 'listen = "127.0.0.1:', 'listen = "127.0.0.1:x', r"party.listen: must be host:port"),
        ("arbiter", 'role = "host"', 'role = "guest"', r"exactly one guest"),
        ("bank_a", "[job]", "[jobs]", r"\[jobs\]: unknown section; did you mean \[job\]"),
        ("bank_a", 'id = "', 'id = 7 #"', r"job.id: must be a string, got an integer 7"),
        # issue 10: typos in every section are refused, with the closest known key
        ("bank_a", 'path = "data/bank_a.csv"', 'path = "data/bank_a.csv"\nfeaturs = ["age"]',
         r"data.featurs: unknown key; did you mean 'features'"),
        ("bank_a", "connect_timeout_seconds", "conect_timeout_seconds",
         r"job.conect_timeout_seconds: unknown key; did you mean 'connect_timeout_seconds'"),
        ("bank_a", 'ca = "certs/ca.pem"', 'ca_file = "certs/ca.pem"',
         r"tls.ca_file: unknown key; known: ca, cert, key"),
        ("bank_a", 'listen = "127.0.0.1:', 'listn = "127.0.0.1:',
         r"party.listn: unknown key; did you mean 'listen'"),
        ("bank_a", 'address = "', 'adress = "', r"peers\[0\].adress: unknown key; did you mean"),
        ("bank_b", "allow_training_scores", "allow_training_score",
         r"security.allow_training_score: unknown key; did you mean 'allow_training_scores'"),
        ("bank_a", "key_bits = 512", 'key_bits = "1024"',
         r"train.key_bits: must be an integer, got a string '1024'"),
        ("bank_a", "epochs = 1", "epochs = 1.5", r"train.epochs: must be an integer, got a number"),
        ("bank_a", "score_training_rows = true", 'score_training_rows = "yes"',
         r"train.score_training_rows: must be true or false"),
        ("bank_b", "allow_training_scores = true", "allow_training_scores = 1",
         r"security.allow_training_scores: must be true or false, got an integer 1"),
        # issue 13: checkpoints within epochs are the guest's to set, within bounds
        ("bank_b", "[security]", "[checkpoint]\nevery_batches = 4\n[security]",
         r"checkpoint.every_batches: is the guest's to set"),
        ("bank_a", "[security]", "[checkpoint]\nevery_batches = -1\n[security]",
         r"checkpoint.every_batches: must be 0 to 16777216, got -1"),
        ("bank_a", "[security]", "[checkpoint]\nevery_batches = 2.5\n[security]",
         r"checkpoint.every_batches: must be an integer"),
    ],
)
def test_bad_configs(job, tmp_path, party, old, new, match):
    path = _edit(job, party, tmp_path, old, new)
    with pytest.raises(ConfigError, match=match) as info:
        load_party_config(path)
    assert str(path) in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found"):
        load_party_config(tmp_path / "none.toml")


def test_a_binary_file_is_named(tmp_path):
    path = tmp_path / "party.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ConfigError, match=f"{path}: not a UTF-8 text file"):
        load_party_config(path)


# ------------------------------------------------------------ [compute] (issue 12, item 3)
@pytest.fixture(scope="module")
def compute_pki(job):
    from vfl.certs import write_compute_certs

    write_compute_certs(job.workdir / "compute", "bank_b")
    return job.workdir / "compute"


def _with_compute(job, party, tmp_path, body):
    p = job.workdir / f"compute_{tmp_path.name}.toml"
    p.write_text(job.configs[party].read_text() + "\n[compute]\n" + body + "\n")
    return p


_DASK = ('engine = "dask"\nscheduler = "tls://10.0.0.5:8786"\nca = "compute/ca.pem"\n'
         'cert = "compute/client.pem"\nkey = "compute/client.key"')


def test_compute_defaults_to_the_local_pool(job):
    cfg = load_party_config(job.configs["bank_b"])
    assert cfg.compute.engine == "local" and cfg.compute.workers is None
    assert not cfg.compute.uses_dask


def test_compute_sections_load(job, compute_pki, tmp_path):
    cfg = load_party_config(_with_compute(job, "bank_b", tmp_path, _DASK))
    c = cfg.compute
    assert c.uses_dask and c.scheduler == "tls://10.0.0.5:8786"
    assert c.ca == compute_pki / "ca.pem" and c.key.is_file()  # relative to the TOML
    assert c.connect_timeout == 10.0
    local = load_party_config(_with_compute(job, "bank_a", tmp_path, 'workers = 3'))
    assert local.compute.engine == "local" and local.compute.workers == 3
    tcp = load_party_config(_with_compute(
        job, "bank_b", tmp_path, 'engine = "dask"\nscheduler = "tcp://127.0.0.1:8786"\n'
                                 'allow_plain_tcp = true\nconnect_timeout_seconds = 2.5'))
    assert tcp.compute.scheduler == "tcp://127.0.0.1:8786" and tcp.compute.connect_timeout == 2.5


@pytest.mark.parametrize("party, body, match", [
    ("bank_b", 'engine = "dask"', r"\[compute\]: engine = \"dask\" needs scheduler"),
    ("bank_b", 'engine = "spark"', r"\[compute\]: engine must be \"local\" or \"dask\""),
    ("bank_b", 'engine = "dask"\nscheduler = "tcp://127.0.0.1:8786"',
     r"\[compute\]: scheduler tcp://127.0.0.1:8786 is plain tcp.*allow_plain_tcp = true"),
    ("bank_b", 'engine = "dask"\nscheduler = "10.0.0.5:8786"',
     r"\[compute\]: scheduler must be tls://host:port, got '10.0.0.5:8786'"),
    ("bank_b", 'engine = "dask"\nscheduler = "tls://10.0.0.5"',
     r"scheduler must be tls://host:port"),
    ("bank_b", 'engine = "dask"\nscheduler = "tls://10.0.0.5:8786"\nca = "compute/ca.pem"',
     r"a tls:// scheduler needs ca, cert and key.*missing: cert, key"),
    ("bank_b", _DASK + "\nworkers = 4", r"workers sizes the local pool"),
    ("bank_b", 'scheduler = "tls://10.0.0.5:8786"',
     r"scheduler only apply with engine = \"dask\""),
    ("bank_b", "workers = 0", r"workers must be a whole number >= 1, got 0"),
    ("bank_b", 'workers = "4"', r"compute.workers: must be an integer, got a string"),
    ("bank_b", _DASK + "\nconnect_timeout_seconds = 0", r"connect_timeout_seconds must be"),
    ("bank_b", 'engine = "dask"\nschedular = "tls://10.0.0.5:8786"',
     r"compute.schedular: unknown key; did you mean 'scheduler'"),
    ("bank_b", _DASK.replace("compute/ca.pem", "compute/nope.pem"),
     r"compute.ca: file not found"),
    ("bank_b", _DASK.replace("compute/ca.pem", "certs/ca.pem"),
     r"compute.ca: .* is the federation's CA \(\[tls\] ca\)"),
    ("arbiter", _DASK, r"\[compute\]: the arbiter's work \(decryption\) runs in its own process"),
])
def test_bad_compute_sections(job, compute_pki, tmp_path, party, body, match):
    path = _with_compute(job, party, tmp_path, body)
    with pytest.raises(ConfigError, match=match) as info:
        load_party_config(path)
    assert str(path) in str(info.value)


def test_a_copy_of_the_federation_ca_is_refused_as_the_compute_ca(job, compute_pki, tmp_path):
    copy = job.workdir / "compute" / "fed_copy.pem"
    copy.write_bytes((job.workdir / "certs" / "ca.pem").read_bytes())
    path = _with_compute(job, "bank_b", tmp_path, _DASK.replace("compute/ca.pem",
                                                                "compute/fed_copy.pem"))
    with pytest.raises(ConfigError, match="is the federation's CA"):
        load_party_config(path)


def test_the_dask_party_example_config_loads(tmp_path):
    """examples/dask_party/bank_b.toml, with the files its README makes."""
    import shutil
    from pathlib import Path

    from vfl.certs import write_compute_certs, write_party_certs

    example = Path(__file__).resolve().parents[1] / "examples" / "dask_party" / "bank_b.toml"
    (tmp_path / "dask_party").mkdir()
    shutil.copy(example, tmp_path / "dask_party" / "bank_b.toml")
    write_party_certs(tmp_path / "two_banks" / "certs", ["bank_a", "bank_b", "arbiter"])
    (tmp_path / "two_banks" / "data").mkdir()
    (tmp_path / "two_banks" / "data" / "bank_b.csv").write_text("customer_id,x\n1,2\n")
    write_compute_certs(tmp_path / "dask_party" / "compute", "bank_b")
    cfg = load_party_config(tmp_path / "dask_party" / "bank_b.toml")
    assert cfg.role == Role.HOST and cfg.compute.uses_dask
    assert cfg.compute.scheduler == "tls://127.0.0.1:8786"
    assert cfg.compute.ca == tmp_path / "dask_party" / "compute" / "ca.pem"


def test_the_guest_sets_checkpoints_within_epochs(job, tmp_path):
    path = _edit(job, "bank_a", tmp_path, "[security]", "[checkpoint]\nevery_batches = 50\n[security]")
    assert load_party_config(path).checkpoint.every_batches == 50
    assert load_party_config(job.configs["bank_a"]).checkpoint.every_batches == 0
