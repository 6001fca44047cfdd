"""Synchronised BatchNorm for data-parallel runs on any device, including CPU (gloo).

PyTorch's ``nn.SyncBatchNorm`` runs on GPUs only. This version computes the batch statistics over all
ranks with differentiable all-reduces (a sum whose gradient is again a sum over ranks), so autograd
gives the exact gradient of BatchNorm over the global batch. Two reductions per layer (the mean, then
the centred second moment) keep it as accurate as a single-process BatchNorm. On CUDA the trainer uses
PyTorch's fused ``nn.SyncBatchNorm``; this module is the CPU path (and works on GPU too).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is again the sum over ranks (every rank's output uses every input)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


_all_reduce = _AllReduceSum.apply


class DistributedBatchNorm(_BatchNorm):
    """BatchNorm over the union of all ranks' batches (any input rank ``[N, C, ...]``)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input [N, C, ...], got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sync = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not sync:  # one process, or evaluation: plain BatchNorm
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        local_n = x.numel() // x.shape[1]
        n = _all_reduce(torch.tensor([float(local_n)], dtype=x.dtype, device=x.device))
        mean = _all_reduce(x.sum(dims)) / n
        centred = x - mean.view(shape)
        var = _all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm{1,2,3}d in ``module`` by :class:`DistributedBatchNorm` (sharing nothing,
    copying parameters and buffers), like ``nn.SyncBatchNorm.convert_sync_batchnorm`` does for GPUs."""
    if isinstance(module, _BatchNorm) and not isinstance(module, DistributedBatchNorm):
        new = DistributedBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        with torch.no_grad():  # take over the very same tensors (parameters, statistics)
            if module.affine:
                new.weight = module.weight
                new.bias = module.bias
            if module.track_running_stats:
                new.running_mean = module.running_mean
                new.running_var = module.running_var
                new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
