"""Gradient transports: how generator gradients travel between ranks (section IV-B)."""

from sagips.transport.base import ExchangeStats, GradientTransport
from sagips.transport.modes import MODES, make_transport

__all__ = ["MODES", "ExchangeStats", "GradientTransport", "make_transport"]
