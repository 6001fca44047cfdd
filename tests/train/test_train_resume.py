"""Resume: a run killed with SIGKILL in the middle of an epoch, resumed with ``--resume``, ends with exactly
the weights of an uninterrupted run (deterministic CPU mode; dropout, mixup, CutMix, random erasing and
EMA on, so every random stream and every piece of state has to come back)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import train_tiny_models  # noqa: F401  (registers train_tiny_snn in this process)
import yaml

from spikemlp import checkpoint as ckpt
from spikemlp.cli import main as cli_main
from spikemlp.train import load_config, train

HERE = Path(__file__).resolve().parent
RECIPE = dict(
    model="train_tiny_snn",
    T=2,
    img_size=16,
    model_kwargs={"dropout": 0.2, "width": 16},
    data="synthetic",
    synthetic_size=512,
    batch_size=32,
    epochs=5,
    opt="adamw",
    lr=0.01,
    weight_decay=0.05,
    warmup_epochs=1,
    mixup=0.8,
    cutmix=1.0,
    smoothing=0.1,
    reprob=0.25,
    crop_padding=2,
    ema=True,
    ema_decay=0.9,
    deterministic=True,
    threads=1,
    device="cpu",  # a CPU test on any machine
    checkpoint_every_steps=5,
    progress=False,
)


def _metrics(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "metrics.csv")))


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "run_train.py"), "train", "-c", str(recipe), "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # kill as soon as a mid-epoch checkpoint of the second epoch exists (the run is well short of its end)
    deadline = time.monotonic() + 240
    meta = {}
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            meta = json.loads((killed / "last" / ckpt.META_FILE).read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("epoch", 0) >= 1 and meta.get("mid_epoch"):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (
        f"the run was not killed mid-way: {proc.stderr.read().decode()[-2000:]}"
    )
    assert not (killed / "summary.json").exists()
    saved = ckpt.load_state(killed / "last")["counters"]
    assert saved["micro"] > 0 and saved["global_step"] < 5 * 16  # resuming from inside an epoch

    assert cli_main(["train", "--resume", str(killed)]) == 0

    reference = tmp_path / "reference"
    train(load_config(recipe), reference)
    for ema in (False, True):
        got, _ = ckpt.load_weights(killed / "last", ema=ema)
        want, _ = ckpt.load_weights(reference / "last", ema=ema)
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), f"{'ema ' if ema else ''}{k} differs after resume"
    s_killed = json.loads((killed / "summary.json").read_text())
    s_ref = json.loads((reference / "summary.json").read_text())
    assert (s_killed["top1"], s_killed["steps"]) == (s_ref["top1"], s_ref["steps"])
    cols = ["epoch", "step", "lr", "train_loss", "train_top1", "test_top1", "ema_top1"]
    assert [[r[c] for c in cols] for r in _metrics(killed)] == [
        [r[c] for c in cols] for r in _metrics(reference)
    ]


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "is not a run folder: config.yaml is missing" in capsys.readouterr().err
