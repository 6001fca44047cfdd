"""BatchNorm followed by an LIF neuron, fused for training: one saved tensor instead of two.

Unfused, a training step keeps two full-size tensors per BN -> LIF pair for the backward: BatchNorm's
input x and the neuron's charge H. Fused (:func:`batch_norm_lif`), only x is kept (with the batch mean and
1/std); the backward recomputes y = BN(x) with the same kernel and batch statistics (bit for bit the
forward's y) and runs the neuron's and BatchNorm's backward on it. Outputs, running statistics and
gradients are those of ``bn`` then ``lif`` (tests/neurons/test_bn_lif.py), for one more BN apply.

The fused path runs where it applies (``_fusable``: a plain BatchNorm1d/2d in training, an
:class:`~spikemlp.neurons.LIF` with a fixed tau and no membrane output on the C++ kernel, gradients
enabled, not under torch.compile); elsewhere it is ``lif(bn(x))``. It is an ``autograd.Function``, not an
operator: it updates BN's running statistics in place, which ``torch.library``'s registered autograd does
not support. It composes ATen's batch norm with the LIF operators (``spikemlp.ops``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _module

from ..ops import lif as lif_ops
from ..ops.select import select_backend
from .lif import LIF, _mark_spikes, lif_spec

__all__ = ["batch_norm_lif", "projection_batch_norm_lif"]

_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _bn_lif_forward(ctx, z, bn_w, bn_b, running_mean, running_var, momentum, eps, T, tau, spec):
    """(spikes [T, ...], batch mean, 1/std) of lif(bn(z)), by the same ATen kernel as nn.BatchNorm (the
    same values, the running statistics updated in place) and the LIF operator."""
    zn, mean, invstd = torch.ops.aten.native_batch_norm(
        z, bn_w, bn_b, running_mean, running_var, True, momentum, eps
    )
    ctx.eps, ctx.T, ctx.tau, ctx.spec = eps, T, tau, spec
    return lif_ops.run(zn.view(T, -1), tau, spec), mean, invstd


def _bn_lif_backward(ctx, grad_spikes, z, bn_w, bn_b, mean, invstd, need: list[bool]):
    """(dL/dz, dL/dbn_w, dL/dbn_b) as ``need`` asks: BN(z) recomputed with the batch statistics (no
    running buffer touched), the LIF backward, then BatchNorm's."""
    zn, _, _ = torch.ops.aten.native_batch_norm(z, bn_w, bn_b, None, None, True, 0.0, ctx.eps)
    grad_zn, _ = lif_ops.backward(zn.view(ctx.T, -1), grad_spikes.reshape(ctx.T, -1), None, ctx.tau, ctx.spec)
    del zn
    return torch.ops.aten.native_batch_norm_backward(
        grad_zn.view_as(z), z, bn_w, None, None, mean, invstd, True, ctx.eps, need
    )


class _BatchNormLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, T, tau, spec):
        spikes, mean, invstd = _bn_lif_forward(
            ctx, x, weight, bias, running_mean, running_var, momentum, eps, T, tau, spec
        )
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return spikes.view_as(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_spikes):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:3])
        return *_bn_lif_backward(ctx, grad_spikes, x, weight, bias, mean, invstd, need), *(None,) * 7


class _ProjectionBatchNormLIF(torch.autograd.Function):
    """As _BatchNormLIF, but keeping the projection's input (spikes, saved compactly) instead of its output
    y; the backward recomputes y = project(inp, weight, bias), the same op on the same values."""

    @staticmethod
    def forward(
        ctx, y, inp, weight, bias, bn_w, bn_b, running_mean, running_var, momentum, eps, fns, T, tau, spec
    ):
        z = fns[1](y)  # bn_view(y)
        spikes, mean, invstd = _bn_lif_forward(
            ctx, z, bn_w, bn_b, running_mean, running_var, momentum, eps, T, tau, spec
        )
        ctx.save_for_backward(inp, weight, bias, bn_w, bn_b, mean, invstd)
        ctx.fns = fns
        return spikes

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_spikes):
        inp, weight, bias, bn_w, bn_b, mean, invstd = ctx.saved_tensors
        project, bn_view, from_bn = ctx.fns
        leaves = [None if t is None else t.detach().requires_grad_(need)
                  for t, need in zip((inp, weight, bias), ctx.needs_input_grad[1:4])]  # fmt: skip
        with torch.enable_grad():
            y = project(*leaves)
        need = [True, *ctx.needs_input_grad[4:6]]
        grad_y, grad_bn_w, grad_bn_b = _bn_lif_backward(
            ctx, grad_spikes, bn_view(y.detach()), bn_w, bn_b, mean, invstd, need
        )
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grad_y = from_bn(grad_y, y).reshape_as(y)
        grads = iter(torch.autograd.grad(y, wanted, grad_y) if wanted else ())
        grad_inp, grad_w, grad_b = (
            next(grads) if t is not None and t.requires_grad else None for t in leaves
        )
        return (None, grad_inp, grad_w, grad_b, grad_bn_w, grad_bn_b) + (None,) * 8


def _fusable(x: torch.Tensor, bn: nn.Module, lif: nn.Module) -> bool:
    if torch.compiler.is_compiling():  # plain ops, which the compiler fuses itself
        return False
    if not (torch.is_grad_enabled() and type(bn) in _PLAIN_BN and bn.training and bn.affine):
        return False
    if not (isinstance(lif, LIF) and type(lif).forward is LIF.forward):
        return False
    if lif.tau_logit is not None or lif.return_membrane or not x.is_contiguous():
        return False
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    return select_backend(lif.backend, x, lif_spec(lif)) == "cpp"


def observed(module: nn.Module) -> bool:
    """Whether forward hooks watch ``module`` (then it must run as itself, in the autograd graph)."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
    )


def _running_update(bn: nn.Module):
    """nn.BatchNorm's bookkeeping before a training-mode call: (momentum, running_mean, running_var)."""
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    else:
        momentum = 0.0
    return (momentum, bn.running_mean, bn.running_var) if bn.track_running_stats else (momentum, None, None)


def projection_batch_norm_lif(
    inp: torch.Tensor,
    proj: nn.Module,
    project,
    bn_view,
    bn: nn.Module,
    lif: nn.Module,
    T: int,
    from_bn=None,
    recompute: bool = True,
    fuse: bool = True,
) -> torch.Tensor:
    """Spikes ``from_bn(lif(bn(bn_view(proj(inp)))), y)``, keeping only ``inp`` for the backward.

    ``project(inp, proj.weight, proj.bias)`` must compute exactly what ``proj(inp)`` does (the backward
    recomputes the projection with it); ``bn_view`` puts the projection's output y into the layout ``bn``
    expects, with T leading (a view or a copy); ``from_bn(z, y)`` takes a tensor in that layout back to
    y's element order, in any shape that reshapes to y's (default: ``z.view_as(y)``); it gets y, not its
    shape, so that a traced graph (ONNX) reads the sizes off the tensor instead of recording constants.
    For spike inputs (saved as bool, see ``spike_storage``) this keeps 1 byte per input element instead of
    the 4 per output element of the projection. Where that does not apply (``recompute=False``, the fused
    path does not apply, forward hooks observe ``proj``), it is ``proj`` then ``batch_norm_lif(..., fuse)``.
    """
    from_bn = from_bn or _view_back
    if recompute and not observed(proj) and _fusable(inp, bn, lif):
        if inp.requires_grad or proj.weight.requires_grad:
            with torch.no_grad():
                y = proj(inp)
            if y.is_contiguous() and bn_view(y).is_contiguous():
                momentum, running_mean, running_var = _running_update(bn)
                spikes = _ProjectionBatchNormLIF.apply(
                    y, inp, proj.weight, proj.bias, bn.weight, bn.bias, running_mean, running_var, momentum,
                    bn.eps, (project, bn_view, from_bn), T, lif.tau, lif_spec(lif),
                )  # fmt: skip
                return from_bn(_mark_spikes(spikes), y)
    y = proj(inp)
    return from_bn(batch_norm_lif(bn_view(y), bn, lif, T, fuse), y)


def _view_back(z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return z.view_as(like)


def batch_norm_lif(x: torch.Tensor, bn: nn.Module, lif: nn.Module, T: int, fuse: bool = True) -> torch.Tensor:
    """Spikes ``lif(bn(x))`` with x laid out as ``bn`` expects and T the leading factor of its first axis.

    The neuron sees ``bn(x)`` as [T, ...] (x.view(T, -1) order); the spikes come back in x's shape.
    ``fuse=False`` always runs the two modules as they are: no recomputation, one more saved tensor.
    """
    if not (fuse and _fusable(x, bn, lif)):
        y = bn(x)
        return lif(y.unflatten(0, (T, -1))).flatten(0, 1)
    momentum, running_mean, running_var = _running_update(bn)
    spikes = _BatchNormLIF.apply(
        x, bn.weight, bn.bias, running_mean, running_var, momentum, bn.eps, T, lif.tau, lif_spec(lif)
    )
    return _mark_spikes(spikes)
