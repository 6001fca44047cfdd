"""MLP-SPE model speed and memory on this machine, spikemlp against the SpikingJelly baseline, side by side.

Configs:
- ``mlp_spe_t`` at 224 x 224, T = 4, batch 4 (the authors' ImageNet model);
- the CIFAR-native variants at 32 x 32, T = 4, batch 32.
Implementations (``IMPLEMENTATIONS``): ``spikemlp`` (the library), ``spikemlp-spike`` (the library with its
spike-driven inference kernels, ``set_spike_kernels``; inference only, since training runs the same code as
``spikemlp``), ``spikemlp-deploy`` (``spikemlp.deploy(model.eval())``: BNs folded, the spike kernels with the
neurons in their epilogues, weights packed once; inference only, CPU only: a ``DeployedModel`` refuses
training mode), ``spikingjelly`` (the field's construction, benchmarks/baseline_spikingjelly.py) and, on
request, ``spikemlp-ckpt`` (the library with activation checkpointing) and ``spikemlp-keep`` (the library
with ``memory_saving=False``: activations kept as they are, the other end of the speed/memory trade) and
``spikemlp-compile`` (training steps through ``torch.compile``; the warm-up step compiles, minutes on a CPU)
and ``spikemlp-graphs`` (the same with ``mode="reduce-overhead"``: CUDA graphs on a GPU).
All hold the same weights: the spikemlp model is built from one seed, its BatchNorm affine parameters and
running statistics are set to fixed non-trivial values (``set_firing_batch_norm``: every synaptic layer's
input fires at 0.1-0.3, as in a trained network; at PyTorch's BN initialisation almost no neuron fires),
and the baseline loads that state dict through the authors' key layout. Before timing, a check (skipped
with ``--no-check``) runs both on the same images, in eval and in training mode, fp32 and fp64, and reports
the largest logit difference. The deployed model is not bit-exact (sums in another order round
differently, and a membrane at the threshold can then spike on the other side), so for ``spikemlp-deploy``
the check reports, in eval mode only, the largest logit difference and whether the predictions (argmax)
agree with the baseline's.

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
       python benchmarks/bench_models.py --latency [--latency-runs 30] [--latency-threads 1,2]
       [--latency-batches 4,32] [--repeats 3] [--models mlp_spe_xt_cifar] [--impls ...]
``--interleave`` (for a busy machine): the times come from one process per config that runs the
implementations in turns (a, b, a, b, ...), so both see the same background load; the separate
processes then measure the memory peaks only.

Latency mode (``--latency``, CPU): one process per config holds every implementation and times them in
turns (a, b, a, b, ...), so all see the same background load. At each thread count of
``--latency-threads`` (``torch.set_num_threads``): single images (batch 1, a different image per run, the
same one for every implementation in a turn), ``--latency-runs`` timed runs after 3 warm-ups, as the
median and 95th-percentile latency in ms; then the throughput in images/s at each batch of
``--latency-batches`` (``batch / median`` of ``--repeats`` runs after one warm-up). Prints one JSON object
(``latency`` and ``throughput`` rows; ``ratios``: baseline latency over the implementation's, median and
p95, and the implementation's throughput over the baseline's, so above 1 is faster than the baseline;
``thread_speedups``: each implementation at more threads against itself at the fewest) and a table.
The equal-logits check is not run in this mode.

On a GPU (``--device cuda``): every config at batch 32 (``--batch`` to change it), the baseline on
SpikingJelly's own choice of CUDA neuron kernel (recorded as ``baseline_neuron_implementation``), TF32 off
in both (fp32 products, as on the CPU). Times are taken between ``torch.cuda.synchronize()`` calls; the
memory figures are the CUDA caching allocator's peak of allocated bytes above what the built model and
the batch hold (``torch.cuda.max_memory_allocated``), in a fresh process per implementation.
``--largest-batch`` then searches, per config and implementation, the largest training batch that fits in
GPU memory (one training step per probe: doubling from the timed batch, then bisection to within 1/32;
``--max-batch`` bounds it). The ``spikemlp-spike`` kernels are CPU-only: on CUDA that implementation runs
the dense model; ``spikemlp-deploy`` (CPU inference by construction) is left out on CUDA, and the report
says so (``skipped_impls``).
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
from collections.abc import Callable, Sequence

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
# first inputs near 0.6. benchmarks/bench_layers.py measures the rates (``firing_rates``), and moves them
# with ``shift``.
FIRING_BIAS = {"norm_h": 1.0, "norm_w": 1.0, "norm1": 1.0}
DEFAULT_FIRING_BIAS = 0.2


def set_firing_batch_norm(model: nn.Module, shift: float = 0.0) -> None:
    """Fixed BN parameters and buffers under which the synaptic layers' inputs fire at 0.1-0.3.

    ``shift`` is added to every BN's bias mean (the same draws otherwise): above 0 the neurons after the
    BNs fire more, below 0 less; 0 gives the rates above."""
    g = torch.Generator().manual_seed(1)
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            bias = FIRING_BIAS.get(name.rsplit(".", 1)[-1], DEFAULT_FIRING_BIAS)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5 + bias + shift)
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


def build_spikemlp_deployed(name: str, img_size: int, T: int, num_classes: int) -> nn.Module:
    """``spikemlp.deploy`` of the eval-mode model: a ``DeployedModel`` (inference only, CPU)."""
    import spikemlp

    return spikemlp.deploy(build_spikemlp(name, img_size, T, num_classes).eval())


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
    "spikemlp-deploy": build_spikemlp_deployed,
    "spikingjelly": build_spikingjelly,
    "spikemlp-ckpt": build_spikemlp_checkpointed,
    "spikemlp-keep": build_spikemlp_keeping,
    "spikemlp-compile": build_spikemlp_compiled,
    "spikemlp-graphs": build_spikemlp_graphed,
}
DEPLOYED = "spikemlp-deploy"
# Inference-only implementations: their training step would run the same code as another one
# (spikemlp-spike), or they have none (the deployed model refuses training mode). No training step,
# largest-batch search or training-mode check is run for them.
INFERENCE_ONLY = {"spikemlp-spike", DEPLOYED}
CPU_ONLY = {DEPLOYED}  # deploy builds CPU inference; left out on CUDA
DEFAULT_IMPLS = "spikemlp,spikemlp-spike,spikemlp-deploy,spikingjelly"
GPU_BATCH = 32  # the GPU comparison batch; --batch lowers it where the baseline does not fit
BASELINE = "spikingjelly"


def check_equal_logits(
    name: str,
    img_size: int,
    T: int,
    batch: int,
    threads: int,
    device: str = "cpu",
    impls: Sequence[str] = (),
) -> dict:
    """Largest |logit difference| between spikemlp and the baseline, same weights and images; with
    ``spikemlp-deploy`` in ``impls`` (on the CPU) also the deployed model's, in eval mode only."""
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
            if mode != "eval":
                continue
            if DEPLOYED in impls and device == "cpu":  # a is in eval mode: deploy folds its running stats
                out.update(deployed_agreement(a, images.to(dtype), lb, f"{key}_deploy"))
            # the spike-driven inference path against the same baseline logits
            a.set_spike_kernels(True)
            with torch.no_grad():
                out[f"{key}_spike_kernels"] = (a(images.to(device, dtype)) - lb).abs().max().item()
    return out


def deployed_agreement(model: nn.Module, images: torch.Tensor, reference: torch.Tensor, key: str) -> dict:
    """How ``spikemlp.deploy(model)``'s logits on ``images`` agree with ``reference`` (the baseline's):
    the largest |difference| under ``key``, and the argmax predictions (not asserted: the deployed model
    is exact up to float rounding, which can flip a spike at the threshold)."""
    import spikemlp

    with torch.no_grad():
        logits = spikemlp.deploy(model)(images)
    same = int((logits.argmax(-1) == reference.argmax(-1)).sum())
    prefix = key.removeprefix("max_abs_logit_diff_")
    return {
        key: (logits - reference).abs().max().item(),
        f"same_predictions_{prefix}": f"{same}/{images.shape[0]}",
        f"predictions_agree_{prefix}": same == images.shape[0],
    }


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
    if impl in INFERENCE_ONLY:
        raise ValueError(f"{impl} is inference only: it has no training batch to search")
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


def _require_device(impl: str, device: str) -> None:
    if device != "cpu" and impl in CPU_ONLY:
        raise ValueError(f"{impl} runs on the CPU only (spikemlp.deploy builds CPU inference), not {device}")


def worker(
    impl: str, name: str, img_size: int, T: int, batch: int, repeats: int, threads: int, device: str = "cpu"
) -> dict:
    _require_device(impl, device)
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
    if impl in INFERENCE_ONLY:  # no training step (the deployed model refuses training mode)
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
    for impl in impls:
        _require_device(impl, device)
    _set_up(threads, device)
    num_classes = 1000 if img_size >= 224 else 10
    models = {impl: IMPLEMENTATIONS[impl](name, img_size, T, num_classes).to(device) for impl in impls}
    trained = [impl for impl in impls if impl not in INFERENCE_ONLY]  # never put in training mode
    opts = {impl: torch.optim.SGD(models[impl].parameters(), lr=0.01, momentum=0.9) for impl in trained}
    images, labels = make_batch(batch, img_size, num_classes, device)

    def forward(impl):
        model = models[impl].eval()
        with torch.inference_mode():
            model(images)

    def train(impl):
        train_step(models[impl].train(), opts[impl], images, labels)

    times: dict[tuple[str, str], list[float]] = {}
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


LATENCY_WARMUPS = 3  # untimed single-image runs per implementation and thread count


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly between the two nearest ranks
    (NumPy's default method): the median for q = 50, the largest value for q = 100."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_stats(times_s: Sequence[float]) -> dict:
    """Median and 95th percentile of single-image times given in seconds, in ms."""
    return {
        "runs": len(times_s),
        "median_ms": 1e3 * percentile(times_s, 50),
        "p95_ms": 1e3 * percentile(times_s, 95),
    }


def throughput_stats(times_s: Sequence[float], batch: int) -> dict:
    """Images per second of a batch from the median of its times (s)."""
    median = percentile(times_s, 50)
    return {"repeats": len(times_s), "median_s": median, "images_per_s": batch / median}


def _infer(model: nn.Module, images: torch.Tensor) -> None:
    with torch.inference_mode():
        model(images)


def interleaved_times(
    calls: dict[str, Callable[[int], object]], runs: int, warmups: int
) -> dict[str, list[float]]:
    """Times (s) of ``runs`` calls ``calls[impl](r)`` for each implementation, taken in turns (a, b, a, b,
    ...) after ``warmups`` untimed turns, so that all see the same background load."""
    for w in range(warmups):
        for call in calls.values():
            call(w)
    times: dict[str, list[float]] = {impl: [] for impl in calls}
    for r in range(runs):
        for impl, call in calls.items():
            start = time.perf_counter()
            call(r)
            times[impl].append(time.perf_counter() - start)
    return times


def latency_worker(
    impls: list[str],
    name: str,
    img_size: int,
    T: int,
    runs: int,
    threads: Sequence[int],
    batches: Sequence[int],
    repeats: int,
) -> dict:
    """Batch-1 latency and batch throughput of every implementation in one process, in turns, at each
    thread count (rows for ``latency_ratios`` and ``thread_speedups``)."""
    num_classes = 1000 if img_size >= 224 else 10
    models = {impl: IMPLEMENTATIONS[impl](name, img_size, T, num_classes).eval() for impl in impls}
    images, _ = make_batch(max(runs, LATENCY_WARMUPS, *batches), img_size, num_classes, "cpu")
    latency, throughput = [], []
    for n in threads:
        torch.set_num_threads(n)
        # A different image each run, the same for every implementation in a turn.
        single = {impl: lambda r, m=m: _infer(m, images[r : r + 1]) for impl, m in models.items()}
        for impl, t in interleaved_times(single, runs, LATENCY_WARMUPS).items():
            latency.append({"impl": impl, "model": name, "threads": n, "batch": 1, **latency_stats(t)})
        for batch in batches:
            batched = {impl: lambda r, m=m, b=batch: _infer(m, images[:b]) for impl, m in models.items()}
            for impl, t in interleaved_times(batched, repeats, 1).items():
                row = {"impl": impl, "model": name, "threads": n, "batch": batch}
                throughput.append({**row, **throughput_stats(t, batch)})
    return {"latency": latency, "throughput": throughput}


def latency_ratios(latency: list[dict], throughput: list[dict], baseline: str = BASELINE) -> list[dict]:
    """Per config, thread count and implementation other than ``baseline``: the baseline's latency over
    the implementation's (median and p95) and the implementation's throughput over the baseline's per
    batch; above 1 the implementation is faster."""
    base_latency = {(r["model"], r["threads"]): r for r in latency if r["impl"] == baseline}
    base_throughput = {(r["model"], r["threads"], r["batch"]): r for r in throughput if r["impl"] == baseline}
    rows = []
    for r in latency:
        b = base_latency.get((r["model"], r["threads"]))
        if r["impl"] == baseline or b is None:
            continue
        row = {
            "impl": r["impl"],
            "model": r["model"],
            "threads": r["threads"],
            "median_latency_ratio": b["median_ms"] / r["median_ms"],
            "p95_latency_ratio": b["p95_ms"] / r["p95_ms"],
        }
        for t in throughput:
            tb = base_throughput.get((t["model"], t["threads"], t["batch"]))
            if (t["impl"], t["model"], t["threads"]) == (r["impl"], r["model"], r["threads"]) and tb:
                row[f"throughput_ratio_batch{t['batch']}"] = t["images_per_s"] / tb["images_per_s"]
        rows.append(row)
    return rows


def thread_speedups(latency: list[dict], throughput: list[dict]) -> list[dict]:
    """Per config and implementation, at each thread count above the fewest measured: its median latency
    at the fewest threads over that at this count, and its throughput here over that at the fewest."""
    fewest = {}
    for r in latency:
        key = (r["model"], r["impl"])
        fewest[key] = min(fewest.get(key, r["threads"]), r["threads"])
    lat = {(r["model"], r["impl"], r["threads"]): r for r in latency}
    tput = {(r["model"], r["impl"], r["threads"], r["batch"]): r for r in throughput}
    rows = []
    for (model, impl, n), r in lat.items():
        one = fewest[(model, impl)]
        if n == one:
            continue
        row = {"impl": impl, "model": model, "threads": n, "over_threads": one}
        row["latency_speedup"] = lat[(model, impl, one)]["median_ms"] / r["median_ms"]
        for (m, i, t, batch), tr in tput.items():
            if (m, i, t) == (model, impl, n) and (model, impl, one, batch) in tput:
                row[f"throughput_speedup_batch{batch}"] = (
                    tr["images_per_s"] / tput[(model, impl, one, batch)]["images_per_s"]
                )
        rows.append(row)
    return rows


def latency_table(latency: list[dict], throughput: list[dict], ratios_rows: list[dict]) -> str:
    """The latency report as a short text table: one line per config, implementation and thread count."""
    batches = sorted({r["batch"] for r in throughput})
    ratio = {(r["model"], r["impl"], r["threads"]): r for r in ratios_rows}
    tput = {(r["model"], r["impl"], r["threads"], r["batch"]): r["images_per_s"] for r in throughput}
    head = f"{'model':<18} {'impl':<16} {'thr':>3} {'p50 ms':>8} {'p95 ms':>8} {'base/p50':>8}"
    head += "".join(f" {f'B{b} img/s':>10} {f'B{b} x':>6}" for b in batches)
    lines = [head]
    for r in latency:
        key = (r["model"], r["impl"], r["threads"])
        rel = ratio.get(key, {})
        line = (
            f"{r['model']:<18} {r['impl']:<16} {r['threads']:>3} {r['median_ms']:>8.2f} {r['p95_ms']:>8.2f}"
        )
        line += f" {_fmt(rel.get('median_latency_ratio', 1.0 if r['impl'] == BASELINE else None)):>8}"
        for b in batches:
            x = rel.get(f"throughput_ratio_batch{b}", 1.0 if r["impl"] == BASELINE else None)
            line += f" {_fmt(tput.get((*key, b)), '.1f'):>10} {_fmt(x):>6}"
        lines.append(line)
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


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


def _int_list(text: str) -> list[int]:
    """ "1,2" -> [1, 2] (argparse type of the list options)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
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
        "--interleave",
        action="store_true",
        help="time the implementations in turns in one process (speed ratios on a busy machine); the "
        "per-implementation processes then measure memory only (one repeat)",
    )
    latency = parser.add_argument_group("latency mode")
    latency.add_argument(
        "--latency", action="store_true", help="batch-1 latency (median, p95) and batch throughput, CPU"
    )
    latency.add_argument("--latency-runs", type=int, default=30, help="timed single-image runs")
    latency.add_argument("--latency-threads", type=_int_list, default=[1, 2], help="thread counts, e.g. 1,2")
    latency.add_argument(
        "--latency-batches", type=_int_list, default=[4, 32], help="throughput batches (median of --repeats)"
    )
    for flag, names in (
        ("--largest-worker", ("IMPL", "MODEL", "IMG", "T", "START")),
        ("--worker", ("IMPL", "MODEL", "IMG", "T", "BATCH")),
        ("--check-worker", ("MODEL", "IMG", "T", "BATCH")),
        ("--pair-worker", ("MODEL", "IMG", "T", "BATCH")),
        ("--latency-worker", ("MODEL", "IMG", "T")),
    ):
        parser.add_argument(flag, nargs=len(names), metavar=names, help=argparse.SUPPRESS)
    return parser


def _run_worker(args: argparse.Namespace) -> dict | None:
    """The result of the worker mode that ``args`` asks for (a subprocess of main), or None."""
    impls = args.impls.split(",")
    if args.worker:
        impl, name, img, T, batch = args.worker
        return worker(impl, name, int(img), int(T), int(batch), args.repeats, args.threads, args.device)
    if args.largest_worker:
        impl, name, img, T, start = args.largest_worker
        return largest_batch_worker(impl, name, int(img), int(T), int(start), args.max_batch)
    if args.pair_worker:
        name, img, T, batch = args.pair_worker
        return interleaved_worker(
            impls, name, int(img), int(T), int(batch), args.repeats, args.threads, args.device
        )
    if args.check_worker:
        name, img, T, batch = args.check_worker
        return check_equal_logits(name, int(img), int(T), int(batch), args.threads, args.device, impls)
    if args.latency_worker:
        name, img, T = args.latency_worker
        return latency_worker(
            impls, name, int(img), int(T), args.latency_runs, args.latency_threads, args.latency_batches,
            args.repeats,
        )  # fmt: skip
    return None


def _machine_report(args: argparse.Namespace, benchmark: str) -> dict:
    return {
        "benchmark": benchmark,
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, {platform.system()}",
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "load_average_1min_before": os.getloadavg()[0],
    }


def run_latency(args: argparse.Namespace, impls: list[str]) -> None:
    """The latency mode: one interleaved process per config; prints the JSON report and a table."""
    report = _machine_report(args, "latency")
    report.update(
        impls=impls, baseline=BASELINE, latency_runs=args.latency_runs, warmups=LATENCY_WARMUPS,
        threads=args.latency_threads, throughput_batches=args.latency_batches, repeats=args.repeats,
    )  # fmt: skip
    wanted = set(args.models.split(","))
    latency, throughput, errors = [], [], []
    for name, img, T, _ in CONFIGS:
        if name not in wanted:
            continue
        r = _subprocess(
            ["--impls", ",".join(impls), "--repeats", str(args.repeats), "--latency-runs",
             str(args.latency_runs), "--latency-threads", ",".join(map(str, args.latency_threads)),
             "--latency-batches", ",".join(map(str, args.latency_batches)), "--latency-worker", name,
             str(img), str(T)]
        )  # fmt: skip
        if "error" in r:
            errors.append({"model": name, **r})
        latency += r.get("latency", [])
        throughput += r.get("throughput", [])
    report.update(
        load_average_1min_after=os.getloadavg()[0], errors=errors, latency=latency, throughput=throughput,
        ratios=latency_ratios(latency, throughput), thread_speedups=thread_speedups(latency, throughput),
    )  # fmt: skip
    print(json.dumps(report, indent=2))
    print(latency_table(latency, throughput, report["ratios"]))
    for r in report["thread_speedups"]:
        prefix = "throughput_speedup_batch"
        extra = "".join(
            f", throughput B{k.removeprefix(prefix)} {v:.2f}x" for k, v in r.items() if prefix in k
        )
        print(
            f"{r['impl']}/{r['model']}: {r['threads']} threads over {r['over_threads']}: "
            f"latency {r['latency_speedup']:.2f}x{extra}"
        )


def _run_largest(args: argparse.Namespace, impl: str, name: str, img: int, T: int, batch: int) -> dict:
    r = _subprocess(
        ["--max-batch", str(args.max_batch), "--largest-worker", impl, name, str(img), str(T), str(batch)]
    )
    return r if "error" not in r else {"impl": impl, "model": name, **r}


def run_models(args: argparse.Namespace, impls: list[str]) -> dict:
    """The speed and memory mode: per config the check, then one process per implementation."""
    wanted = set(args.models.split(","))
    results, checks, largest = [], [], []
    report = _machine_report(args, "models")
    for name, img, T, batch in CONFIGS:
        if name not in wanted:
            continue
        batch = args.batch or (GPU_BATCH if args.device == "cuda" else batch)
        common = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device]
        common += ["--impls", ",".join(impls)]
        if not args.no_check and BASELINE in impls:
            checks.append(
                _subprocess(common + ["--check-worker", name, str(img), str(T), str(args.check_batch)])
            )
        timed = {}
        if args.interleave:
            pair = _subprocess(common + ["--pair-worker", name, str(img), str(T), str(batch)])
            timed = {r["impl"]: r for r in pair.get("interleaved", [])}
        # Implementations of one config run one after the other, so that they share the same background load.
        for impl in impls:
            repeats = "1" if args.interleave else str(args.repeats)
            worker_args = ["--threads", str(args.threads), "--repeats", repeats, "--device", args.device]
            r = _subprocess(worker_args + ["--worker", impl, name, str(img), str(T), str(batch)])
            if "error" in r:
                r = {"impl": impl, "model": name, **r}
            elif impl in timed:  # speed from the interleaved run, memory from this process
                r.update(timed[impl], timing="interleaved")
            results.append(r)
            if args.largest_batch and impl not in INFERENCE_ONLY:
                largest.append(_run_largest(args, impl, name, img, T, batch))
    report.update(
        threads=args.threads, repeats=args.repeats, interleaved=args.interleave,
        load_average_1min_after=os.getloadavg()[0], equal_logits_check=checks, results=results,
        ratios=ratios(results),
    )  # fmt: skip
    if args.largest_batch:
        report["largest_train_batch"] = largest
        report["largest_batch_ratios"] = largest_batch_ratios(largest)
    return report


def print_models_summary(report: dict) -> None:
    results = report["results"]
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
    print(f"models ({report['threads']} threads): {summary}")
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


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.largest_batch and args.device != "cuda":
        parser.error("--largest-batch searches GPU memory: add --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA device here; leave --device out to measure the CPU")
    if args.latency and args.device != "cpu":
        parser.error("--latency measures CPU inference (spikemlp-deploy is CPU-only); leave out --device")
    impls = args.impls.split(",")
    unknown = [impl for impl in impls if impl not in IMPLEMENTATIONS]
    if unknown:
        parser.error(f"unknown --impls {unknown}; choose from {list(IMPLEMENTATIONS)}")
    result = _run_worker(args)
    if result is not None:
        print(json.dumps(result))
        return
    if args.latency:
        run_latency(args, impls)
        return
    skipped = [impl for impl in impls if args.device != "cpu" and impl in CPU_ONLY]
    report = run_models(args, [impl for impl in impls if impl not in skipped])
    if skipped:
        report["skipped_impls"] = {impl: f"CPU only, not run on {args.device}" for impl in skipped}
    print(json.dumps(report, indent=2))
    print_models_summary(report)


if __name__ == "__main__":
    main()
