"""PSI server (played by each host): pure protocol logic, no I/O."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from vfl.exceptions import DataError, LocalProtocolError, RemoteProtocolError
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.psi._bounds import checked_set_size
from vfl.psi.ecdh import BlindingKey, split_points
from vfl.psi.messages import PsiHello, PsiRequest, PsiResponse, PsiResult

__all__ = ["PsiServer"]

_rng = secrets.SystemRandom()


class PsiServer:
    """Server side of ECDH PSI.

    What it learns: the size of the client's ID set, and which of its own
    IDs are in the final intersection, in the common order.

    Steps: :meth:`on_hello` (returns this party's hello), :meth:`on_request`
    (returns the response), :meth:`on_result`.

    Parameters
    ----------
    ids : sequence of str
        This party's IDs, unique, in its table's row order.
    client : str
        Name of the client party (for error messages).
    policy : SecurityPolicy
        This party's limits; a client announcing more than
        ``policy.max_psi_set_size`` IDs is refused before any of its points
        is received or blinded.
    """

    def __init__(self, ids: Sequence[str], client: str = "guest", *,
                 policy: SecurityPolicy = DEFAULT_POLICY) -> None:
        if len(set(ids)) != len(ids):
            raise DataError("PSI input IDs must be unique.")
        self._ids = list(ids)
        self._client = client
        self._policy = policy
        self._key = BlindingKey()
        self._order = list(range(len(self._ids)))
        _rng.shuffle(self._order)
        self._responded = False
        self.client_size: int | None = None
        self._rows: np.ndarray | None = None

    def on_hello(self, hello: PsiHello) -> PsiHello:
        """Accept the client's announced set size; returns this party's own.

        Raises
        ------
        RemoteProtocolError
            If the size is negative or above ``policy.max_psi_set_size``, or
            the client already announced one.
        """
        if self.client_size is not None:
            raise RemoteProtocolError(f"Second PSI hello from {self._client}.")
        self.client_size = checked_set_size(hello, peer=self._client, policy=self._policy)
        return PsiHello(len(self._ids))

    def on_request(self, request: PsiRequest) -> PsiResponse:
        """Blind the client's points again and send our own blinded, shuffled set.

        The request must hold exactly the announced number of points; that is
        checked before any point is blinded.
        """
        if self.client_size is None:
            raise RemoteProtocolError(
                f"PSI request from {self._client} before its set size (psi.Hello/2).")
        if self._responded:
            raise RemoteProtocolError(f"Second PSI request from {self._client}.")
        points = split_points(request.blinded, peer=self._client, what="PSI request",
                              expected=self.client_size)
        double = self._key.blind(points, peer=self._client)
        mine = self._key.blind_ids([self._ids[i] for i in self._order])
        self._responded = True
        return PsiResponse(b"".join(double), b"".join(mine))

    def on_result(self, result: PsiResult) -> np.ndarray:
        """Map the client's positions back to our rows; returns them in the common order.

        The intersection cannot be larger than either set, so more than
        ``min(client size, own size)`` positions are refused.
        """
        if not self._responded or self.client_size is None:
            raise LocalProtocolError("PSI result received before the request was answered.")
        pos = np.asarray(result.positions)
        if pos.ndim != 1 or pos.dtype != np.int64:
            raise RemoteProtocolError(f"PSI result from {self._client} is not a 1-D int64 array.")
        most = min(self.client_size, len(self._ids))
        if pos.size > most:
            raise RemoteProtocolError(
                f"PSI result from {self._client} has {pos.size} positions; at most {most} "
                "(the smaller announced set size) are possible.")
        if pos.size and (pos.min() < 0 or pos.max() >= len(self._ids)):
            raise RemoteProtocolError(f"PSI result from {self._client} has positions out of range.")
        if len(np.unique(pos)) != pos.size:
            raise RemoteProtocolError(f"PSI result from {self._client} repeats positions.")
        order = np.asarray(self._order, dtype=np.int64)
        self._rows = order[pos]
        return self._rows

    @property
    def rows(self) -> np.ndarray:
        """Row indices into this party's table, in the common order."""
        if self._rows is None:
            raise LocalProtocolError("PSI is not finished yet.")
        return self._rows
