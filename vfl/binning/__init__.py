"""Federated binning with information value (IV) and weight of evidence (WOE).

See ``protocols/specs/binning.md``.
"""

from __future__ import annotations

from vfl.binning.core import BinStats, iv_table_clear, quantile_bins, woe_iv
from vfl.binning.protocol import BinningGuest, BinningHost, run_binning_guest, run_binning_host

__all__ = [
    "BinStats",
    "BinningGuest",
    "BinningHost",
    "iv_table_clear",
    "quantile_bins",
    "run_binning_guest",
    "run_binning_host",
    "woe_iv",
]
