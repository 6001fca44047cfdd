"""BatchNorm followed by an LIF neuron, fused for training: one saved tensor instead of two.

Unfused, a training step keeps two full-size tensors per BN -> LIF pair for the backward: BatchNorm's
input x and the neuron's charge H. Fused (:func:`batch_norm_lif`), only x is kept (plus the per-channel
batch mean and 1/std); the backward recomputes y = BN(x) with the same kernel and the same batch statistics
(bit for bit the forward's y, hence the same H and spikes) and runs the neuron's backward (which
recomputes H from y in cache) and BatchNorm's backward on it. The forward output, the running statistics
and the gradients are those of ``bn`` then ``lif`` (tests/neurons/test_bn_lif.py); the price is one BN
apply in the backward.

The fused path runs when it applies: ``bn`` a plain ``nn.BatchNorm1d/2d`` in training mode, ``lif`` an
:class:`~spikemlp.neurons.LIF` with a fixed tau and no membrane output whose backend resolves to the fused
C++ kernel, gradients enabled. Otherwise (eval, another neuron, folded BN, GPU, and while torch.compile
traces the model) it is ``lif(bn(x))``, the neuron then running the LIF operator itself.

Why an ``autograd.Function`` and not an operator: the fusion updates BN's running statistics in place,
and ``torch.library``'s registered autograd does not support operators that mutate their inputs. The
Function composes ATen's batch norm with the ``spikemlp::lif_forward`` / ``lif_backward`` operators
(``spikemlp.ops``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops import lif as lif_ops
from ..ops.select import select_backend
from .lif import LIF, _mark_spikes, lif_spec

__all__ = ["batch_norm_lif", "projection_batch_norm_lif"]

_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _batch_stats_norm(x, weight, bias, eps):
    """Training-mode BN of x with its own batch statistics, without touching any running buffer."""
    return torch.ops.aten.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)


class _BatchNormLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, T, tau, spec):
        # The same ATen kernel as nn.BatchNorm: the same y, and the running statistics updated in place.
        y, mean, invstd = torch.ops.aten.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )
        spikes = lif_ops.run(y.view(T, -1), tau, spec)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps, ctx.T, ctx.tau, ctx.spec = eps, T, tau, spec
        return spikes.view_as(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_spikes):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        y, _, _ = _batch_stats_norm(x, weight, bias, ctx.eps)
        grad_y, _ = lif_ops.backward(
            y.view(ctx.T, -1), grad_spikes.reshape(ctx.T, -1), None, ctx.tau, ctx.spec
        )
        del y
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad_y.view_as(x), x, weight, None, None, mean, invstd, True, ctx.eps, [need_x, need_w, need_b]
        )
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None


class _ProjectionBatchNormLIF(torch.autograd.Function):
    """As _BatchNormLIF, but keeping the projection's input (spikes, saved compactly) instead of its output
    y; the backward recomputes y = project(inp, weight, bias), the same op on the same values."""

    @staticmethod
    def forward(
        ctx, y, inp, weight, bias, bn_w, bn_b, running_mean, running_var, momentum, eps, fns, T, tau, spec
    ):
        project, bn_view, _ = fns
        yn, mean, invstd = torch.ops.aten.native_batch_norm(
            bn_view(y), bn_w, bn_b, running_mean, running_var, True, momentum, eps
        )
        spikes = lif_ops.run(yn.view(T, -1), tau, spec)
        ctx.save_for_backward(inp, weight, bias, bn_w, bn_b, mean, invstd)
        ctx.fns, ctx.eps, ctx.T, ctx.tau, ctx.spec = fns, eps, T, tau, spec
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
        y_bn = bn_view(y.detach())
        yn, _, _ = _batch_stats_norm(y_bn, bn_w, bn_b, ctx.eps)
        grad_yn, _ = lif_ops.backward(
            yn.view(ctx.T, -1), grad_spikes.reshape(ctx.T, -1), None, ctx.tau, ctx.spec
        )
        del yn
        need_bn = list(ctx.needs_input_grad[4:6])
        grad_y, grad_bn_w, grad_bn_b = torch.ops.aten.native_batch_norm_backward(
            grad_yn.view_as(y_bn), y_bn, bn_w, None, None, mean, invstd, True, ctx.eps, [True, *need_bn]
        )
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grad_y = from_bn(grad_y, y.shape).reshape(y.shape)
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
    from torch.nn.modules import module as module_mod

    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module_mod._global_forward_hooks
        or module_mod._global_forward_pre_hooks
    )


def _running_update(bn: nn.Module):
    """nn.BatchNorm's bookkeeping before a training-mode call: (momentum, running_mean, running_var)."""
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    else:
        momentum = 0.0
    if not bn.track_running_stats:
        return momentum, None, None
    return momentum, bn.running_mean, bn.running_var


def projection_batch_norm_lif(
    inp: torch.Tensor,
    proj: nn.Module,
    project,
    bn_view,
    bn: nn.Module,
    lif: nn.Module,
    T: int,
    from_bn=None,
) -> torch.Tensor:
    """Spikes ``from_bn(lif(bn(bn_view(proj(inp)))), y.shape)``, keeping only ``inp`` for the backward.

    ``project(inp, proj.weight, proj.bias)`` must compute exactly what ``proj(inp)`` does (the backward
    recomputes the projection with it); ``bn_view`` puts the projection's output y into the layout ``bn``
    expects, with T leading (a view or a copy); ``from_bn(z, y.shape)`` takes a tensor in that layout back
    to y's element order, in any shape that reshapes to y's (default: ``z.view(y.shape)``). For spike
    inputs (saved as bool, see ``spike_storage``) this keeps 1 byte per input element instead of the 4 per
    output element of the projection. Falls back to the unfused ops when the fused path does not apply or
    forward hooks observe ``proj``.
    """
    from_bn = from_bn or _view_back
    if observed(proj) or not _fusable(inp, bn, lif) or not (inp.requires_grad or proj.weight.requires_grad):
        y = proj(inp)
        return from_bn(batch_norm_lif(bn_view(y), bn, lif, T), y.shape)
    with torch.no_grad():
        y = proj(inp)
    if not y.is_contiguous() or not bn_view(y).is_contiguous():
        y = proj(inp)
        return from_bn(batch_norm_lif(bn_view(y), bn, lif, T), y.shape)
    momentum, running_mean, running_var = _running_update(bn)
    spikes = _ProjectionBatchNormLIF.apply(
        y, inp, proj.weight, proj.bias, bn.weight, bn.bias, running_mean, running_var, momentum, bn.eps,
        (project, bn_view, from_bn), T, lif.tau, lif_spec(lif),
    )  # fmt: skip
    _mark_spikes(spikes)
    return from_bn(spikes, y.shape)


def _view_back(z: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return z.view(shape)


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
    _mark_spikes(spikes)
    return spikes
