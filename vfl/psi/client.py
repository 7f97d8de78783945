"""PSI client (played by the guest): pure protocol logic, no I/O.

The client learns, for each server, which of its own IDs the server also
holds; it then fixes the final intersection over all servers and a common
row order, and tells each server which of its rows to keep, in that order.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from vfl.exceptions import DataError, LocalProtocolError, RemoteProtocolError
from vfl.psi.ecdh import BlindingKey, split_points
from vfl.psi.messages import PsiRequest, PsiResponse, PsiResult

__all__ = ["PsiClient"]

_rng = secrets.SystemRandom()


class PsiClient:
    """Client side of ECDH PSI against one or more servers.

    What it learns: the size of each server's ID set, and for each server the
    subset of its own IDs that server holds (see ``protocols/specs/psi.md``).

    Parameters
    ----------
    ids : sequence of str
        This party's IDs, unique, in its table's row order.
    servers : sequence of str
        Names of the server parties (the hosts).
    """

    def __init__(self, ids: Sequence[str], servers: Sequence[str]) -> None:
        if len(set(ids)) != len(ids):
            raise DataError("PSI input IDs must be unique.")
        self._ids = list(ids)
        self._servers = list(servers)
        self._key = BlindingKey()
        self._order = list(range(len(self._ids)))
        _rng.shuffle(self._order)
        self._matches: dict[str, dict[int, int]] = {}
        self._server_sizes: dict[str, int] = {}
        self._rows: np.ndarray | None = None

    def request(self) -> PsiRequest:
        """The blinded IDs ``H(a)^alpha`` in a secret random order (same for every server)."""
        blinded = self._key.blind_ids([self._ids[i] for i in self._order])
        self._blinded_count = len(blinded)
        return PsiRequest(b"".join(blinded))

    def on_response(self, server: str, response: PsiResponse) -> None:
        """Match ``H(b)^(beta*alpha)`` against ``H(a)^(alpha*beta)``."""
        if server not in self._servers:
            raise LocalProtocolError(f"{server!r} is not a PSI server of this run.")
        if server in self._matches:
            raise RemoteProtocolError(f"Second PSI response from {server}.")
        double = split_points(response.double_blinded, peer=server, what="PSI response",
                              expected=len(self._ids))
        theirs = split_points(response.blinded, peer=server, what="PSI server set")
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
        self._server_sizes[server] = len(theirs)

    def server_size(self, server: str) -> int:
        """How many IDs ``server`` holds."""
        return self._server_sizes[server]

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
