"""Shared fixtures: small insecure keys for speed, the shared data sets."""

from __future__ import annotations

from pathlib import Path

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
