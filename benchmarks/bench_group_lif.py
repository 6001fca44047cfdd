"""SNN-MLP's group LIF and a full SNN-MLP-T training step on CPU.

Measures, in one run on this machine:
- ``group_lif`` (groups as a batch dimension, custom backward) against the plain per-position loop
  differentiated by autograd (``group_lif_reference``), forward and forward+backward, along H and W,
  on [32, 384, 14, 14] (stage 2 of SNN-MLP-T at 224) and [32, 96, 56, 56] (stage 0); plus the bytes
  each keeps for the backward pass (autograd's saved tensors);
- one ``snn_mlp_t`` training step at 224 x 224 (forward, cross-entropy, backward, AdamW step) with
  batch 8: the fast group LIF, the plain loop in its place, and the LIF switched off (s = -1).

The contenders are timed in turns (a, b, c, a, b, c, ...) so that they share the background load of a
shared machine; times are the best of ``--repeats`` (least disturbed) with the median beside it. Memory:
the bytes autograd keeps for the backward (exact, load-independent) and, for the training step, the
resident memory of a fresh process per mode before a step and at its peak during the step (Linux).
Prints one JSON object and a one-line summary; asserts nothing.
Usage: python benchmarks/bench_group_lif.py [--threads 2] [--repeats 5] [--steps 3] [--skip-model]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time

import torch

from spikemlp.neurons.group_lif import group_lif, group_lif_reference

SHAPES = [(32, 384, 14, 14), (32, 96, 56, 56)]


def _interleaved(fns: dict, repeats: int) -> dict:
    """Time several functions in turns (a, b, c, a, b, c, ...) after one warm-up each, so that all of
    them see the same background load; best and median milliseconds per function."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    out = {}
    for name, times in samples.items():
        times.sort()
        out[name] = {"best_ms": 1e3 * times[0], "median_ms": 1e3 * times[len(times) // 2]}
    return out


def _saved_bytes(fn, exclude: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of ``fn()``, ``exclude`` (the
    parameters) left out."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _contender(op, x, g, tau, v_th, axis: int):
    """(forward, forward+backward, saved bytes) of one implementation on one input."""

    def forward():
        with torch.no_grad():
            op(x, tau, v_th, axis, 4)

    def forward_backward():
        op(x.detach().requires_grad_(), tau, v_th, axis, 4).backward(g)

    xi = x.detach().requires_grad_()
    return forward, forward_backward, _saved_bytes(lambda: op(xi, tau, v_th, axis, 4), [tau, v_th])


def bench_op(repeats: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    ops = {"group_lif": group_lif, "plain_loop": group_lif_reference}
    for shape in SHAPES:
        x = 0.5 * torch.randn(shape, generator=gen)
        g = torch.randn(shape, generator=gen)
        tau = torch.tensor([0.25], requires_grad=True)
        v_th = torch.tensor([0.1], requires_grad=True)
        for axis in (2, 3):
            fwd, fwd_bwd, saved = {}, {}, {}
            for name, op in ops.items():
                fwd[name], fwd_bwd[name], saved[name] = _contender(op, x, g, tau, v_th, axis)
            t_fwd, t_fwd_bwd = _interleaved(fwd, repeats), _interleaved(fwd_bwd, repeats)
            row = {"shape": list(shape), "axis": "H" if axis == 2 else "W"}
            for name in ops:
                row[name] = {"fwd": t_fwd[name], "fwd_bwd": t_fwd_bwd[name], "saved_bytes": saved[name]}
            for phase in ("fwd", "fwd_bwd"):
                row[f"speedup_{phase}"] = (
                    row["plain_loop"][phase]["best_ms"] / row["group_lif"][phase]["best_ms"]
                )
            rows.append(row)
    return rows


MODES = ("group_lif", "plain_loop", "lif_off")


def _set_mode(model, mode: str) -> None:
    from spikemlp.models.snn_mlp import set_group_size

    # GroupLIF.forward calls the module-level group_lif; swapping it runs the plain loop everywhere.
    sys.modules["spikemlp.neurons.group_lif"].group_lif = (
        group_lif_reference if mode == "plain_loop" else group_lif
    )
    set_group_size(model, -1 if mode == "lif_off" else 4)


def _snn_mlp_t(batch: int):
    import timm

    import spikemlp  # noqa: F401

    torch.manual_seed(0)
    model = timm.create_model("snn_mlp_t").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 3, 224, 224)
    labels = torch.randint(0, 1000, (batch,))

    def loss():
        return torch.nn.functional.cross_entropy(model(images), labels)

    def step():
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return model, step, loss


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_child(mode: str, batch: int, threads: int, queue) -> None:
    """Resident memory of a fresh process around one training step in one mode (after a warm-up step):
    before the step, and the peak during it (the kernel's high-water mark, reset through clear_refs)."""
    torch.set_num_threads(threads)
    model, step, _ = _snn_mlp_t(batch)
    _set_mode(model, mode)
    step()
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    step()
    peak = _status_mb("VmHWM")
    queue.put({"rss_before_step_mb": before, "peak_rss_mb": peak, "peak_extra_mb": peak - before})


def bench_model(batch: int, steps: int, threads: int) -> dict:
    model, step, loss = _snn_mlp_t(batch)
    params = list(model.parameters())

    def in_mode(mode):
        def run():
            _set_mode(model, mode)
            step()

        return run

    times = _interleaved({mode: in_mode(mode) for mode in MODES}, steps)
    out = {}
    for mode in MODES:
        _set_mode(model, mode)
        out[mode] = {**times[mode], "saved_activation_mb": _saved_bytes(loss, params) / 2**20}
    _set_mode(model, "group_lif")
    ctx = mp.get_context("spawn")
    for mode in MODES:
        queue = ctx.Queue()
        proc = ctx.Process(target=_peak_rss_child, args=(mode, batch, threads, queue))
        proc.start()
        out[mode].update(queue.get())
        proc.join()
    out["speedup_vs_plain_loop"] = out["plain_loop"]["best_ms"] / out["group_lif"]["best_ms"]
    out["lif_overhead_vs_off"] = out["group_lif"]["best_ms"] / out["lif_off"]["best_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--steps", type=int, default=3, help="timed training steps per mode (after a warm-up)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__,
        },
        "op": bench_op(args.repeats),
    }
    if not args.skip_model:
        result["snn_mlp_t_train_step_224"] = {
            "batch": args.batch,
            **bench_model(args.batch, args.steps, args.threads),
        }
    print(json.dumps(result, indent=2))

    parts = [
        f"{r['axis']} {tuple(r['shape'])}: fwd x{r['speedup_fwd']:.2f}, fwd+bwd x{r['speedup_fwd_bwd']:.2f}"
        for r in result["op"]
    ]
    line = "group_lif vs plain loop: " + "; ".join(parts)
    if "snn_mlp_t_train_step_224" in result:
        m = result["snn_mlp_t_train_step_224"]
        line += (
            f" | snn_mlp_t step (224, batch {args.batch}): {m['group_lif']['best_ms'] / 1e3:.2f} s, "
            f"peak RSS {m['group_lif']['peak_rss_mb']:.0f} MB "
            f"(+{m['group_lif']['peak_extra_mb']:.0f} in the step), "
            f"saved activations {m['group_lif']['saved_activation_mb']:.0f} MB; "
            f"plain loop x{m['speedup_vs_plain_loop']:.2f} slower; "
            f"LIF off x{1 / m['lif_overhead_vs_off']:.2f} of the time"
        )
    print(line)


if __name__ == "__main__":
    main()
