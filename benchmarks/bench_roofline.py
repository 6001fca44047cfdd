"""How fast an MLP-SPE training step can get on this machine: its matrix products at the machine's best
fp32 rate, against the steps measured, spikemlp and the SpikingJelly baseline side by side.

A training step is mostly matrix products and convolutions (forward, input gradient, weight gradient), and
both implementations run the same ones: the same layers on the same dense gradients. This script
- counts each implementation's floating-point operations in products for one training step
  (``torch.utils.flop_counter.FlopCounterMode``: mm, addmm, bmm, convolution and its backward);
- measures this machine's best fp32 product rate at the same thread count (square ``torch.mm`` products,
  the case MKL/oneDNN run fastest);
- times the training step (best of ``--repeats`` after a warm-up) and profiles one more, summing the self
  time of the product and convolution operators.
It prints, per implementation, the step time, the time in products and their achieved rate, and the
floor: the product FLOPs at the best rate, with everything else free. ``speedup_bound`` is the baseline's
measured step over spikemlp's floor: no exact fp32 implementation of the same products gets further on
this machine. It also times ``mlp_spe_t``'s channel-MLP products at their widths (78, 234, ...) against
the same products with the widths rounded up to multiples of 16. Prints one JSON object and a summary;
asserts nothing.
Usage: python benchmarks/bench_roofline.py [--threads 1] [--repeats 3] [--models mlp_spe_t,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from bench_models import BASELINE, CONFIGS, IMPLEMENTATIONS, make_batch, train_step

# mlp_spe_t's channel-MLP products at 224 (rows: B * T * H * W at batch 4, T 4; stages 0 and 1: widths 78
# and 156, hidden 3x) and the same products with every width rounded up to a multiple of 16.
ODD_WIDTH_PRODUCTS = [(50176, 78, 234), (50176, 234, 78), (12544, 156, 468), (12544, 468, 156)]


def product_rate(m: int, k: int, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of ``torch.mm`` of an [m, k] by a [k, n] matrix."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best


def best_product_rate() -> float:
    """This machine's best fp32 product rate (FLOP/s) at the current thread count: ``torch.mm`` of square
    matrices, the case MKL runs fastest."""
    return max(product_rate(n, n, n) for n in (1024, 2048, 3072))


def padded_width_rates() -> list[dict]:
    """Product times at the model's widths and at the widths rounded up to multiples of 16 (more FLOPs):
    MKL's fp32 kernels run far below their best on widths such as 78."""
    rows = []
    for m, k, n in ODD_WIDTH_PRODUCTS:
        k16, n16 = -(-k // 16) * 16, -(-n // 16) * 16
        rate, padded = product_rate(m, k, n), product_rate(m, k16, n16)
        rows.append(
            {
                "shape": [m, k, n],
                "gflop_per_s": rate / 1e9,
                "ms": 2 * m * k * n / rate * 1e3,
                "padded_shape": [m, k16, n16],
                "padded_gflop_per_s": padded / 1e9,
                "padded_ms": 2 * m * k16 * n16 / padded * 1e3,
            }
        )
    return rows


def _is_product(name: str) -> bool:
    return name.startswith("aten::") and ("mm" in name or "conv" in name)


def measure(impl: str, name: str, img_size: int, T: int, batch: int, repeats: int) -> dict:
    num_classes = 1000 if img_size >= 224 else 10
    model = IMPLEMENTATIONS[impl](name, img_size, T, num_classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = make_batch(batch, img_size, num_classes, "cpu")

    def step():
        train_step(model, opt, images, labels)

    counter = FlopCounterMode(display=False)
    with counter:
        step()  # also the warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        profiled = time.perf_counter() - start
    product_s = sum(e.self_cpu_time_total for e in prof.key_averages() if _is_product(e.key)) / 1e6
    flops = counter.get_total_flops()
    return {
        "impl": impl,
        "model": name,
        "batch": batch,
        "T": T,
        "train_step_s": min(times),
        "product_gflop": flops / 1e9,
        "profiled_step_s": profiled,
        "profiled_product_s": product_s,
        "product_share_of_profiled_step": product_s / profiled,
        "achieved_product_gflop_per_s": flops / product_s / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="mlp_spe_t", help="comma-separated, of the bench_models configs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wanted = args.models.split(",")
    unknown = set(wanted) - {c[0] for c in CONFIGS}
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {[c[0] for c in CONFIGS]}")

    rate = best_product_rate()
    rows = []
    for name, img, T, batch in CONFIGS:
        if name not in wanted:
            continue
        measured = {impl: measure(impl, name, img, T, batch, args.repeats) for impl in ("spikemlp", BASELINE)}
        for r in measured.values():
            r["floor_s"] = r["product_gflop"] * 1e9 / rate
        ours, base = measured["spikemlp"], measured[BASELINE]
        rows.append(
            {
                "model": name,
                "measured": list(measured.values()),
                "measured_speedup": base["train_step_s"] / ours["train_step_s"],
                "speedup_bound": base["train_step_s"] / ours["floor_s"],
            }
        )
    report = {
        "benchmark": "roofline",
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, {platform.system()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "best_product_gflop_per_s": rate / 1e9,
        "models": rows,
        "padded_width_products": padded_width_rates(),
    }
    print(json.dumps(report, indent=2))
    for row in rows:
        parts = [
            f"{r['impl']} step {r['train_step_s']:.2f}s ({r['product_gflop']:.0f} GFLOP in products, "
            f"{r['profiled_product_s']:.2f}s of a {r['profiled_step_s']:.2f}s profiled step at "
            f"{r['achieved_product_gflop_per_s']:.0f} GFLOP/s; floor {r['floor_s']:.2f}s)"
            for r in row["measured"]
        ]
        print(
            f"{row['model']}: best product rate {rate / 1e9:.0f} GFLOP/s; "
            + "; ".join(parts)
            + f"; measured "
            f"{row['measured_speedup']:.2f}x, bound {row['speedup_bound']:.2f}x"
        )
    for r in report["padded_width_products"]:
        print(
            f"product {r['shape']}: {r['ms']:.1f} ms ({r['gflop_per_s']:.0f} GFLOP/s); widths padded to 16 "
            f"{r['padded_shape']}: {r['padded_ms']:.1f} ms ({r['padded_gflop_per_s']:.0f} GFLOP/s)"
        )


if __name__ == "__main__":
    main()
