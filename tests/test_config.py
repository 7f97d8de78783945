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
        ("bank_a", "epochs = 1", "epoch = 1", r"train.epoch: unknown parameter"),
        ("bank_a", 'label_column = "default"', "", r"data.label_column: the guest needs"),
        ("bank_b", 'listen = "127.0.0.1:', 'listen = "127.0.0.1:x', r"party.listen: must be host:port"),
        ("arbiter", 'role = "host"', 'role = "guest"', r"exactly one guest"),
        ("bank_a", "[job]", "[jobs]", r"\[jobs\]: unknown section"),
        ("bank_a", 'id = "', 'id = 7 #"', r"job.id: must be str"),
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
