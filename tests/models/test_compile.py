"""torch.compile of MLP-SPE: it traces (no graph break), and training through it changes nothing.

While torch.compile traces, the neurons run as the ``spikemlp`` LIF operator (one graph node each, with its
registered autograd), BN and LIF unfused and without saved-tensor hooks; these tests pin that the compiled
training step gives the eager model's logits, gradients and BatchNorm statistics
(tests/ops/test_compile_ops.py checks which operators the graphs call).
"""

from __future__ import annotations

import pytest
import torch

from equal_training import assert_same_grads_and_buffers
from spikemlp.models.mlp_spe import MLPSPE
from spikemlp.neurons import surrogate

pytestmark = pytest.mark.slow  # each compilation takes 10-60 s on a CPU

KW = dict(img_size=16, patch_size=2, embed_dim=6, depths=(1, 1), num_classes=5, T=2)


def _pair(**extra):
    torch.manual_seed(0)
    eager = MLPSPE(**KW, **extra).double()
    other = MLPSPE(**KW, **extra).double()
    other.load_state_dict(eager.state_dict())
    return eager, other


def _step(model, x):
    out = model(x)
    out.square().sum().backward()
    return out


@pytest.mark.parametrize(
    "extra",
    [{}, {"memory_saving": False, "surrogate": surrogate.get("atan")}],
    ids=["default", "no-memory-saving-atan"],
)
def test_compiled_training_step_equals_eager(extra):
    """Whole graph (fullgraph=True fails on any break); same logits, gradients (so the surrogate's class
    and fields reach the compiled backward, not the default sigmoid's) and running statistics."""
    eager, compiled = _pair(**extra)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch._dynamo.reset()
    out_c = _step(torch.compile(compiled, fullgraph=True), x)
    out_e = _step(eager, x)
    torch.testing.assert_close(out_c, out_e, rtol=1e-9, atol=1e-12)
    assert_same_grads_and_buffers(eager, compiled)


def test_compiled_inference_with_spike_kernels_gives_the_dense_values():
    """The spike-matmul operator is one node of the graph: one graph, the dense model's values."""
    model, dense = _pair()
    model.eval().set_spike_kernels(True)
    dense.eval()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(model, fullgraph=True)(x)
        torch.testing.assert_close(out, dense(x), rtol=1e-9, atol=1e-12)
