"""LIF/IF neurons: equality with SpikingJelly, hand-computed steps, and clear errors for bad input."""

from __future__ import annotations

import math

import pytest
import torch

from spikemlp.neurons import IF, LIF

# --- SpikingJelly equality (the MLP-SPE neuron) -------------------------------------------------------


def _spikingjelly_lif(x: torch.Tensor):
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    node = neuron.LIFNode(tau=2.0, detach_reset=True, step_mode="m", store_v_seq=True)
    x = x.detach().clone().requires_grad_()
    spikes = node(x)
    return x, spikes, node.v_seq


@pytest.mark.parametrize("T", [1, 4, 6])
@pytest.mark.parametrize("shape", [(7,), (2, 3, 5), (2, 4, 3, 3)])
def test_default_lif_equals_spikingjelly(cpu_backend, T, shape):
    x = torch.randn(T, *shape) * 2.0 + 0.5
    grad = torch.randn(T, *shape)
    x_sj, s_sj, v_sj = _spikingjelly_lif(x)
    (s_sj * grad).sum().backward()

    x_ours = x.clone().requires_grad_()
    s, v = LIF(backend=cpu_backend, return_membrane=True)(x_ours)
    (s * grad).sum().backward()

    assert torch.equal(s, s_sj.detach())
    assert torch.equal(v, v_sj.detach())
    assert s.sum() > 0 and (s == 0).any()  # the test inputs exercise both firing and silence
    torch.testing.assert_close(x_ours.grad, x_sj.grad, rtol=0, atol=1e-6)


def test_default_lif_equals_spikingjelly_in_float64(cpu_backend):
    x = (torch.randn(4, 3, 11) * 2.0 + 0.5).double()
    x_sj, s_sj, v_sj = _spikingjelly_lif(x)
    s_sj.sum().backward()
    x_ours = x.clone().requires_grad_()
    s, v = LIF(backend=cpu_backend, return_membrane=True)(x_ours)
    s.sum().backward()
    assert s.dtype == torch.float64
    assert torch.equal(s, s_sj.detach()) and torch.equal(v, v_sj.detach())
    torch.testing.assert_close(x_ours.grad, x_sj.grad, rtol=0, atol=1e-12)


# --- hand-computed steps (snnTorch style) ------------------------------------------------------------
# Inputs are chosen so that every intermediate value is exact in binary floating point.

HAND_CASES = [
    # (neuron kwargs, inputs, expected spikes, expected membrane after reset)
    # decay_input, hard reset to 0: H = V + (X - V)/2.  H: 0.75, 1.125 (fire), 0.25
    (dict(tau=2.0), [1.5, 1.5, 0.5], [0, 1, 0], [0.75, 0.0, 0.25]),
    # decay_input, soft reset: after firing at H = 1.125, V = 0.125; then H = 0.125 + (0.5 - 0.125)/2
    (dict(tau=2.0, v_reset=None), [1.5, 1.5, 0.5], [0, 1, 0], [0.75, 0.125, 0.3125]),
    # decay_input, hard reset to -0.5 (V starts at -0.5): H = V + (X - (V + 0.5))/2: 0.5, 1.0 (fire), -0.25
    (dict(tau=2.0, v_reset=-0.5), [2.0, 2.0, 0.5], [0, 1, 0], [0.5, -0.5, -0.25]),
    # no input decay, hard reset: H = V - V/2 + X: 0.75, 1.125 (fire), 0.25
    (dict(tau=2.0, decay_input=False), [0.75, 0.75, 0.25], [0, 1, 0], [0.75, 0.0, 0.25]),
    # no input decay, soft reset: 0.75, 1.125 (fire, V = 0.125), 0.125 - 0.0625 + 0.25
    (dict(tau=2.0, decay_input=False, v_reset=None), [0.75, 0.75, 0.25], [0, 1, 0], [0.75, 0.125, 0.3125]),
    # tau = 4, threshold 0.5: H = V + (X - V)/4: 0.25, 0.4375, 0.578125 (fire) -> 0
    (dict(tau=4.0, v_threshold=0.5), [1.0, 1.0, 1.0], [0, 0, 1], [0.25, 0.4375, 0.0]),
]


@pytest.mark.parametrize("kwargs, inputs, spikes, membrane", HAND_CASES)
def test_lif_hand_computed(cpu_backend, kwargs, inputs, spikes, membrane):
    x = torch.tensor(inputs).reshape(3, 1)
    s, v = LIF(**kwargs, backend=cpu_backend, return_membrane=True)(x)
    assert s.flatten().tolist() == spikes
    assert v.flatten().tolist() == membrane


IF_CASES = [
    # H = V + X; hard reset: 0.5, 1.0 (fire) -> 0, 0.25
    (dict(), [0.5, 0.5, 0.25], [0, 1, 0], [0.5, 0.0, 0.25]),
    # soft reset: 0.75, 1.25 (fire) -> 0.25, 0.5
    (dict(v_reset=None), [0.75, 0.5, 0.25], [0, 1, 0], [0.75, 0.25, 0.5]),
]


@pytest.mark.parametrize("kwargs, inputs, spikes, membrane", IF_CASES)
def test_if_hand_computed(cpu_backend, kwargs, inputs, spikes, membrane):
    x = torch.tensor(inputs).reshape(3, 1)
    s, v = IF(**kwargs, backend=cpu_backend, return_membrane=True)(x)
    assert s.flatten().tolist() == spikes
    assert v.flatten().tolist() == membrane


def test_lif_gradient_hand_computed(cpu_backend):
    # Default LIF, x = [1.5, 1.5]: H1 = 0.75 (no spike), H2 = 1.125 (spike); L = S1 + S2.
    # dL/dx2 = sg(u2) / 2;  dL/dx1 = sg(u1) / 2 + sg(u2) * dH2/dV1 * dV1/dH1 * dH1/dx1 = ... + sg(u2) / 4,
    # with sg(u) = 4 sigmoid(4u) (1 - sigmoid(4u)), u = H - 1, and dV1/dH1 = 1 - S1 = 1 (reset detached).
    def sg(u):
        s = 1.0 / (1.0 + math.exp(-4.0 * u))
        return 4.0 * s * (1.0 - s)

    x = torch.tensor([[1.5], [1.5]], dtype=torch.float64, requires_grad=True)
    LIF(backend=cpu_backend)(x).sum().backward()
    expected = [sg(-0.25) / 2 + sg(0.125) / 4, sg(0.125) / 2]
    torch.testing.assert_close(x.grad.flatten(), torch.tensor(expected, dtype=torch.float64))


def test_stateless_same_result_every_call(cpu_backend):
    lif = LIF(backend=cpu_backend)
    x = torch.randn(4, 2, 9) + 0.8
    first = lif(x)
    lif(torch.randn(4, 2, 9) * 5)  # a different batch in between must leave no trace
    assert torch.equal(lif(x), first)
    assert list(lif.buffers()) == [] and list(lif.parameters()) == []


def test_output_dtype_and_values():
    x = torch.randn(3, 4, 5).to(torch.bfloat16)
    s = LIF(backend="reference")(x)
    assert s.dtype == torch.bfloat16 and s.shape == x.shape
    assert set(s.unique().tolist()) <= {0.0, 1.0}


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("neuron", [LIF, IF])
def test_rejects_input_without_time_axis(neuron):
    with pytest.raises(ValueError, match="leading time axis"):
        neuron()(torch.randn(8))


@pytest.mark.parametrize("neuron", [LIF, IF])
def test_rejects_integer_input(neuron):
    with pytest.raises(TypeError, match="floating-point input.*x.float"):
        neuron()(torch.ones(4, 3, dtype=torch.int64))


@pytest.mark.parametrize("neuron", [LIF, IF])
def test_rejects_zero_time_steps(neuron):
    with pytest.raises(ValueError, match="T = 0"):
        neuron()(torch.randn(0, 3))


def test_rejects_non_tensor():
    with pytest.raises(TypeError, match="expects a tensor"):
        LIF()([[1.0, 2.0]])


def test_rejects_learnable_tau_on_other_device():
    lif = LIF(learnable_tau=True)  # the parameter lives on the CPU
    x = torch.randn(4, 3, device="meta")
    with pytest.raises(
        ValueError, match="input is on meta but its learnable tau is on cpu.*\\.to\\('meta'\\)"
    ):
        lif(x)


def test_rejects_unknown_backend_at_construction():
    with pytest.raises(ValueError, match="unknown LIF backend 'cuda'.*'reference', 'cpp', 'triton'"):
        LIF(backend="cuda")
    with pytest.raises(ValueError, match="unknown LIF backend"):
        IF(backend="fast")


def test_rejects_tau_not_above_one():
    with pytest.raises(ValueError, match="tau must be greater than 1"):
        LIF(tau=1.0)


def test_explicit_triton_on_cpu_says_why():
    with pytest.raises(
        RuntimeError, match="'triton' is unavailable: .*runs on CUDA tensors, the input is on cpu"
    ):
        LIF(backend="triton")(torch.randn(2, 3))


@pytest.mark.parametrize("tau", [float("nan"), float("inf"), "2", True])
def test_rejects_tau_that_is_not_a_finite_number(tau):
    # A NaN tau passed `tau <= 1` and gave all-zero spikes; a string or bool is not a time constant.
    with pytest.raises(ValueError, match="LIF tau must be"):
        LIF(tau=tau)
    with pytest.raises(ValueError, match="LIF v_threshold must be"):
        LIF(v_threshold=tau)
