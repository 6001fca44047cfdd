"""ONNX export: onnxruntime reproduces PyTorch's logits; the command line writes and checks a file."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import spikemlp  # noqa: F401  (registers the models)
from lively_bn import randomize_bn_lively
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


def _lively_mlp_spe() -> torch.nn.Module:
    # Random BN statistics and affine parameters, so that spikes reach every stage and the head.
    model = timm.create_model("mlp_spe_xt_cifar", embed_dim=6, depths=(1, 1, 1, 1), T=2)
    return randomize_bn_lively(model, torch.Generator().manual_seed(0)).eval()


def test_mlp_spe_exports_its_neurons_not_a_constant(tmp_path):
    from spikemlp.neurons import LIF

    model = _lively_mlp_spe()
    backends = [m.backend for m in model.modules() if isinstance(m, LIF)]
    path = tmp_path / "mlp_spe.onnx"
    summary = export_onnx(model, path, batch_size=4)
    assert summary["input_shape"] == [4, 3, 32, 32] and not summary["dynamic_batch"]
    assert [m.backend for m in model.modules() if isinstance(m, LIF)] == backends  # restored
    # Images other than the traced ones: a graph with the fused kernel baked in as a constant would fail.
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(images)
    assert expected.std(0).max() > 1e-3  # the logits depend on the image
    assert (_run(path, images) - expected).abs().max().item() <= 1e-4


def test_mlp_spe_exports_with_a_dynamic_batch(tmp_path):
    # Traced on 1 image; its merged time-batch reshapes must not record that size as a constant.
    model = _lively_mlp_spe()
    path = tmp_path / "dynamic.onnx"
    summary = export_onnx(model, path)
    assert summary["dynamic_batch"] and summary["max_abs_diff"] <= 1e-4
    for n in (1, 2, 3):
        images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(10 + n))
        with torch.no_grad():
            expected = model(images)
        assert (_run(path, images) - expected).abs().max().item() <= 1e-4


class _FixedBatch(torch.nn.Module):
    """A model whose trace records its batch size: ``len`` is a Python int to the tracer."""

    def forward(self, images):
        n = len(images)
        return images.reshape(n, -1).reshape(n, 3, 8, 8).flatten(1)[:, :10]


def test_a_graph_that_fixed_its_batch_is_refused_with_advice(tmp_path):
    # The check runs a batch of 2 through a graph traced on 1 image: a graph that fixed the batch fails.
    model = _FixedBatch()
    model.pretrained_cfg = {"input_size": (3, 8, 8)}
    with pytest.raises(ValueError, match=r"fixed the batch size while tracing: .*--batch-size N"):
        export_onnx(model, tmp_path / "dynamic.onnx")
    assert not (tmp_path / "dynamic.onnx").exists()  # a file that failed its check is removed


def test_the_check_runs_two_batch_sizes_when_dynamic(tmp_path, monkeypatch):
    from spikemlp.export import onnx_export

    seen = []
    real = onnx_export.max_abs_diff_onnxruntime
    monkeypatch.setattr(
        onnx_export, "max_abs_diff_onnxruntime", lambda p, x, e: seen.append(len(x)) or real(p, x, e)
    )
    summary = export_onnx(timm.create_model("snn_mlp_xt_cifar"), tmp_path / "xt.onnx")
    assert seen == [2, 3] and summary["dynamic_batch"] and summary["max_abs_diff"] <= 1e-4


def test_cli_exports_mlp_spe_with_a_dynamic_batch(tmp_path, capsys):
    # The default export of the full mlp_spe_xt_cifar, with weights that make spikes reach the head.
    model = timm.create_model("mlp_spe_xt_cifar")
    model = randomize_bn_lively(model, torch.Generator().manual_seed(1)).eval()
    weights = tmp_path / "spe.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "spe.onnx"
    assert main(["export", "onnx", "mlp_spe_xt_cifar", str(out), "--checkpoint", str(weights)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["dynamic_batch"] and summary["input_shape"] == [1, 3, 32, 32]
    assert summary["max_abs_diff"] <= 1e-4
    for n in (1, 2, 3):
        images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            expected = model(images)
        assert (_run(out, images) - expected).abs().max().item() <= 1e-4
    assert expected.std(0).max() > 1e-3  # the logits depend on the image


class _Opaque(torch.nn.Module):
    """A model whose work happens outside torch, so the tracer records its output as a constant."""

    def forward(self, images):
        return torch.from_numpy(images.numpy().reshape(len(images), -1)[:, :10].copy())


def test_a_graph_that_ignores_its_input_is_refused(tmp_path):
    model = _Opaque()
    model.pretrained_cfg = {"input_size": (3, 8, 8)}
    with pytest.raises(ValueError, match="ignores its input"):
        export_onnx(model, tmp_path / "opaque.onnx", check=False)
    assert not (tmp_path / "opaque.onnx").exists()


def test_cli_exports_a_training_run_with_its_own_configuration(tmp_path, capsys):
    from spikemlp import checkpoint as ckpt
    from spikemlp.train.config import from_dict, to_dict
    from spikemlp.train.trainer import build_model

    cfg = from_dict(
        {
            "model": "mlp_spe_xt_cifar",
            "data": "synthetic",
            "T": 2,
            "model_kwargs": {"embed_dim": 6, "depths": [1, 1, 1, 1]},
        }
    )
    model = build_model(cfg, 10)
    lively = _lively_mlp_spe()
    model.load_state_dict(lively.state_dict())
    ckpt.save_checkpoint(
        tmp_path / "run" / "best",
        ckpt.plain_state_dict(model),
        ckpt.model_metadata(to_dict(cfg), 10, [f"class_{i}" for i in range(10)]),
    )
    out = tmp_path / "run.onnx"
    argv = ["export", "onnx", "mlp_spe_xt_cifar", str(out), "--checkpoint", str(tmp_path / "run")]
    assert main(argv + ["--batch-size", "3"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["max_abs_diff"] <= 1e-4
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = lively(images)
    assert (_run(out, images) - expected).abs().max().item() <= 1e-4  # the run's width, depths and T

    argv[2] = "mlp_spe_t_cifar"
    assert main(argv + ["--batch-size", "3"]) == 2
    assert "holds a mlp_spe_xt_cifar model, not mlp_spe_t_cifar" in capsys.readouterr().err
