"""The multi-step LIF on CPU: spikemlp's reference and fused backends against SpikingJelly and snnTorch.

Shape [T=4, B=16, C=78, 56, 56] fp32 (the first stage of MLP-SPE-T), side by side in one run:
- ``reference``: spikemlp's plain PyTorch loop (autograd);
- ``fused``: spikemlp's C++ kernel (backend "cpp");
- ``spikingjelly``: SpikingJelly 2.0 LIFNode(tau=2, detach_reset=True, step_mode="m"), its torch path on CPU;
- ``snntorch``: snnTorch Leaky(beta=0.5, reset "zero") called in a Python loop over T;
- ``copy``: the memory bound. A training forward must read X and write the spikes and one saved state
  (3 tensor transfers, 1.5 copies); forward+backward adds reading dL/dS and the state and writing dL/dX
  (6 transfers, 3 copies). The bound is that many times the time of ``y.copy_(x)`` (preallocated y), and,
  because every method allocates its outputs, also of ``x.clone()`` (fresh pages: page faults included).

Forward is timed with gradients enabled (the graph and the saved state are built, as in training);
forward+backward adds ``backward`` of a random upstream gradient. Times are the best of ``--repeats``
(least disturbed on a shared machine) with the median beside it.

Memory, two measures per method:
- ``saved_mb``: bytes of the distinct storages autograd keeps for the backward (saved-tensor hooks);
- ``peak_extra_mb``: peak resident memory of one forward+backward above the resident memory just before
  it (input and upstream gradient already allocated), in a fresh process per method, after one warm-up
  call, with the kernel's peak counter reset through /proc/self/clear_refs (Linux).

PyTorch's CPU allocator gives every large tensor fresh pages, and on some virtual machines the page
faults cost more than the arithmetic; ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's switch for huge pages in its
CPU allocator) is set unless ``--no-thp``, for every method alike. Prints one JSON object and a one-line
summary; asserts nothing.
Usage: python benchmarks/bench_neurons.py [--repeats 5] [--threads 2] [--no-thp] [--shape 4 16 78 56 56]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

if "--no-thp" not in sys.argv:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # read when torch starts: set before the import

import torch  # noqa: E402

METHODS = ("reference", "fused", "spikingjelly", "snntorch")


def make_neuron(method: str):
    """A callable [T, ...] -> spikes [T, ...] with a fresh state for each call."""
    if method in ("reference", "fused"):
        from spikemlp.neurons import LIF

        lif = LIF(tau=2.0, detach_reset=True, backend="reference" if method == "reference" else "cpp")
        return lif
    if method == "spikingjelly":
        from spikingjelly.activation_based import functional, neuron

        node = neuron.LIFNode(tau=2.0, detach_reset=True, step_mode="m")

        def run_sj(x):
            functional.reset_net(node)
            return node(x)

        return run_sj
    if method == "snntorch":
        import snntorch

        leaky = snntorch.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero")

        def run_snntorch(x):
            mem = leaky.init_leaky()
            spikes = []
            for x_t in x:
                spk, mem = leaky(x_t, mem)
                spikes.append(spk)
            return torch.stack(spikes)

        return run_snntorch
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def timed(fn, repeats: int) -> dict:
    fn()  # warm-up (kernel build/load, first-touch of allocator pools)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {"best_ms": round(1e3 * samples[0], 2), "median_ms": round(1e3 * samples[len(samples) // 2], 2)}


def saved_bytes(neuron, x) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        neuron(x)
    return sum(seen.values())


def bench_method(method: str, x: torch.Tensor, grad: torch.Tensor, repeats: int) -> dict:
    neuron = make_neuron(method)
    xr = x.clone().requires_grad_()

    def forward():
        neuron(xr)

    def forward_backward():
        xr.grad = None
        neuron(xr).backward(grad)

    return {
        "forward": timed(forward, repeats),
        "forward_backward": timed(forward_backward, repeats),
        "saved_mb": round(saved_bytes(neuron, xr) / 2**20, 1),
    }


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_peak(method: str, shape: list[int]) -> dict:
    """Run in a fresh process: peak resident memory of one forward+backward above the baseline."""
    torch.manual_seed(0)
    x = torch.randn(shape).requires_grad_()
    grad = torch.randn(shape)
    neuron = make_neuron(method)
    neuron(x).backward(grad)  # warm-up: lazy initialisation must not count
    x.grad = None
    baseline = _rss_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
        reset = True
    except OSError:
        reset = False
    neuron(x).backward(grad)
    return {"peak_extra_mb": round((_rss_kb("VmHWM") - baseline) / 1024, 1), "peak_reset": reset}


def peak_in_subprocess(method: str, shape: list[int]) -> dict:
    cmd = [sys.executable, __file__, "--measure-peak", method, "--shape", *map(str, shape)]
    if "--no-thp" in sys.argv:
        cmd.append("--no-thp")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--shape", type=int, nargs="+", default=[4, 16, 78, 56, 56])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--no-thp", action="store_true", help="leave PyTorch's 4 KiB pages (see above)")
    parser.add_argument("--skip-peak", action="store_true", help="skip the per-process peak memory runs")
    parser.add_argument("--measure-peak", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure_peak:
        print(json.dumps(measure_peak(args.measure_peak, args.shape)))
        return

    torch.manual_seed(0)
    x = torch.randn(args.shape)
    grad = torch.randn(args.shape)
    results: dict = {
        "shape": args.shape,
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "torch": torch.__version__,
        "methods": {},
    }
    y = torch.empty_like(x)
    copy = timed(lambda: y.copy_(x), args.repeats)["best_ms"]
    clone = timed(lambda: x.clone(), args.repeats)["best_ms"]
    results["copy"] = {"copy_ms": copy, "clone_ms": clone}
    results["memory_bound_ms"] = {
        "forward": {"copy": round(1.5 * copy, 2), "clone": round(1.5 * clone, 2)},
        "forward_backward": {"copy": round(3 * copy, 2), "clone": round(3 * clone, 2)},
    }
    for method in args.methods:
        results["methods"][method] = bench_method(method, x, grad, args.repeats)
        if not args.skip_peak:
            results["methods"][method].update(peak_in_subprocess(method, args.shape))

    m = results["methods"]
    ratios = {}
    if "fused" in m:
        fused_fb = m["fused"]["forward_backward"]["best_ms"]
        fused_f = m["fused"]["forward"]["best_ms"]
        for other in ("spikingjelly", "reference", "snntorch"):
            if other in m:
                ratios[f"{other}_over_fused_fwd_bwd"] = round(
                    m[other]["forward_backward"]["best_ms"] / fused_fb, 2
                )
                ratios[f"{other}_over_fused_fwd"] = round(m[other]["forward"]["best_ms"] / fused_f, 2)
        bound = results["memory_bound_ms"]
        ratios["fused_over_bound_fwd_bwd_copy"] = round(fused_fb / bound["forward_backward"]["copy"], 2)
        ratios["fused_over_bound_fwd_bwd_clone"] = round(fused_fb / bound["forward_backward"]["clone"], 2)
        ratios["fused_over_bound_fwd_copy"] = round(fused_f / bound["forward"]["copy"], 2)
        if "spikingjelly" in m and "peak_extra_mb" in m["fused"] and "peak_extra_mb" in m["spikingjelly"]:
            ratios["fused_peak_over_spikingjelly_peak"] = round(
                m["fused"]["peak_extra_mb"] / m["spikingjelly"]["peak_extra_mb"], 2
            )
    results["ratios"] = ratios
    print(json.dumps(results, indent=1))
    if "fused" in m and "spikingjelly" in m:
        print(
            f"fused fwd+bwd {m['fused']['forward_backward']['best_ms']:.0f} ms: "
            f"{ratios['spikingjelly_over_fused_fwd_bwd']}x faster than SpikingJelly, "
            f"{ratios['fused_over_bound_fwd_bwd_copy']}x the copy bound "
            f"({ratios['fused_over_bound_fwd_bwd_clone']}x the clone bound); "
            f"peak extra memory {ratios.get('fused_peak_over_spikingjelly_peak', 'n/a')} of SpikingJelly's"
        )


if __name__ == "__main__":
    main()
