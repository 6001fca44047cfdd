"""The Triton LIF kernels moved to ``spikemlp.ops.triton_lif``; this name stays for existing callers."""

from ..ops.triton_lif import BLOCK, lif_triton, unavailable_reason

__all__ = ["BLOCK", "lif_triton", "unavailable_reason"]
