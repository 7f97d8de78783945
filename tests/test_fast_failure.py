"""A party that stops for a known cause tells its peers at once (issue 10, finding 9).

Before: the host stopped in 0.2 s on a data error while the guest waited 30 s
to deliver its next message and then blamed the network ("is bank_b running,
and does it trust our certificate?").
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd

from vfl.config import load_party_config
from vfl.demo import write_demo_job
from vfl.exceptions import DataError, TransportError
from vfl.runner import run_fit


def test_a_host_data_error_reaches_the_guest_at_once_with_its_cause(tmp_path):
    job = write_demo_job(tmp_path / "job", rows=600, key_bits=512, insecure=True, epochs=1,
                         batch_size=128)
    h = pd.read_csv(job.data["bank_b"])
    column = h.columns[1]
    h[column] = np.nan  # no values among the shared customers: the host refuses to train
    h.to_csv(job.data["bank_b"], index=False)
    errors, when = {}, {}
    t0 = time.perf_counter()

    def go(name, cfg):
        try:
            run_fit(cfg)
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors[name] = exc
        when[name] = time.perf_counter() - t0

    threads = [threading.Thread(target=go, args=(n, load_party_config(p)))
               for n, p in job.configs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert isinstance(errors["bank_b"], DataError) and column in str(errors["bank_b"])
    assert isinstance(errors["bank_a"], TransportError)
    assert "bank_b stopped the job (data error)" in str(errors["bank_a"])
    assert column not in str(errors["bank_a"])  # the reason code is value-free
    assert isinstance(errors["arbiter"], TransportError)
    assert max(when.values()) < 10, when  # was 30 s and more
