"""MLP-SPE: the spiking MLP with multiplication-free inference (Li et al., IEEE TNNLS 2024), and MLP-S.

docs/mlp_spe.md describes the network layer by layer and its variants. The default configurations
reproduce the authors' code (EMI-Group/mixer-snn) exactly, so their weights load one to one through
``spikemlp.convert`` (format "mixer-snn"). The per-token BatchNorm of the channel block and the N x N
axial maps tie every model to the input resolution it was built for (``img_size``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from functools import partial

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from .._checks import check_int
from ..data.info import DATASET_INFO
from ..layers import (
    AxialTokenMixing,
    ChannelMLP,
    ConvDownsample,
    PatchStem,
    SpikingPatchEncoding,
    spike_matmul,
)
from ..layers.channel_mlp import CHANNEL_BN_MODES
from ..layers.memory_saving import MemorySaving
from ..layers.spike_kernel_blocks import spike_kernels
from ..neurons import LIF
from ..neurons.spike_storage import compact_saved_spikes

__all__ = ["MLPSPE", "MLPSPEBlock", "MLPSPEStage"]


class MLPSPEBlock(nn.Module):
    """One token block and one channel block with their neurons; both skips come from the stage's h."""

    def __init__(
        self, dim, grid, neuron_layer, mlp_ratio=3, channel_bn="token", identity_norm=False, memory=None
    ):
        super().__init__()
        self.token_mix = AxialTokenMixing(dim, grid, neuron_layer, identity_norm, memory)
        self.token_lif = neuron_layer()
        self.channel_mix = ChannelMLP(dim, grid * grid, neuron_layer, mlp_ratio, channel_bn, memory)
        self.channel_lif = neuron_layer()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        hu = h + self.token_mix(x)
        x = self.token_lif(hu)
        return self.channel_lif(hu + self.channel_mix(x))


@contextmanager
def _restored_batch_norm_stats(module: nn.Module):
    """Undo, on exit, the BN buffer updates made inside: for a checkpointed block's recomputation.

    Without it, each BN in a checkpointed block would update its running statistics twice per step.
    """
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    buffers = [b for m in bns for b in (m.running_mean, m.running_var, m.num_batches_tracked)]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in zip(buffers, saved):
                b.copy_(value)


class MLPSPEStage(nn.Module):
    """A stage: an encoder producing the state h (identity for stage 0, whose h comes from the stem),
    the input neuron x = LIF(h), and the blocks."""

    def __init__(self, encoder: nn.Module, blocks: Sequence[MLPSPEBlock], neuron_layer) -> None:
        super().__init__()
        self.encoder = encoder
        self.lif = neuron_layer()
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        x = self.lif(h)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(
                    block,
                    x,
                    h,
                    use_reentrant=False,
                    context_fn=lambda b=block: (contextlib.nullcontext(), _restored_batch_norm_stats(b)),
                )
            else:
                x = block(x, h)
        return x


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"img_size must be an int or (height, width), got {size}")
    return size


class MLPSPE(nn.Module):
    """MLP-SPE (``spe=True``) or MLP-S (``spe=False``) on images [B, in_chans, H, W].

    ``forward(images)`` returns logits [B, num_classes] averaged over the T steps; ``forward_steps``
    returns the per-step logits [T, B, num_classes]. The model is stateless between calls (nothing to
    reset) and ``T`` may be changed on the fly.

    Args:
        img_size: input size (int or (H, W)); the model works at this resolution only.
        in_chans, num_classes: image channels and classes (num_classes 0: no classifier).
        embed_dim: d, the stage-0 width; stage i has d * 2^i channels (multiples of 3 for SPE).
        depths: blocks per stage. patch_size: the stem's kernel and stride (4 at 224, 2 for CIFAR).
        mlp_ratio: channel-MLP expansion (alpha = 3).
        T: time steps. spe: SPE encoders (True) or MLP-S's conv encoders (False).
        channel_bn: "token" (authors': BN1d(N*N), per token) or "channel" (per channel; an option).
        tau, v_threshold, surrogate, backend, detach_reset: LIF settings (defaults:
        docs/mlp_spe.md#neuron-and-time); neuron_kwargs: further LIF arguments (e.g. learnable_tau=True).
        memory_saving: training-memory savings (see below; on by default).
        spike_kernels: spike-driven kernels for CPU inference (see ``set_spike_kernels``; off by default).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 78,
        depths: Sequence[int] = (2, 8, 14, 2),
        patch_size: int = 4,
        mlp_ratio: int = 3,
        T: int = 4,
        spe: bool = True,
        channel_bn: str = "token",
        tau: float = 2.0,
        v_threshold: float = 1.0,
        surrogate=None,
        backend: str = "auto",
        detach_reset: bool = True,
        neuron_kwargs: dict | None = None,
        global_pool: str = "avg",
        memory_saving: bool = True,
        spike_kernels: bool = False,
    ) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        depths = tuple(int(d) for d in depths)
        if not depths or min(depths) < 1:
            raise ValueError(f"depths must be a non-empty list of positive block counts, got {depths}")
        T = check_int(T, "T (time steps)", 1)
        num_classes = check_int(num_classes, "num_classes", 0)
        if channel_bn not in CHANNEL_BN_MODES:
            raise ValueError(f"channel_bn must be one of {CHANNEL_BN_MODES}, got {channel_bn!r}")
        if global_pool != "avg":
            raise ValueError(f"MLP-SPE pools by averaging over the token grid; global_pool={global_pool!r}")
        stride = patch_size * 2 ** (len(depths) - 1)
        if any(s % stride for s in self.img_size):
            raise ValueError(
                f"img_size {self.img_size} is not divisible by {stride} (patch {patch_size} x 2^"
                f"{len(depths) - 1} downsamplings): the token grid must halve exactly at every stage; "
                f"use a multiple of {stride}, e.g. {7 * stride}"
            )
        if self.img_size[0] != self.img_size[1]:
            raise ValueError(f"MLP-SPE's token grid is square; got img_size {self.img_size}")
        widths = [embed_dim * 2**i for i in range(len(depths))]
        if spe and any(w % 3 for w in widths[1:]):
            raise ValueError(
                f"embed_dim={embed_dim} gives stage widths {widths}; the SPE cell splits each into three "
                "nodes, so they must be divisible by 3: choose an embed_dim that is a multiple of 3 "
                "(e.g. 78, 96) or spe=False"
            )

        self.T = T
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.depths = depths
        self.patch_size = patch_size
        self.spe = spe
        self.channel_bn = channel_bn
        self.num_features = self.head_hidden_size = widths[-1]
        self.grad_checkpointing = False
        # One switch for the training-memory savings, shared by every block (layers/memory_saving.py).
        self.memory = MemorySaving.all(memory_saving)
        lif_kwargs = dict(tau=tau, v_threshold=v_threshold, surrogate=surrogate, backend=backend)
        lif_kwargs.update(detach_reset=detach_reset, **(neuron_kwargs or {}))
        neuron_layer = partial(LIF, **lif_kwargs)

        self.stem = PatchStem(in_chans, embed_dim, patch_size)
        grid = self.img_size[0] // patch_size
        stages = []
        for i, (dim, depth) in enumerate(zip(widths, depths)):
            if i == 0:
                encoder = nn.Identity()
            elif spe:
                encoder = SpikingPatchEncoding(widths[i - 1], dim, neuron_layer)
            else:
                encoder = ConvDownsample(widths[i - 1], dim)
            blocks = [
                MLPSPEBlock(dim, grid, neuron_layer, mlp_ratio, channel_bn, not spe, self.memory)
                for _ in range(depth)
            ]
            stages.append(MLPSPEStage(encoder, blocks, neuron_layer))
            grid //= 2
        self.stages = nn.ModuleList(stages)
        self.head_norm = nn.BatchNorm2d(widths[-1])
        self.head = nn.Linear(widths[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.spike_kernels = False
        self.set_spike_kernels(spike_kernels)

    # --- timm-style API -------------------------------------------------------------------------------

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations (saves memory)."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def set_projection_recompute(self, enable: bool = True) -> None:
        """Training memory (on by default): keep the input spikes (as bool) of the axial projections and
        the first channel Linear for the backward and recompute their outputs there, instead of keeping
        the outputs; results are identical (``self.memory``, layers/memory_saving.py)."""
        self.memory.recompute_projection = bool(enable)

    @property
    def compact_spikes(self) -> bool:
        """Whether spikes that autograd saves are kept as bool (part of ``memory_saving``)."""
        return self.memory.compact_spikes

    @compact_spikes.setter
    def compact_spikes(self, enable: bool) -> None:
        self.memory.compact_spikes = bool(enable)

    @torch.jit.ignore
    def set_spike_kernels(self, enable: bool = True) -> None:
        """CPU inference speed (off by default): the token and channel blocks, whose layers see spikes,
        run the spike-driven kernel (``spikemlp.layers.spike_matmul``: each output sums the weights of its
        active inputs only), swapped in by the transform ``spikemlp.layers.spike_kernels`` (same
        parameters; outputs equal the dense ones up to float rounding). Applies without gradients or
        hooks on the layers replaced, on the CPU in float32/float64, eagerly or compiled; elsewhere the
        blocks run their dense layers. Packed copies of the weights are kept while it is on. Warns once,
        with the cause, if the kernel cannot be built here."""
        if enable and (reason := spike_matmul.unavailable_reason()) is not None:
            message = f"spike kernels requested, but {reason}; running the dense layers"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        self.spike_kernels = bool(enable)
        spike_kernels(self, self.spike_kernels)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"MLP-SPE pools by averaging over the token grid; global_pool={global_pool!r}")
        self.num_classes = num_classes = check_int(num_classes, "num_classes", 0)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _check_images(self, images: torch.Tensor) -> None:
        expected = f"MLP-SPE expects images [B, {self.in_chans}, {self.img_size[0]}, {self.img_size[1]}]"
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(
                f"{expected}, got {shape}; the time axis is added by the model (direct encoding)"
            )
        if images.shape[1] != self.in_chans or tuple(images.shape[-2:]) != self.img_size:
            grid, size = self.img_size[0] // self.patch_size, images.shape[-1]
            stride = self.patch_size * 2 ** (len(self.depths) - 1)
            fits = -(-size // stride) * stride  # the nearest size whose grid halves exactly at every stage
            resize = f", resizing the images to {fits} ({size} is not a multiple of {stride})"
            resize = "" if fits == size else resize
            raise ValueError(
                f"{expected}, got {list(images.shape)}. The model was built for img_size={self.img_size[0]} "
                f"(a {grid}x{grid} token grid sizes its axial maps and per-token BatchNorm), so it runs at "
                f"that resolution only: resize the images, or create the model with img_size={fits} and "
                f"in_chans={images.shape[1]}{resize}"
            )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> the last stage's spikes [T, B, C_3, N_3, N_3]."""
        self._check_images(images)
        with compact_saved_spikes(self.compact_spikes):
            x = self.stem(images, self.T)
            for stage in self.stages:
                x = stage(x)
        return x

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        # BN of the spikes (folds into the classifier at inference), then the grid mean per step.
        T = x.shape[0]
        return self.head_norm(x.flatten(0, 1)).mean(dim=(2, 3)).unflatten(0, (T, -1))

    def forward_head_steps(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Spikes [T, B, C, N, N] -> per-step logits [T, B, K] (pre_logits: pooled features [T, B, C])."""
        x = self._pool(x)
        return x if pre_logits else self.head(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Spikes [T, B, C, N, N] -> logits [B, K] averaged over T (pre_logits: features [B, C])."""
        return self.forward_head_steps(x, pre_logits).mean(0)

    def forward_steps(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> per-step logits [T, B, num_classes]."""
        return self.forward_head_steps(self.forward_features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> logits [B, num_classes], the mean of the T per-step logits."""
        return self.forward_steps(images).mean(0)


# --- registered variants --------------------------------------------------------------------------------


def _cfg(**kwargs):
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2306.12465",
        **kwargs,
    }


def _cifar_cfg():
    cifar = DATASET_INFO["cifar10"]
    return _cfg(num_classes=10, input_size=(3, 32, 32), crop_pct=1.0, mean=cifar.mean, std=cifar.std)


_CIFAR = dict(img_size=32, patch_size=2, num_classes=10)
_D = (2, 8, 14, 2)
# name -> (the entry point's docstring, its defaults); the sizes are in docs/mlp_spe.md#variants.
_VARIANTS = {
    "mlp_spe_t": ("MLP-SPE-T (25.2M): d 78, depths 2, 8, 14, 2, 224 x 224.", dict(embed_dim=78, depths=_D)),
    "mlp_spe_s": ("MLP-SPE-S (38.0M): d 96, depths 2, 8, 14, 2, 224 x 224.", dict(embed_dim=96, depths=_D)),
    "mlp_s": (
        "MLP-S (34.5M), the paper's ablation without SPE: conv 2x2 encoders, LIF(BN(x)) identity branch.",
        dict(embed_dim=96, depths=_D, spe=False),
    ),
    "mlp_spe_b": (
        "MLP-SPE-B (65.6M): our choice for the paper's unpublished 66M model, d 108, depths 2, 10, 24, 2.",
        dict(embed_dim=108, depths=(2, 10, 24, 2)),
    ),
    "mlp_spe_t_cifar": (
        "MLP-SPE-T for 32 x 32 inputs: 2x2 stem, 16 x 16 tokens, d 78, depths 2, 8, 14, 2.",
        dict(embed_dim=78, depths=_D, **_CIFAR),
    ),
    "mlp_spe_s_cifar": (
        "MLP-SPE-S for 32 x 32 inputs: 2x2 stem, 16 x 16 tokens, d 96, depths 2, 8, 14, 2.",
        dict(embed_dim=96, depths=_D, **_CIFAR),
    ),
    "mlp_spe_xt_cifar": (
        "A small MLP-SPE for CPU training on 32 x 32 inputs: 2x2 stem, d 48, depths 1, 1, 3, 1.",
        dict(embed_dim=48, depths=(1, 1, 3, 1), **_CIFAR),
    ),
}
default_cfgs = generate_default_cfgs(
    {name: _cifar_cfg() if name.endswith("_cifar") else _cfg() for name in _VARIANTS}
)


def _create(variant: str, pretrained: bool = False, **kwargs) -> MLPSPE:
    model = build_model_with_cfg(MLPSPE, variant, pretrained, **kwargs)
    # The cfg describes this model's input: keep it true when img_size/num_classes were overridden
    # (the MAC counter and data pipelines read input_size from it).
    cfg = dict(model.pretrained_cfg)
    cfg.update(input_size=(model.in_chans, *model.img_size), num_classes=model.num_classes)
    model.pretrained_cfg = model.default_cfg = cfg
    return model


def _entry_point(name: str, doc: str, defaults: dict):
    """timm's entry point for one variant: ``name(pretrained=False, **kwargs)``, kwargs over defaults."""

    def entry(pretrained: bool = False, **kwargs) -> MLPSPE:
        return _create(name, pretrained, **{**defaults, **kwargs})

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return entry


for _name, (_doc, _defaults) in _VARIANTS.items():
    globals()[_name] = register_model(_entry_point(_name, _doc, _defaults))
