"""The baseline for the performance issue: MLP-SPE built the way the field builds it, from SpikingJelly 2.0.

This is the straightforward multi-step construction the authors used (EMI-Group/mixer-snn,
docs/mlp_spe.md#network): every stateless layer is a SpikingJelly ``layer.*`` wrapper in step mode "m"
(Conv2d/Linear/BatchNorm over the merged [T * B, ...] batch), every neuron a stateful ``neuron.LIFNode(tau=2.,
detach_reset=True, surrogate Sigmoid(alpha=4), step_mode="m")`` on SpikingJelly's default path for the
tensor's device (its CPU path is a torch loop over T with a custom backward; on CUDA it picks its own fused
kernel), the axial mixing permutes the [T, B, C, H, W] tensor to put an axis in the channel slot
(einops-style: a permuted view that the next layer's reshape copies), and the stage-0 conv runs T times on the
repeated image.

The module tree and names follow the authors' checkpoint layout (docs/mlp_spe.md#weight-layout), so a spikemlp
``MLPSPE`` state dict loads into it through ``spikemlp.convert.mixer_snn.from_spikemlp``: both models then
hold the same weights. It lives in benchmarks/, not in the library: it is the yardstick, not a feature.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

STEP_MODE = "m"


def lif_node() -> neuron.LIFNode:
    return neuron.LIFNode(
        tau=2.0, detach_reset=True, surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode=STEP_MODE
    )


class Rearrange(nn.Module):
    """An einops-style axis permutation of [T, B, ...]: a permuted view, as einops returns; the next layer's
    reshape to [T * B, ...] copies it."""

    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class Mean(nn.Module):
    """einops Reduce('t b c h w -> t b c', 'mean')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(3, 4))


def conv_bn(cin: int, cout: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        layer.Conv2d(cin, cout, kernel, stride, padding, bias=False, step_mode=STEP_MODE),
        layer.BatchNorm2d(cout, step_mode=STEP_MODE),
    )


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, tokens: int):
        super().__init__()
        self.net = nn.Sequential(
            layer.Linear(dim, hidden, step_mode=STEP_MODE),
            layer.BatchNorm1d(tokens, step_mode=STEP_MODE),
            lif_node(),
            layer.Linear(hidden, dim, step_mode=STEP_MODE),
            layer.BatchNorm1d(tokens, step_mode=STEP_MODE),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchCell(nn.Module):
    """The SPE cell on [T, B, C, H, W] (channels are axis 2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        node = cout // 3
        self.cell2node = nn.ModuleList([conv_bn(cin, node, 3, 2, 1) for _ in range(3)])
        self.node1_node2 = conv_bn(node, node, 3, 1, 1)
        self.node2_node3 = conv_bn(node, node, 3, 1, 1)
        self.lif = nn.ModuleList([lif_node(), lif_node()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n1, n2, n3 = (branch(x) for branch in self.cell2node)
        n2 = n2 + self.node1_node2(self.lif[0](n1))
        n3 = n3 + n1 + self.node2_node3(self.lif[1](n2))
        return torch.cat((n1, n2, n3), dim=2)


def _axial_branch(n: int, to_channels: tuple, back: tuple) -> nn.Sequential:
    """Positions of one axis into the channel slot, 1x1 conv, BN, LIF, and the permutation back."""
    return nn.Sequential(
        Rearrange(to_channels),
        layer.Conv2d(n, n, 1, step_mode=STEP_MODE),
        layer.BatchNorm2d(n, step_mode=STEP_MODE),
        lif_node(),
        Rearrange(back),
    )


class TokenBlock(nn.Module):
    """Axial token mixing: 1x1 convs with W (or H) moved into the channel slot, then fuse."""

    def __init__(self, n: int, dim: int):
        super().__init__()
        # [T, B, C, H, W] -> [T, B, W, C, H] and back; [T, B, C, H, W] -> [T, B, H, C, W] and back.
        self.proj_w = _axial_branch(n, (0, 1, 4, 2, 3), (0, 1, 3, 4, 2))
        self.proj_h = _axial_branch(n, (0, 1, 3, 2, 4), (0, 1, 3, 2, 4))
        self.fuse = conv_bn(3 * dim, dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([x, self.proj_h(x), self.proj_w(x)], dim=2))


class BaselineMLPSPE(nn.Module):
    """MLP-SPE on images [B, C, H, W] -> logits [B, K] (mean over T), SpikingJelly multi-step layers.

    Stateful: the neurons keep their membrane between calls, so ``forward`` resets them first (what the
    field's training loops do with ``functional.reset_net`` after every batch).
    """

    def __init__(self, in_chans=3, dim=78, alpha=3, num_classes=1000, patch_size=4, image_size=224,
                 depths=(2, 8, 14, 2), T=4):  # fmt: skip
        super().__init__()
        self.T = T
        self.depths = tuple(depths)
        grid = image_size // patch_size
        self.to_patch_embedding = nn.ModuleList()
        self.to_patch_embedding_lif = nn.ModuleList()
        self.token_mix = nn.ModuleList()
        self.token_mix_lif = nn.ModuleList()
        self.channel_mix = nn.ModuleList()
        self.channel_mix_lif = nn.ModuleList()
        for i, depth in enumerate(self.depths):
            c, n = dim * 2**i, grid // 2**i
            if i == 0:
                self.to_patch_embedding.append(conv_bn(in_chans, c, patch_size, patch_size, 0))
            else:
                self.to_patch_embedding.append(PatchCell(c // 2, c))
            self.to_patch_embedding_lif.append(lif_node())
            for _ in range(depth):
                self.token_mix.append(TokenBlock(n, c))
                self.token_mix_lif.append(lif_node())
                self.channel_mix.append(
                    nn.Sequential(
                        ToTokens(),
                        FeedForward(c, c * alpha, n * n),
                        FromTokens(n),
                    )
                )
                self.channel_mix_lif.append(lif_node())
        self.batch_norm = layer.BatchNorm2d(dim * 2 ** (len(self.depths) - 1), step_mode=STEP_MODE)
        self.mlp_head = nn.Sequential(Mean(), layer.Linear(dim * 2 ** (len(self.depths) - 1), num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        x = images.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        k = 0
        for i, depth in enumerate(self.depths):
            h = self.to_patch_embedding[i](x)
            x = self.to_patch_embedding_lif[i](h)
            for _ in range(depth):
                u = self.token_mix[k](x)
                x = self.token_mix_lif[k](h + u)
                x = self.channel_mix_lif[k](h + u + self.channel_mix[k](x))
                k += 1
        return self.mlp_head(self.batch_norm(x)).mean(0)


class ToTokens(nn.Module):
    """einops 't b c h w -> t b (h w) c': a permute and a reshape (a copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        return x.permute(0, 1, 3, 4, 2).reshape(T, B, H * W, C)


class FromTokens(nn.Module):
    """einops 't b (h w) c -> t b c h w': a reshape and a permuted view."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, L, C = x.shape
        return x.reshape(T, B, self.n, self.n, C).permute(0, 1, 4, 2, 3)


def build_baseline(name: str, img_size: int, T: int, num_classes: int) -> BaselineMLPSPE:
    """The baseline for a spikemlp variant name (SPE variants only: the benchmark's configs)."""
    dims = {
        "mlp_spe_t": 78,
        "mlp_spe_s": 96,
        "mlp_spe_t_cifar": 78,
        "mlp_spe_s_cifar": 96,
        "mlp_spe_xt_cifar": 48,
    }
    depths = {"mlp_spe_xt_cifar": (1, 1, 3, 1)}.get(name, (2, 8, 14, 2))
    patch = 2 if name.endswith("_cifar") else 4
    return BaselineMLPSPE(3, dims[name], 3, num_classes, patch, img_size, depths, T)


def load_from_spikemlp(baseline: BaselineMLPSPE, model: nn.Module) -> None:
    """Copy a spikemlp MLPSPE's weights and BN buffers into the baseline (the authors' key layout)."""
    from spikemlp.convert.mixer_snn import from_spikemlp

    missing, unexpected = baseline.load_state_dict(from_spikemlp(model.state_dict()), strict=True)
    assert not missing and not unexpected
