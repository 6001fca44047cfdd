"""Data parallelism through torchrun: 2 CPU processes (gloo) keep identical weights, and with SyncBatchNorm in
float64 they match a single process that sees the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import train_tiny_models  # noqa: F401  (registers train_tiny_snn in this process)
import yaml
from safetensors.torch import load_file

from spikemlp.cli import main as cli_main
from spikemlp.train import load_config, train

HERE = Path(__file__).resolve().parent
GLOBAL_BATCH = 64
# One optimizer step per epoch over the whole (tiny) training set: the single process's batch and the
# union of the two ranks' halves are then the same images, whatever order each loader draws them in.
RECIPE = dict(
    model="train_tiny_snn",
    T=2,
    img_size=8,
    data="synthetic",
    synthetic_size=GLOBAL_BATCH,
    epochs=4,
    opt="sgd",
    lr=0.2,
    momentum=0.9,
    weight_decay=1e-3,
    crop_padding=0,
    hflip=0.0,
    sync_bn=True,
    dtype="float64",
    threads=1,
    device="cpu",  # gloo on the CPU on any machine
    progress=False,
)


def test_two_ranks_agree_and_match_one_process_with_the_same_global_batch(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "batch_size": GLOBAL_BATCH // 2}))
    dump = tmp_path / "dump"
    env = {**os.environ, "SPIKEMLP_TEST_DUMP": str(dump), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(HERE / "run_train.py"),
        "train",
        "-c",
        str(recipe),
        "--out",
        str(tmp_path / "ddp"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout and done.stdout.count("spikemlp train:") == 1  # rank 0 logs alone

    rank0, rank1 = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    single = train(load_config(recipe, {"batch_size": GLOBAL_BATCH}), tmp_path / "single")
    assert single.summary["world_size"] == 1 and single.summary["steps"] == 4
    reference = single.model.state_dict()
    assert not torch.equal(
        reference["conv.weight"], rank0["conv.weight"].new_zeros(()).expand_as(rank0["conv.weight"])
    )
    for k, v in rank0.items():
        key = k.removeprefix("module.")
        assert torch.equal(v, rank1[k]), f"{k} differs between ranks"
        torch.testing.assert_close(
            v, reference[key], rtol=1e-9, atol=1e-12, msg=f"{k}: DDP != single process"
        )
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["world_size"] == 2 and ddp["global_batch"] == GLOBAL_BATCH
    assert ddp["top1"] == single.summary["top1"] and ddp["test_images"] == single.summary["test_images"]
    assert not (tmp_path / "ddp" / "rank1").exists()


def test_the_processes_key_starts_the_data_parallel_workers_itself(tmp_path):
    # `spikemlp train` with processes: 2 runs under torchrun without being started by it: the workers are
    # separate processes, so the model must be one the installed package registers.
    recipe = tmp_path / "recipe.yaml"
    small = {"embed_dim": 12, "depths": [1, 1, 1, 1], "patch_size": 4}
    recipe.write_text(
        yaml.safe_dump(
            {
                **RECIPE,
                "model": "mlp_spe_xt_cifar",
                "model_kwargs": small,
                "img_size": 32,
                "epochs": 1,
                "batch_size": 16,
                "dtype": "float32",
                "sync_bn": False,
                "processes": 2,
            }
        )
    )
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "spikemlp", "train", "-c", str(recipe), "--out", str(run)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 32
    assert summary["steps"] == GLOBAL_BATCH // 32  # each step takes a batch from each of the two ranks
    # memory: rank 0's peak, and both processes' together (each holds a model and the data)
    assert summary["peak_memory_mb_all_processes"] > 1.5 * summary["peak_memory_mb"]
    assert done.stdout.count("spikemlp train:") == 1  # rank 0 alone logs
    # the run's own evaluation (both ranks, half the test set each) is that of its checkpoint: the ranks
    # evaluate with rank 0's BatchNorm statistics, which the checkpoint holds
    evaluation = ["eval", "--checkpoint", str(run / "last"), "--device", "cpu"]
    assert cli_main([*evaluation, "--json", str(tmp_path / "eval.json")]) == 0
    checkpoint_eval = json.loads((tmp_path / "eval.json").read_text())
    assert checkpoint_eval["loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
    # processes: 1 on the command line keeps it in one process
    done = subprocess.run(
        [*cmd[:-1], str(tmp_path / "one"), "--processes", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert one["world_size"] == 1 and one["peak_memory_mb_all_processes"] == one["peak_memory_mb"]


def test_workers_count_the_time_budget_from_the_launch(monkeypatch):
    from spikemlp.train.distributed import LAUNCHED_AT_ENV, seconds_since_launch

    monkeypatch.delenv(LAUNCHED_AT_ENV, raising=False)
    assert seconds_since_launch() == 0.0  # started directly: the worker's own clock
    monkeypatch.setenv(LAUNCHED_AT_ENV, repr(time.time() - 5.0))
    assert 5.0 <= seconds_since_launch() < 6.0
