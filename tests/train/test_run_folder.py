"""One writer per run folder: the lock (a second writer, or a resume, refused in one line naming the
holder's pid; released when its holder is killed), no silent reuse of a folder holding a run
(``--overwrite`` to replace it), and per-writer temporary checkpoint folders."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import train_tiny_models  # noqa: F401  (registers train_tiny_snn)

from spikemlp import checkpoint as ckpt
from spikemlp.cli import main as cli_main
from spikemlp.errors import UserError
from spikemlp.train.run_folder import LOCK_FILE, locked

TINY = ["--model", "train_tiny_snn", "--T", "2", "--img-size", "8", "--data", "synthetic"]
TINY += ["--synthetic-size", "64", "--batch-size", "16", "--epochs", "1", "--progress", "false"]


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path / 'run'``'s lock, as a running ``spikemlp train`` does."""
    run = tmp_path / "run"
    code = (
        "import sys, time; from pathlib import Path; from spikemlp.train.run_folder import locked\n"
        "with locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield run, proc
    proc.kill()
    proc.wait()


def one_line_error(capsys, argv) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_second_writer_and_a_resume_are_refused_naming_the_holder(holder, capsys):
    run, proc = holder
    err = one_line_error(capsys, ["train", "--out", str(run), *TINY])
    assert f"{run} is in use by another spikemlp train (pid {proc.pid})" in err
    (run / "config.yaml").write_text("model: train_tiny_snn\n")  # a resumable-looking folder: still refused
    assert f"(pid {proc.pid})" in one_line_error(capsys, ["train", "--resume", str(run)])
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, "config.yaml"]  # nothing else written


def test_the_lock_goes_with_its_holder_even_on_kill_9(holder):
    run, proc = holder
    with pytest.raises(UserError, match=f"pid {proc.pid}"):
        with locked(run):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with locked(run):  # free again: a killed run never leaves its folder locked
        pass


def test_a_folder_holding_a_run_without_last_is_not_reused_unless_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main(["train", "--out", str(run), *TINY]) == 0
    ckpt_best = ckpt.load_meta(run / "best")
    shutil.rmtree(run / "last")  # the case: best/, summary.json and metrics.csv stay
    (run / "summary.json").write_text('{"marker": 1}')
    capsys.readouterr()
    err = one_line_error(capsys, ["train", "--out", str(run), *TINY])
    assert "already holds a training run; its last/ checkpoint is gone" in err and "--overwrite" in err
    assert (run / "summary.json").read_text() == '{"marker": 1}' and ckpt.load_meta(run / "best") == ckpt_best
    assert cli_main(["train", "--out", str(run), "--overwrite", *TINY]) == 0
    assert "marker" not in (run / "summary.json").read_text() and (run / "last").is_dir()


def test_each_writer_has_its_own_temporary_folder_and_only_dead_ones_are_removed(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for pid in (live.pid, dead.pid):
            (tmp_path / f"last.tmp-{pid}").mkdir()
            (tmp_path / f"last.tmp-{pid}" / "model.safetensors").write_text("half written")
        ckpt.save_checkpoint(tmp_path / "last", {"w": torch.ones(1)}, {"model": "m"})
        assert (tmp_path / f"last.tmp-{live.pid}" / "model.safetensors").exists()  # another writer's
        assert not (tmp_path / f"last.tmp-{dead.pid}").exists()
        assert not (tmp_path / f"last.tmp-{os.getpid()}").exists()
    finally:
        live.kill()
        live.wait()
