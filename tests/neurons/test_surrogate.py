"""Surrogate gradients: each grad is the derivative of its smooth primitive; spike is Heaviside forward."""

from __future__ import annotations

import math

import pytest
import torch

from spikemlp.neurons import surrogate as sg

ALL = [sg.Sigmoid(4.0), sg.Sigmoid(2.5), sg.ATan(2.0), sg.ATan(3.0), sg.Triangle(1.0), sg.Triangle(2.0)]


@pytest.mark.parametrize("surrogate", ALL, ids=repr)
def test_grad_is_derivative_of_primitive(surrogate):
    # Avoid the triangle's kinks at 0 and +-1/alpha, where the derivative is one-sided.
    u = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64)[1::2].requires_grad_()
    (autograd,) = torch.autograd.grad(surrogate.primitive(u).sum(), u)
    torch.testing.assert_close(surrogate.grad(u.detach()), autograd)


def test_known_values():
    # sigmoid'(0) * alpha = alpha / 4; atan: alpha / 2 at 0; triangle: alpha at 0, 0 beyond 1/alpha.
    zero = torch.zeros(1, dtype=torch.float64)
    assert sg.Sigmoid(4.0).grad(zero).item() == pytest.approx(1.0)
    assert sg.ATan(2.0).grad(zero).item() == pytest.approx(1.0)
    assert sg.ATan(2.0).grad(torch.tensor([1.0 / math.pi])).item() == pytest.approx(0.5)  # 1 / (1 + 1)
    assert sg.Triangle(2.0).grad(torch.tensor([0.0, 0.25, 0.5, 0.75])).tolist() == [2.0, 1.0, 0.0, 0.0]
    assert sg.StraightThrough().grad(torch.tensor([-3.0, 5.0])).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("surrogate", ALL + [sg.StraightThrough()], ids=repr)
def test_spike_is_heaviside_with_surrogate_backward(surrogate):
    u = torch.tensor([-1.0, -1e-7, 0.0, 0.3], requires_grad=True)
    s = surrogate.spike(u)
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0]  # Heaviside with H(0) = 1, as SpikingJelly
    s.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(u.grad, torch.tensor([1.0, 2.0, 3.0, 4.0]) * surrogate.grad(u.detach()))


def test_get_by_name_and_argument():
    assert sg.get(None) == sg.Sigmoid(4.0)
    assert sg.get("atan:3") == sg.ATan(3.0)
    assert sg.get("triangle") == sg.Triangle(1.0)
    custom = sg.Sigmoid(1.5)
    assert sg.get(custom) is custom


def test_get_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown surrogate 'relu'.*'atan', 'sigmoid'"):
        sg.get("relu")
