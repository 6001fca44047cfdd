"""Surrogate gradients for the Heaviside spike function.

``surrogate.spike(u)`` is Heaviside(u) (u = H - V_th) in the forward pass, with ``surrogate.grad(u)`` as
its derivative in the backward (``primitive``, whose derivative ``grad`` is, lets the tests check it). The
fused kernels implement the four built-in surrogates below; a custom subclass runs on the reference.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch


class Surrogate:
    """Base class: ``grad(u)`` is the pseudo-derivative of the spike at u = H - V_th."""

    name = "surrogate"

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def primitive(self, u: torch.Tensor) -> torch.Tensor:
        """The smooth approximation of Heaviside(u) whose derivative is ``grad``."""
        raise NotImplementedError

    def spike(self, u: torch.Tensor) -> torch.Tensor:
        if dataclasses.is_dataclass(self):
            # The backward rebuilds the surrogate from its class and field values: torch.compile cannot
            # trace a backward that reads attributes of an object passed in, but it can trace this.
            return _SpikeFn.apply(u, type(self), dataclasses.astuple(self))
        return _SpikeFn.apply(u, self._same, ())

    def _same(self) -> Surrogate:
        return self

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class _SpikeFn(torch.autograd.Function):
    """Heaviside(u) forward; backward grad_out * make(*args).grad(u), make(*args) being the surrogate."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, make, args: tuple) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.make, ctx.args = make, args
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (u,) = ctx.saved_tensors
        return grad_out * ctx.make(*ctx.args).grad(u), None, None


@dataclass(repr=False)
class Sigmoid(Surrogate):
    """d/du sigmoid(alpha * u) = alpha * s * (1 - s). alpha = 4 is SpikingJelly's and MLP-SPE's default."""

    alpha: float = 4.0
    name = "sigmoid"

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(u * self.alpha)
        return (1.0 - s) * s * self.alpha

    def primitive(self, u: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.alpha * u)


@dataclass(repr=False)
class ATan(Surrogate):
    """d/du (1/pi) atan(pi/2 * alpha * u) + 1/2 = alpha / 2 / (1 + (pi/2 * alpha * u)^2)."""

    alpha: float = 2.0
    name = "atan"

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * u).square())

    def primitive(self, u: torch.Tensor) -> torch.Tensor:
        return torch.atan(math.pi / 2 * self.alpha * u) / math.pi + 0.5


@dataclass(repr=False)
class Triangle(Surrogate):
    """Piecewise-quadratic surrogate's derivative: a triangle of height alpha and half-width 1/alpha."""

    alpha: float = 1.0
    name = "triangle"

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        return (self.alpha - self.alpha * self.alpha * u.abs()).clamp_min(0)

    def primitive(self, u: torch.Tensor) -> torch.Tensor:
        # 0 below -1/alpha, 1 above 1/alpha, and a quadratic joining them smoothly.
        a = self.alpha
        inside = -0.5 * a * a * u.abs() * u + a * u + 0.5
        return torch.where(u.abs() <= 1.0 / a, inside, (u > 0).to(u.dtype))


@dataclass(repr=False)
class StraightThrough(Surrogate):
    """Straight-through estimator: gradient 1 everywhere."""

    name = "straight_through"

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(u)

    def primitive(self, u: torch.Tensor) -> torch.Tensor:
        return u  # only its derivative (1) matters


_BY_NAME = {"sigmoid": Sigmoid, "atan": ATan, "triangle": Triangle, "straight_through": StraightThrough}


def get(spec: str | Surrogate | None) -> Surrogate:
    """Build a surrogate from a name ("sigmoid", "atan:2.0", ...) or return the given object."""
    if spec is None:
        return Sigmoid()
    if isinstance(spec, Surrogate):
        return spec
    name, _, arg = str(spec).partition(":")
    if name not in _BY_NAME:
        raise ValueError(f"unknown surrogate {spec!r}; choose one of {sorted(_BY_NAME)} (e.g. 'sigmoid:4')")
    cls = _BY_NAME[name]
    return cls(float(arg)) if arg else cls()
