"""Training on a CUDA GPU (skipped without one): autocast in bf16 and in fp16 with the gradient scaler,
torch.compile, CUDA graphs (the benchmark's ``mode="reduce-overhead"`` training steps), the batch pipeline
with its augmentation on the GPU, ``spikemlp train`` with two processes (NCCL where two GPUs exist, one
process per GPU otherwise), and the LIF on its Triton kernel, with the tiny spiking net of the CPU tests."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import train_tiny_models  # noqa: F401  (registers train_tiny_snn)
import yaml

from spikemlp.train import train
from spikemlp.train.config import from_dict

pytestmark = pytest.mark.cuda
TINY = dict(
    model="train_tiny_snn", T=2, img_size=8, data="synthetic", synthetic_size=512, batch_size=32, epochs=3,
    opt="adamw", lr=0.02, weight_decay=0.0, device="cuda", progress=False, crop_padding=0,
)  # fmt: skip


def _finite(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_training_learns_with_finite_weights(tmp_path, amp):
    result = train(from_dict({**TINY, "amp": amp}), tmp_path / amp)
    rows = list(csv.DictReader(open(tmp_path / amp / "metrics.csv")))
    losses = [float(r["train_loss"]) for r in rows]
    assert result.summary["steps"] == 3 * 512 // 32 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] and result.summary["top1"] > 50.0 and _finite(result.model)
    assert next(result.model.parameters()).is_cuda


def test_compiled_training_on_cuda_is_close_to_eager(tmp_path):
    base = {**TINY, "opt": "sgd", "lr": 0.1, "epochs": 1, "max_steps_per_epoch": 3}
    torch._dynamo.reset()
    compiled = train(from_dict({**base, "compile": True}), tmp_path / "compiled").model
    eager = train(from_dict(base), tmp_path / "eager").model
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)  # fp32, other kernel orders


def test_batch_pipeline_augments_on_the_gpu_while_training(tmp_path):
    # crop, flip, random erasing and mixup of the tensor pipeline, all on the training device
    augmented = dict(pipeline="tensor", crop_padding=2, hflip=0.5, reprob=0.5, mixup=0.2, epochs=2)
    result = train(from_dict({**TINY, **augmented}), tmp_path / "run")
    losses = [float(r["train_loss"]) for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv"))]
    assert result.summary["steps"] == 2 * 512 // 32 and all(math.isfinite(v) for v in losses)
    assert result.summary["device"] == "cuda:0" and _finite(result.model)


def _bench_models():
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_models.py"
    spec = importlib.util.spec_from_file_location("bench_models", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cuda_graph_training_steps_match_eager_ones():
    # benchmarks/bench_models.py's spikemlp-graphs: training steps compiled with mode="reduce-overhead"
    bench = _bench_models()
    small = dict(embed_dim=12, depths=[1, 1, 1, 1], patch_size=4)
    eager = bench.build_spikemlp("mlp_spe_xt_cifar", 32, 2, 10, **small).cuda()
    initial = copy.deepcopy(eager.state_dict())
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    graphed = bench.CompiledTraining(copy.deepcopy(eager), mode="reduce-overhead")
    g = torch.Generator().manual_seed(3)
    batches = [
        (torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(4)
    ]
    for model in (eager, graphed):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for images, labels in batches:
            bench.train_step(model, opt, images.cuda(), labels.cuda())
    torch.cuda.synchronize()
    assert not torch._dynamo.utils.counters["inductor"].get("cudagraph_skips")  # graphs, not a fallback
    trained = graphed.model.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in initial.items() if v.is_floating_point())
    for (name, a), b in zip(graphed.model.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)  # fp32, other kernel orders


def test_two_processes_train_on_the_gpus_with_nccl_or_one_per_gpu(tmp_path):
    # `spikemlp train` with processes: 2 and device auto (the speedrun's setting): two NCCL ranks on a
    # two-GPU machine, one process on a one-GPU machine (never a rank on a missing cuda:1)
    gpus = torch.cuda.device_count()
    small = {"embed_dim": 12, "depths": [1, 1, 1, 1], "patch_size": 4}
    recipe = dict(TINY, model="mlp_spe_xt_cifar", model_kwargs=small, img_size=32, synthetic_size=128,
                  batch_size=16, epochs=1, device="auto", processes=2)  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "spikemlp", "train", "-c", str(tmp_path / "recipe.yaml"), "--out", str(run)]
    done = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    world = min(2, gpus)
    assert summary["world_size"] == world and summary["global_batch"] == 16 * world
    assert summary["device"] == "cuda:0" and summary["steps"] == 128 // (16 * world)
    if world == 1:
        assert "processes: 2 is a CPU setting; on CUDA one per GPU: 1" in done.stdout
