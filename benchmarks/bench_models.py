"""MLP-SPE model speed and memory on this machine, spikemlp against the SpikingJelly baseline, side by side.

Configs:
- ``mlp_spe_t`` at 224 x 224, T = 4, batch 4 (the authors' ImageNet model);
- the CIFAR-native variants at 32 x 32, T = 4, batch 32.
Implementations (``IMPLEMENTATIONS``): ``spikemlp`` (the library), ``spikemlp-spike`` (the library with its
spike-driven inference kernels, ``set_spike_kernels``; inference only, since training runs the same code as
``spikemlp``), ``spikingjelly`` (the field's construction, benchmarks/baseline_spikingjelly.py) and, on
request, ``spikemlp-ckpt`` (the library with activation checkpointing) and ``spikemlp-keep`` (the library
with ``memory_saving=False``: activations kept as they are, the other end of the speed/memory trade) and
``spikemlp-compile`` (training steps through ``torch.compile``; the warm-up step compiles, minutes on a CPU)
and ``spikemlp-graphs`` (the same with ``mode="reduce-overhead"``: CUDA graphs on a GPU).
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

On a GPU (``--device cuda``): every config at batch 32 (``--batch`` to change it), the baseline on
SpikingJelly's own choice of CUDA neuron kernel (recorded as ``baseline_neuron_implementation``), TF32 off
in both (fp32 products, as on the CPU). Times are taken between ``torch.cuda.synchronize()`` calls; the
memory figures are the CUDA caching allocator's peak of allocated bytes above what the built model and
the batch hold (``torch.cuda.max_memory_allocated``), in a fresh process per implementation.
``--largest-batch`` then searches, per config and implementation, the largest training batch that fits in
GPU memory (one training step per probe: doubling from the timed batch, then bisection to within 1/32;
``--max-batch`` bounds it). The ``spikemlp-spike`` kernels are CPU-only: on CUDA that implementation runs
the dense model.
Usage on a GPU: python benchmarks/bench_models.py --device cuda --repeats 5 [--largest-batch]
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


# BatchNorm biases (mean of the draw) by the BN's name: with these every kind of synaptic layer's input
# fires at 0.1-0.3, about the 0.22 of a trained model (the demo's); a freshly initialised model barely
# fires, and one bias for all BNs leaves the channel MLP's hidden spikes near 0.03 and the token mixing's
# first inputs near 0.6. `firing_rates` reports what a run measured.
FIRING_BIAS = {"norm_h": 1.0, "norm_w": 1.0, "norm1": 1.0}
DEFAULT_FIRING_BIAS = 0.2


def set_firing_batch_norm(model: nn.Module) -> None:
    """Fixed BN parameters and buffers under which the synaptic layers' inputs fire at 0.1-0.3."""
    g = torch.Generator().manual_seed(1)
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            bias = FIRING_BIAS.get(name.rsplit(".", 1)[-1], DEFAULT_FIRING_BIAS)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5 + bias)
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

    def __init__(self, model: nn.Module, mode: str | None = None) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "compiled", torch.compile(model, mode=mode))  # not a second submodule

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.compiled(images) if self.training else self.model(images)


def build_spikemlp_compiled(name: str, img_size: int, T: int, num_classes: int) -> nn.Module:
    return CompiledTraining(build_spikemlp(name, img_size, T, num_classes))


def build_spikemlp_graphed(name: str, img_size: int, T: int, num_classes: int) -> nn.Module:
    """Training steps compiled with ``mode="reduce-overhead"``: on CUDA, Inductor's kernels replayed as CUDA
    graphs (no per-kernel launch cost); on a CPU the same as ``spikemlp-compile``."""
    return CompiledTraining(build_spikemlp(name, img_size, T, num_classes), mode="reduce-overhead")


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
    "spikemlp-graphs": build_spikemlp_graphed,
}
# Inference-only implementations: their training step would run the same code as another one.
INFERENCE_ONLY = {"spikemlp-spike"}
DEFAULT_IMPLS = "spikemlp,spikemlp-spike,spikingjelly"
GPU_BATCH = 32  # the GPU comparison batch; --batch lowers it where the baseline does not fit
BASELINE = "spikingjelly"


def check_equal_logits(
    name: str, img_size: int, T: int, batch: int, threads: int, device: str = "cpu"
) -> dict:
    """Largest |logit difference| between spikemlp and the baseline, same weights and images."""
    import copy

    _set_up(threads, device)
    num_classes = 1000 if img_size >= 224 else 10
    ours = build_spikemlp(name, img_size, T, num_classes)
    theirs = build_spikingjelly(name, img_size, T, num_classes)
    images = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(2))
    out = {"model": name, "check_batch": batch, "device": device}
    for dtype in (torch.float32, torch.float64):
        for mode in ("eval", "train"):
            a = copy.deepcopy(ours).to(device, dtype).train(mode == "train")
            b = copy.deepcopy(theirs).to(device, dtype).train(mode == "train")
            with torch.no_grad():
                la, lb = a(images.to(device, dtype)), b(images.to(device, dtype))
            key = f"max_abs_logit_diff_{str(dtype).split('.')[-1]}_{mode}"
            out[key] = (la - lb).abs().max().item()
            out[f"max_abs_logit_{str(dtype).split('.')[-1]}_{mode}"] = la.abs().max().item()
            if mode == "eval":  # the spike-driven inference path against the same baseline logits
                a.set_spike_kernels(True)
                with torch.no_grad():
                    out[f"{key}_spike_kernels"] = (a(images.to(device, dtype)) - lb).abs().max().item()
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _set_up(threads: int, device: str) -> None:
    torch.set_num_threads(threads)
    if device == "cuda":  # main() has checked that there is one
        # fp32 products in both implementations, as on the CPU (cuDNN would use TF32 for convolutions)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, repeats: int, device: str = "cpu") -> tuple[float, float]:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[0], times[len(times) // 2]


class PeakMemory:
    """Peak memory above what is held when it starts (the built model and the batch): the process's maximum
    resident set size on the CPU, the CUDA caching allocator's peak of allocated bytes on a GPU. The peak
    is cumulative, as the resident-set maximum is: read after the training steps it covers the forward
    runs too (a training step needs more)."""

    def __init__(self, device: str) -> None:
        self.device = device
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            self.base = _rss_mb()

    def peak(self) -> float:
        if self.device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return _max_rss_mb()


def train_step(
    model: nn.Module, opt: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor
) -> None:
    """The timed training step: forward, cross-entropy, backward, SGD step."""
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(images), labels).backward()
    opt.step()


def largest_fitting(fits: Callable[[int], bool], start: int, limit: int) -> tuple[int, bool]:
    """The largest size n <= ``limit`` with ``fits(n)``, for a ``fits`` that holds up to some size and fails
    above it: halves from ``start`` until a size fits, doubles until one fails (or ``limit``), then bisects
    until the failing size is within 1/32 of the fitting one. Returns (size, whether ``limit`` was reached);
    size 0 if not even 1 fits."""
    lo, hi = 0, None  # lo fits (0: none known), hi fails
    n = max(1, min(start, limit))
    while lo == 0:
        if fits(n):
            lo = n
        elif n == 1:
            return 0, False
        else:
            hi, n = n, n // 2
    while hi is None:
        if lo == limit:
            return lo, True
        n = min(2 * lo, limit)
        if fits(n):
            lo = n
        else:
            hi = n
    while hi - lo > max(1, lo // 32):
        n = (lo + hi) // 2
        if fits(n):
            lo = n
        else:
            hi = n
    return lo, False


def _out_of_memory(error: RuntimeError) -> bool:
    text = str(error)
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text or "ALLOC_FAILED" in text


def largest_batch_worker(impl: str, name: str, img_size: int, T: int, start: int, limit: int) -> dict:
    """The largest training batch of ``impl`` that fits in this GPU's memory (one training step per probe;
    an out-of-memory error marks a batch that does not fit; any other error ends the search)."""
    _set_up(1, "cuda")
    num_classes = 1000 if img_size >= 224 else 10
    model = IMPLEMENTATIONS[impl](name, img_size, T, num_classes).to("cuda").train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    probes: dict[int, bool] = {}

    def fits(batch: int) -> bool:
        try:
            images, labels = make_batch(batch, img_size, num_classes, "cuda")
            train_step(model, opt, images, labels)
            torch.cuda.synchronize()
            probes[batch] = True
        except RuntimeError as error:  # torch.cuda.OutOfMemoryError, or cuDNN's failed workspace allocation
            if not _out_of_memory(error):
                raise
            probes[batch] = False
        finally:
            images = labels = None  # so that empty_cache can return the batch's memory too
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        return probes[batch]

    batch, at_limit = largest_fitting(fits, start, limit)
    return {
        "impl": impl,
        "model": name,
        "largest_train_batch": batch,
        "at_max_batch": at_limit,
        "probes": probes,
        "gpu_memory_mb": torch.cuda.get_device_properties(0).total_memory / 2**20,
    }


def make_batch(batch: int, img_size: int, num_classes: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    images = torch.randn(batch, 3, img_size, img_size, generator=g)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    return images.to(device), labels.to(device)


def _baseline_neuron(device: str) -> str | None:
    """The CUDA LIF implementation SpikingJelly picked for itself ("cuda", "triton" or "torch")."""
    if device != "cuda":
        return None
    from spikingjelly.activation_based.functional import neuron_implementation

    return str(neuron_implementation("lif", torch.device("cuda"))["implementation"])


def worker(
    impl: str, name: str, img_size: int, T: int, batch: int, repeats: int, threads: int, device: str = "cpu"
) -> dict:
    _set_up(threads, device)
    num_classes = 1000 if img_size >= 224 else 10
    model = IMPLEMENTATIONS[impl](name, img_size, T, num_classes).to(device)
    images, labels = make_batch(batch, img_size, num_classes, device)
    memory = PeakMemory(device)

    model.eval()

    def forward():
        with torch.inference_mode():
            model(images)

    fwd_best, fwd_median = _timed(forward, repeats, device)
    peak_forward = memory.peak()
    memory_kind = "cuda_allocated" if device == "cuda" else "rss"
    result = {
        "impl": impl,
        "model": name,
        "img_size": img_size,
        "T": T,
        "batch": batch,
        "device": device,
        "params": sum(p.numel() for p in model.parameters()),
        "forward_s": fwd_best,
        "forward_s_median": fwd_median,
        "forward_images_per_s": batch / fwd_best,
        f"{memory_kind}_after_build_mb": memory.base,
        f"peak_{memory_kind}_forward_mb": peak_forward,
        "peak_forward_over_build_mb": peak_forward - memory.base,
    }
    if impl == BASELINE and device == "cuda":
        result["baseline_neuron_implementation"] = _baseline_neuron(device)
    if impl in INFERENCE_ONLY:
        return result

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    step_best, step_median = _timed(lambda: train_step(model, opt, images, labels), repeats, device)
    peak_train = memory.peak()
    return {
        **result,
        "train_step_s": step_best,
        "train_step_s_median": step_median,
        "train_images_per_s": batch / step_best,
        f"peak_{memory_kind}_train_mb": peak_train,
        "peak_train_over_build_mb": peak_train - memory.base,
    }


def interleaved_worker(
    impls: list[str],
    name: str,
    img_size: int,
    T: int,
    batch: int,
    repeats: int,
    threads: int,
    device: str = "cpu",
):
    """Times of all implementations in one process, in turns (a, b, a, b, ...), so that they share the
    background load of a busy machine; no memory figures (one process holds all models)."""
    _set_up(threads, device)
    num_classes = 1000 if img_size >= 224 else 10
    models = {impl: IMPLEMENTATIONS[impl](name, img_size, T, num_classes).to(device) for impl in impls}
    opts = {impl: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for impl, m in models.items()}
    images, labels = make_batch(batch, img_size, num_classes, device)

    def forward(impl):
        model = models[impl].eval()
        with torch.inference_mode():
            model(images)

    def train(impl):
        train_step(models[impl].train(), opts[impl], images, labels)

    times: dict[tuple[str, str], list[float]] = {}
    trained = [impl for impl in impls if impl not in INFERENCE_ONLY]
    for what, fn, which in (("forward", forward, impls), ("train", train, trained)):
        for impl in which:
            fn(impl)  # warm-up
        for _ in range(repeats):
            for impl in which:
                _sync(device)
                start = time.perf_counter()
                fn(impl)
                _sync(device)
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


def largest_batch_ratios(largest: list[dict]) -> list[dict]:
    """Per config: each implementation's largest training batch over the baseline's."""
    base = {r["model"]: r for r in largest if r.get("impl") == BASELINE and r.get("largest_train_batch")}
    return [
        {
            "impl": r["impl"],
            "model": r["model"],
            "largest_batch_ratio": r["largest_train_batch"] / base[r["model"]]["largest_train_batch"],
            "at_max_batch": r["at_max_batch"] or base[r["model"]]["at_max_batch"],
        }
        for r in largest
        if r.get("impl") != BASELINE and "largest_train_batch" in r and r["model"] in base
    ]


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
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--batch",
        type=int,
        help=f"timed batch for every config (default: each config's on the CPU, {GPU_BATCH} on CUDA)",
    )
    parser.add_argument(
        "--largest-batch",
        action="store_true",
        help="with --device cuda: also find the largest training batch each implementation fits on the GPU",
    )
    parser.add_argument(
        "--max-batch", type=int, default=16384, help="upper bound of the --largest-batch search"
    )
    parser.add_argument(
        "--largest-worker", nargs=5, metavar=("IMPL", "MODEL", "IMG", "T", "START"), help=argparse.SUPPRESS
    )
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

    if args.largest_batch and args.device != "cuda":
        parser.error("--largest-batch searches GPU memory: add --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA device here; leave --device out to measure the CPU")
    if args.worker:
        impl, name, img, T, batch = args.worker
        print(
            json.dumps(
                worker(impl, name, int(img), int(T), int(batch), args.repeats, args.threads, args.device)
            )
        )
        return
    if args.largest_worker:
        impl, name, img, T, start = args.largest_worker
        print(json.dumps(largest_batch_worker(impl, name, int(img), int(T), int(start), args.max_batch)))
        return
    if args.pair_worker:
        name, img, T, batch = args.pair_worker
        impls = args.impls.split(",")
        print(
            json.dumps(
                interleaved_worker(
                    impls, name, int(img), int(T), int(batch), args.repeats, args.threads, args.device
                )
            )
        )
        return
    if args.check_worker:
        name, img, T, batch = args.check_worker
        print(json.dumps(check_equal_logits(name, int(img), int(T), int(batch), args.threads, args.device)))
        return

    wanted = set(args.models.split(","))
    impls = args.impls.split(",")
    results, checks, largest = [], [], []
    load_before = os.getloadavg()[0]
    for name, img, T, batch in CONFIGS:
        if name not in wanted:
            continue
        batch = args.batch or (GPU_BATCH if args.device == "cuda" else batch)
        common = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device]
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
                "--device",
                args.device,
            ]
            r = _subprocess(worker_args + ["--worker", impl, name, str(img), str(T), str(batch)])
            if "error" in r:
                r = {"impl": impl, "model": name, **r}
            elif impl in timed:  # speed from the interleaved run, memory from this process
                r.update(timed[impl], timing="interleaved")
            results.append(r)
            if args.largest_batch and impl not in INFERENCE_ONLY:
                r = _subprocess(
                    [
                        "--max-batch",
                        str(args.max_batch),
                        "--largest-worker",
                        impl,
                        name,
                        str(img),
                        str(T),
                        str(batch),
                    ]
                )
                largest.append(r if "error" not in r else {"impl": impl, "model": name, **r})
    report = {
        "benchmark": "models",
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, {platform.system()}",
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
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
    if args.largest_batch:
        report["largest_train_batch"] = largest
        report["largest_batch_ratios"] = largest_batch_ratios(largest)
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
    for r in report.get("largest_batch_ratios", []):
        print(
            f"{r['impl']} / {BASELINE}, {r['model']}: largest training batch {r['largest_batch_ratio']:.2f}x"
        )


if __name__ == "__main__":
    main()
