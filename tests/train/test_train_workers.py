"""Workers tied to their launcher: a ``processes: 2`` run whose ``spikemlp train`` is killed with SIGKILL
leaves no worker behind (nor the folder locked), and resumed it ends bit for bit as an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from spikemlp import checkpoint as ckpt
from spikemlp.train import run_folder

# a real model (the workers are `python -m spikemlp`, which registers only the package's models), made small
RECIPE = dict(
    model="mlp_spe_xt_cifar", model_kwargs={"embed_dim": 12, "depths": [1, 1, 1, 1], "patch_size": 4},
    T=2, img_size=32, data="synthetic", synthetic_size=512, batch_size=16, epochs=3, opt="adamw", lr=0.01,
    crop_padding=2, deterministic=True, threads=1, checkpoint_every_steps=3, progress=False, processes=2,
)  # fmt: skip


def _start(tmp_path: Path, name: str, **extra) -> tuple[subprocess.Popen, Path]:
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, **extra}))
    run = tmp_path / name
    cmd = [sys.executable, "-m", "spikemlp", "train", "-c", str(recipe), "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), run


def _descendants(pid: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [c for c, p in parents.items() if p == parent]
        found += children
        todo += children
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_mid_epoch(proc: subprocess.Popen, run: Path, epoch: int) -> list[int]:
    """SIGKILL the launcher once a mid-epoch checkpoint of ``epoch`` exists; returns its descendants then."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            meta = json.loads((run / "last" / ckpt.META_FILE).read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("mid_epoch") and meta.get("epoch", 0) >= epoch:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
    workers = _descendants(proc.pid)
    assert len(workers) >= 3  # torchrun and its two workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_launcher(tmp_path):
    proc, run = _start(tmp_path, "run", epochs=50)
    workers = _kill_mid_epoch(proc, run, epoch=0)
    time.sleep(2.0)
    assert [p for p in workers if _running(p)] == []
    with run_folder.locked(run):  # and the folder is free for --resume
        pass


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_two_processes_killed_mid_epoch_then_resumed_equal_an_uninterrupted_run(tmp_path):
    reference, ref_run = _start(tmp_path, "reference")
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()[-3000:]
    proc, killed = _start(tmp_path, "killed")
    _kill_mid_epoch(proc, killed, epoch=1)
    assert not (killed / "summary.json").exists()
    time.sleep(2.0)  # the workers are gone (test above); the resume takes the lock
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    resumed = subprocess.run(
        [sys.executable, "-m", "spikemlp", "train", "--resume", str(killed)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = ckpt.load_weights(ref_run / "last")[0], ckpt.load_weights(killed / "last")[0]
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    s_ref, s_killed = (json.loads((r / "summary.json").read_text()) for r in (ref_run, killed))
    assert (s_killed["top1"], s_killed["steps"]) == (s_ref["top1"], s_ref["steps"])
    cols = ("epoch", "step", "lr", "train_loss", "train_top1", "test_top1")
    rows = [
        [[r[c] for c in cols] for r in csv.DictReader(open(x / "metrics.csv"))] for x in (ref_run, killed)
    ]
    assert rows[0] == rows[1]
