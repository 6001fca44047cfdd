"""torch.compile of mlp_spe_xt_cifar calls the spikemlp operators: one graph, eager's numbers.

A recording backend (AOT autograd, graphs run as traced) keeps the forward and backward graphs, so the
tests can see which operators they call; torch.compile with the default backend is covered by
tests/models/test_compile.py on a smaller model.
"""

from __future__ import annotations

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

import spikemlp
from equal_training import assert_same_grads_and_buffers
from spikemlp.layers import spike_matmul
from spikemlp.ops import lif as fused_cpu

pytestmark = pytest.mark.slow  # each trace of the model takes several seconds on a CPU


@pytest.fixture(autouse=True)
def kernels_built():
    for reason in (fused_cpu.unavailable_reason(), spike_matmul.unavailable_reason()):
        if reason is not None:
            pytest.skip(reason)


class Recorder:
    """A torch.compile backend that keeps every graph it is given (forward and backward) and runs it."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []

        def keep(gm, example_inputs):
            self.graphs.append(gm)
            return make_boxed_func(gm.forward)

        self.backend = aot_autograd(fw_compiler=keep, bw_compiler=keep)

    def targets(self) -> set[str]:
        return {str(n.target) for gm in self.graphs for n in gm.graph.nodes if n.op == "call_function"}


def _pair():
    torch.manual_seed(0)
    eager = spikemlp.models.create("mlp_spe_xt_cifar", T=2).double()
    other = spikemlp.models.create("mlp_spe_xt_cifar", T=2).double()
    other.load_state_dict(eager.state_dict())
    return eager, other


def _images(seed: int) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_training_graph_calls_the_lif_operators_and_matches_eager():
    eager, compiled = _pair()
    x = _images(1)
    recorder = Recorder()
    torch._dynamo.reset()
    out_c = torch.compile(compiled, fullgraph=True, backend=recorder.backend)(x)
    out_c.square().sum().backward()
    out_e = eager(x)
    out_e.square().sum().backward()
    targets = recorder.targets()
    assert "spikemlp.lif_forward.default" in targets  # the operator, not the reference loop
    assert "spikemlp.lif_backward.default" in targets  # its registered autograd, in the backward graph
    assert not any("sigmoid" in t for t in targets)  # the reference's surrogate is nowhere
    torch.testing.assert_close(out_c, out_e, rtol=1e-9, atol=1e-12)
    assert_same_grads_and_buffers(eager, compiled)


def test_eval_graph_with_spike_kernels_calls_the_spike_matmul_operator():
    eager, compiled = _pair()
    for model in (eager, compiled):
        model.eval().set_spike_kernels(True)
    x = _images(2)
    recorder = Recorder()
    torch._dynamo.reset()
    with torch.no_grad():
        out_c = torch.compile(compiled, fullgraph=True, backend=recorder.backend)(x)
        out_e = eager(x)
        eager.set_spike_kernels(False)
        dense = eager(x)
    targets = recorder.targets()
    assert {"spikemlp.spike_matmul.default", "spikemlp.lif_forward.default"} <= targets
    torch.testing.assert_close(out_c, out_e, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out_c, dense, rtol=1e-9, atol=1e-10)


def test_no_graph_break_in_either_mode():
    model = spikemlp.models.create("mlp_spe_xt_cifar", T=2).double()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(_images(3))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    model.eval().set_spike_kernels(True)
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(_images(3))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
