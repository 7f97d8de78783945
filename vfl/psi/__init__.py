"""ECDH private set intersection over X25519 (``protocols/specs/psi.md``)."""

from __future__ import annotations

from vfl.psi.client import PsiClient
from vfl.psi.driver import run_psi_guest, run_psi_host
from vfl.psi.ecdh import hash_to_point
from vfl.psi.messages import PsiRequest, PsiResponse, PsiResult
from vfl.psi.server import PsiServer

__all__ = [
    "PsiClient",
    "PsiRequest",
    "PsiResponse",
    "PsiResult",
    "PsiServer",
    "hash_to_point",
    "run_psi_guest",
    "run_psi_host",
]
