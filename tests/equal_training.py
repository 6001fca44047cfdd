"""Shared assertion: two copies of a model trained one step each ended in the same state."""

import torch


def assert_same_grads_and_buffers(eager: torch.nn.Module, other: torch.nn.Module, **tol) -> None:
    """Every parameter got a non-zero gradient in ``eager`` and the same one in ``other``; every buffer
    (BatchNorm's running statistics) is the same in both."""
    tol = tol or dict(rtol=1e-9, atol=1e-12)
    for (name, pe), po in zip(eager.named_parameters(), other.parameters()):
        assert pe.grad.abs().sum() > 0, name
        torch.testing.assert_close(po.grad, pe.grad, msg=name, **tol)
    for (name, be), bo in zip(eager.named_buffers(), other.buffers()):
        torch.testing.assert_close(bo, be, msg=name, **tol)
