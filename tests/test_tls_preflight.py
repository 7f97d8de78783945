"""A party's own TLS files are checked before it listens (issue 10, finding 9).

Each mistake used to surface at a peer as a failed handshake or a port "in
use" after a timeout; now the failing party stops at once, naming the cause.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from vfl.certs import check_party_tls, write_party_certs
from vfl.config import load_party_config
from vfl.demo import write_demo_job
from vfl.exceptions import ConfigError
from vfl.runner import run_fit


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    write_party_certs(d / "one", ["bank_a", "bank_b"], days=30)
    write_party_certs(d / "two", ["bank_a"], days=30)  # another CA, same names
    return d


def test_good_files_pass(pki):
    one = pki / "one"
    check_party_tls(one / "ca.pem", one / "bank_a.pem", one / "bank_a.key", "bank_a")


@pytest.mark.parametrize("case, match", [
    ("key of another party", r"does not belong to \[tls\] cert .*key/certificate mismatch"),
    ("certificate of another party", r"is for bank_b, not for this party 'bank_a'"),
    ("another CA with the same name", r"not signed by the CA"),
    ("expired", r"expired on"),
    ("not yet valid", r"is not valid before"),
])
def test_each_mistake_is_named(pki, case, match):
    one, two = pki / "one", pki / "two"
    ca, cert, key, now = one / "ca.pem", one / "bank_a.pem", one / "bank_a.key", None
    if case == "key of another party":
        key = one / "bank_b.key"
    elif case == "certificate of another party":
        cert, key = one / "bank_b.pem", one / "bank_b.key"
    elif case == "another CA with the same name":
        cert, key = two / "bank_a.pem", two / "bank_a.key"
    elif case == "expired":
        now = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    else:
        now = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with pytest.raises(ConfigError, match=match) as info:
        check_party_tls(ca, cert, key, "bank_a", now=now)
    assert str(info.value).startswith("bank_a:")


def test_a_party_with_a_wrong_key_stops_at_once(tmp_path):
    job = write_demo_job(tmp_path / "job", rows=300, key_bits=512, insecure=True, epochs=1)
    path = job.configs["bank_b"]
    path.write_text(path.read_text().replace('key = "certs/bank_b.key"',
                                             'key = "certs/arbiter.key"'))
    cfg = load_party_config(path)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="key/certificate mismatch"):
        run_fit(cfg)  # before: "the port is in use" at bank_b, a failed handshake at its peers
    assert time.perf_counter() - t0 < 5
