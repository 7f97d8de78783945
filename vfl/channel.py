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

    def recv(self, frm: str, expected: type[M] | tuple[type[M], ...],
             timeout: float | None = None) -> M:
        """Receive the next message from ``frm``; it must be of type ``expected`` (or one of them).

        Raises
        ------
        RemoteProtocolError
            If the next message from ``frm`` has another type, another job id,
            or an out-of-order sequence number.
        PeerTimeoutError
            If nothing arrives within ``timeout`` seconds.
        """
        ...

    def limit_message_size(self, peer: str, max_bytes: int) -> None:
        """Accept messages of at most ``max_bytes`` encoded bytes from ``peer`` from now on.

        Drivers call this once the job fixes the largest message ``peer`` may
        send (e.g. batch × ciphertext width plus envelope overhead, see
        :func:`vfl.transport.base.envelope_limit`). The effective limit is the
        smaller of this and the transport's configured ceiling; the latest call
        for a peer wins. A larger message is refused before it is buffered.
        """
        ...
