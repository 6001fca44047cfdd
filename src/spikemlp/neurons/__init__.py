"""Spiking neurons: stateless multi-step LIF/IF nodes and their surrogate gradients."""

from . import surrogate
from .lif import IF, LIF

__all__ = ["LIF", "IF", "surrogate"]
