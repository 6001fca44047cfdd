"""`eval` and `analyze` of plain weights: `--model NAME --checkpoint FILE` (safetensors, or the SNN-MLP
authors' layout), with `--limit`; the top-1 is that of the model with those weights."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

import spikemlp  # noqa: F401  (registers the models)
from spikemlp.cli import main
from spikemlp.convert.snn_mlp import from_spikemlp
from spikemlp.data import loaders
from spikemlp.train.evaluate import evaluate


def _noisy(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    with torch.no_grad():  # weights unlike a fresh model's, so that loading them shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _expected_top1(model, img_size: int, limit: int, batch: int) -> float:
    settings = loaders.EvalSettings(img_size=img_size, eval_batch_size=batch, workers=0)
    loader, _, _ = loaders.eval_batches("synthetic", "test", settings, torch.device("cpu"))
    return evaluate(model, loader, 10, torch.device("cpu"), limit=limit).top1


@pytest.mark.parametrize(
    "name, save",
    [
        ("mlp_spe_xt_cifar", lambda m, p: save_file(m.state_dict(), p.with_suffix(".safetensors"))),
        ("snn_mlp_t", lambda m, p: torch.save(from_spikemlp(m.state_dict()), p.with_suffix(".pt"))),
    ],
)
def test_eval_reports_the_top1_of_plain_weights(name, save, tmp_path, capsys):
    model = _noisy(name, num_classes=10)
    save(model, tmp_path / "weights")
    weights = next(tmp_path.glob("weights.*"))
    size = model.pretrained_cfg["input_size"][-1]
    argv = ["eval", "--model", name, "--checkpoint", str(weights), "--data", "synthetic", "--limit", "6"]
    assert main([*argv, "--batch-size", "4", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert f"{name} (weights {weights}) on synthetic test (6 images)" in out and "top-1 " in out
    assert json.loads((tmp_path / "r.json").read_text())["top1"] == pytest.approx(
        _expected_top1(model, size, 6, 4)
    )


def test_analyze_takes_a_model_with_plain_weights(tmp_path, capsys):
    model = _noisy("mlp_spe_xt_cifar", num_classes=10)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    argv = ["analyze", "--model", "mlp_spe_xt_cifar", "--checkpoint", str(tmp_path / "w.safetensors")]
    assert (
        main([*argv, "--data", "synthetic", "--limit", "6", "--out", str(tmp_path / "a"), "--no-plots"]) == 0
    )
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["images"] == 6
    assert 100 * report["accuracy"] == pytest.approx(_expected_top1(model, 32, 6, 100))


def test_plain_weights_need_a_data_set(tmp_path, capsys):
    save_file(_noisy("mlp_spe_xt_cifar").state_dict(), tmp_path / "w.safetensors")
    assert main(["eval", "--model", "mlp_spe_xt_cifar", "--checkpoint", str(tmp_path / "w.safetensors")]) == 2
    assert "needs --data" in capsys.readouterr().err
