"""The CUDA implementation of the LIF operators (the Triton kernels' glue in ops/triton_lif.py), run in
Triton's interpreter on CPU tensors against the CPU operators: same spikes, membrane and gradients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.interpret

CHECK = textwrap.dedent(
    """
    import json, torch
    from spikemlp.ops import triton_lif

    results = []
    neurons = [(0, 1.0, 0.0, True, True, 0, 4.0), (1, 0.7, 0.3, True, False, 1, 2.0),
               (2, 1.0, 0.0, False, False, 2, 1.0)]
    for mode, vth, vr, hard, detach, sg, alpha in neurons:
        for learn in (False, True):
            x = torch.randn(5, 3, 40, generator=torch.Generator().manual_seed(mode)) * 1.5 + 0.6
            g_s, g_v = torch.randn_like(x), torch.randn_like(x)
            tau = torch.tensor(3.0) if learn else None
            args = (x, tau, 2.0, mode, vth, vr, hard, detach, sg, alpha, True, True)
            s0, v0, _ = torch.ops.spikemlp.lif_forward(*args)
            s1, v1, h1 = triton_lif._lif_forward_cuda(*args)
            back = (tau, 2.0, mode, vth, vr, hard, detach, sg, alpha, learn and mode != 0)
            gx0, gt0 = torch.ops.spikemlp.lif_backward(x, g_s, g_v, *back)
            gx1, gt1 = triton_lif._lif_backward_cuda(h1, g_s, g_v, *back)
            results.append(dict(spikes=bool(torch.equal(s0, s1)), membrane=bool(torch.equal(v0, v1)),
                                charge_kept=h1.shape == x.shape, spiking=0 < s0.sum().item() < s0.numel(),
                                grad_err=(gx1 - gx0).abs().max().item() / gx0.abs().max().item(),
                                tau_err=abs(gt1.item() - gt0.item()) / max(abs(gt0.item()), 1e-6)))
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def interpreted() -> list:
    """The JSON lines of CHECK and TAU_CHECK, run in one interpreter process (one import of torch)."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = CHECK + TAU_CHECK
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.strip().splitlines()[-2:]]


def test_cuda_implementation_matches_the_cpu_operator_in_the_interpreter(interpreted):
    results = interpreted[0]
    assert len(results) == 6
    for r in results:
        assert r["spikes"] and r["membrane"] and r["charge_kept"] and r["spiking"], r
        assert r["grad_err"] < 1e-5 and r["tau_err"] < 1e-3, r


# A learnable tau of 1.7 (not exact in bf16/fp16) with CUDA's arithmetic: ATen casts the float32 tensor tau
# to the input's dtype before dividing, so on CUDA the reference divides by bf16(1.7) = 1.703125. The
# kernel run with CUDA's constants must give the spikes and membrane of the reference with that tau (on
# the CPU, which reads a 0-dim tensor as its float32 number, the reference with the rounded tau).
TAU_CHECK = textwrap.dedent(
    """
    import json, torch
    from spikemlp.neurons import surrogate as sg
    from spikemlp.neurons.neuron_spec import NeuronSpec
    from spikemlp.neurons.reference import lif_reference
    from spikemlp.ops import triton_lif

    results = []
    spec = NeuronSpec(1, 1.0, 0.0, True, sg.Sigmoid())
    tau = torch.tensor(1.7)
    real = triton_lif._constants

    def run(x, fp32_tau=False):  # the CUDA implementation with CUDA's constants, on CPU tensors
        def cuda_constants(*args):
            c = real(*args, device_type="cuda")
            return dict(c, tau_round=0) if fp32_tau else c  # the kernel then divides by the fp32 tau

        triton_lif._constants = cuda_constants
        s, v, _ = triton_lif._lif_forward_cuda(*triton_lif.lif.forward_args(x, tau, spec, True))
        return s, v

    for dtype in (torch.bfloat16, torch.float16):
        x = (torch.randn(4, 2048, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.6).to(dtype)
        s, v = run(x)
        _, v_fp32_tau = run(x, fp32_tau=True)
        want_s, want_v = lif_reference(x, tau.to(dtype), 1.0, 0.0, True, True, sg.Sigmoid(), True)
        _, plain_v = lif_reference(x, tau, 1.0, 0.0, True, True, sg.Sigmoid(), True)
        results.append(dict(dtype=str(dtype), equal=torch.equal(s, want_s) and torch.equal(v, want_v),
                            fp32_tau_differs=not torch.equal(v_fp32_tau, want_v),
                            rounding_matters=int((plain_v != want_v).sum())))
    print(json.dumps(results))
    """
)


def test_learnable_tau_in_half_precision_is_rounded_as_cuda_rounds_it(interpreted):
    results = interpreted[1]
    assert len(results) == 2
    for r in results:
        assert r["equal"], r
        assert r["fp32_tau_differs"] and r["rounding_matters"] > 0, r  # the case can see the rounding
