"""Wire messages of the ECDH PSI protocol (``protocols/specs/psi.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfl.codec import message

__all__ = ["PsiHello", "PsiRequest", "PsiResponse", "PsiResult"]


@message("psi.Hello/1")
@dataclass(frozen=True, slots=True)
class PsiHello:
    """Both directions, before any point: how many IDs the sender will blind.

    The receiver checks ``set_size`` against its own ``max_psi_set_size`` and
    then refuses any message carrying more points than announced.
    """

    set_size: int


@message("psi.Request/1")
@dataclass(frozen=True, slots=True)
class PsiRequest:
    """Client (guest) → server (host): its blinded IDs ``H(a)^alpha``, shuffled."""

    blinded: bytes


@message("psi.Response/1")
@dataclass(frozen=True, slots=True)
class PsiResponse:
    """Server → client: ``H(a)^(alpha*beta)`` in request order, and ``H(b)^beta`` shuffled."""

    double_blinded: bytes
    blinded: bytes


@message("psi.Result/1")
@dataclass(frozen=True, slots=True)
class PsiResult:
    """Client → server: positions in the server's shuffled list, in the common order."""

    positions: np.ndarray
