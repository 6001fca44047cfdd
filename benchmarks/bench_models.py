"""MLP-SPE model speed and memory on this machine, spikemlp against the SpikingJelly baseline, side by side.

Configs:
- ``mlp_spe_t`` at 224 x 224, T = 4, batch 4 (the authors' ImageNet model);
- the CIFAR-native variants at 32 x 32, T = 4, batch 32.
Implementations (``IMPLEMENTATIONS``): ``spikemlp`` (the library), ``spikemlp-spike`` (the library with its
spike-driven inference kernels, ``set_spike_kernels``; inference only, since training runs the same code as
``spikemlp``), ``spikingjelly`` (the field's construction, benchmarks/baseline_spikingjelly.py) and, on
request, ``spikemlp-ckpt`` (the library with activation checkpointing) and ``spikemlp-keep`` (the library
with ``memory_saving=False``: activations kept as they are, the other end of the speed/memory trade) and
``spikemlp-compile`` (training steps through ``torch.compile``; the warm-up step compiles, minutes on a CPU).
All hold the same weights: the spikemlp model is built from one seed, its BatchNorm affine parameters and
running statistics are set to fixed non-trivial values (so that neurons fire at 10-55%, as in a trained
network; at PyTorch's BN initialisation almost no neuron fires), and the baseline loads that state dict
through the authors' key layout. Before timing, a check (skipped with ``--no-check``) runs both on the same
images, in eval and in training mode, fp32 and fp64, and reports the largest logit difference.

For each config and implementation a fresh subprocess measures:
- forward: ``model.eval()`` under ``torch.inference_mode()``, images [B, 3, H, W] -> logits;
- training step: ``model.train()``, forward + cross-entropy + backward + ``SGD(momentum=0.9).step()``;
- peak memory: the process's maximum resident set size (``resource.getrusage(...).ru_maxrss``), read
  after the forward runs and again after the training steps, minus the resident size after building
  the model and the batch. tracemalloc cannot see PyTorch's C++ allocations and the CPU caching
  allocator keeps no statistics, so RSS of a process that runs one config is the honest measure; one
  process per config keeps the peaks apart.
Times are the best and the median of ``--repeats`` runs after one warm-up run (the best is the figure
least disturbed by other jobs on a shared machine).

Prints one JSON object (with ``ratios``: spikemlp over the baseline, per config) and a one-line summary;
asserts nothing.
Usage: python benchmarks/bench_models.py [--threads 2] [--repeats 3] [--models mlp_spe_t,...]
       [--impls spikemlp,spikingjelly] [--no-check] [--interleave]
``--interleave`` (for a busy machine): the times come from one process per config that runs the
implementations in turns (a, b, a, b, ...), so both see the same background load; the separate
processes then measure the memory peaks only.
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


def set_firing_batch_norm(model: nn.Module) -> None:
    """Fixed BN parameters and buffers under which the neurons fire (10-55% of positions)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5 + 0.6)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def build_spikemlp(name: str, img_size: int, T: int, num_classes: int, **kwargs) -> nn.Module:
    import spikemlp

    torch.manual_seed(0)
    model = spikemlp.models.create(name, img_size=img_size, T=T, num_classes=num_classes, **kwargs)
    set_firing_batch_norm(model)
    return model


def build_spikemlp_keeping(name: str, img_size: int, T: int, num_classes: int) -> nn.Module:
    return build_spikemlp(name, img_size, T, num_classes, memory_saving=False)


class CompiledTraining(nn.Module):
    """The model's training steps through ``torch.compile`` (as ``spikemlp train`` with ``compile: true``),
    its evaluation as it is (no second compilation for eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "compiled", torch.compile(model))  # not a second submodule

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.compiled(images) if self.training else self.model(images)


def build_spikemlp_compiled(name: str, img_size: int, T: int, num_classes: int) -> nn.Module:
    return CompiledTraining(build_spikemlp(name, img_size, T, num_classes))


def build_spikemlp_checkpointed(name: str, img_size: int, T: int, num_classes: int) -> nn.Module:
    model = build_spikemlp(name, img_size, T, num_classes)
    model.set_grad_checkpointing(True)
    return model


def build_spikemlp_spike_kernels(name: str, img_size: int, T: int, num_classes: int) -> nn.Module:
    model = build_spikemlp(name, img_size, T, num_classes)
    model.set_spike_kernels(True)
    return model


def build_spikingjelly(name: str, img_size: int, T: int, num_classes: int) -> nn.Module:
    from baseline_spikingjelly import build_baseline, load_from_spikemlp

    baseline = build_baseline(name, img_size, T, num_classes)
    source = build_spikemlp(name, img_size, T, num_classes)
    load_from_spikemlp(baseline, source)
    del source
    return baseline


# name -> builder(model name, image size, T, classes) returning a module: images [B, 3, H, W] -> logits [B, K]
IMPLEMENTATIONS: dict[str, Callable[[str, int, int, int], nn.Module]] = {
    "spikemlp": build_spikemlp,
    "spikemlp-spike": build_spikemlp_spike_kernels,
    "spikingjelly": build_spikingjelly,
    "spikemlp-ckpt": build_spikemlp_checkpointed,
    "spikemlp-keep": build_spikemlp_keeping,
    "spikemlp-compile": build_spikemlp_compiled,
}
# Inference-only implementations: their training step would run the same code as another one.
INFERENCE_ONLY = {"spikemlp-spike"}
DEFAULT_IMPLS = "spikemlp,spikemlp-spike,spikingjelly"
BASELINE = "spikingjelly"


def check_equal_logits(name: str, img_size: int, T: int, batch: int, threads: int) -> dict:
    """Largest |logit difference| between spikemlp and the baseline, same weights and images."""
    import copy

    torch.set_num_threads(threads)
    num_classes = 1000 if img_size >= 224 else 10
    ours = build_spikemlp(name, img_size, T, num_classes)
    theirs = build_spikingjelly(name, img_size, T, num_classes)
    images = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(2))
    out = {"model": name, "check_batch": batch}
    for dtype in (torch.float32, torch.float64):
        for mode in ("eval", "train"):
            a = copy.deepcopy(ours).to(dtype).train(mode == "train")
            b = copy.deepcopy(theirs).to(dtype).train(mode == "train")
            with torch.no_grad():
                la, lb = a(images.to(dtype)), b(images.to(dtype))
            key = f"max_abs_logit_diff_{str(dtype).split('.')[-1]}_{mode}"
            out[key] = (la - lb).abs().max().item()
            out[f"max_abs_logit_{str(dtype).split('.')[-1]}_{mode}"] = la.abs().max().item()
            if mode == "eval":  # the spike-driven inference path against the same baseline logits
                a.set_spike_kernels(True)
                with torch.no_grad():
                    out[f"{key}_spike_kernels"] = (a(images.to(dtype)) - lb).abs().max().item()
    return out


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
    num_classes = 1000 if img_size >= 224 else 10
    model = IMPLEMENTATIONS[impl](name, img_size, T, num_classes)
    g = torch.Generator().manual_seed(3)
    images = torch.randn(batch, 3, img_size, img_size, generator=g)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    base = _rss_mb()

    model.eval()

    def forward():
        with torch.inference_mode():
            model(images)

    fwd_best, fwd_median = _timed(forward, repeats)
    peak_forward = _max_rss_mb()
    result = {
        "impl": impl,
        "model": name,
        "img_size": img_size,
        "T": T,
        "batch": batch,
        "params": sum(p.numel() for p in model.parameters()),
        "forward_s": fwd_best,
        "forward_s_median": fwd_median,
        "forward_images_per_s": batch / fwd_best,
        "rss_after_build_mb": base,
        "peak_rss_forward_mb": peak_forward,
        "peak_forward_over_build_mb": peak_forward - base,
    }
    if impl in INFERENCE_ONLY:
        return result

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
        **result,
        "train_step_s": step_best,
        "train_step_s_median": step_median,
        "train_images_per_s": batch / step_best,
        "peak_rss_train_mb": peak_train,
        "peak_train_over_build_mb": peak_train - base,
    }


def interleaved_worker(
    impls: list[str], name: str, img_size: int, T: int, batch: int, repeats: int, threads: int
):
    """Times of all implementations in one process, in turns (a, b, a, b, ...), so that they share the
    background load of a busy machine; no memory figures (one process holds all models)."""
    torch.set_num_threads(threads)
    num_classes = 1000 if img_size >= 224 else 10
    models = {impl: IMPLEMENTATIONS[impl](name, img_size, T, num_classes) for impl in impls}
    opts = {impl: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for impl, m in models.items()}
    g = torch.Generator().manual_seed(3)
    images = torch.randn(batch, 3, img_size, img_size, generator=g)
    labels = torch.randint(0, num_classes, (batch,), generator=g)

    def forward(impl):
        model = models[impl].eval()
        with torch.inference_mode():
            model(images)

    def train_step(impl):
        model, opt = models[impl].train(), opts[impl]
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        opt.step()

    times: dict[tuple[str, str], list[float]] = {}
    trained = [impl for impl in impls if impl not in INFERENCE_ONLY]
    for what, fn, which in (("forward", forward, impls), ("train", train_step, trained)):
        for impl in which:
            fn(impl)  # warm-up
        for _ in range(repeats):
            for impl in which:
                start = time.perf_counter()
                fn(impl)
                times.setdefault((what, impl), []).append(time.perf_counter() - start)
    out = []
    for impl in impls:
        f = sorted(times[("forward", impl)])
        row = {"impl": impl, "model": name, "batch": batch, "T": T, "forward_s": f[0],
               "forward_s_median": f[len(f) // 2], "forward_images_per_s": batch / f[0]}  # fmt: skip
        if impl in trained:
            t = sorted(times[("train", impl)])
            row.update(train_step_s=t[0], train_step_s_median=t[len(t) // 2], train_images_per_s=batch / t[0])
        out.append(row)
    return {"interleaved": out}


def _subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratios(results: list[dict]) -> list[dict]:
    """Per config and implementation: its speed and peak memory relative to the baseline's."""
    base = {r["model"]: r for r in results if r.get("impl") == BASELINE and "error" not in r}
    rows = []
    for r in results:
        b = base.get(r.get("model"))
        if b is None or r.get("impl") == BASELINE or "error" in r:
            continue
        row = {
            "impl": r["impl"],
            "model": r["model"],
            "inference_speedup": r["forward_images_per_s"] / b["forward_images_per_s"],
            "forward_peak_memory_ratio": r["peak_forward_over_build_mb"] / b["peak_forward_over_build_mb"],
        }
        if "train_images_per_s" in r:  # not for inference-only implementations
            row["train_speedup"] = r["train_images_per_s"] / b["train_images_per_s"]
            row["train_peak_memory_ratio"] = r["peak_train_over_build_mb"] / b["peak_train_over_build_mb"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(c[0] for c in CONFIGS), help="comma-separated subset")
    parser.add_argument("--impls", default=DEFAULT_IMPLS, help=f"comma-separated, of {list(IMPLEMENTATIONS)}")
    parser.add_argument("--no-check", action="store_true", help="skip the equal-logits check")
    parser.add_argument("--check-batch", type=int, default=2, help="batch of the equal-logits check")
    parser.add_argument(
        "--worker", nargs=5, metavar=("IMPL", "MODEL", "IMG", "T", "BATCH"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--check-worker", nargs=4, metavar=("MODEL", "IMG", "T", "BATCH"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="time the implementations in turns in one process (speed ratios on a busy machine); the "
        "per-implementation processes then measure memory only (one repeat)",
    )
    parser.add_argument(
        "--pair-worker", nargs=4, metavar=("MODEL", "IMG", "T", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.worker:
        impl, name, img, T, batch = args.worker
        print(json.dumps(worker(impl, name, int(img), int(T), int(batch), args.repeats, args.threads)))
        return
    if args.pair_worker:
        name, img, T, batch = args.pair_worker
        impls = args.impls.split(",")
        print(
            json.dumps(
                interleaved_worker(impls, name, int(img), int(T), int(batch), args.repeats, args.threads)
            )
        )
        return
    if args.check_worker:
        name, img, T, batch = args.check_worker
        print(json.dumps(check_equal_logits(name, int(img), int(T), int(batch), args.threads)))
        return

    wanted = set(args.models.split(","))
    impls = args.impls.split(",")
    results, checks = [], []
    load_before = os.getloadavg()[0]
    for name, img, T, batch in CONFIGS:
        if name not in wanted:
            continue
        common = ["--threads", str(args.threads), "--repeats", str(args.repeats)]
        if not args.no_check and BASELINE in impls:
            checks.append(
                _subprocess(common + ["--check-worker", name, str(img), str(T), str(args.check_batch)])
            )
        timed = {}
        if args.interleave:
            pair = _subprocess(
                common + ["--impls", ",".join(impls), "--pair-worker", name, str(img), str(T), str(batch)]
            )
            timed = {r["impl"]: r for r in pair.get("interleaved", [])}
        # Implementations of one config run one after the other, so that they share the same background load.
        for impl in impls:
            worker_args = [
                "--threads",
                str(args.threads),
                "--repeats",
                "1" if args.interleave else str(args.repeats),
            ]
            r = _subprocess(worker_args + ["--worker", impl, name, str(img), str(T), str(batch)])
            if "error" in r:
                r = {"impl": impl, "model": name, **r}
            elif impl in timed:  # speed from the interleaved run, memory from this process
                r.update(timed[impl], timing="interleaved")
            results.append(r)
    report = {
        "benchmark": "models",
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, {platform.system()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "interleaved": args.interleave,
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "equal_logits_check": checks,
        "results": results,
        "ratios": ratios(results),
    }
    print(json.dumps(report, indent=2))
    summary = "; ".join(
        f"{r['impl']}/{r['model']} B{r['batch']} T{r['T']}: fwd {r['forward_s']:.2f}s"
        + (
            f", train {r['train_step_s']:.2f}s, peak +{r['peak_train_over_build_mb']:.0f}MB"
            if "train_step_s" in r
            else ""
        )
        for r in results
        if "error" not in r
    )
    print(f"models ({args.threads} threads): {summary}")
    for r in report["ratios"]:
        training = (
            f"train {r['train_speedup']:.2f}x, train peak memory {r['train_peak_memory_ratio']:.2f}x, "
            if "train_speedup" in r
            else ""
        )
        print(f"{r['impl']} / {BASELINE}, {r['model']}: {training}inference {r['inference_speedup']:.2f}x")


if __name__ == "__main__":
    main()
