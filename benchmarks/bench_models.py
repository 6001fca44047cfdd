"""MLP-SPE model speed and memory on this machine: forward, training step and peak memory per config.

Configs (the issue's starting point for the performance work):
- ``mlp_spe_t`` at 224 x 224, T = 4, batch 4 (the authors' ImageNet model);
- the CIFAR-native variants at 32 x 32, T = 4, batch 32.
For each config and each implementation in ``IMPLEMENTATIONS`` (a dict of builders, so that a second
implementation, e.g. a SpikingJelly re-implementation, is one more entry), a fresh subprocess measures:
- forward: ``model.eval()`` under ``torch.inference_mode()``, images [B, 3, H, W] -> logits;
- training step: ``model.train()``, forward + cross-entropy + backward + ``SGD(momentum=0.9).step()``;
- peak memory: the process's maximum resident set size (``resource.getrusage(...).ru_maxrss``), read
  after the forward runs and again after the training steps, minus the resident size after building
  the model and the batch. tracemalloc cannot see PyTorch's C++ allocations and the CPU caching
  allocator keeps no statistics, so RSS of a process that runs one config is the honest measure; one
  process per config keeps the peaks apart.
Times are the best and the median of ``--repeats`` runs after one warm-up run (the best is the figure
least disturbed by other jobs on a shared machine).

Prints one JSON object and a one-line summary; asserts nothing.
Usage: python benchmarks/bench_models.py [--threads 2] [--repeats 3] [--models mlp_spe_t,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

# (model name, image size, T, batch size)
CONFIGS = [
    ("mlp_spe_t", 224, 4, 4),
    ("mlp_spe_t_cifar", 32, 4, 32),
    ("mlp_spe_s_cifar", 32, 4, 32),
    ("mlp_spe_xt_cifar", 32, 4, 32),
]


def build_spikemlp(name: str, img_size: int, T: int, num_classes: int) -> nn.Module:
    import spikemlp

    return spikemlp.models.create(name, img_size=img_size, T=T, num_classes=num_classes)


# name -> builder(model name, image size, T, classes) returning a module: images [B, 3, H, W] -> logits [B, K]
IMPLEMENTATIONS: dict[str, Callable[[str, int, int, int], nn.Module]] = {
    "spikemlp": build_spikemlp,
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[0], times[len(times) // 2]


def worker(impl: str, name: str, img_size: int, T: int, batch: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    num_classes = 1000 if img_size >= 224 else 10
    model = IMPLEMENTATIONS[impl](name, img_size, T, num_classes)
    images = torch.randn(batch, 3, img_size, img_size)
    labels = torch.randint(0, num_classes, (batch,))
    base = _rss_mb()

    model.eval()

    def forward():
        with torch.inference_mode():
            model(images)

    fwd_best, fwd_median = _timed(forward, repeats)
    peak_forward = _max_rss_mb()

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()

    step_best, step_median = _timed(train_step, repeats)
    peak_train = _max_rss_mb()
    return {
        "impl": impl,
        "model": name,
        "img_size": img_size,
        "T": T,
        "batch": batch,
        "params": sum(p.numel() for p in model.parameters()),
        "forward_s": fwd_best,
        "forward_s_median": fwd_median,
        "forward_images_per_s": batch / fwd_best,
        "train_step_s": step_best,
        "train_step_s_median": step_median,
        "train_images_per_s": batch / step_best,
        "rss_after_build_mb": base,
        "peak_rss_forward_mb": peak_forward,
        "peak_rss_train_mb": peak_train,
        "peak_forward_over_build_mb": peak_forward - base,
        "peak_train_over_build_mb": peak_train - base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(c[0] for c in CONFIGS), help="comma-separated subset")
    parser.add_argument("--impls", default=",".join(IMPLEMENTATIONS), help="comma-separated subset")
    parser.add_argument(
        "--worker", nargs=5, metavar=("IMPL", "MODEL", "IMG", "T", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.worker:
        impl, name, img, T, batch = args.worker
        print(json.dumps(worker(impl, name, int(img), int(T), int(batch), args.repeats, args.threads)))
        return

    wanted = set(args.models.split(","))
    results = []
    load_before = os.getloadavg()[0]
    for impl in args.impls.split(","):
        for name, img, T, batch in CONFIGS:
            if name not in wanted:
                continue
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--repeats", str(args.repeats)]
            cmd += ["--worker", impl, name, str(img), str(T), str(batch)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                results.append({"impl": impl, "model": name, "error": out.stderr.strip().splitlines()[-1:]})
                continue
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    report = {
        "benchmark": "models",
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, {platform.system()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "results": results,
    }
    print(json.dumps(report, indent=2))
    summary = "; ".join(
        f"{r['impl']}/{r['model']} B{r['batch']} T{r['T']}: fwd {r['forward_s']:.2f}s, "
        f"train {r['train_step_s']:.2f}s, peak +{r['peak_train_over_build_mb']:.0f}MB"
        for r in results
        if "error" not in r
    )
    print(f"models ({args.threads} threads): {summary}")


if __name__ == "__main__":
    main()
