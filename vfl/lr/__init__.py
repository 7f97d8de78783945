"""Hetero logistic regression: guest, host and arbiter roles.

``guest.py``, ``host.py`` and ``arbiter.py`` hold each role's state and pure
step methods; ``schedule.py`` the order of every message, written once;
``driver.py`` the only I/O, which runs the states over a channel in that order.
"""

from __future__ import annotations

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
