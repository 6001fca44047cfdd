"""spikemlp's native kernels as ``torch.library`` operators, in the namespace ``spikemlp``.

``lif_forward`` / ``lif_backward`` (``ops.lif``; CUDA by ``ops.triton_lif``), ``group_lif_forward`` /
``group_lif_backward`` (``ops.group_lif``; PyTorch on the CPU, CUDA by ``ops.triton_group_lif``) and
``spike_matmul`` (``ops.spike_matmul``). The C++ sources are in ``ops/csrc``, built on first use by
``ops._build``; ``ops.select`` is the one place that chooses between an operator and the reference
PyTorch code (``spikemlp.neurons.reference``). The fused BatchNorm + LIF is not an operator
(``neurons.bn_lif`` says why).
"""

from . import group_lif, lif, spike_matmul, triton_group_lif, triton_lif  # noqa: F401  (registers the operators)
