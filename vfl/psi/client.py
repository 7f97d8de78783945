"""PSI client (played by the guest): pure protocol logic, no I/O.

The client announces its set size, checks every server's announcement
against its own policy, learns for each server which of its own IDs the
server also holds, then fixes the final intersection over all servers and a
common row order, and tells each server which of its rows to keep, in that
order.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from vfl.exceptions import DataError, LocalProtocolError, RemoteProtocolError
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.psi._bounds import checked_set_size
from vfl.psi.ecdh import BlindingKey, split_points
from vfl.psi.messages import PsiHello, PsiRequest, PsiResponse, PsiResult

__all__ = ["PsiClient"]

_rng = secrets.SystemRandom()


class PsiClient:
    """Client side of ECDH PSI against one or more servers.

    What it learns: the size of each server's ID set, and for each server the
    subset of its own IDs that server holds (see ``protocols/specs/psi.md``).

    Steps: :meth:`hello` (to every server), :meth:`on_hello` (from every
    server), :meth:`request` (to every server), :meth:`on_response` (from
    every server), :meth:`finish`.

    Parameters
    ----------
    ids : sequence of str
        This party's IDs, unique, in its table's row order.
    servers : sequence of str
        Names of the server parties (the hosts).
    policy : SecurityPolicy
        This party's limits; a server announcing more than
        ``policy.max_psi_set_size`` IDs is refused before any of its points
        is received.
    """

    def __init__(self, ids: Sequence[str], servers: Sequence[str], *,
                 policy: SecurityPolicy = DEFAULT_POLICY) -> None:
        if len(set(ids)) != len(ids):
            raise DataError("PSI input IDs must be unique.")
        self._ids = list(ids)
        self._servers = list(servers)
        self._policy = policy
        self._key = BlindingKey()
        self._order = list(range(len(self._ids)))
        _rng.shuffle(self._order)
        self._announced: dict[str, int] = {}
        self._requested = False
        self._matches: dict[str, dict[int, int]] = {}
        self._rows: np.ndarray | None = None

    def hello(self) -> PsiHello:
        """This party's set size, sent to every server before any point."""
        return PsiHello(len(self._ids))

    def on_hello(self, server: str, hello: PsiHello) -> None:
        """Check ``server``'s announced set size against this party's policy.

        Raises
        ------
        RemoteProtocolError
            If the size is negative or above ``policy.max_psi_set_size``, or
            ``server`` already announced one.
        """
        self._check_server(server)
        if server in self._announced:
            raise RemoteProtocolError(f"Second PSI hello from {server}.")
        self._announced[server] = checked_set_size(hello, peer=server, policy=self._policy)

    def request(self) -> PsiRequest:
        """The blinded IDs ``H(a)^alpha`` in a secret random order (same for every server).

        Only once every server's set size has been accepted, so nothing is
        blinded or sent for a run that a server's announcement would abort.
        """
        missing = [s for s in self._servers if s not in self._announced]
        if missing:
            raise LocalProtocolError(f"No PSI hello yet from {', '.join(missing)}; "
                                     "call on_hello() for every server first.")
        if self._requested:
            raise LocalProtocolError("The PSI request was already built.")
        self._requested = True
        return PsiRequest(b"".join(self._key.blind_ids([self._ids[i] for i in self._order])))

    def on_response(self, server: str, response: PsiResponse) -> None:
        """Match ``H(b)^(beta*alpha)`` against ``H(a)^(alpha*beta)``.

        The point counts are checked before anything is blinded: exactly one
        double-blinded point per client ID, and exactly as many server points
        as ``server`` announced.
        """
        self._check_server(server)
        if not self._requested:
            raise LocalProtocolError("PSI response received before the request was sent.")
        if server in self._matches:
            raise RemoteProtocolError(f"Second PSI response from {server}.")
        double = split_points(response.double_blinded, peer=server, what="PSI response",
                              expected=len(self._ids))
        if len(set(double)) != len(double):
            # distinct points blinded by one scalar stay distinct: repeats mean a server that
            # would make several of this party's IDs match one of its own
            raise RemoteProtocolError(f"PSI response from {server} repeats double-blinded points.")
        theirs = split_points(response.blinded, peer=server, what="PSI server set",
                              expected=self._announced[server])
        theirs_double = self._key.blind(theirs, peer=server)
        position_of = {p: j for j, p in enumerate(theirs_double)}
        if len(position_of) != len(theirs_double):
            raise RemoteProtocolError(f"PSI server set from {server} contains repeated points.")
        matches: dict[int, int] = {}
        for k, point in enumerate(double):
            j = position_of.get(point)
            if j is not None:
                matches[self._order[k]] = j
        self._matches[server] = matches

    def server_size(self, server: str) -> int:
        """How many IDs ``server`` announced (and, once it answered, sent)."""
        return self._announced[server]

    def finish(self) -> dict[str, PsiResult]:
        """Fix the intersection over all servers and a secret random common order.

        Returns
        -------
        dict
            The :class:`PsiResult` to send to each server.
        """
        missing = [s for s in self._servers if s not in self._matches]
        if missing:
            raise LocalProtocolError(f"No PSI response yet from {', '.join(missing)}.")
        common = set(range(len(self._ids)))
        for matches in self._matches.values():
            common &= matches.keys()
        rows = list(common)
        _rng.shuffle(rows)
        self._rows = np.asarray(rows, dtype=np.int64)
        return {
            s: PsiResult(np.asarray([self._matches[s][r] for r in rows], dtype=np.int64))
            for s in self._servers
        }

    @property
    def rows(self) -> np.ndarray:
        """Row indices into this party's table, in the common order."""
        if self._rows is None:
            raise LocalProtocolError("PSI is not finished yet; call finish() first.")
        return self._rows

    def _check_server(self, server: str) -> None:
        if server not in self._servers:
            raise LocalProtocolError(f"{server!r} is not a PSI server of this run.")
