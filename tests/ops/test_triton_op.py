"""The CUDA implementation of the LIF operators (the Triton kernels' glue in ops/triton_lif.py), run in
Triton's interpreter on CPU tensors against the CPU operators: same spikes, membrane and gradients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

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


def test_cuda_implementation_matches_the_cpu_operator_in_the_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 6
    for r in results:
        assert r["spikes"] and r["membrane"] and r["charge_kept"] and r["spiking"], r
        assert r["grad_err"] < 1e-5 and r["tau_err"] < 1e-3, r
