"""``analyze(model, loader)``: run a model over data with hooks and write the full analysis.

One pass over the data gives everything: accuracy and the confusion matrix, the input firing rate and
exact SOPs of every synaptic layer, the firing rate of every neuron layer per time step, a spike raster
of one image and the MFI verdict. Energy and the ANN comparison follow from those counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.limit import batch_count, first_images
from ..layers.axial_token_mixing import AxialProjection
from ..neurons.group_lif import GroupLIF
from ..progress import wrap
from . import plots
from .energy import EnergyModel
from .layer_roles import layer_roles, non_binary_layers, summarise
from .recording import ActivityRecorder
from .report import build_report, stage_of, write_json, write_markdown

REPORT_FILES = ("report.json", "report.md")
PLOT_FILES = (
    "firing_rate_per_layer.png",
    "firing_rate_per_step.png",
    "spike_raster.png",
    "token_mixing_weights.png",
    "confusion_matrix.png",
)


def token_mixing_panels(model: nn.Module, max_blocks: int = 4) -> tuple[list[tuple[str, np.ndarray]], str]:
    """Learned token-mixing weights to draw, and a title.

    MLP-SPE: the N x N matrices of the H and W projections (output position x input position), from the
    first block of each stage. SNN-MLP mixes tokens with group LIFs: their learned tau and V_th, per block.
    """
    panels = []
    seen_shapes = set()
    for name, m in model.named_modules():
        if not isinstance(m, AxialProjection):
            continue
        leaf = f"proj_{m.axis}"
        w = m.weight.detach().float().cpu()
        w = w.reshape(w.shape[0], -1)
        key = (leaf, tuple(w.shape))
        if key in seen_shapes:  # one block per stage (the grid size changes per stage)
            continue
        seen_shapes.add(key)
        panels.append((f"{name} ({leaf[-1].upper()}, {w.shape[0]}x{w.shape[1]})", w.numpy()))
    if panels:
        title = "token-mixing weights (rows: output position, columns: input position)"
        return panels[: 2 * max_blocks], title
    lifs = [m for m in model.modules() if isinstance(m, GroupLIF)]
    if lifs:
        return [
            ("group LIF tau (per op, forward order)", np.array([[float(m.tau) for m in lifs]])),
            ("group LIF V_th (per op, forward order)", np.array([[float(m.v_th) for m in lifs]])),
        ], "SNN-MLP mixes tokens with group LIFs: their learned tau and V_th"
    return [], "no token-mixing weights found"


def _select_rasters(recorder: ActivityRecorder, neurons: int = 32) -> list:
    """The last neuron layer of each stage: its spikes for image 0, a few neurons."""
    last = {stage_of(name): name for name in recorder.neurons}
    picks = []
    for stage, name in last.items():
        r = recorder.neurons[name].raster
        if r is not None:
            picks.append((f"{stage}: {name}", r[:, :neurons].numpy()))
    return picks[:5]


@torch.no_grad()
def analyze(
    model: nn.Module,
    loader: Iterable,
    out_dir: str | Path | None = None,
    *,
    limit: int | None = None,
    energy: str | EnergyModel = "fp32",
    e_mac: float | None = None,
    e_ac: float | None = None,
    num_classes: int | None = None,
    classes: list[str] | None = None,
    model_name: str | None = None,
    data_name: str | None = None,
    make_plots: bool = True,
    progress: bool = False,
) -> dict:
    """Analyse ``model`` on the (images, labels) batches of ``loader``; return the report dict.

    With ``out_dir`` it also writes report.json, report.md and the PNG plots there. ``limit`` caps the
    number of images; batches are moved to the model's device and dtype. ``energy`` is a preset name
    ("fp32", "fp16", "int8") or an ``EnergyModel``; ``e_mac``/``e_ac`` override its constants
    (picojoules). ``progress``: show the batches done (``spikemlp.progress``).
    """
    energy_model = EnergyModel.resolve(energy, e_mac, e_ac)
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    T = int(getattr(model, "T", 1))
    was_training = model.training
    model.eval()
    preds, targets = [], []
    try:
        with ActivityRecorder(model, T=T) as rec:
            for images, labels in wrap(
                first_images(loader, limit), "analyze", progress, batch_count(loader, limit)
            ):
                images = images.to(device=device, dtype=dtype)
                with rec.batch(images.shape[0], images):
                    logits = model(images)
                preds.append(logits.argmax(-1).cpu())
                targets.append(torch.as_tensor(labels).cpu())
    finally:
        model.train(was_training)
    images_seen = rec.images
    preds_t = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    targets_t = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
    k = num_classes or (len(classes) if classes else None) or getattr(model, "num_classes", None)
    k = int(k or (max(int(preds_t.max(initial=0)), int(targets_t.max(initial=0))) + 1))
    if len(targets_t) and int(targets_t.max()) >= k:
        raise ValueError(
            f"the data has labels up to {int(targets_t.max())} but the model predicts {k} classes; "
            "analyse the model on the data set it was trained for"
        )
    confusion = torch.zeros(k, k, dtype=torch.int64)
    confusion.index_put_((targets_t, preds_t), torch.ones_like(preds_t), accumulate=True)

    roles = layer_roles(rec, model)
    mfi = summarise(non_binary_layers(rec, model), len(rec.synaptic))
    meta = {
        "model": model_name or type(model).__name__,
        "data": data_name,
        "accuracy": float((preds_t == targets_t).float().mean()) if images_seen else 0.0,
        "mfi": mfi,
    }
    report = build_report(
        rec, images_seen, energy_model, roles=roles, meta=meta, readout_accumulates=mfi["is_mfi"]
    )
    report["confusion_matrix"] = confusion.tolist()
    report["classes"] = list(classes) if classes else None
    notes = []
    if not mfi["is_mfi"]:
        notes.append(
            "This network is not multiplication-free: its synaptic layers take real-valued input, so every "
            "operation is counted as a MAC, the same as the ANN of the same architecture."
        )
    for row in report["layers"]:
        if row["input_kind"] == "real" and row["steps_computed"] == 1 and T > 1:
            notes.append(
                f"`{row['name']}` sees the same input at every time step (direct encoding), so its MACs are "
                "counted once per image, not T times."
            )
    if any(st.layer_type == "GroupLIF" for st in rec.neurons.values()):
        notes.append(
            "Group-LIF 'firing rates' are the fraction of positions inside whole groups where u > V_th; the "
            "group LIF's output is real-valued (max(u, V_th)), not a spike, and spatial positions play the "
            "role of time steps (T = 1)."
        )
    report["notes"] = notes
    if out_dir is not None:
        write_outputs(report, rec, model, Path(out_dir), make_plots=make_plots)
    return report


def write_outputs(
    report: dict, recorder: ActivityRecorder, model: nn.Module, out: Path, make_plots: bool = True
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if make_plots:
        report["plots"] = list(PLOT_FILES)
        written.append(plots.plot_rate_per_layer(report, out / PLOT_FILES[0]))
        written.append(plots.plot_rate_per_step(report, out / PLOT_FILES[1]))
        written.append(plots.plot_raster(_select_rasters(recorder), out / PLOT_FILES[2]))
        panels, title = token_mixing_panels(model)
        written.append(plots.plot_heatmaps(panels, out / PLOT_FILES[3], title))
        cm = np.array(report["confusion_matrix"])
        written.append(plots.plot_confusion(cm, report.get("classes"), out / PLOT_FILES[4]))
    written.append(write_json(report, out / "report.json"))
    written.append(write_markdown(report, out / "report.md"))
    return written


__all__ = ["PLOT_FILES", "REPORT_FILES", "analyze", "token_mixing_panels", "write_outputs"]
