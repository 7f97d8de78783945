"""The whole vfl error tree, in one place.

Every error raised by vfl derives from :class:`VFLError`, so callers can catch
one base class. Messages say what was expected, what arrived, and what to do
next; they never contain plaintexts, keys or raw customer IDs.
"""

from __future__ import annotations

__all__ = [
    "OutputExistsError",
    "VFLError",
    "ConfigError",
    "DataError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "CryptoError",
    "KeyMismatchError",
    "InsecureKeySizeError",
    "EncodingOverflowError",
    "TransportError",
    "PeerTimeoutError",
    "ComputeError",
    "NotFittedError",
    "ConvergenceWarning",
]


class VFLError(Exception):
    """Base class of every error raised by vfl."""


class ConfigError(VFLError, ValueError):
    """A parameter or configuration value is invalid."""


class DataError(VFLError, ValueError):
    """A party's input table is unusable (missing column, duplicate IDs, ...)."""


class OutputExistsError(VFLError, FileExistsError):
    """An output folder or file already holds another run's outputs (give ``force``)."""


class ProtocolError(VFLError):
    """A protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """This party tried to do something the protocol does not allow now."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something malformed, out of order, or out of range."""


class CryptoError(VFLError):
    """A cryptographic operation failed or was refused."""


class KeyMismatchError(CryptoError, ValueError):
    """Ciphertexts under different public keys were combined."""


class InsecureKeySizeError(CryptoError, ValueError):
    """A Paillier key below the secure minimum was requested without opting in.

    ``bits`` and ``minimum``: the key's length and the minimum it missed (None
    when the error is about another size rule), so callers can explain it
    without reading the message.
    """

    def __init__(self, message: str, *, bits: int | None = None,
                 minimum: int | None = None) -> None:
        super().__init__(message)
        self.bits = bits
        self.minimum = minimum


class EncodingOverflowError(CryptoError, OverflowError):
    """A value does not fit the fixed-point encoding range."""


class TransportError(VFLError):
    """A message could not be delivered or received."""


class PeerTimeoutError(TransportError, TimeoutError):
    """A peer did not send the expected message in time."""


class ComputeError(VFLError):
    """This party's own compute (its worker processes or Dask cluster) failed or gave results
    this process refuses; no peer is blamed."""


class NotFittedError(VFLError, ValueError, AttributeError):
    """An estimator was used before ``fit``."""


class ConvergenceWarning(UserWarning):
    """Training stopped at ``max_iter`` before the loss converged."""
