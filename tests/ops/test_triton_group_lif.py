"""The group LIF's Triton kernels (ops/triton_group_lif.py) in Triton's interpreter on CPU tensors, against
``group_lif_reference``: forward bit for bit, gradients of x, tau and V_th; odd sizes, a group of one,
the whole axis as one group, the LIF switched off, non-contiguous inputs, float32/bfloat16/float16, and
the kernels' int64 offsets past 2^31. One interpreter process runs every case (tests/ops/
interpret_group_lif.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interpret

# name: (shape, axis, group_size, dtype, layout)
CASES = {
    f"{dtype}-{name}": (shape, axis, group_size, dtype, layout)
    for dtype in ("float32", "bfloat16", "float16")
    for name, (shape, axis, group_size, layout) in {
        "H-s4-odd": ((2, 3, 7, 9), 2, 4, "contiguous"),
        "W-s4-odd": ((2, 3, 7, 9), 3, 4, "contiguous"),
        "W-whole-axis": ((2, 3, 5, 9), 3, 0, "contiguous"),
        "H-s1": ((1, 2, 5, 6), 2, 1, "contiguous"),
        "H-off": ((1, 2, 5, 6), 2, -1, "contiguous"),
        "W-s3-transposed": ((2, 2, 6, 7), 3, 3, "transposed"),
        "H-s4-strided": ((1, 3, 9, 5), 2, 4, "strided"),
        "3d-axis0-s2": ((5, 4, 3), 0, 2, "contiguous"),
    }.items()
}


@pytest.fixture(scope="module")
def interpreted():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    script = Path(__file__).with_name("interpret_group_lif.py")
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(CASES)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", CASES)
def test_kernels_match_the_reference(interpreted, name):
    r = interpreted["cases"][name]
    dtype = CASES[name][3]
    assert r["forward_equal"] and r["shapes_ok"], r
    assert r["dtypes"] == [f"torch.{dtype}", f"torch.{dtype}", "torch.float32"], r
    assert r["grad_x_err"] < 1e-6, r  # the same float32 operations, rounded once to the dtype
    assert r["tau_err"] < 1e-4 and r["v_th_err"] < 1e-4, r  # sums in another order
    if CASES[name][2] not in (-1, 1):
        assert r["fired"] and r["tau_grad"] != 0.0, r  # the case exercises firing and the carried membrane


def test_offsets_past_2_31_are_int64(interpreted):
    offsets = interpreted["offsets"]
    assert offsets["got"] == offsets["want"] and max(offsets["want"]) > 2**31
