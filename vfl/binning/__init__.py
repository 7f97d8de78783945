"""Federated binning with information value (IV) and weight of evidence (WOE).

See ``protocols/specs/binning.md``. Wire messages in :mod:`vfl.binning.messages`;
the pure steps in :mod:`vfl.binning.guest` and :mod:`vfl.binning.host`; the I/O
loops in :mod:`vfl.binning.driver`.
"""

from __future__ import annotations

from vfl.binning.core import BinStats, iv_table_clear, quantile_bins, woe_iv
from vfl.binning.driver import labels_context, run_binning_guest, run_binning_host
from vfl.binning.guest import BinningGuest
from vfl.binning.host import BinningHost, labels_message_bytes
from vfl.binning.messages import EncryptedLabels, HostBinStats, MergePlan, WoeValues, proof_context
from vfl.binning.woe import WoeEncoder

__all__ = [
    "BinStats",
    "BinningGuest",
    "BinningHost",
    "EncryptedLabels",
    "HostBinStats",
    "MergePlan",
    "WoeEncoder",
    "WoeValues",
    "iv_table_clear",
    "labels_context",
    "labels_message_bytes",
    "proof_context",
    "quantile_bins",
    "run_binning_guest",
    "run_binning_host",
    "woe_iv",
]
