"""spikemlp's native kernels as ``torch.library`` operators, in the namespace ``spikemlp``.

- ``spikemlp::lif_forward`` / ``spikemlp::lif_backward`` (``ops.lif``): the fused multi-step LIF/IF,
  C++ on the CPU, Triton on CUDA (``ops.triton_lif``), with fake implementations and registered
  autograd (the forward differentiable through the backward operator).
- ``spikemlp::group_lif_forward`` / ``spikemlp::group_lif_backward`` (``ops.group_lif``): SNN-MLP's
  group LIF, PyTorch on the CPU, Triton on CUDA (``ops.triton_group_lif``), with fake implementations and
  registered autograd.
- ``spikemlp::spike_matmul`` (``ops.spike_matmul``): the spike-driven product for inference, C++ on the
  CPU, with a fake implementation.

The C++ sources are in ``ops/csrc`` and are built on first use by ``ops._build`` (no torch headers; see
there why). ``ops.select`` is the one place that chooses between an operator and the reference PyTorch
code (``spikemlp.neurons.reference``), which stays the ground truth of the tests and the fallback where
no kernel can be built.

The fused BatchNorm + LIF of training (``spikemlp.neurons.bn_lif``) is not an operator: it updates the
BatchNorm running statistics in place, and ``register_autograd`` does not support operators that mutate
their inputs. It stays a Python ``autograd.Function`` that composes ATen's batch norm with the LIF
operators above (so it too runs the kernels through the dispatcher); under torch.compile the model runs
BatchNorm and the LIF operator as separate nodes instead.
"""

from . import group_lif, lif, spike_matmul, triton_group_lif, triton_lif  # noqa: F401  (registers the operators)
