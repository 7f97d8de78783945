"""vfl: vertical federated logistic regression with Paillier encryption.

Parties (``guest``, ``host``, ``arbiter``) align their shared customers with
ECDH private set intersection (:mod:`vfl.psi`) and train one logistic
regression over their combined columns (:mod:`vfl.lr`) without revealing
rows, labels or features to each other.
"""

from __future__ import annotations

from vfl.exceptions import (
    ConfigError,
    CryptoError,
    DataError,
    NotFittedError,
    ProtocolError,
    RemoteProtocolError,
    TransportError,
    VFLError,
)
from vfl.lr.config import TrainConfig
from vfl.lr.estimator import Arbiter, GuestLogisticRegression, HostLogisticRegression
from vfl.roles import Role
from vfl.transport.memory import InMemoryNetwork

__version__ = "0.1.0"

__all__ = [
    "Arbiter",
    "ConfigError",
    "CryptoError",
    "DataError",
    "GuestLogisticRegression",
    "HostLogisticRegression",
    "InMemoryNetwork",
    "NotFittedError",
    "ProtocolError",
    "RemoteProtocolError",
    "Role",
    "TrainConfig",
    "TransportError",
    "VFLError",
    "__version__",
]
