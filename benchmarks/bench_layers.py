"""Time per synaptic layer kind of the deployed MLP-SPE, and of the dense model, against the firing rate.

The spike-driven kernel (``spikemlp::spike_matmul``) adds one weight row per active input, so its work
falls with the firing rate; the dense layers cost the same at any rate. This benchmark moves the rates
and times each kind of synaptic layer in both models, to show the rate below which the spikes pay off.

For each config (default ``mlp_spe_t`` at 224 x 224, T = 4, batch 4; the CIFAR ones via ``--models``, at
batch 32 unless ``--batch``) and each firing-rate setting (``--shifts``: added to every BatchNorm's bias
mean by ``bench_models.set_firing_batch_norm(model, shift)``; 0 is bench_models' setting, inputs at
0.1-0.3), it measures on one batch:

- the firing rate of each layer kind's inputs: the fraction of nonzero input elements, pooled over
  every layer of the kind and every time step, read by forward pre-hooks on the DENSE eval model (hooks
  on the deployed model would make its blocks run their dense layers: the kernel refuses observed
  layers). The deployed model is ``spikemlp.deploy`` of that eval model, so it holds the same weights;
- the time spent in each kind, per forward pass of the batch (median of ``--repeats`` passes after one
  warm-up, the two models in turns), by wrapping, not hooks, the Python calls that compute it with a
  timer for the duration of the measurement:
  - deployed model: ``spikemlp.layers.spike_matmul.spike_matmul`` (token fuse, channel fc1 and fc2; a
    call is attributed to the layer whose weight tensor it is passed),
    ``spike_kernel_blocks.folded_axial_map`` (the axial maps, by the projection it is passed) and the
    encoder convolutions' ``forward``;
  - dense model (the library's eval model, no SpikingJelly): the ``forward`` of the same layers;
  - each kind is timed with what the deployed model computes in the same call, so the two compare the
    same work: the axial maps with their BN (folded into the map's rows in the deployed model), the fuse
    convolution with ``fuse_norm`` and fc2 with ``norm2`` (the kernel's epilogues), fc1 with ``norm1``
    and the hidden neuron (in fc1's epilogue), the encoder convolutions with their BNs (folded). The
    rest (the other neurons, layout copies, the stem, the head) is ``other`` in the forward totals.
  The deployed model's products also hold the neurons that follow them and the skips from h.
  Kinds: ``token_proj_h``, ``token_proj_w`` (the axial N x N maps; dense in both models: the deployed
  model runs them as GEMMs with the BN folded in), ``token_fuse`` (the 1x1 fuse convolution),
  ``channel_fc1``, ``channel_fc2``, ``encoder_conv`` (the SPE cells' 3x3 convolutions; dense in both).

Prints one JSON object (per config the points, one per shift: rates, deployed and dense ms per kind,
dense/deployed per kind, the forward totals) and a table; ``--plot PATH`` also writes a PNG (matplotlib,
Agg backend): per config, time per layer kind against its measured firing rate, deployed solid, dense
dashed. Asserts nothing.
Usage: python benchmarks/bench_layers.py [--models mlp_spe_t] [--batch 4] [--shifts=-0.6,-0.3,0,0.3,0.6,1]
       [--threads 2] [--repeats 3] [--plot layers.png]
(``--shifts=`` with the equals sign: a list that starts with a minus sign would read as an option.)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps

import torch
from torch import nn

from bench_models import CONFIGS, build_spikemlp, make_batch, percentile, set_firing_batch_norm

LAYER_KINDS = ("token_proj_h", "token_proj_w", "token_fuse", "channel_fc1", "channel_fc2", "encoder_conv")
KERNEL_KINDS = ("token_fuse", "channel_fc1", "channel_fc2")  # run by spike_matmul in every deployed model
DEFAULT_SHIFTS = "-0.6,-0.3,0,0.3,0.6,1.0"  # rates from about 0.01 to 0.6-0.9 (by kind)
# Per kind in a block: the synaptic layer (its input is the one whose rate is measured) and the modules
# whose work the deployed model does in the same call (BN epilogues and folds, fc1's hidden neuron).
_BLOCK_PARTS = {
    "AxialTokenMixing": {
        "token_proj_h": ("proj_h", "norm_h"),
        "token_proj_w": ("proj_w", "norm_w"),
        "token_fuse": ("fuse", "fuse_norm"),
    },
    "ChannelMLP": {"channel_fc1": ("fc1", "norm1", "lif"), "channel_fc2": ("fc2", "norm2")},
}


def _block_kind(module: nn.Module) -> str | None:
    """The family of an MLP-SPE block (the spike-kernel twins subclass the dense blocks)."""
    from spikemlp.layers import AxialTokenMixing, ChannelMLP

    for cls in (AxialTokenMixing, ChannelMLP):
        if isinstance(module, cls):
            return cls.__name__
    return None


def kind_modules(net: nn.Module) -> tuple[dict[nn.Module, str], dict[nn.Module, str]]:
    """(synaptic layers, all timed modules) of an MLP-SPE ``net``, each mapped to its layer kind: the
    layers whose inputs are spikes, and those with the BNs and neuron that the kind's timing includes."""
    layers: dict[nn.Module, str] = {}
    timed: dict[nn.Module, str] = {}
    for block in net.modules():
        for kind, names in _BLOCK_PARTS.get(_block_kind(block), {}).items():
            layers[getattr(block, names[0])] = kind
            for name in names:
                timed[getattr(block, name)] = kind
    for stage in net.stages:
        for m in stage.encoder.modules():
            if isinstance(m, nn.Conv2d):
                layers[m] = timed[m] = "encoder_conv"
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                timed[m] = "encoder_conv"
    return layers, timed


def firing_rates(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Per layer kind, the fraction of nonzero inputs over one forward of ``images`` (all layers of the
    kind and all steps pooled), by forward pre-hooks: pass the dense eval model, not the deployed one."""
    counts = {kind: [0, 0] for kind in LAYER_KINDS}

    def count(kind: str):
        def hook(_module, args):
            counts[kind][0] += int(torch.count_nonzero(args[0]))
            counts[kind][1] += args[0].numel()

        return hook

    layers, _ = kind_modules(model)
    handles = [layer.register_forward_pre_hook(count(kind)) for layer, kind in layers.items()]
    try:
        with torch.inference_mode():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return {kind: nonzero / total for kind, (nonzero, total) in counts.items() if total}


class LayerTimer:
    """Seconds and calls per layer kind of the wrapped calls. A call inside a timed call is not timed
    again (no double counting)."""

    def __init__(self) -> None:
        self.reset()
        self._inside = False

    def reset(self) -> None:
        self.seconds = dict.fromkeys(LAYER_KINDS, 0.0)
        self.calls = dict.fromkeys(LAYER_KINDS, 0)

    def wrap(self, fn: Callable, kind_of: Callable[..., str | None]) -> Callable:
        """``fn`` timed under the kind ``kind_of(*args, **kwargs)`` (None: not timed)."""

        @wraps(fn)
        def timed(*args, **kwargs):
            kind = kind_of(*args, **kwargs)
            if kind is None or self._inside:
                return fn(*args, **kwargs)
            self._inside = True
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[kind] += time.perf_counter() - start
                self.calls[kind] += 1
                self._inside = False

        return timed


@contextmanager
def timed_layers(net: nn.Module, deployed: bool) -> Iterator[LayerTimer]:
    """Wrap, while inside, the calls that compute each layer kind of the MLP-SPE ``net`` (a dense model,
    or a ``DeployedModel``'s ``.model`` with ``deployed``) with a ``LayerTimer``: module forwards as
    instance attributes and, for the deployed model, the spike-kernel functions. No hooks (see above)."""
    blocks = importlib.import_module("spikemlp.layers.spike_kernel_blocks")
    matmul = importlib.import_module("spikemlp.layers.spike_matmul")
    timer = LayerTimer()
    layers, timed = kind_modules(net)
    for module, kind in timed.items():
        module.forward = timer.wrap(module.forward, lambda *_, k=kind, **__: k)
    patches = []
    if deployed:
        by_weight = {id(m.weight): k for m, k in layers.items() if k in KERNEL_KINDS}
        by_proj = {id(m): k for m, k in layers.items() if k.startswith("token_proj")}
        for owner, name, kind_of in (
            (matmul, "spike_matmul", lambda _segments, weight, *_, **__: by_weight.get(id(weight))),
            (blocks, "folded_axial_map", lambda _x, proj, *_, **__: by_proj.get(id(proj))),
        ):
            patches.append((owner, name, getattr(owner, name)))
            setattr(owner, name, timer.wrap(getattr(owner, name), kind_of))
    try:
        yield timer
    finally:
        for owner, name, original in patches:
            setattr(owner, name, original)
        for module in timed:
            del module.forward  # the class's forward again


def _forward_ms(model: nn.Module, images: torch.Tensor, timer: LayerTimer) -> tuple[float, dict, dict]:
    """One timed forward: (total ms, ms per kind, calls per kind)."""
    timer.reset()
    start = time.perf_counter()
    with torch.inference_mode():
        model(images)
    total = 1e3 * (time.perf_counter() - start)
    return total, {k: 1e3 * s for k, s in timer.seconds.items()}, dict(timer.calls)


def _medians(runs: list[tuple[float, dict, dict]], kinds: Sequence[str]) -> dict:
    per_kind = {k: percentile([r[1][k] for r in runs], 50) for k in kinds}
    return {"forward_ms": percentile([r[0] for r in runs], 50), "ms": per_kind, "calls": runs[0][2]}


def measure_point(name: str, img_size: int, T: int, batch: int, shift: float, repeats: int) -> dict:
    """Rates and per-kind times of the dense and the deployed model under one BN ``shift``."""
    import spikemlp

    num_classes = 1000 if img_size >= 224 else 10
    model = build_spikemlp(name, img_size, T, num_classes).eval()
    set_firing_batch_norm(model, shift)  # the same draws as bench_models, biases moved by shift
    deployed = spikemlp.deploy(model)
    images, _ = make_batch(batch, img_size, num_classes, "cpu")
    rates = firing_rates(model, images)
    runs: dict[str, list] = {"dense": [], "deployed": []}
    with timed_layers(model, deployed=False) as dense_timer, timed_layers(deployed.model, True) as dep_timer:
        pairs = (("dense", model, dense_timer), ("deployed", deployed, dep_timer))
        for _, m, timer in pairs:
            _forward_ms(m, images, timer)  # warm-up
        for _ in range(repeats):  # in turns, so that both see the same background load
            for which, m, timer in pairs:
                runs[which].append(_forward_ms(m, images, timer))
    kinds = [k for k in LAYER_KINDS if k in rates]
    dense, dep = _medians(runs["dense"], kinds), _medians(runs["deployed"], kinds)
    if not all(dep["calls"][k] for k in KERNEL_KINDS if k in rates):
        raise RuntimeError(
            f"the deployed model did not run spikemlp::spike_matmul for every kernel layer ({dep['calls']}): "
            "its blocks fell back to dense layers, so their times would not be the kernel's"
        )
    return {
        "shift": shift,
        "firing_rate": rates,
        "deployed_ms": dep["ms"],
        "dense_ms": dense["ms"],
        "dense_over_deployed": {k: dense["ms"][k] / max(dep["ms"][k], 1e-9) for k in kinds},
        "deployed_forward_ms": dep["forward_ms"],
        "dense_forward_ms": dense["forward_ms"],
        "deployed_other_ms": dep["forward_ms"] - sum(dep["ms"].values()),
        "dense_other_ms": dense["forward_ms"] - sum(dense["ms"].values()),
        "calls_per_forward": {"deployed": dep["calls"], "dense": dense["calls"]},
    }


def plot_layers(report: dict, path: str) -> bool:
    """A PNG at ``path``: per config, ms per kind against its firing rate (deployed solid, dense dashed).
    False, with a message, where matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        print(
            "--plot: matplotlib is not installed (pip install matplotlib); no plot written", file=sys.stderr
        )
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = report["configs"]
    fig, axes = plt.subplots(1, len(configs), figsize=(6.5 * len(configs), 4.8), squeeze=False)
    for ax, config in zip(axes[0], configs):
        points = config["points"]
        for i, kind in enumerate(k for k in LAYER_KINDS if k in points[0]["firing_rate"]):
            rates = [p["firing_rate"][kind] for p in points]
            color = f"C{i}"
            ax.plot(rates, [p["deployed_ms"][kind] for p in points], "-o", color=color, label=kind)
            ax.plot(rates, [p["dense_ms"][kind] for p in points], "--", color=color, alpha=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("input firing rate (fraction of nonzero inputs)")
        ax.set_ylabel("ms per forward (all layers of the kind)")
        ax.set_title(
            f"{config['model']} {config['img_size']}px, B{config['batch']} T{config['T']}, "
            f"{report['threads']} threads"
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="deployed (solid), dense (dashed)", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def layers_table(report: dict) -> str:
    """One line per config, shift and kind: rate, deployed and dense ms, dense / deployed."""
    lines = [
        f"{'model':<18} {'shift':>6} {'kind':<14} {'rate':>6} {'deployed ms':>11} {'dense ms':>9} {'x':>6}"
    ]
    for c in report["configs"]:
        for p in c["points"]:
            for kind, rate in p["firing_rate"].items():
                dep, dense = p["deployed_ms"][kind], p["dense_ms"][kind]
                line = f"{c['model']:<18} {p['shift']:>+6.2f} {kind:<14} {rate:>6.3f} {dep:>11.2f}"
                lines.append(line + f" {dense:>9.2f} {p['dense_over_deployed'][kind]:>6.2f}")
            dep, dense = p["deployed_forward_ms"], p["dense_forward_ms"]
            line = f"{c['model']:<18} {p['shift']:>+6.2f} {'whole forward':<14} {'':>6} {dep:>11.2f}"
            lines.append(line + f" {dense:>9.2f} {dense / dep:>6.2f}")
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [c[0] for c in CONFIGS]
    parser.add_argument("--models", default="mlp_spe_t", help=f"comma-separated, of {names}")
    parser.add_argument("--batch", type=int, help="batch for every config (default: each config's)")
    parser.add_argument(
        "--shifts",
        type=_floats,
        default=_floats(DEFAULT_SHIFTS),
        help="BN bias shifts, e.g. --shifts=-0.3,0,0.3",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per model and shift")
    parser.add_argument("--plot", metavar="PATH", help="also write a PNG of time against firing rate")
    args = parser.parse_args()
    unknown = set(args.models.split(",")) - set(names)
    if unknown:
        parser.error(f"unknown --models {sorted(unknown)}; choose from {names}")
    torch.set_num_threads(args.threads)
    report = {
        "benchmark": "layers",
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, {platform.system()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "timing": "wrapped calls per layer kind (see bench_layers.py); median of the repeats, ms per forward",
        "load_average_1min_before": os.getloadavg()[0],
        "configs": [],
    }
    for name, img, T, batch in CONFIGS:
        if name in args.models.split(","):
            batch = args.batch or batch
            points = [measure_point(name, img, T, batch, shift, args.repeats) for shift in args.shifts]
            report["configs"].append(
                {"model": name, "img_size": img, "T": T, "batch": batch, "points": points}
            )
    report["load_average_1min_after"] = os.getloadavg()[0]
    if args.plot:
        report["plot"] = args.plot if plot_layers(report, args.plot) else None
    print(json.dumps(report, indent=2))
    print(layers_table(report))


if __name__ == "__main__":
    main()
