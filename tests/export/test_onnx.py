"""ONNX export: onnxruntime reproduces PyTorch's logits; the command line writes and checks a file."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import spikemlp  # noqa: F401  (registers the models)
from spikemlp.cli import main
from spikemlp.convert.snn_mlp import from_spikemlp
from spikemlp.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run(path, images: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


def test_snn_mlp_t_at_224_matches_pytorch(tmp_path):
    model = timm.create_model("snn_mlp_t").eval()
    path = tmp_path / "snn_mlp_t.onnx"
    summary = export_onnx(model, path, check=False)
    assert summary["input_shape"] == [1, 3, 224, 224]
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(images)
    assert (_run(path, images) - expected).abs().max().item() <= 1e-4
    graph = onnx.load(str(path)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}  # standard operators only
    assert {"Greater", "Where"} <= {n.op_type for n in graph.node}  # the LIF is in the graph


def test_cli_exports_a_checkpoint_with_a_dynamic_batch(tmp_path, capsys):
    model = timm.create_model("snn_mlp_xt_cifar").eval()
    with torch.no_grad():
        for p in model.parameters():  # weights that differ from a fresh model's
            p.add_(0.05 * torch.randn_like(p))
    weights = tmp_path / "authors_layout.pt"
    torch.save(from_spikemlp(model.state_dict()), weights)
    out = tmp_path / "xt.onnx"

    assert main(["export", "onnx", "snn_mlp_xt_cifar", str(out), "--checkpoint", str(weights)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["max_abs_diff"] <= 1e-4 and summary["input_shape"] == [1, 3, 32, 32]

    images = torch.randn(3, 3, 32, 32)  # a batch size other than the traced one
    with torch.no_grad():
        expected = model(images)
    assert (_run(out, images) - expected).abs().max().item() <= 1e-4  # the checkpoint's weights


def test_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    rc = main(["export", "onnx", "snn_mlp_xt_cifar", str(tmp_path / "m.onnx"), "--checkpoint", "nope.pt"])
    assert rc == 2
    assert "checkpoint not found: nope.pt" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_reports_an_unknown_model(tmp_path, capsys):
    assert main(["export", "onnx", "snn_mlp_tt", str(tmp_path / "m.onnx")]) == 2
    assert "did you mean" in capsys.readouterr().err
