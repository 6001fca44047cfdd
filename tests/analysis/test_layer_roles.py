"""The layer-role check lives in analysis, which needs nothing from the MFI package."""

from __future__ import annotations

import subprocess
import sys

import spikemlp.mfi
from spikemlp.analysis import layer_roles


def test_analysis_loads_without_the_mfi_package():
    code = (
        "import sys, spikemlp.analysis; print(sorted(m for m in sys.modules if m.startswith('spikemlp.mfi')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_mfi_keeps_its_public_names():
    for name in ("ALLOWED_ROLES", "NonBinaryLayer", "classifier_name"):
        assert getattr(spikemlp.mfi, name) is getattr(layer_roles, name)
