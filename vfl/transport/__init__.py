"""Transports: concrete implementations of :class:`vfl.channel.Channel`."""

from __future__ import annotations

from vfl.transport.base import Endpoint, TrafficStats
from vfl.transport.memory import InMemoryNetwork

__all__ = ["Endpoint", "InMemoryNetwork", "TrafficStats"]
