"""Turn recorded activity into the analysis report (a dict), and write it as report.json and report.md.

All counts are per image (averaged over the images analysed). Every total is the sum of the rows it
covers: network totals = sum over stages = sum over layers, so a reader can check the arithmetic.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .._files import atomic_write_text
from .energy import EnergyModel
from .recording import ActivityRecorder

TOTAL_KEYS = (
    "dense_macs_per_step",
    "macs",
    "sops",
    "sops_estimate",
    "energy_pj",
    "ann_macs",
    "ann_energy_pj",
)

_STAGE_PATTERNS = (
    (re.compile(r"(?:^|\.)(?:stages|layers|stage|levels)\.(\d+)(?:\.|$)"), "stage{}"),
    (re.compile(r"(?:^|\.)(?:patch_embed|stem|to_patch_embedding\.0)(?:\.|$)"), "stem"),
    (re.compile(r"(?:^|\.)(?:head|mlp_head|classifier|fc)(?:\.|$)"), "head"),
)


def stage_of(name: str) -> str:
    """The stage a module belongs to, from its qualified name ('stage0'..'stage3', 'stem', 'head')."""
    for pattern, fmt in _STAGE_PATTERNS:
        m = pattern.search(name)
        if m:
            return fmt.format(*m.groups())
    return "other"


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


_ACCOUNTING = {
    "units": "per image; MACs and SOPs summed over the T time steps unless named per_step",
    "binary_layers": "cost ACs: exact SOPs = sum over nonzero inputs of the outputs each reaches",
    "real_layers": "cost MACs: dense MACs per step x steps computed (1 if the input repeats over T)",
    "sops_estimate": "T x mean input firing rate x dense MACs per step (the usual estimate)",
    "ann": "the same architecture as a non-spiking network: dense MACs of one pass, all at E_MAC",
}


def build_report(
    recorder: ActivityRecorder,
    images: int,
    energy: EnergyModel,
    roles: dict[str, str] | None = None,
    stage_fn=stage_of,
    meta: dict | None = None,
    readout_accumulates: bool = False,
) -> dict:
    """Per-layer rows, stage and network totals, neuron firing rates and the ANN comparison."""
    if images <= 0:
        raise ValueError(
            "no images were analysed; the data loader gave no batches (check --limit and the data)"
        )
    layers = [
        _layer_row(recorder, st, images, energy, roles or {}, stage_fn, readout_accumulates)
        for st in recorder.synaptic.values()
    ]
    all_spikes = sum(sum(st.spikes_per_step) for st in recorder.neurons.values())
    all_slots = sum(sum(st.numel_per_step) for st in recorder.neurons.values())
    stages, network = _totals(layers)
    return {
        **(meta or {}),
        "T": recorder.T,
        "images": images,
        "energy": energy.as_dict(),
        "accounting": dict(_ACCOUNTING),
        "layers": layers,
        "stages": stages,
        "network": network,
        "neurons": [_neuron_row(st, images, stage_fn) for st in recorder.neurons.values()],
        "mean_firing_rate": _safe_div(all_spikes, all_slots),
    }


def _layer_row(recorder, st, images: int, energy: EnergyModel, roles, stage_fn, readout_accumulates) -> dict:
    S = len(st.numel_per_step)
    rate_mean = _safe_div(sum(st.nonzero_per_step), sum(st.numel_per_step))
    binary = st.nonbinary == 0
    dense = st.dense_macs / (images * S)
    # A real-valued input repeated at every step (direct encoding) needs computing once.
    steps_computed = 1 if (S > 1 and st.repeats_over_steps) else S
    sops = sum(st.sops_per_step) / images if binary else 0.0
    macs = 0.0 if binary else dense * steps_computed
    row = {
        "name": st.name,
        "type": st.layer_type,
        "stage": stage_fn(st.name),
        "role": roles.get(st.name, "synaptic" if binary else "real-input"),
        "input_kind": "binary" if binary else "real",
        "nonbinary_fraction": _safe_div(st.nonbinary, st.numel),
        "dense_macs_per_step": dense,
        "steps_computed": steps_computed,
        "input_rate_per_step": [_safe_div(nz, n) for nz, n in zip(st.nonzero_per_step, st.numel_per_step)],
        "input_rate_mean": rate_mean,
        "sops": sops,
        "sops_estimate": recorder.T * rate_mean * dense if binary else 0.0,
        "macs": macs,
        "energy_pj": energy.energy_pj(macs, sops),
        "ann_macs": dense,
        "ann_energy_pj": energy.energy_pj(dense, 0.0),
    }
    readout = row["role"] == "readout" and not binary and readout_accumulates
    if readout and st.source_neuron in recorder.neurons:
        # linear(mean(BN(spikes))) folds to W' @ (spike counts) / N + b': one accumulation per
        # (spike, class) plus one scaling per class, instead of the MACs counted in the row.
        spikes = sum(recorder.neurons[st.source_neuron].spikes_per_step) / images
        out_features = getattr(recorder.modules.get(st.name), "out_features", 0)
        row["as_accumulation"] = {
            "source": st.source_neuron,
            "sops": spikes * out_features,
            "multiplications": out_features,
        }
    return row


def _totals(layers: list[dict]) -> tuple[dict[str, dict], dict]:
    """Totals per stage and for the network: each the sum of the rows it covers."""
    stages: dict[str, dict] = {}
    for row in layers:
        tot = stages.setdefault(row["stage"], {k: 0.0 for k in TOTAL_KEYS} | {"layers": 0})
        for k in TOTAL_KEYS:
            tot[k] += row[k]
        tot["layers"] += 1
    network = {k: sum(row[k] for row in layers) for k in TOTAL_KEYS}
    network["layers"] = len(layers)
    network["binary_input_layers"] = sum(r["input_kind"] == "binary" for r in layers)
    network["real_input_layers"] = network["layers"] - network["binary_input_layers"]
    network["energy_ratio_ann_over_snn"] = _safe_div(network["ann_energy_pj"], network["energy_pj"])
    return stages, network


def _neuron_row(st, images: int, stage_fn) -> dict:
    return {
        "name": st.name,
        "type": st.layer_type,
        "stage": stage_fn(st.name),
        "neurons_per_image": st.neurons_per_image,
        "rate_per_step": [_safe_div(s, n) for s, n in zip(st.spikes_per_step, st.numel_per_step)],
        "rate_mean": _safe_div(sum(st.spikes_per_step), sum(st.numel_per_step)),
        "spikes_per_image": sum(st.spikes_per_step) / images,
    }


def write_json(report: dict, path: str | Path) -> Path:
    return atomic_write_text(path, json.dumps(report, indent=2, default=_json_default) + "\n")


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x == 0:
        return "0"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.{digits}f}{suffix}"
    return f"{x:.{digits}g}"


def _energy(pj: float) -> str:
    for scale, unit in ((1e9, "mJ"), (1e6, "uJ"), (1e3, "nJ")):
        if abs(pj) >= scale:
            return f"{pj / scale:.3f} {unit}"
    return f"{pj:.3f} pJ"


def render_markdown(report: dict) -> str:
    """report.md: the same numbers as report.json, laid out for reading."""
    lines = _md_facts(report) + _md_mfi(report) + _md_network(report["network"]) + _md_stages(report)
    lines += _md_layers(report) + _md_neurons(report) + _md_deployment(report)
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"- [{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _md_deployment(report: dict) -> list[str]:
    d = report.get("deployment")
    if not d:
        return []
    return [
        "",
        "## Deployed model (spikemlp.deploy)",
        "",
        f"- {d['summary']}",
        f"- {d['eval_images_per_s']:.1f} images/s in eval mode, {d['deployed_images_per_s']:.1f} deployed "
        f"({d['speedup']:.2f}x), {d['threads']} thread(s)",
    ]


def _md_facts(report: dict) -> list[str]:
    e = report["energy"]
    rate = f"{report['mean_firing_rate']:.4f}" if report["neurons"] else None
    facts = [
        ("data", report.get("data")),
        ("images", report["images"]),
        ("time steps T", report["T"]),
        ("top-1 accuracy", f"{100 * report['accuracy']:.2f}%" if "accuracy" in report else None),
        ("mean firing rate (all neurons)", rate),
    ]
    return [
        f"# Analysis of {report.get('model', 'model')}",
        "",
        *(f"- {k}: {v}" for k, v in facts if v is not None),
        "",
        "## Energy model",
        "",
        f"E_MAC = {e['e_mac_pj']} pJ, E_AC = {e['e_ac_pj']} pJ (preset: {e['name']}). "
        "E = E_MAC x MACs(real-input layers) + E_AC x SOPs(binary-input layers), per image.",
        "",
        "Left out: " + "; ".join(e["left_out"]) + ".",
        "",
    ]


def _md_mfi(report: dict) -> list[str]:
    if "mfi" not in report:
        return []
    lines = ["## Multiplication-free inference", "", report["mfi"]["summary"], ""]
    for item in report["mfi"]["non_binary_layers"]:
        lines.append(f"- `{item['name']}`: {item['role']}, {100 * item['fraction']:.1f}% non-binary input")
    return lines + [""]


def _md_network(net: dict) -> list[str]:
    lines = [
        "## Network totals (per image)",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| dense MACs per step (ANN of the same architecture) | {_fmt(net['dense_macs_per_step'])} |",
        f"| MACs (real-input layers) | {_fmt(net['macs'])} |",
        f"| SOPs exact (binary-input layers, all steps) | {_fmt(net['sops'])} |",
        f"| SOPs estimate T x rate x MACs | {_fmt(net['sops_estimate'])} |",
        f"| energy, this network | {_energy(net['energy_pj'])} |",
        f"| energy, ANN of the same architecture | {_energy(net['ann_energy_pj'])} |",
        f"| ANN / SNN energy | {net['energy_ratio_ann_over_snn']:.2f}x |",
        f"| synaptic layers: binary input / real input | {net['binary_input_layers']} / "
        f"{net['real_input_layers']} |",
        "",
    ]
    if net["binary_input_layers"] == 0:
        lines += [
            "Every synaptic layer of this network takes real-valued input, so every operation is a MAC; "
            "its energy equals the ANN's.",
            "",
        ]
    return lines


def _md_stages(report: dict) -> list[str]:
    lines = ["## Totals per stage (per image)", ""]
    lines += ["| stage | layers | dense MACs/step | MACs | SOPs exact | SOPs estimate | energy |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for name, tot in report["stages"].items():
        lines.append(
            f"| {name} | {tot['layers']} | {_fmt(tot['dense_macs_per_step'])} | {_fmt(tot['macs'])} | "
            f"{_fmt(tot['sops'])} | {_fmt(tot['sops_estimate'])} | {_energy(tot['energy_pj'])} |"
        )
    return lines


def _md_layers(report: dict) -> list[str]:
    lines = [
        "",
        "## Synaptic layers (per image)",
        "",
        "| layer | type | stage | input | dense MACs/step | input rate per step | rate | SOPs exact | "
        "SOPs estimate | MACs | energy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["layers"]:
        steps = " ".join(f"{v:.3f}" for v in r["input_rate_per_step"])
        plain = r["role"] in ("synaptic", "real-input")
        kind = r["input_kind"] if plain else f"{r['input_kind']} ({r['role']})"
        lines.append(
            f"| `{r['name']}` | {r['type']} | {r['stage']} | {kind} | {_fmt(r['dense_macs_per_step'])} | "
            f"{steps} | {r['input_rate_mean']:.3f} | {_fmt(r['sops'])} | {_fmt(r['sops_estimate'])} | "
            f"{_fmt(r['macs'])} | {_energy(r['energy_pj'])} |"
        )
    for r in (r for r in report["layers"] if "as_accumulation" in r):
        acc = r["as_accumulation"]
        lines += [
            "",
            f"The readout `{r['name']}` is counted above as MACs on its real-valued input (the mean of "
            f"BN(spikes) over the grid). Folded, it accumulates one weight column per spike of "
            f"`{acc['source']}` and scales once: {_fmt(acc['sops'])} ACs plus {acc['multiplications']} "
            "multiplications per image.",
        ]
    return lines


def _md_neurons(report: dict) -> list[str]:
    if not report["neurons"]:
        return []
    T = max(len(n["rate_per_step"]) for n in report["neurons"])
    lines = ["", "## Neuron layers: firing rate per time step", ""]
    lines += ["| layer | stage | neurons | " + " | ".join(f"t={t}" for t in range(T)) + " | mean |"]
    lines += ["|---|---|---|" + "---|" * (T + 1)]
    for n in report["neurons"]:
        steps = " | ".join(f"{v:.4f}" for v in n["rate_per_step"])
        lines.append(
            f"| `{n['name']}` | {n['stage']} | {n['neurons_per_image']} | {steps} | {n['rate_mean']:.4f} |"
        )
    return lines


def write_markdown(report: dict, path: str | Path) -> Path:
    return atomic_write_text(path, render_markdown(report))


__all__ = ["TOTAL_KEYS", "build_report", "render_markdown", "stage_of", "write_json", "write_markdown"]
