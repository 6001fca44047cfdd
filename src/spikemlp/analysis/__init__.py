"""Analysis: operation counts, firing rates, energy and multiplication-free-inference checks.

``analyze(model, loader, out_dir)`` is the one-call entry point (also ``spikemlp analyze``); the pieces
are usable alone: ``count_sops`` and ``fan_out`` (exact synaptic operations), ``ActivityRecorder``
(hooks), ``EnergyModel`` (energy constants), ``count_macs``/``macs_per_step`` (dense MACs).
"""

from .analyzer import PLOT_FILES, REPORT_FILES, analyze, token_mixing_panels
from .energy import ENERGY_PRESETS, LEFT_OUT, EnergyModel
from .macs import count_macs, macs_per_step
from .recording import ActivityRecorder, register_neuron
from .report import build_report, render_markdown, stage_of
from .sops import count_sops, fan_out, register_synaptic, sops_per_step

__all__ = [
    "ENERGY_PRESETS",
    "LEFT_OUT",
    "PLOT_FILES",
    "REPORT_FILES",
    "ActivityRecorder",
    "EnergyModel",
    "analyze",
    "build_report",
    "count_macs",
    "count_sops",
    "fan_out",
    "macs_per_step",
    "register_neuron",
    "register_synaptic",
    "render_markdown",
    "sops_per_step",
    "stage_of",
    "token_mixing_panels",
]
