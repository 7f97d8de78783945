"""vfl: vertical federated logistic regression with Paillier encryption.

Parties (``guest``, ``host``, ``arbiter``) align their shared customers with
ECDH private set intersection (:mod:`vfl.psi`) and train one logistic
regression over their combined columns (:mod:`vfl.lr`) without revealing
rows, labels or features to each other.

The estimators and transports are imported on first use, so worker processes
that only need :mod:`vfl.crypto` or :mod:`vfl.psi` start quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
from vfl.roles import Role

if TYPE_CHECKING:  # pragma: no cover
    from vfl.lr.config import TrainConfig
    from vfl.lr.estimator import Arbiter, GuestLogisticRegression, HostLogisticRegression
    from vfl.transport.memory import InMemoryNetwork

__version__ = "0.1.0"

_LAZY = {
    "Arbiter": "vfl.lr.estimator",
    "GuestLogisticRegression": "vfl.lr.estimator",
    "HostLogisticRegression": "vfl.lr.estimator",
    "TrainConfig": "vfl.lr.config",
    "InMemoryNetwork": "vfl.transport.memory",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vfl' has no attribute {name!r}")


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
