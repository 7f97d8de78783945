"""Wire messages of the ECDH PSI protocol (``protocols/specs/psi.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfl.codec import message

__all__ = ["PsiRequest", "PsiResponse", "PsiResult"]


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
