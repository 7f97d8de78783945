"""The points-scale sweep (issue 25): a deviating guest reads a host's per-feature points.

A host answers a customer's points at the scale the guest asks for:
``P(s) = sum_j round(s * a_j)``, with ``a_j`` the partial logit of the
customer's bin of feature ``j``. ``P`` is a step function of ``s`` whose
jumps sit at ``s = (m + 1/2) / |a_j|``: feature ``j``'s first jump is at
``1 / (2 |a_j|)``, in the direction of the sign of ``a_j``. The attack walks
the scale upward on a geometric grid, bisects every interval where ``P``
changes, and reads a new feature off every jump that no feature found so far
explains. With every ``a_j`` known, the guest has the customer's points at any
scale, per feature: which bin of every host feature the customer is in.

``query(scale) -> int`` is one request (the customer's total points). Pure;
no network: the tests pass the real scorer's call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SweepResult", "sweep"]


@dataclass
class SweepResult:
    """The per-feature values found (``a_j``, in the order found), requests spent, and the
    requests refused (the attack stops at the first refusal)."""

    values: list[float]
    requests: int
    refused: int


def sweep(query: Callable[[float], int], *, lo: float = 0.01, hi: float = 200.0,
          ratio: float = 1.01, bisections: int = 30, tol: float = 1e-5) -> SweepResult:
    """Recover ``a_j`` from ``query`` (see the module's docstring).

    Refusals (any exception from ``query``) end the attack with what it has.
    """
    values: list[float] = []
    requests = refused = 0

    def ask(s: float) -> int | None:
        nonlocal requests, refused
        requests += 1
        try:
            return int(query(s))
        except Exception:  # noqa: BLE001 - a refusal, whatever the transport calls it
            refused += 1
            return None

    s_prev, p_prev = lo, ask(lo)
    if p_prev is None:
        return SweepResult(values, requests, refused)
    while s_prev < hi:
        s = s_prev * ratio
        p = ask(s)
        if p is None:
            break
        left, p_left = s_prev, p_prev
        while p_left != p:  # every jump in (left, s], the first one each time
            a, b, p_b = left, s, p
            for _ in range(bisections):  # the first jump's position, to about 2^-30 of it
                mid = (a + b) / 2
                pm = ask(mid)
                if pm is None:
                    return SweepResult(values, requests, refused)
                if pm == p_left:
                    a = mid
                else:
                    b, p_b = mid, pm
            # features found so far explain part of the step; the rest are new features
            # whose first jump is here (several features can jump at one scale)
            jump = (a + b) / 2
            rest = p_b - p_left
            for v in values:
                m = jump * abs(v) - 0.5
                if m > 0.5 and abs(m - round(m)) < tol:
                    rest -= 1 if v > 0 else -1
            values.extend([(0.5 / jump) * (1 if rest > 0 else -1)] * abs(rest))
            left, p_left = b, p_b
        s_prev, p_prev = s, p
    return SweepResult(values, requests, refused)
