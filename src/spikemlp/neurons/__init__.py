"""Spiking neurons: stateless multi-step LIF/IF nodes and their surrogate gradients."""

from . import surrogate
from .group_lif import GroupLIF as GroupLIF  # SNN-MLP's group LIF
from .group_lif import group_lif as group_lif
from .lif import IF, LIF

__all__ = ["LIF", "IF", "surrogate"]
