"""Reusing an intersection when a job resumes (``protocols/specs/psi.md``, "Reusing the
intersection").

A party that keeps checkpoints also keeps the result of its job's PSI in its
checkpoint folder: its own aligned row indices, the SHA-256 of its whole ID
column as it read it, and the *intersection digest*, a SHA-256 over the job
id and the shared IDs in their common order. No ID is stored. When the job
is resumed (``vfl run --resume``) and the party's IDs are unchanged, the
guest offers the digest in its ``PsiHello``; a host echoes it only if it kept
the same intersection of unchanged IDs; when every host echoes it, the guest
sends ``PsiReuse`` and every party takes the rows it kept, without a PSI run.

Both sides already know the shared IDs in their common order, so the digest
tells a peer nothing it did not know; an echo withheld tells the guest that
the host's IDs (or its kept result) changed since the interrupted run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vfl.codec import message

__all__ = ["PsiKept", "ReuseOffer", "ids_digest", "intersection_digest", "DIGEST_BYTES"]

#: Length of an intersection digest (SHA-256).
DIGEST_BYTES = 32


def ids_digest(ids: Sequence[str]) -> bytes:
    """SHA-256 of a party's whole ID column, in its order (each ID length-prefixed)."""
    h = hashlib.sha256(b"vfl/psi/ids/v1")
    h.update(len(ids).to_bytes(8, "big"))
    for i in ids:
        b = i.encode()
        h.update(len(b).to_bytes(4, "big"))
        h.update(b)
    return h.digest()


def intersection_digest(job: str, ids: Sequence[str], rows: npt.NDArray[np.int64]) -> bytes:
    """SHA-256 over ``job`` and the shared IDs (``ids[rows]``) in their common order."""
    h = hashlib.sha256(b"vfl/psi/intersection/v1")
    j = job.encode()
    h.update(len(j).to_bytes(4, "big"))
    h.update(j)
    h.update(len(rows).to_bytes(8, "big"))
    for r in rows.tolist():
        b = ids[r].encode()
        h.update(len(b).to_bytes(4, "big"))
        h.update(b)
    return h.digest()


@message("checkpoint.PsiKept/1")
@dataclass(frozen=True, slots=True)
class PsiKept:
    """What a party keeps of a PSI run, on its own disk (never sent)."""

    party: str
    job: str
    tag: str  # which PSI of the job: "train" or "valid"
    peers: list[str]  # whom it ran with (the guest: its hosts; a host: the guest)
    ids_sha256: bytes  # of the party's whole ID column when it ran
    n_ids: int
    digest: bytes  # intersection_digest
    rows: np.ndarray  # int64: this party's aligned rows, in the common order


@dataclass
class ReuseOffer:
    """A kept intersection offered to a PSI run; :attr:`used` says whether it was taken."""

    digest: bytes
    rows: npt.NDArray[np.int64]
    used: bool = False
