"""The set-size announcement check both PSI roles apply (``protocols/specs/psi.md``)."""

from __future__ import annotations

from vfl.exceptions import RemoteProtocolError
from vfl.policy import SecurityPolicy
from vfl.psi.messages import PsiHello

__all__ = ["checked_set_size"]


def checked_set_size(hello: PsiHello, *, peer: str, policy: SecurityPolicy) -> int:
    """The size ``peer`` announced, if this party's own policy accepts it.

    Raises
    ------
    RemoteProtocolError
        If the size is negative or above ``policy.max_psi_set_size``. Raised
        before any point of ``peer`` is received or blinded: PSI answers
        "which of these IDs do you hold?" for every ID the peer blinds, so
        the announced size is the number of guesses the peer gets per run.
    """
    n = hello.set_size
    if n < 0:
        raise RemoteProtocolError(f"{peer} announced a negative PSI set size.")
    if n > policy.max_psi_set_size:
        raise RemoteProtocolError(
            f"{peer} announced a PSI set of {n} IDs, above this party's limit of "
            f"{policy.max_psi_set_size} (max_psi_set_size); refusing before any point "
            "is exchanged."
        )
    return n
