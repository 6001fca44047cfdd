"""Building blocks shared by the model families, on spike tensors [T, B, C, H, W].

- ``patch_stem``: the stage-0 conv + BN of the image, computed once and repeated over T.
- ``spiking_patch_encoding``: MLP-SPE's stage encoder (the SPE cell) and MLP-S's plain conv encoder.
- ``axial_token_mixing``: the token block (dense maps along W and H, the authors' 1x1-conv layout).
- ``channel_mlp``: the channel block with its per-token (or optional per-channel) BatchNorm.
- ``memory_saving``: the one switch for what the blocks keep for the backward in training.
- ``spike_matmul``: the spike-driven CPU product; ``spike_kernel_blocks``: the two blocks' twins that run
  on it for inference, and ``spike_kernels(model, enable)``, the transform that swaps them in (an option).
- ``batch_norm_fold``: BatchNorm in inference as an affine map, and its fold into the layer before it.
"""

from .axial_token_mixing import AxialProjection, AxialTokenMixing, positional_batch_norm
from .channel_mlp import CHANNEL_BN_MODES, ChannelMLP
from .memory_saving import MemorySaving
from .patch_stem import PatchStem, TimeRepeatedBatchNorm2d
from .spike_kernel_blocks import spike_kernels
from .spiking_patch_encoding import ConvBN, ConvDownsample, SpikingPatchEncoding

__all__ = [
    "AxialProjection",
    "AxialTokenMixing",
    "CHANNEL_BN_MODES",
    "ChannelMLP",
    "ConvBN",
    "ConvDownsample",
    "MemorySaving",
    "PatchStem",
    "SpikingPatchEncoding",
    "TimeRepeatedBatchNorm2d",
    "positional_batch_norm",
    "spike_kernels",
]
