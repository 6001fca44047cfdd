"""Device choice on a faked one-GPU machine: ``auto`` with two processes never gives a rank ``cuda:1``."""

from __future__ import annotations

import pytest
import torch

import spikemlp.train.distributed as distributed
import spikemlp.train.trainer as trainer
from spikemlp.cli import main as cli_main
from spikemlp.train.distributed import local_process_count, pick_device, setup


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_gives_each_local_rank_its_own_gpu_or_a_clear_error(one_gpu):
    assert pick_device("auto", 0) == torch.device("cuda", 0)
    for name, rank in (("auto", 1), ("cuda", 1)):
        with pytest.raises(ValueError, match=r"there are 1 CUDA GPU\(s\): start one process per GPU"):
            pick_device(name, rank)
    with pytest.raises(ValueError, match=r"device 'cuda:1': PyTorch sees 1 CUDA GPU\(s\)"):
        pick_device("cuda:1", 0)
    assert pick_device("cpu", 1) == torch.device("cpu")


def test_processes_become_one_per_gpu_with_auto_and_an_error_with_cuda(one_gpu):
    assert local_process_count(2, "auto") == 1  # the speedrun's CPU setting: one process on the one GPU
    assert local_process_count(2, "cpu") == 2 and local_process_count(1, "cuda") == 1
    with pytest.raises(ValueError, match=r"set processes to at most 1 \(one per GPU\), or use --device cpu"):
        local_process_count(2, "cuda")


def test_torchrun_rank_one_on_a_one_gpu_machine_stops_before_touching_cuda(one_gpu, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail(f"set_device({d})"))
    with pytest.raises(ValueError, match="would use cuda:1"):
        setup("auto")


def test_train_with_two_processes_and_auto_runs_one_process_on_the_one_gpu(
    one_gpu, monkeypatch, tmp_path, capsys
):
    ran = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed, "run_local_workers", lambda *a: pytest.fail("workers were started"))
    monkeypatch.setattr(trainer, "train", lambda cfg, run_dir, resume, overwrite: ran.append(cfg.processes))
    args = ["train", "--out", str(tmp_path / "run"), "--data", "synthetic", "--processes", "2"]
    assert cli_main(args) == 0 and ran == [2]
    assert "processes: 2 is a CPU setting; on CUDA one per GPU: 1" in capsys.readouterr().out
    assert cli_main([*args, "--device", "cuda"]) == 2  # asked for two GPUs on a one-GPU machine
    assert "set processes to at most 1" in capsys.readouterr().err
