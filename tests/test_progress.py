"""Progress: plain lines every few percent when the output is not a terminal; eval and analyze show it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import torch

from spikemlp import progress

ROOT = Path(__file__).resolve().parents[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_file_gets_a_line_every_five_percent_and_no_carriage_returns():
    out = io.StringIO()
    shown = progress.bar(400, "epoch 1/1", file=out)
    assert isinstance(shown, progress.LineProgress)
    for _ in range(400):
        shown.set_postfix(loss="1.0", refresh=False)
        shown.update(1)
    shown.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 100 // progress.STEP_PERCENT and "\r" not in out.getvalue()
    assert lines[0].startswith("epoch 1/1: 5% (20/400 batch)") and lines[-1].endswith("loss=1.0")
    assert "100% (400/400 batch)" in lines[-1]


def test_a_terminal_gets_tqdm_and_a_disabled_display_shows_nothing(capsys):
    from tqdm import tqdm

    shown = progress.bar(10, "x", file=_Terminal())
    assert isinstance(shown, tqdm)
    shown.close()
    assert list(progress.wrap(range(3), "quiet", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_eval_and_analyze_show_their_progress(capsys):
    import timm

    from spikemlp.analysis import analyze
    from spikemlp.train.evaluate import evaluate

    model = timm.create_model("snn_mlp_xt_cifar", embed_dim=8, depths=(1, 1, 1, 1)).eval()
    batches = [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1])) for _ in range(4)]
    evaluate(model, batches, 10, torch.device("cpu"), progress=True)
    assert "eval: 100% (4/4 batch)" in capsys.readouterr().err
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*map(torch.cat, zip(*batches))), 2)
    analyze(model, loader, limit=4, progress=True, make_plots=False)
    assert "analyze: 100% (2/2 batch)" in capsys.readouterr().err  # the limit's two batches of four
    analyze(model, batches, limit=4, progress=True, make_plots=False)
    assert capsys.readouterr().err.startswith("analyze: 2 batch")  # no batch size: the count at the end


def test_a_training_log_written_to_a_file_is_a_few_lines_of_text(tmp_path):
    log = tmp_path / "log.txt"
    args = ["-c", "cifar10_cpu_speedrun", "--epochs", "1", "--out", str(tmp_path / "run"), "--processes", "1"]
    tiny = ["--data", "synthetic", "--synthetic_size", "2048", "--eval_batch_size", "64", "--threads", "1"]
    with open(log, "w") as f:
        subprocess.run(
            [sys.executable, "-m", "spikemlp", "train", *args, *tiny],
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            stdout=f,
            stderr=subprocess.STDOUT,
            check=True,
        )
    text = log.read_text()
    assert "\r" not in text and len(text.splitlines()) <= 100
    assert "epoch 1/1: 100% (32/32 batch)" in text and "eval: 100%" in text and "done: top-1" in text
