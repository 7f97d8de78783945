"""Wire messages of federated binning (``protocols/specs/binning.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfl.codec import message
from vfl.crypto.wire import Ciphertexts

__all__ = ["EncryptedLabels", "HostBinStats", "MergePlan", "WoeValues", "proof_context"]


@message("binning.EncryptedLabels/2")
@dataclass(frozen=True, slots=True)
class EncryptedLabels:
    """Guest → host: its own public key, ``[[y_i]]`` for every aligned row, and proofs.

    ``proofs`` holds one fixed-width proof per row (``vfl.crypto.zkp.proof_width``
    bytes, row after row) that ``[[y_i]]`` encrypts 0 or 1, bound to the job,
    this protocol step and the guest's name (:func:`proof_context`).
    """

    n: bytes
    labels: Ciphertexts
    proofs: bytes
    n_bins: int
    woe: bool  # the guest will send WOE values per bin back (for WOE encoding)
    monotonic: bool  # the guest will send a merge plan for monotonic bins


@message("binning.MergePlan/1")
@dataclass(frozen=True, slots=True)
class MergePlan:
    """Guest → host: per feature, the last fine bin of each merged (monotonic) bin."""

    groups_per_feature: list[int]
    group_ends: list[int]


@message("binning.WoeValues/1")
@dataclass(frozen=True, slots=True)
class WoeValues:
    """Guest → host: the WOE of each of the host's bins (reveals the label mix per bin)."""

    bins_per_feature: list[int]
    woe: np.ndarray


@message("binning.HostBinStats/1")
@dataclass(frozen=True, slots=True)
class HostBinStats:
    """Host → guest: per feature and bin, the row count and ``[[sum of y]]``."""

    features: list[str]
    bins_per_feature: list[int]
    counts: np.ndarray
    event_sums: Ciphertexts


def proof_context(job: str, guest: str) -> bytes:
    """What the guest's 0/1 proofs are bound to: this protocol step, the job id and the guest.

    A proof made for another job, step or guest does not verify. The drivers
    take ``job`` from their channel (:func:`vfl.binning.driver.labels_context`).
    """
    return b"\x00".join([b"binning.EncryptedLabels/2", job.encode(), guest.encode()])
