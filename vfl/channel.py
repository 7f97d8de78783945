"""The channel contract every transport implements.

Role code depends on this interface only, never on a concrete transport, so
the in-memory and the gRPC transports are drop-in replacements for each other.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

__all__ = ["Channel"]

M = TypeVar("M")


class Channel(Protocol):
    """A party's authenticated, ordered link to its peers.

    Attributes
    ----------
    party : str
        This party's name.
    """

    party: str

    def send(self, to: str, message: object) -> None:
        """Encode ``message`` with the wire codec and deliver it to ``to``."""
        ...

    def recv(self, frm: str, expected: type[M], timeout: float | None = None) -> M:
        """Receive the next message from ``frm``; it must be of type ``expected``.

        Raises
        ------
        RemoteProtocolError
            If the next message from ``frm`` has another type, another job id,
            or an out-of-order sequence number.
        PeerTimeoutError
            If nothing arrives within ``timeout`` seconds.
        """
        ...
