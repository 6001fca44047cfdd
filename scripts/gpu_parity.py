"""Every spikemlp kernel against its reference on one device, as one JSON file (the parity step of
scripts/gpu_check): the Triton LIF/IF kernels (every charge mode and reset, a learnable tau of 1.7, which
bf16/fp16 cannot hold exactly), the group LIF operator, and whole models (MLP-SPE on the Triton LIF,
SNN-MLP on the Triton group LIF) against the same models on the reference code.

Each case records whether the forward is equal (spikes, membrane, outputs: bit for bit) and the largest
gradient difference relative to the largest reference gradient; ``ok`` says whether it is within the
tolerance (1e-5 in float32; 3e-2 in bfloat16/float16, for tau 5e-2 in float16 and 0.25 in bfloat16, whose
reference rounds every term; models: equal predictions and logits within 1e-4 of their scale).
Usage: PYTHONPATH=src python3 scripts/gpu_parity.py OUT.json [--device cuda] [--small]
(``--device cpu --small`` with TRITON_INTERPRET=1 runs the same cases on CPU tensors, small). Exit status
1 when a case is not ok.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _rel(a, b) -> float:
    return (a.double() - b.double()).abs().max().item() / max(b.double().abs().max().item(), 1e-3)


def _tolerance(dtype, tau=False) -> float:
    if dtype == torch.float32:
        return 1e-5
    # The bf16 reference's tau gradient is itself a sum of bf16-rounded terms that nearly cancel.
    return (0.25 if dtype == torch.bfloat16 else 5e-2) if tau else 3e-2


def lif_cases(device, n):
    from spikemlp.neurons import surrogate as sg
    from spikemlp.neurons.neuron_spec import NeuronSpec
    from spikemlp.neurons.reference import if_reference, lif_reference
    from spikemlp.ops.triton_lif import lif_triton

    neurons = [  # (mode, tau, v_threshold, v_reset, detach, surrogate, learnable tau)
        (1, 2.0, 1.0, 0.0, True, sg.Sigmoid(4.0), False),
        (1, 3.0, 0.7, 0.3, False, sg.ATan(2.0), False),
        (2, 3.0, 0.7, None, True, sg.Triangle(1.0), False),
        (0, None, 1.0, 0.0, True, sg.Sigmoid(4.0), False),
        (1, 1.7, 1.0, 0.0, True, sg.Sigmoid(4.0), True),
        (2, 1.7, 0.5, 0.0, False, sg.StraightThrough(), True),
    ]
    for dtype in DTYPES:
        for mode, tau, vth, vr, det, sgt, learn in neurons:
            x = (torch.randn(4, n, device=device) * 1.5 + 0.6).to(dtype)
            g_s, g_v = torch.randn_like(x), torch.randn_like(x)
            outs = []
            for impl in ("reference", "triton"):
                xi = x.clone().requires_grad_()
                t = torch.tensor(tau, device=device, requires_grad=True) if learn else tau
                spec = NeuronSpec(mode, vth, vr, det, sgt)
                if impl == "triton":
                    s, v = lif_triton(xi, t, spec, True)
                elif mode == 0:
                    s, v = if_reference(xi, vth, vr, det, sgt, True)
                else:
                    s, v = lif_reference(xi, t, vth, vr, mode == 1, det, sgt, True)
                ((s * g_s).sum() + (v * g_v).sum()).backward()
                outs.append((s, v, xi.grad, t.grad if learn else None))
            (s0, v0, g0, t0), (s1, v1, g1, t1) = outs
            r = dict(
                kernel="lif",
                dtype=str(dtype),
                case=f"mode {mode} tau {tau} vth {vth} reset {vr} {sgt.name}",
                learnable_tau=learn,
                spikes_differing=int((s0 != s1).sum()),
                membrane_equal=torch.equal(v0, v1),
                grad_x=_rel(g1, g0),
                grad_tau=_rel(t1, t0) if learn else 0.0,
            )
            r["ok"] = r["spikes_differing"] == 0 and r["membrane_equal"] and r["grad_x"] < _tolerance(dtype)
            r["ok"] = r["ok"] and r["grad_tau"] < _tolerance(dtype, tau=True)
            yield r


def group_lif_cases(device, shape):
    from spikemlp.neurons.group_lif import group_lif, group_lif_reference

    for dtype in DTYPES:
        for axis, s in ((2, 4), (3, 4), (3, 0), (2, 1)):
            x = (0.5 * torch.randn(shape, device=device)).to(dtype)
            g = torch.randn(shape, device=device).to(dtype)
            outs = []
            for fn in (group_lif, group_lif_reference):
                xi, tau, v_th = (
                    t.clone().requires_grad_() for t in (x, *torch.tensor([[0.37], [0.05]], device=device))
                )
                y = fn(xi, tau, v_th, axis, s)
                y.backward(g)
                zero = torch.zeros(1, device=device)
                outs.append((y.detach(), xi.grad, tau.grad if tau.grad is not None else zero, v_th.grad))
            (y1, gx1, gt1, gv1), (y0, gx0, gt0, gv0) = outs
            r = dict(
                kernel="group_lif",
                dtype=str(dtype),
                case=f"axis {axis} group {s} shape {list(shape)}",
                forward_equal=torch.equal(y0, y1),
                grad_x=_rel(gx1, gx0),
                grad_tau=_rel(gt1, gt0),
                grad_v_th=_rel(gv1, gv0),
            )
            r["ok"] = (
                r["forward_equal"]
                and r["grad_x"] < _tolerance(dtype)
                and max(r["grad_tau"], r["grad_v_th"]) < 1e-3
            )
            yield r


def model_cases(device, batch):
    import spikemlp
    from bench_models import set_firing_batch_norm

    group_lif_module = sys.modules["spikemlp.neurons.group_lif"]  # (the package's group_lif is the function)

    x = torch.randn(batch, 3, 32, 32, device=device)
    fast = group_lif_module.group_lif
    for name, kwargs in (("mlp_spe_xt_cifar", dict(T=4)), ("snn_mlp_xt_cifar", {})):
        logits = {}
        for impl in ("reference", "kernel"):
            # MLP-SPE: the reference LIF (backend); SNN-MLP: the plain loop in place of group_lif.
            mlp_spe = name.startswith("mlp_spe")
            extra = dict(backend="reference" if impl == "reference" else "auto") if mlp_spe else {}
            group_lif_module.group_lif = group_lif_module.group_lif_reference if impl == "reference" else fast
            try:
                torch.manual_seed(0)
                model = spikemlp.models.create(name, num_classes=10, **kwargs, **extra)
                set_firing_batch_norm(model)
                with torch.inference_mode():
                    logits[impl] = model.to(device).eval()(x).float()
            finally:
                group_lif_module.group_lif = fast
        ref, got = logits["reference"], logits["kernel"]
        r = dict(
            kernel=f"model {name}",
            dtype="torch.float32",
            case=f"eval, batch {batch}",
            logits=_rel(got, ref),
            same_predictions=torch.equal(got.argmax(1), ref.argmax(1)),
        )
        r["ok"] = r["same_predictions"] and r["logits"] < 1e-4
        yield r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the JSON file to write")
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="small shapes (for Triton's interpreter)")
    args = p.parse_args()
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 products
    n, shape, batch = (2048, (2, 4, 9, 10), 2) if args.small else (1 << 20, (16, 96, 28, 28), 16)
    cases = [
        *lif_cases(args.device, n),
        *group_lif_cases(args.device, shape),
        *model_cases(args.device, batch),
    ]
    failed = [f"{c['kernel']} {c['dtype']} {c['case']}" for c in cases if not c["ok"]]
    report = dict(
        device=args.device,
        name=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        torch=torch.__version__,
        cases=cases,
        failed=failed,
    )
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(
        f"gpu_parity: {len(cases) - len(failed)} of {len(cases)} cases agree"
        + (f"; not: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
