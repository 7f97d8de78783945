"""Hetero logistic regression: guest, host and arbiter roles."""

from __future__ import annotations

from vfl.lr.arbiter import ArbiterParty, run_arbiter
from vfl.lr.config import TrainConfig, batch_plan, min_batch_size
from vfl.lr.guest import GuestParty, run_guest_scoring, run_guest_training
from vfl.lr.host import HostParty, run_host_scoring, run_host_training

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
