"""The stage-0 patch stem: a strided convolution of the image, then BatchNorm, computed once for all T steps.

Direct encoding feeds the same image at every time step, so the stem's output is the same at every step.
It is computed once on [B, ...] and repeated over T as a stride-0 view (``expand``), not T times.

BatchNorm over T identical copies has the same mean and the same biased variance as over one copy, so
the normalised output is unchanged; but the running variance is updated with the *unbiased* variance,
whose correction n / (n - 1) depends on the sample count (T * B * H * W in the authors' code, which runs
the stem on the merged [T * B, ...] batch). ``TimeRepeatedBatchNorm2d`` normalises one copy and updates
its running statistics as if it had seen all T copies, so training reproduces the authors' buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class TimeRepeatedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d of an input that stands for ``repeats`` identical copies stacked along the batch.

    ``forward(x, repeats)`` returns BN(x) and, in training, updates the running statistics exactly as
    ``nn.BatchNorm2d`` would on ``x.repeat(repeats, 1, 1, 1)``. Parameters and buffers are those of
    ``nn.BatchNorm2d``, so state dicts are interchangeable.
    """

    def forward(self, x: torch.Tensor, repeats: int = 1) -> torch.Tensor:  # type: ignore[override]
        if not (self.training and self.track_running_stats) or repeats == 1:
            return super().forward(x)
        # Normalise with the batch statistics of this copy (identical to those of the T copies) and leave
        # the running buffers to the update below, which needs the T-copy sample count.
        out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            n = repeats * x.numel() // x.shape[1]
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
            self.running_var.lerp_((var * (n / (n - 1))).to(self.running_var.dtype), momentum)
        return out


class PatchStem(nn.Module):
    """Conv (patch_size x patch_size, stride patch_size, no bias) + BN of the image: the stage-0 state h.

    ``forward(images [B, C_in, H, W], T)`` returns h as a [T, B, C, H / p, W / p] view that repeats one
    computed tensor over T (docs/mlp_spe.md#network, stage 0).
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.conv = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size, bias=False)
        self.bn = TimeRepeatedBatchNorm2d(embed_dim)

    def forward(self, images: torch.Tensor, T: int) -> torch.Tensor:
        x = self.conv(images)
        # A plain BN put in its place (SyncBatchNorm under --sync-bn) takes no ``repeats``: same output;
        # only its running variance's n / (n - 1) correction counts one copy instead of T.
        plain = isinstance(self.bn, _BatchNorm) and not isinstance(self.bn, TimeRepeatedBatchNorm2d)
        h = self.bn(x) if plain else self.bn(x, repeats=T)
        return h.unsqueeze(0).expand(T, *h.shape)
