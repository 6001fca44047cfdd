"""Neuron test fixtures: the CPU backends (the fused one skips, with the reason, if it cannot build)."""

from __future__ import annotations

import pytest

from spikemlp.ops import lif as fused_cpu


def _require_cpp() -> None:
    reason = fused_cpu.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def cpp_ready() -> None:
    _require_cpp()


@pytest.fixture(params=["reference", "cpp"])
def cpu_backend(request) -> str:
    """Every CPU backend in turn: tests taking this fixture must hold for all of them."""
    if request.param == "cpp":
        _require_cpp()
    return request.param
