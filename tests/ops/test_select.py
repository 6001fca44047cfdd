"""ops.select, the one kernel-or-reference choice, and spike_matmul()'s argument checks."""

from __future__ import annotations

import pytest
import torch

from spikemlp.layers import spike_matmul as sm
from spikemlp.neurons import LIF
from spikemlp.ops import select


def test_spike_matmul_applies_only_to_cpu_float32_and_float64(monkeypatch):
    monkeypatch.setattr(select, "_spike_matmul_reason", lambda: None)
    assert select.spike_matmul_ready(torch.zeros(2, 3))
    assert select.spike_matmul_ready(torch.zeros(2, 3, dtype=torch.float64))
    assert not select.spike_matmul_ready(torch.zeros(2, 3, dtype=torch.float16))
    assert not select.spike_matmul_ready(torch.zeros(2, 3, device="meta"))
    monkeypatch.setattr(select, "_spike_matmul_reason", lambda: "no compiler")
    assert not select.spike_matmul_ready(torch.zeros(2, 3))
    assert sm.unavailable_reason() == "no compiler" and not sm.available(torch.zeros(2, 3))


def test_lif_on_an_unsupported_device_runs_the_reference():
    # A meta tensor has no kernel: auto takes the reference (shapes only), an explicit 'cpp' explains.
    x = torch.zeros(3, 4, device="meta")
    assert LIF()(x).shape == (3, 4)
    with pytest.raises(RuntimeError, match="'cpp' runs on CPU tensors, the input is on meta"):
        LIF(backend="cpp")(x)


def test_spike_matmul_rejects_wrong_devices_and_shapes():
    x = (torch.rand(2, 4, 5) < 0.5).float()
    w = torch.randn(3, 4)
    with pytest.raises(ValueError, match="runs on the CPU; a segment is on meta"):
        sm.spike_matmul([x.to("meta")], w, None, sm.PackedWeight(), True, True)
    with pytest.raises(ValueError, match="runs on the CPU; the weight is on meta"):
        sm.spike_matmul([x], w.to("meta"), None, sm.PackedWeight(), True, True)
    with pytest.raises(ValueError, match=r"col_affine must be two tensors \[3\]"):
        sm.spike_matmul(
            [x], w, None, sm.PackedWeight(), True, True, col_affine=(torch.ones(4), torch.ones(4))
        )
    with pytest.raises(ValueError, match=r"row_affine must be two tensors \[5\]"):
        sm.spike_matmul(
            [x], w, None, sm.PackedWeight(), True, True, row_affine=(torch.ones(5), torch.ones(3))
        )
    with pytest.raises(ValueError, match="float32 or float64"):
        sm.spike_matmul([x.half()], w.half(), None, sm.PackedWeight(), True, True)
    with pytest.raises(ValueError, match="images are not T = 0 steps"):
        sm.spike_matmul([x], w, None, sm.PackedWeight(), True, True, neuron=(0, LIF()))


def test_group_lif_kernel_is_for_cuda_tensors_only(monkeypatch):
    # The CPU (and any other device) keeps the PyTorch scans of ops.group_lif.
    monkeypatch.setattr(select, "_triton_reason", lambda: None)
    assert not select.group_lif_kernel_ready(torch.zeros(2, 3))
    assert not select.group_lif_kernel_ready(torch.zeros(2, 3, device="meta"))


@pytest.mark.cuda
def test_group_lif_kernel_runs_for_cuda_float32_and_half():
    for dtype, ready in (
        (torch.float32, True),
        (torch.bfloat16, True),
        (torch.float16, True),
        (torch.float64, False),
    ):
        assert select.group_lif_kernel_ready(torch.zeros(2, 3, device="cuda", dtype=dtype)) == ready
