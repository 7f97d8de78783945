"""Hetero logistic regression: guest, host and arbiter roles.

``guest.py``, ``host.py`` and ``arbiter.py`` hold each role's state and pure
step methods; ``schedule.py`` the order of every message, written once;
``driver.py`` the only I/O, which runs the states over a channel in that order.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from vfl.lr.arbiter import ArbiterParty
    from vfl.lr.config import TrainConfig, batch_plan, min_batch_size
    from vfl.lr.driver import (
        run_arbiter,
        run_guest_scoring,
        run_guest_training,
        run_host_scoring,
        run_host_training,
    )
    from vfl.lr.guest import GuestParty
    from vfl.lr.host import HostParty

# Imported on first use (PEP 562): ``from vfl.lr.config import TrainConfig`` (the CLI, worker
# processes that re-import it) then costs numpy and the codec, not scikit-learn and pandas.
_WHERE = {
    "ArbiterParty": "vfl.lr.arbiter", "GuestParty": "vfl.lr.guest", "HostParty": "vfl.lr.host",
    "TrainConfig": "vfl.lr.config", "batch_plan": "vfl.lr.config",
    "min_batch_size": "vfl.lr.config", "run_arbiter": "vfl.lr.driver",
    "run_guest_scoring": "vfl.lr.driver", "run_guest_training": "vfl.lr.driver",
    "run_host_scoring": "vfl.lr.driver", "run_host_training": "vfl.lr.driver",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vfl.lr' has no attribute {name!r}")


__all__ = [
    "ArbiterParty",
    "GuestParty",
    "HostParty",
    "TrainConfig",
    "batch_plan",
    "min_batch_size",
    "run_arbiter",
    "run_guest_scoring",
    "run_guest_training",
    "run_host_scoring",
    "run_host_training",
]
