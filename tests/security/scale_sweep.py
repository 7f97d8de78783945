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


def _explained(s: float, step: int, values: list[float], tol: float) -> bool:
    """A jump at ``s`` of size ``step`` that features found so far account for."""
    need = step
    for a in values:
        m = s * abs(a) - 0.5
        if m > 0.5 and abs(m - round(m)) < tol:
            need -= 1 if a > 0 else -1
    return need == 0


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
        if p != p_prev:
            a, b, pa = s_prev, s, p_prev
            for _ in range(bisections):  # the jump's position, to about 2^-30 of the step
                mid = (a + b) / 2
                pm = ask(mid)
                if pm is None:
                    return SweepResult(values, requests, refused)
                if pm == pa:
                    a = mid
                else:
                    b = mid
            # a jump of several features at nearly one scale shows as one larger step: the
            # unexplained part is new features at that position
            jump = (a + b) / 2
            step = p - p_prev
            if not _explained(jump, step, values, tol):
                rest = step
                for v in values:
                    m = jump * abs(v) - 0.5
                    if m > 0.5 and abs(m - round(m)) < tol:
                        rest -= 1 if v > 0 else -1
                for _ in range(abs(rest)):
                    values.append((0.5 / jump) * (1 if rest > 0 else -1))
        s_prev, p_prev = s, p
    return SweepResult(values, requests, refused)
