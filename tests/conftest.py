"""Shared fixtures: small insecure keys for speed, the shared data sets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from vfl.crypto import Randomizer, generate_keypair

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_csv(name: str) -> Path:
    """Path of a shared data set, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared FATE data sets live in ../shared/data "
                    "(present in CI; absent in a fresh clone)")
    return path


def run_parties(configs: dict[str, Path], fn: Callable[[Any], Any]
                ) -> tuple[dict[str, Any], dict[str, BaseException]]:
    """Run ``fn(load_party_config(path))`` for every party in its own thread (as separate
    processes would); returns each party's result and each party's error."""
    from vfl.config import load_party_config

    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}

    def go(name: str, cfg: Any) -> None:
        try:
            results[name] = fn(cfg)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's assertion
            errors[name] = exc

    threads = [threading.Thread(target=go, args=(n, load_party_config(p)))
               for n, p in configs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return results, errors


def finish_parties(procs: dict[str, Any], timeout: float = 240) -> dict[str, tuple[str, str]]:
    """Wait for every party process (``subprocess.Popen`` with text pipes) to end, kill any
    left after ``timeout`` s, assert each exited 0; return each one's (stdout, stderr)."""
    try:
        outs = {n: p.communicate(timeout=timeout) for n, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for name, p in procs.items():
        assert p.returncode == 0, (name, outs[name][1][-2000:])
    return outs


def replay_demo_job_in_memory(job: Any) -> tuple[Any, Any, Any]:
    """A networked demo job's model parts, and the same job trained in memory from the
    guest's secret start: ``(local FitResult, guest part, host part)``
    (:func:`vfl.demo.replay_in_memory`)."""
    from vfl.demo import replay_in_memory

    return replay_in_memory(job)


def _join(g: pd.DataFrame, h: pd.DataFrame):
    g = g.rename(columns={c: f"g_{c}" for c in g.columns if c not in ("id", "y")})
    h = h.rename(columns={c: f"h_{c}" for c in h.columns if c != "id"})
    m = g.merge(h, on="id")
    gcols = [c for c in m.columns if c.startswith("g_")]
    hcols = [c for c in m.columns if c.startswith("h_")]
    return m[gcols].to_numpy(float), m["y"].to_numpy(float), m[hcols].to_numpy(float)


@pytest.fixture(scope="session")
def keypair():
    """A 512-bit key pair, through the explicit insecure flag (tests only)."""
    return generate_keypair(512, allow_insecure_key_size=True)


@pytest.fixture(scope="session")
def randomizer(keypair):
    return Randomizer(keypair[0])


@pytest.fixture(scope="session")
def breast():
    """Breast data, guest and host blocks aligned by id: (Xg, y, Xh)."""
    g = pd.read_csv(shared_csv("breast_hetero_guest.csv"))
    h = pd.read_csv(shared_csv("breast_hetero_host.csv"))
    return _join(g, h)


@pytest.fixture(scope="session")
def default_credit():
    """default_credit, aligned by id: (Xg, y, Xh)."""
    g = pd.read_csv(shared_csv("default_credit_hetero_guest.csv"))
    h = pd.read_csv(shared_csv("default_credit_hetero_host.csv"))
    return _join(g, h)
