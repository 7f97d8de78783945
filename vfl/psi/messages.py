"""Wire messages of the ECDH PSI protocol (``protocols/specs/psi.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfl.codec import message

__all__ = ["PsiHello", "PsiReuse", "PsiRequest", "PsiResponse", "PsiResult", "PsiBuckets", "PsiBucketRequest",
           "PsiBucketResponse", "PsiBucketResult"]


@message("psi.Hello/2")
@dataclass(frozen=True, slots=True)
class PsiHello:
    """Both directions, before any point: how many IDs the sender will blind.

    The receiver checks ``set_size`` against its own ``max_psi_set_size`` and
    then refuses any message carrying more points than announced.

    ``reuse`` (a resumed job, ``protocols/specs/psi.md`` "Reusing the
    intersection"): from the guest, the digest of the intersection it kept
    from the interrupted run of this job (empty: none); from a host, the same
    digest echoed if, and only if, the host kept the same intersection and
    its IDs did not change since (else empty).
    """

    set_size: int
    reuse: bytes = b""


@message("psi.Reuse/1")
@dataclass(frozen=True, slots=True)
class PsiReuse:
    """Guest → host, instead of a request: every host echoed the digest; each party takes
    the intersection it kept, and no point is exchanged."""

    digest: bytes


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


# ------------------------------------------------------------------ bucketed PSI (large sets)
# ``protocols/specs/psi.md``, "Bucketed PSI": used when either set exceeds the bucket size; the
# IDs are split by the top bits of their public order key and every bucket is padded to a cap.


@message("psi.Buckets/1")
@dataclass(frozen=True, slots=True)
class PsiBuckets:
    """Client → server, after both hellos: the bucket plan the client derived from the sizes.

    The server derives the plan itself and refuses one that differs (another
    version or bucket size), before any point is exchanged.
    """

    bucket_bits: int
    client_cap: int
    server_cap: int


@message("psi.BucketRequest/1")
@dataclass(frozen=True, slots=True)
class PsiBucketRequest:
    """Client → server: ``client_cap`` blinded points of bucket ``bucket`` (padded, shuffled)."""

    bucket: int
    blinded: bytes


@message("psi.BucketResponse/1")
@dataclass(frozen=True, slots=True)
class PsiBucketResponse:
    """Server → client: the request's points blinded again, and ``server_cap`` own points."""

    bucket: int
    double_blinded: bytes
    blinded: bytes


@message("psi.BucketResult/1")
@dataclass(frozen=True, slots=True)
class PsiBucketResult:
    """Client → server: positions, in the server's shuffled bucket list, kept in this bucket."""

    bucket: int
    positions: np.ndarray
