"""Training benchmarks: the CPU speedrun curve, and training throughput and peak memory side by side.

Two modes, each printing one JSON object and a one-line summary (asserting nothing):

``--speedrun``: runs ``spikemlp train -c configs/cifar10_cpu_speedrun.yaml`` for ``--minutes`` (default 20)
on CIFAR-10 as a separate command (which starts the recipe's worker processes) and reports test top-1
against wall-clock minutes (from metrics.csv), the final accuracy, and the wall time of the whole command
(process start and imports included).

``--throughput``: trains ``--model`` for ``--steps`` optimizer steps on synthetic data, once per variant
(plain, activation checkpointing, and on CUDA bf16 autocast), each in its own process so that peak memory
is that run's own, and prints images/s and peak memory with ratios to the plain run. On CUDA the peak is
``torch.cuda.max_memory_allocated``; on CPU it is the process's maximum resident set size.

Examples:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_training.py --speedrun --minutes 20
    python benchmarks/bench_training.py --throughput --model mlp_spe_t --img-size 224 --T 4 --batch 64
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _machine() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def _spikemlp(args: list[str], timeout: float) -> tuple[int, float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "spikemlp", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, time.perf_counter() - start, done.stdout + done.stderr


def speedrun(minutes: float, data_dir: str | None, out: Path, extra: list[str]) -> dict:
    run = out / "speedrun"
    args = [
        "train",
        "-c",
        "configs/cifar10_cpu_speedrun.yaml",
        "--out",
        str(run),
        "--time-budget",
        str(minutes),
        "--progress",
        "false",
        *extra,
    ]
    if data_dir:
        args += ["--data-dir", data_dir]
    rc, wall, log = _spikemlp(args, timeout=minutes * 60 * 2 + 600)
    if rc != 0:
        raise SystemExit(f"speedrun failed:\n{log[-3000:]}")
    summary = json.loads((run / "summary.json").read_text())
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    curve = [
        {
            "epoch": int(r["epoch"]),
            "minutes": round(float(r["wall_minutes"]), 2),
            "test_top1": float(r["test_top1"]),
            "test_top1_single_view": float(r["test_top1_single_view"])
            if r.get("test_top1_single_view")
            else None,
            "train_top1": round(float(r["train_top1"]), 2),
        }
        for r in rows
        if r["test_top1"]
    ]
    return {
        "mode": "speedrun",
        "recipe": "configs/cifar10_cpu_speedrun.yaml",
        "budget_minutes": minutes,
        "top1": summary["top1"],
        "tta": summary.get("tta", "none"),
        "top1_single_view": summary.get("top1_single_view"),
        "best_top1": summary["best_top1"],
        "epochs": summary["epochs"],
        "train_wall_seconds": round(summary["wall_seconds"], 1),
        "command_wall_seconds": round(wall, 1),
        "images_per_second": round(summary["images_per_second"], 1),
        "peak_memory_mb": round(summary["peak_memory_mb"], 1),
        "peak_memory_mb_all_processes": round(summary.get("peak_memory_mb_all_processes", 0.0), 1),
        "processes": summary.get("world_size", 1),
        "parameters": summary["parameters"],
        "T": summary["T"],
        "curve": curve,
        "run_dir": str(run),
    }


def throughput(a: argparse.Namespace, out: Path) -> dict:
    import torch

    cuda = torch.cuda.is_available() and a.device != "cpu"
    variants = {"plain": [], "grad_checkpointing": ["--grad-checkpointing", "true"]}
    if cuda:
        variants["bf16"] = ["--amp", "bf16"]
        variants["bf16+checkpointing"] = ["--amp", "bf16", "--grad-checkpointing", "true"]
    results = {}
    for name, flags in variants.items():
        run = out / name
        args = [
            "train",
            "--out",
            str(run),
            "--data",
            "synthetic",
            "--synthetic-size",
            str(a.batch * a.steps),
            "--model",
            a.model,
            "--T",
            str(a.T),
            "--batch-size",
            str(a.batch),
            "--epochs",
            "1",
            "--opt",
            "sgd",
            "--lr",
            "0.01",
            "--progress",
            "false",
            "--device",
            "cuda" if cuda else "cpu",
            "--eval-batch-size",
            str(a.batch),
            *flags,
        ]
        if a.img_size:
            args += ["--img-size", str(a.img_size)]
        if a.threads:
            args += ["--threads", str(a.threads)]
        rc, wall, log = _spikemlp(args, timeout=3600)
        if rc != 0:
            results[name] = {"error": log.strip().splitlines()[-1] if log.strip() else f"exit {rc}"}
            continue
        s = json.loads((run / "summary.json").read_text())
        results[name] = {
            "images_per_second": round(s["images_per_second"], 1),
            "peak_memory_mb": round(s["peak_memory_mb"], 1),
            "peak_memory_kind": s["peak_memory_kind"],
            "train_seconds": round(s["train_seconds"], 2),
            "images": a.batch * a.steps,
        }
    base = results.get("plain", {})
    for r in results.values():
        if "images_per_second" in r and "images_per_second" in base:
            r["speed_vs_plain"] = round(r["images_per_second"] / base["images_per_second"], 3)
            r["memory_vs_plain"] = round(r["peak_memory_mb"] / base["peak_memory_mb"], 3)
    return {
        "mode": "throughput",
        "model": a.model,
        "T": a.T,
        "img_size": a.img_size,
        "batch": a.batch,
        "steps": a.steps,
        "device": "cuda" if cuda else "cpu",
        "variants": results,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--speedrun", action="store_true")
    mode.add_argument("--throughput", action="store_true")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--data-dir")
    p.add_argument("--model", default="mlp_spe_t")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    p.add_argument("extra", nargs="*", help="further spikemlp train options for --speedrun, after --")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out) if a.out else Path(tmp)
        result = speedrun(a.minutes, a.data_dir, out, a.extra) if a.speedrun else throughput(a, out)
    result["machine"] = _machine()
    result["date"] = datetime.date.today().isoformat()
    print(json.dumps(result, indent=1))
    if a.speedrun:
        curve = ", ".join(f"{c['minutes']:.1f} min {c['test_top1']:.1f}%" for c in result["curve"])
        print(
            f"speedrun: {result['top1']:.2f}% test top-1 after {result['epochs']:g} epochs, "
            f"{result['command_wall_seconds'] / 60:.1f} min for the whole command; curve: {curve}"
        )
    else:
        parts = [
            f"{k} {v['images_per_second']:.0f} img/s {v['peak_memory_mb']:.0f} MB"
            for k, v in result["variants"].items()
            if "images_per_second" in v
        ]
        print(
            f"throughput {a.model} T={a.T} {a.img_size}px batch {a.batch} on {result['device']}: "
            + "; ".join(parts)
        )


if __name__ == "__main__":
    main()
