"""Feature selection by information value, applied by each party to its own columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vfl.exceptions import ConfigError

__all__ = ["select_by_iv"]


def _own_name(feature: str, party: str, names: Sequence[str]) -> str | None:
    """Map an IV-table feature label to this party's column name (names, aliases, or plain)."""
    if feature.startswith(f"{party}:"):
        name = feature[len(party) + 1:]
        return name if name in names else None
    prefix = f"{party}_f"
    if feature.startswith(prefix) and feature[len(prefix):].isdigit():
        j = int(feature[len(prefix):])
        return names[j] if j < len(names) else None
    return feature if feature in names else None


def select_by_iv(iv_table: list[dict[str, Any]], party: str, names: Sequence[str], *,
                 min_iv: float | None = None, top_k: int | None = None) -> list[str]:
    """This party's columns to keep, in its own column order.

    ``top_k`` ranks all features of all parties together (the shared table)
    and keeps this party's among the best ``top_k``; ``min_iv`` keeps those
    with IV at least ``min_iv``. Both may be combined. A party keeps at least
    one column.

    Raises
    ------
    ConfigError
        If the IV table has no row for one of this party's columns.
    """
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}.")
    ranked = sorted(iv_table, key=lambda r: -float(r["iv"]))
    iv_of: dict[str, float] = {}
    rank_of: dict[str, int] = {}
    for rank, row in enumerate(ranked):
        if row.get("party") != party:
            continue
        own = _own_name(str(row["feature"]), party, names)
        if own is not None:
            iv_of[own] = float(row["iv"])
            rank_of[own] = rank
    missing = [n for n in names if n not in iv_of]
    if missing:
        raise ConfigError(
            f"The IV table has no row for {party}'s column(s) {', '.join(missing[:5])}; "
            "compute it on the same tables (vfl iv)."
        )
    keep = [n for n in names
            if (min_iv is None or iv_of[n] >= min_iv) and (top_k is None or rank_of[n] < top_k)]
    if not keep:
        keep = [max(names, key=lambda n: iv_of[n])]
    return keep
