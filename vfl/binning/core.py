"""Binning and WOE/IV arithmetic (plaintext, per party)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vfl.types import FloatArray

__all__ = ["BinStats", "quantile_bins", "assign_bins", "woe_iv", "iv_table_clear"]

SMOOTH = 0.5


def quantile_bins(values: FloatArray, n_bins: int) -> FloatArray:
    """Inner cut points of equal-frequency bins over the non-missing values."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return np.array([], dtype=np.float64)
    cuts = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.unique(cuts)


def assign_bins(values: FloatArray, cuts: FloatArray) -> npt.NDArray[np.int64]:
    """Bin index per row: 0..len(cuts) for values (``v > cut`` moves right); missing last."""
    idx = np.searchsorted(cuts, values, side="left").astype(np.int64)
    idx[np.isnan(values)] = len(cuts) + 1
    return idx


@dataclass
class BinStats:
    """One feature's bins: row counts and event (label = 1) counts per bin."""

    feature: str
    counts: list[int]
    events: list[int]
    labels: list[str] = field(default_factory=list)


def woe_iv(counts: list[int], events: list[int], total_events: int, total_rows: int
           ) -> tuple[list[float], float]:
    """WOE per bin and the feature's IV.

    ``WOE = ln(share of non-events / share of events)`` with 0.5 added to
    empty cells; ``IV = sum (share_non_events - share_events) * WOE`` over the
    non-empty bins.
    """
    total_non = total_rows - total_events
    woes, iv = [], 0.0
    for c, e in zip(counts, events, strict=True):
        if c == 0:
            woes.append(0.0)
            continue
        non = c - e
        pe = (e if e > 0 else SMOOTH) / total_events
        pn = (non if non > 0 else SMOOTH) / total_non
        w = float(np.log(pn / pe))
        woes.append(w)
        iv += (pn - pe) * w
    return woes, float(iv)


def bin_stats_clear(name: str, values: FloatArray, y: npt.NDArray[np.int64], n_bins: int
                    ) -> BinStats:
    """A party's own feature binned against labels it holds."""
    cuts = quantile_bins(values, n_bins)
    idx = assign_bins(values, cuts)
    nb = len(cuts) + 2
    counts = np.bincount(idx, minlength=nb)
    events = np.bincount(idx, weights=y.astype(float), minlength=nb).astype(np.int64)
    return BinStats(name, counts.tolist(), events.tolist(), _labels(cuts))


def _labels(cuts: FloatArray) -> list[str]:
    edges = ["-inf", *[f"{c:.6g}" for c in cuts], "inf"]
    return [f"({edges[i]}, {edges[i + 1]}]" for i in range(len(cuts) + 1)] + ["missing"]


def iv_table_clear(stats: list[BinStats], party: str, total_events: int, total_rows: int
                   ) -> list[dict[str, Any]]:
    """IV rows for a list of features' bin statistics."""
    rows = []
    for st in stats:
        woes, iv = woe_iv(st.counts, st.events, total_events, total_rows)
        rows.append({"party": party, "feature": st.feature, "iv": iv,
                     "bins": [{"bin": (st.labels[i] if i < len(st.labels) else str(i)),
                               "count": c, "events": e, "woe": w}
                              for i, (c, e, w) in enumerate(zip(st.counts, st.events, woes,
                                                                 strict=True)) if c > 0]})
    return rows


def monotonic_groups(counts: list[int], events: list[int], min_share: float = 0.05
                     ) -> list[tuple[int, int]]:
    """Merge adjacent non-missing bins until the event rate is monotonic and bins are big enough.

    ``counts``/``events`` are per ordered bin (the missing bin excluded). The
    trend (rising or falling) follows the weighted slope of the event rate;
    pool-adjacent-violators merges bins that break it, then bins holding less
    than ``min_share`` of the rows join the neighbour with the closer rate.
    Returns ``(first, last)`` fine-bin index ranges, in order, covering all bins.
    """
    groups = [[i, i, float(c), float(e)] for i, (c, e) in enumerate(zip(counts, events,
                                                                         strict=True)) if c > 0]
    if len(groups) <= 1:
        return [(0, len(counts) - 1)] if counts else []
    idx = np.array([g[0] for g in groups], dtype=float)
    rate = np.array([g[3] / g[2] for g in groups])
    w = np.array([g[2] for g in groups])
    mean_i = np.average(idx, weights=w)
    slope = float(np.sum(w * (idx - mean_i) * (rate - np.average(rate, weights=w))))
    rising = slope >= 0

    def r(g: list[float]) -> float:
        return g[3] / g[2]

    def merge(i: int) -> None:
        a, b = groups[i], groups[i + 1]
        groups[i] = [a[0], b[1], a[2] + b[2], a[3] + b[3]]
        del groups[i + 1]

    changed = True
    while changed and len(groups) > 1:
        changed = False
        for i in range(len(groups) - 1):
            if (r(groups[i]) > r(groups[i + 1])) if rising else (r(groups[i]) < r(groups[i + 1])):
                merge(i)
                changed = True
                break
    total = sum(g[2] for g in groups)
    while len(groups) > 1:
        small = [i for i, g in enumerate(groups) if g[2] < min_share * total]
        if not small:
            break
        i = small[0]
        if i == 0:
            merge(0)
        elif i == len(groups) - 1:
            merge(i - 1)
        else:
            left = abs(r(groups[i - 1]) - r(groups[i]))
            right = abs(r(groups[i + 1]) - r(groups[i]))
            merge(i - 1 if left <= right else i)
    # stretch the groups over empty fine bins so the ranges cover every bin
    out = []
    for k, g in enumerate(groups):
        first = 0 if k == 0 else int(groups[k - 1][1]) + 1
        last = len(counts) - 1 if k == len(groups) - 1 else int(g[1])
        out.append((first, last))
    return out


def merge_stats(st: BinStats, groups: list[tuple[int, int]]) -> BinStats:
    """Bin statistics after merging fine bins into ``groups`` (the missing bin kept last)."""
    counts = [sum(st.counts[a:b + 1]) for a, b in groups] + [st.counts[-1]]
    events = [sum(st.events[a:b + 1]) for a, b in groups] + [st.events[-1]]
    return BinStats(st.feature, counts, events)


def merge_cuts(cuts: FloatArray, groups: list[tuple[int, int]]) -> FloatArray:
    """Cut points after merging: keep the fine cut that ends each group but the last."""
    return np.asarray([cuts[b] for _, b in groups[:-1]], dtype=np.float64)
