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
