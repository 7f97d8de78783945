"""Three-party networked jobs on given tables, for the benchmark scripts.

One place writes the certificates and the three TOMLs (guest ``bank_a``, host
``bank_b``, ``arbiter``) that ``networked_default_credit``, ``train_scale`` and
``soak`` run with :func:`vfl.demo.run_demo_processes`; and one replays such a
job in memory from the guest's secret start, to compare weights.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vfl.certs import write_party_certs
from vfl.demo import DemoJob, free_ports, write_party_toml

PARTIES = {"bank_a": "guest", "bank_b": "host", "arbiter": "arbiter"}


def write_job(wd: Path, data: dict[str, Path], *, prefix: str, train: dict[str, Any],
              timeout: float, id_column: str = "id", label_column: str = "y",
              allow_training_scores: bool = False, job: dict[str, Any] | None = None,
              ports: dict[str, int] | None = None,
              dial: dict[str, str] | None = None) -> DemoJob:
    """Certificates and the three parties' TOMLs under ``wd`` (which must exist).

    ``data``: the guest's and the host's tables. ``train``: the guest's
    ``[train]`` (a ``key_bits`` below 2048 sets ``allow_insecure_key_size`` on
    every party). ``job``: more ``[job]`` keys. ``ports``: where each party
    listens (default: free ports). ``dial``: for a party, the address its peers
    dial instead (e.g. a :class:`vfl.netfaults.FaultProxy` in front of it).
    """
    write_party_certs(wd / "certs", list(PARTIES))
    ports = ports or dict(zip(PARTIES, free_ports(3), strict=True))
    dial = {p: (dial or {}).get(p, f"127.0.0.1:{ports[p]}") for p in PARTIES}
    job_id = f"{prefix}-{int(time.time())}"
    configs, outputs = {}, {}
    for name, role in PARTIES.items():
        outputs[name] = wd / "out" / name
        configs[name] = wd / f"{name}.toml"
        d = None
        if name in data:
            d = {"path": str(data[name]), "id_column": id_column}
            if role == "guest":
                d["label_column"] = label_column
        security: dict[str, Any] = {}
        if train.get("key_bits", 2048) < 2048:
            security["allow_insecure_key_size"] = True
        if role == "host" and allow_training_scores:
            security["allow_training_scores"] = True
        write_party_toml(
            configs[name],
            job={"id": job_id, "output": f"out/{name}", "timeout_seconds": timeout,
                 **(job or {})},
            party={"name": name, "role": role, "listen": f"127.0.0.1:{ports[name]}"},
            tls={"ca": "certs/ca.pem", "cert": f"certs/{name}.pem", "key": f"certs/{name}.key"},
            peers=[{"name": p, "role": r, "address": dial[p]}
                   for p, r in PARTIES.items() if p != name],
            data=d,
            train=train if role == "guest" else None,
            security=security or None,
        )
    return DemoJob(wd, configs, data, outputs)


def replay_in_memory(job: DemoJob) -> dict[str, Any]:
    """Train ``job`` once more in one process, from the networked guest's secret start.

    Returns the in-memory weights and the networked parts' weights, and
    whether they are equal bit for bit. The job must hold no validation share
    (its draw is secret, so no replay repeats it).
    """
    import numpy as np

    from vfl.demo import replay_in_memory as replay

    local, g_part, h_part = replay(job)
    same = (np.array_equal(local.guest.coef_, np.asarray(g_part.coef))
            and local.guest.intercept_ == g_part.intercept
            and np.array_equal(local.hosts[0].coef_, np.asarray(h_part.coef)))
    return {"identical": bool(same),
            "largest_difference": float(max(
                np.max(np.abs(local.guest.coef_ - np.asarray(g_part.coef))),
                abs(local.guest.intercept_ - g_part.intercept),
                np.max(np.abs(local.hosts[0].coef_ - np.asarray(h_part.coef)))))}
