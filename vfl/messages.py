"""Job-level wire messages: what a job agrees on before any protocol starts.

Protocol messages live with their protocol (``vfl.psi.messages``,
``vfl.lr.messages``, ``vfl.binning.messages``); the messages here belong to
the job that strings the protocols together (``vfl.jobs``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vfl.codec import message
from vfl.exceptions import ConfigError

__all__ = ["Prepare", "MAX_LABEL_NAME"]

#: Longest label name a guest may announce.
MAX_LABEL_NAME = 256


@message("job.Prepare/2")
@dataclass(frozen=True, slots=True)
class Prepare:
    """Guest → hosts right after PSI: which optional steps the job runs.

    A host checks each against its own data and policy before training:
    a validation-table PSI (``validation_table``), federated binning of
    every party's columns — with WOE encoding (``woe_bins`` bins), or for
    the information-value table only (``iv_bins`` bins; 0: off) — and,
    after training, scoring of every training row (``score_training_rows``;
    each host must allow it in its ``[security]`` policy). ``label_name``:
    the guest's label column, if the guest announces it (``""``: not), so
    that each host refuses a column of that name (target leakage).
    """

    woe_bins: int
    iv_bins: int
    validation_table: bool
    score_training_rows: bool
    label_name: str

    def __post_init__(self) -> None:
        for name in ("woe_bins", "iv_bins"):
            v = getattr(self, name)
            if v != 0 and not 2 <= v <= 100:
                raise ConfigError(f"{name} must be 0 or in [2, 100]; got {v}.")
        if len(self.label_name) > MAX_LABEL_NAME:
            raise ConfigError(f"label_name has {len(self.label_name)} characters; at most "
                              f"{MAX_LABEL_NAME}.")
