"""Run by tests/ops/test_triton_group_lif.py with TRITON_INTERPRET=1: the group LIF's Triton kernels on CPU
tensors against ``group_lif_reference`` (autograd through the plain loop). argv[1]: the cases as JSON;
prints one JSON object: the results per case and the int64 offsets probe."""

from __future__ import annotations

import json
import sys

import torch
import triton
import triton.language as tl

from spikemlp.neurons.group_lif import group_lif_reference
from spikemlp.ops import triton_group_lif as tg


def _input(shape, layout, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    if layout == "transposed":  # a non-contiguous view: the last two axes swapped
        return (
            (0.5 * torch.randn(*shape[:-2], shape[-1], shape[-2], generator=gen)).to(dtype).transpose(-1, -2)
        )
    if layout == "strided":  # every second column of a wider tensor
        return (0.5 * torch.randn(*shape[:-1], 2 * shape[-1], generator=gen)).to(dtype)[..., ::2]
    return (0.5 * torch.randn(shape, generator=gen)).to(dtype)


def run_case(shape, axis, group_size, dtype_name, layout, seed):
    dtype = getattr(torch, dtype_name)
    x = _input(shape, layout, dtype, seed)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    tau, v_th = torch.tensor([0.37]), torch.tensor([0.05])
    y = tg.group_lif_forward_triton(x, tau, v_th, axis, group_size)
    gx, gt, gv = tg.group_lif_backward_triton(x, g, tau, v_th, axis, group_size)
    xr, tr, vr = (t.clone().requires_grad_() for t in (x, tau, v_th))
    yr = group_lif_reference(xr, tr, vr, axis, group_size)
    yr.backward(g) if yr.requires_grad else None
    rgx = g if xr.grad is None else xr.grad
    rgt, rgv = (torch.zeros(1) if t.grad is None else t.grad for t in (tr, vr))

    def rel(a, b):
        return (a.double() - b.double()).abs().max().item() / max(b.double().abs().max().item(), 1e-3)

    return dict(
        forward_equal=bool(torch.equal(y, yr.detach())), dtypes=[str(y.dtype), str(gx.dtype), str(gt.dtype)],
        shapes_ok=y.shape == x.shape and gx.shape == x.shape and gt.shape == (1,) and gv.shape == (1,),
        fired=bool((y != v_th.to(dtype)).any()), grad_x_err=rel(gx, rgx), tau_err=rel(gt, rgt),
        v_th_err=rel(gv, rgv), tau_grad=gt.item(),
    )  # fmt: skip


@triton.jit
def _probe(out_ptr, base, inner, groups, s, length, BLOCK: tl.constexpr):
    lane = base + tl.arange(0, BLOCK).to(tl.int64)
    tl.store(out_ptr + tl.arange(0, BLOCK), tg._group_start(lane, inner, groups, s, length))


def probe_offsets():
    """_group_start for lanes just past 2^31 of a [40_000_000, 28, 7] tensor (W axis... here L = 28)."""
    base, inner, groups, s, length = 2**31 - 5, 7, 7, 4, 28
    out = torch.empty(16, dtype=torch.int64)
    _probe[(1,)](out, base, inner, groups, s, length, BLOCK=16)
    want = []
    for lane in range(base, base + 16):
        og, i = divmod(lane, inner)
        o, g = divmod(og, groups)
        want.append((o * length + g * s) * inner + i)
    return dict(got=out.tolist(), want=want)


if __name__ == "__main__":
    cases = json.loads(sys.argv[1])
    results = {name: run_case(*case, seed=n) for n, (name, case) in enumerate(cases.items())}
    print(json.dumps(dict(cases=results, offsets=probe_offsets())))
