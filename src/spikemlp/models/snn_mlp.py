"""SNN-MLP (Li et al., "Brain-inspired Multilayer Perceptron with Spiking Neurons", CVPR 2022).

An MLP whose token mixing is a full-precision group LIF along H and along W; docs/snn_mlp.md describes
the network, its variants and its training recipe. The default configurations reproduce the authors'
network layer for layer, so their released weights load one to one, with the LIF switched on:

    model = timm.create_model("snn_mlp_t", pretrained=True,
                              pretrained_cfg_overlay=dict(file="snnmlp_tiny_81.88.pt"))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import nn

from .._checks import check_int
from ..convert import KeyMismatchError
from ..convert import snn_mlp as authors_layout
from ..convert.reader import read_state_dict, state_dict_in
from ..data.info import DATASET_INFO
from ..layers.group_lif_mixing import GroupLIFTokenMixing, group_norm1
from ..neurons.group_lif import GroupLIF
from ._param_groups import param_groups

__all__ = [
    "SNNMLP",
    "SNNMLPBlock",
    "SNNMLPStage",
    "PatchEmbed",
    "PatchMerging",
    "checkpoint_filter_fn",
    "load_authors_weights",
    "is_lif_parameter",
    "lif_parameters",
    "param_groups",
    "set_group_size",
]


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches: conv p x p stride p (with bias), then the norm."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, norm_layer=group_norm1):
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class PatchMerging(nn.Module):
    """Halve the grid and double the width: the four 2 x 2 sub-grids stacked on channels, norm, 1x1 conv."""

    def __init__(self, dim: int, norm_layer=group_norm1):
        super().__init__()
        self.dim = dim
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Conv2d(4 * dim, 2 * dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and (x.shape[-2] % 2 or x.shape[-1] % 2):
            raise ValueError(
                f"SNN-MLP patch merging needs an even grid, got {x.shape[-2]} x {x.shape[-1]}; "
                "use an image size divisible by patch_size * 8 (e.g. 224 with patch 4)"
            )
        # The authors' order: [0::2, 0::2], [1::2, 0::2], [0::2, 1::2], [1::2, 1::2] (H index first).
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], 1)
        return self.reduction(self.norm(x))


class SNNMLPBlock(nn.Module):
    """x = x + DropPath(TokenMixing(GN(x))); x = x + DropPath(MLP(GN(x))); no layer scale."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        group_size: int = 4,
        lif_tau: float = 0.25,
        lif_v_th: float = 0.1,
        learn_tau: bool = True,
        learn_v_th: bool = True,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = group_norm1,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.mlp_ratio = mlp_ratio
        self.norm1 = norm_layer(dim)
        self.token_mixing = GroupLIFTokenMixing(
            dim,
            group_size=group_size,
            tau=lif_tau,
            v_th=lif_v_th,
            learn_tau=learn_tau,
            learn_v_th=learn_v_th,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop, use_conv=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.token_mixing(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def flops(self, height: int, width: int) -> float:
        """The authors' count: norms as C per token, token mixing, and the two MLP convs."""
        n = height * width
        return 2 * self.dim * n + self.token_mixing.flops(n) + 2 * n * self.dim * self.dim * self.mlp_ratio


class SNNMLPStage(nn.Module):
    """Patch merging (stages 1-3; the authors attach it to the end of the previous stage) then blocks."""

    def __init__(
        self,
        dim: int,
        depth: int,
        downsample: bool,
        drop_path: Sequence[float],
        norm_layer: Callable[[int], nn.Module] = group_norm1,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.downsample = PatchMerging(dim // 2, norm_layer) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                SNNMLPBlock(dim, drop_path=drop_path[j], norm_layer=norm_layer, **block_kwargs)
                for j in range(depth)
            ]
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class SNNMLP(nn.Module):
    """SNN-MLP: patch embedding, four stages of group-LIF MLP blocks, GN, global average pool, linear.

    ``group_size`` is the LIF group length s, one value or one per stage (4 in the released models;
    -1 switches the LIF off as the authors' hub entry does, 0 is one group per row/column).
    ``lif_tau``/``lif_v_th`` are the initial tau and V_th (0.25 and 0.1 as in the released training);
    ``learn_tau``/``learn_v_th`` = False fix them.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        mlp_ratio: float = 4.0,
        group_size: int | Sequence[int] = 4,
        lif_tau: float = 0.25,
        lif_v_th: float = 0.1,
        learn_tau: bool = True,
        learn_v_th: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: Callable[[int], nn.Module] = group_norm1,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"SNN-MLP global_pool must be 'avg' or '' (no pooling), got {global_pool!r}")
        num_stages = len(depths)
        sizes = [group_size] * num_stages if isinstance(group_size, int) else list(group_size)
        if len(sizes) != num_stages:
            raise ValueError(
                f"SNN-MLP group_size has {len(sizes)} entries but the model has {num_stages} stages; "
                "give one value or one per stage"
            )
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_size = patch_size
        self.num_classes = num_classes = check_int(num_classes, "num_classes", 0)
        self.global_pool = global_pool
        self.embed_dim = embed_dim
        self.depths = tuple(depths)
        self.group_size = tuple(sizes)
        self.mlp_ratio = mlp_ratio
        dims = [embed_dim * 2**i for i in range(num_stages)]
        self.num_features = self.head_hidden_size = dims[-1]

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer)
        self.pos_drop = nn.Dropout(drop_rate)
        # Stochastic depth grows linearly from 0 over all blocks of all stages.
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        block_kwargs = dict(mlp_ratio=mlp_ratio, lif_tau=lif_tau, lif_v_th=lif_v_th, drop=drop_rate)
        block_kwargs.update(learn_tau=learn_tau, learn_v_th=learn_v_th, act_layer=act_layer)
        stages, start = [], 0
        for i, (dim, depth, size) in enumerate(zip(dims, depths, sizes)):
            dp = dpr[start : start + depth]
            stages.append(SNNMLPStage(dim, depth, i > 0, dp, norm_layer, group_size=size, **block_kwargs))
            start += depth
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [
            dict(num_chs=d, reduction=patch_size * 2**i, module=f"stages.{i}") for i, d in enumerate(dims)
        ]
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # As the authors: only linear layers (the head) get trunc-normal(0.02) and zero bias; convs and
        # norms keep PyTorch's defaults.
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # --- timm conveniences ---------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^patch_embed",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes = check_int(num_classes, "num_classes", 0)
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"SNN-MLP global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(self.head)

    # --- forward ---------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] -> normalised features [B, 8C, H/32, W/32] (before pooling)."""
        x = self.pos_drop(self.patch_embed(x))
        x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # --- accounting and optimisation ---------------------------------------------------------------
    def flops(self) -> int:
        """Multiply-accumulates as the authors count them at ``img_size`` (their ``flops()`` methods).

        Counted: every conv and linear (MACs, without bias), plus C x H x W for each GroupNorm input
        and for the sum of the two LIF branches. Not counted: GELU, the LIFs ("no extra FLOPs"),
        residual additions, pooling, biases. The final norm term is the authors' formula, which uses
        (H0 x W0) / 2^num_stages tokens (196 at 224) rather than the 49 the norm actually sees; the
        published counts follow (docs/snn_mlp.md#network-and-variants).
        """
        h, w = self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size
        pe = self.patch_embed
        total = h * w * pe.embed_dim * pe.in_chans * self.patch_size**2 + h * w * pe.embed_dim
        for i, stage in enumerate(self.stages):
            if i > 0:
                prev = stage.dim // 2  # the authors count merging at the previous stage's size
                total += h * w * prev + (h // 2) * (w // 2) * 8 * prev * prev
                h, w = h // 2, w // 2
            for block in stage.blocks:
                total += block.flops(h, w)
        h0, w0 = self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size
        total += self.num_features * h0 * w0 // 2 ** len(self.stages)
        total += self.num_features * self.num_classes
        return int(round(total))

    def lif_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of the trainable tau and V_th, for their own optimiser group
        (docs/snn_mlp.md#training-recipe)."""
        return lif_parameters(self)

    def param_groups(
        self, lr: float, weight_decay: float, lif_lr: float = 1e-4, lif_weight_decay: float = 0.0
    ) -> list[dict]:
        """Optimiser groups as the authors train: see ``param_groups`` (module function)."""
        return param_groups(self, lr, weight_decay, lif_lr, lif_weight_decay)


# --- tau / V_th parameter group (docs/snn_mlp.md#training-recipe) -------------------------------------------


def is_lif_parameter(name: str) -> bool:
    """True for the group LIF's tau and V_th (``....lif_h.tau``, ``....lif_w.v_th``)."""
    return name.endswith((".tau", ".v_th"))


def lif_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every trainable group-LIF tau and V_th in ``model`` (empty when fixed)."""
    return [(n, p) for n, p in model.named_parameters() if is_lif_parameter(n) and p.requires_grad]


# --- the authors' weights -----------------------------------------------------------------------------


def checkpoint_filter_fn(state_dict: dict, model: SNNMLP) -> dict:
    """timm's ``pretrained_filter_fn``: accept the authors' layout (docs/snn_mlp.md#weight-layout) or ours,
    return ours.

    Key sets are checked one to one (``KeyMismatchError``) and shapes against ``model`` (a clear
    error when the checkpoint is for another variant); the classifier is left to timm, which drops it
    when ``num_classes`` differs.
    """
    state_dict = state_dict_in(state_dict, "SNN-MLP checkpoint")
    if any(k.startswith("layers.") for k in state_dict):  # the authors' layout
        state_dict = authors_layout.to_spikemlp(state_dict, depths=model.depths)
    _check_against_model(state_dict, model)
    return state_dict


def _check_against_model(state_dict: dict, model: nn.Module) -> None:
    expected = model.state_dict()
    head = {k for k in expected if k.startswith("head.")} | {k for k in state_dict if k.startswith("head.")}
    missing = set(expected) - set(state_dict) - head
    unexpected = set(state_dict) - set(expected) - head
    if missing or unexpected:
        raise KeyMismatchError("SNN-MLP checkpoint", missing, unexpected)
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and k not in head and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ValueError(
            f"SNN-MLP checkpoint does not fit this model ({len(wrong)} shape(s) differ, e.g. {wrong[0]}); "
            "is it for another variant (snn_mlp_t / _s / _b) or another input size?"
        )


def load_authors_weights(model: SNNMLP, path: str | Path, strict: bool = True) -> SNNMLP:
    """Load a released SNN-MLP file (e.g. snnmlp_tiny_81.88.pt) into ``model``, without unpickling.

    The file may hold a bare state dict or one under 'model' (the authors' training checkpoints);
    keys in the authors' layout are converted. With ``strict=False`` a classifier of another size is
    skipped (fine-tuning to a new number of classes).
    """
    checkpoint = _read_weights(path)
    state_dict = checkpoint_filter_fn(checkpoint, model) if strict else _lenient(checkpoint, model)
    model.load_state_dict(state_dict, strict=strict)
    return model


def _read_weights(path: str | Path) -> dict:
    return read_state_dict(
        path,
        missing_hint=". Download the SNN-MLP weights (e.g. snnmlp_tiny_81.88.pt) from the authors' release "
        "page, https://github.com/huawei-noah/Efficient-AI-Backbones/releases/tag/snnmlp",
    )


def _lenient(checkpoint, model: SNNMLP) -> dict:
    """Convert and keep everything but a classifier of the wrong size."""
    state_dict = checkpoint_filter_fn(checkpoint, model)
    head, weight = model.get_classifier(), state_dict.get("head.weight")
    if isinstance(head, nn.Linear) and weight is not None and weight.shape != head.weight.shape:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
    return state_dict


# --- registry ------------------------------------------------------------------------------------------

_RELEASE = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/snnmlp/"


def _cfg(url: str = "", **kwargs) -> dict:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,  # the authors evaluate at resize 256, centre crop 224
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "paper_ids": "arXiv:2203.14679",
        "paper_name": "Brain-inspired Multilayer Perceptron with Spiking Neurons",
        "origin_url": "https://github.com/huawei-noah/Efficient-AI-Backbones",
        **kwargs,
    }


_CIFAR10 = dict(num_classes=10, input_size=(3, 32, 32), pool_size=(2, 2), crop_pct=1.0)
_CIFAR10.update(interpolation="bilinear", mean=DATASET_INFO["cifar10"].mean, std=DATASET_INFO["cifar10"].std)
default_cfgs = generate_default_cfgs(
    {
        "snn_mlp_t": _cfg(url=_RELEASE + "snnmlp_tiny_81.88.pt", license="apache-2.0"),
        "snn_mlp_s": _cfg(url=_RELEASE + "snnmlp_small_83.30.pt", license="apache-2.0"),
        "snn_mlp_b": _cfg(url=_RELEASE + "snnmlp_base_83.59.pt", license="apache-2.0"),
        **{name: _cfg(**_CIFAR10) for name in ("snn_mlp_xt_cifar", "snn_mlp_t_cifar", "snn_mlp_s_cifar")},
    }
)


def _create_snn_mlp(variant: str, pretrained: bool = False, **kwargs) -> SNNMLP:
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if pretrained and overlay.get("file"):
        # Read the file here, not in timm, so that every SNN-MLP file goes through the one reader.
        kwargs["pretrained_cfg_overlay"] = dict(overlay, state_dict=_read_weights(overlay["file"]))
    return build_model_with_cfg(
        SNNMLP,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


_CIFAR_BASE = dict(img_size=32, patch_size=2, num_classes=10, group_size=(4, 4, 4, 2))
# name -> (the entry point's docstring, its defaults); the CIFAR variants are explained in
# docs/snn_mlp.md#network-and-variants.
_VARIANTS = {
    "snn_mlp_t": (
        "SNN-MLP-T: C = 96, depths 2, 2, 6, 2, drop path 0.2; 28.336M params, 4.373 GFLOPs, 81.88% top-1.",
        dict(embed_dim=96, depths=(2, 2, 6, 2), drop_path_rate=0.2),
    ),
    "snn_mlp_s": (
        "SNN-MLP-S: C = 96, depths 2, 2, 18, 2, drop path 0.3; 49.703M params, 8.548 GFLOPs, 83.30%.",
        dict(embed_dim=96, depths=(2, 2, 18, 2), drop_path_rate=0.3),
    ),
    "snn_mlp_b": (
        "SNN-MLP-B: C = 128, depths 2, 2, 18, 2, drop path 0.5; 87.897M params, 15.174 GFLOPs, 83.59%.",
        dict(embed_dim=128, depths=(2, 2, 18, 2), drop_path_rate=0.5),
    ),
    "snn_mlp_xt_cifar": (
        "CIFAR-native extra-tiny SNN-MLP (32 x 32, 2 x 2 stem, C = 48, depths 2, 2, 2, 2); docs/snn_mlp.md.",
        dict(_CIFAR_BASE, embed_dim=48, depths=(2, 2, 2, 2), drop_path_rate=0.05),
    ),
    "snn_mlp_t_cifar": (
        "CIFAR-native SNN-MLP-T (32 x 32, 2 x 2 stem, C = 96, depths 2, 2, 6, 2); see docs/snn_mlp.md.",
        dict(_CIFAR_BASE, embed_dim=96, depths=(2, 2, 6, 2), drop_path_rate=0.1),
    ),
    "snn_mlp_s_cifar": (
        "CIFAR-native SNN-MLP-S (32 x 32, 2 x 2 stem, C = 96, depths 2, 2, 18, 2); see docs/snn_mlp.md.",
        dict(_CIFAR_BASE, embed_dim=96, depths=(2, 2, 18, 2), drop_path_rate=0.2),
    ),
}


def _entry_point(name: str, doc: str, defaults: dict):
    """timm's entry point for one variant: ``name(pretrained=False, **kwargs)``, kwargs over defaults."""

    def entry(pretrained: bool = False, **kwargs) -> SNNMLP:
        return _create_snn_mlp(name, pretrained, **dict(defaults, **kwargs))

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return entry


for _name, (_doc, _defaults) in _VARIANTS.items():
    globals()[_name] = register_model(_entry_point(_name, _doc, _defaults))


def set_group_size(model: nn.Module, group_size: int) -> None:
    """Set the LIF group length of every group LIF in ``model`` (-1 switches them all off)."""
    for lif in model.modules():
        if isinstance(lif, GroupLIF):
            lif.group_size = group_size
