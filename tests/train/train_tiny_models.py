"""Tiny models for the training tests, registered with timm so that configs (and subprocesses) name them.

``train_tiny_snn``: conv + BN + LIF + linear over T steps (the shape of the real spiking models, a
thousand times cheaper); options for dropout (exercises RNG restore on resume), no BN (exact gradient
accumulation checks), SNN-MLP-style trainable ``tau``/``Vth`` scalars, and a NaN after N training calls.
"""

from __future__ import annotations

import timm
import torch
from timm.models import register_model
from torch import nn

from spikemlp.neurons import LIF


class TinySpikingNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        T: int = 2,
        img_size: int = 8,
        in_chans: int = 3,
        width: int = 8,
        dropout: float = 0.0,
        norm: bool = True,
        lif_scalars: bool = False,
        nan_after: int = 0,
    ) -> None:
        super().__init__()
        self.T = T
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1, bias=not norm)
        self.bn = nn.BatchNorm2d(width) if norm else nn.Identity()
        self.lif = LIF()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * width, num_classes)
        if lif_scalars:  # named like SNN-MLP's group LIF (docs/snn_mlp.md#weight-layout)
            self.tau = nn.Parameter(torch.tensor([0.25]))
            self.Vth = nn.Parameter(torch.tensor([0.1]))
        else:
            self.tau = self.Vth = None
        self.nan_after = nan_after
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x))
        if self.tau is not None:
            h = h * (1 + self.tau) - self.Vth
        s = self.lif(h.unsqueeze(0).expand(self.T, *h.shape))
        rates = nn.functional.adaptive_avg_pool2d(s.flatten(0, 1), 2).flatten(1)  # [T*B, 4 * width]
        logits = self.head(self.drop(rates)).unflatten(0, (self.T, -1)).mean(0)
        if self.training:
            self.calls += 1
            if self.nan_after and self.calls > self.nan_after:
                logits = logits * float("nan")
        return logits


if "train_tiny_snn" not in timm.list_models():

    @register_model
    def train_tiny_snn(pretrained: bool = False, **kwargs) -> TinySpikingNet:
        for key in [k for k in kwargs if k.startswith("pretrained_cfg") or k == "cache_dir"]:
            kwargs.pop(key)  # timm.create_model's bookkeeping, for models built without build_model_with_cfg
        return TinySpikingNet(**kwargs)
