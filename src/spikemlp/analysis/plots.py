"""PNG figures of an analysis: firing rates per layer and per step, a spike raster, token-mixing weights,
and a confusion matrix.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), so importing this
module never changes the user's global matplotlib backend and works without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .._files import atomic_write


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100), suffix=".png")


def _empty(ax, text: str = "no spiking neuron layers") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def _stage_colours(stages: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    unique = list(dict.fromkeys(stages))
    return {s: cmap(i % 10) for i, s in enumerate(unique)}


def plot_rate_per_layer(report: dict, path: Path) -> Path:
    """Mean firing rate of every neuron layer, in forward order, coloured by stage (paper's Fig. 5)."""
    neurons = report["neurons"]
    fig = Figure(figsize=(max(6.0, 0.18 * len(neurons) + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    if neurons:
        colours = _stage_colours([n["stage"] for n in neurons])
        xs = np.arange(len(neurons))
        ax.bar(xs, [n["rate_mean"] for n in neurons], color=[colours[n["stage"]] for n in neurons])
        handles = [Patch(color=c, label=stage) for stage, c in colours.items()]
        ax.legend(handles=handles, fontsize=8, ncol=min(len(colours), 5))
        ax.set_xlim(-0.6, len(neurons) - 0.4)
    else:
        _empty(ax)
    ax.set_xlabel("neuron layer (forward order)")
    ax.set_ylabel("mean firing rate")
    ax.set_title(f"{report.get('model', 'model')}: firing rate per layer")
    return _save(fig, path)


def plot_rate_per_step(report: dict, path: Path) -> Path:
    """Firing rate per time step: each layer thin, each stage's neuron-weighted mean thick."""
    neurons = report["neurons"]
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    if neurons:
        colours = _stage_colours([n["stage"] for n in neurons])
        for n in neurons:
            steps = np.arange(1, len(n["rate_per_step"]) + 1)
            ax.plot(steps, n["rate_per_step"], color=colours[n["stage"]], alpha=0.25, lw=0.8)
        for stage, c in colours.items():
            group = [n for n in neurons if n["stage"] == stage]
            weights = np.array([n["neurons_per_image"] for n in group], dtype=float)
            rates = np.array([n["rate_per_step"] for n in group], dtype=float)
            mean = (weights[:, None] * rates).sum(0) / max(weights.sum(), 1.0)
            ax.plot(np.arange(1, rates.shape[1] + 1), mean, color=c, lw=2.2, marker="o", label=stage)
        ax.legend(fontsize=8)
        ax.set_xticks(np.arange(1, max(len(n["rate_per_step"]) for n in neurons) + 1))
    else:
        _empty(ax)
    ax.set_xlabel("time step")
    ax.set_ylabel("firing rate")
    ax.set_title("firing rate per time step")
    return _save(fig, path)


def plot_raster(rasters: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """Spike raster of a few neurons of several layers for one image; each raster is [T, n] of 0/1."""
    rows = max(1, len(rasters))
    fig = Figure(figsize=(6.0, 1.6 + 1.4 * rows), layout="constrained")
    if not rasters:
        ax = fig.add_subplot()
        _empty(ax)
        return _save(fig, path)
    for i, (name, r) in enumerate(rasters):
        ax = fig.add_subplot(rows, 1, i + 1)
        r = np.asarray(r)
        t, n = np.nonzero(r)
        ax.scatter(t + 1, n, marker="|", s=60, color="k", linewidths=1.2)
        ax.set_xlim(0.5, r.shape[0] + 0.5)
        ax.set_ylim(-1, r.shape[1])
        ax.set_xticks(np.arange(1, r.shape[0] + 1))
        ax.set_ylabel("neuron", fontsize=8)
        ax.set_title(f"{name} ({r.shape[1]} neurons, {int(r.sum())} spikes)", fontsize=8)
    ax.set_xlabel("time step")
    fig.suptitle("spike raster, one image", fontsize=10)
    return _save(fig, path)


def plot_heatmaps(panels: list[tuple[str, np.ndarray]], path: Path, title: str, cols: int = 4) -> Path:
    """A grid of 2-D heat maps (e.g. the N x N token-mixing weights of the H and W projections)."""
    if not panels:
        fig = Figure(figsize=(4, 3), layout="constrained")
        ax = fig.add_subplot()
        _empty(ax, "nothing to show")
        return _save(fig, path)
    cols = min(cols, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(3.0 * cols, 2.8 * rows + 0.5), layout="constrained")
    for i, (name, w) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        w = np.asarray(w, dtype=float)
        lim = float(np.abs(w).max()) or 1.0
        im = ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto" if w.shape[0] == 1 else "equal")
        ax.set_title(name, fontsize=7)
        ax.tick_params(labelsize=6)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_confusion(confusion: np.ndarray, classes: list[str] | None, path: Path) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted)."""
    cm = np.asarray(confusion, dtype=float)
    k = cm.shape[0]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1.0)
    size = min(12.0, 2.5 + 0.45 * k)
    fig = Figure(figsize=(size, size * 0.85), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if k <= 20:
        labels = classes if classes and len(classes) == k else [str(i) for i in range(k)]
        ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6, color=colour)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(cm.sum(), 1.0)
    ax.set_title(f"confusion matrix (top-1 {100 * acc:.2f}%)")
    return _save(fig, path)


__all__ = ["plot_confusion", "plot_heatmaps", "plot_raster", "plot_rate_per_layer", "plot_rate_per_step"]
