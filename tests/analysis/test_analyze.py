"""analyze() and ``spikemlp analyze``: every file for both families, readable PNGs, a checkpoint round trip,
clear errors; and the dense MAC count cross-checked against fvcore."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import timm
import torch
from PIL import Image

from spikemlp.analysis import PLOT_FILES, REPORT_FILES, analyze, macs_per_step
from spikemlp.cli import main


def _check_outputs(out, report):
    for name in REPORT_FILES + PLOT_FILES:
        assert (out / name).is_file(), name
    umask = os.umask(0)
    os.umask(umask)
    for name in REPORT_FILES:  # written atomically through a private temporary file, then opened up
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    for name in PLOT_FILES:
        with Image.open(out / name) as img:
            img.verify()
        with Image.open(out / name) as img:
            assert img.format == "PNG" and min(img.size) > 100
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["network"] == pytest.approx(report["network"])
    assert on_disk["plots"] == list(PLOT_FILES)
    md = (out / "report.md").read_text()
    assert all(f"]({p})" in md for p in PLOT_FILES)


def test_analyze_writes_every_file_for_mlp_spe(tiny_mlp_spe, random_batches, tmp_path):
    report = analyze(
        tiny_mlp_spe, random_batches, tmp_path / "spe", limit=8, classes=[f"c{i}" for i in range(10)]
    )
    assert report["images"] == 8  # limit cuts the second batch
    _check_outputs(tmp_path / "spe", report)


def test_analyze_writes_every_file_for_snn_mlp(tiny_snn_mlp, random_batches, tmp_path):
    report = analyze(tiny_snn_mlp, random_batches, tmp_path / "snn")
    _check_outputs(tmp_path / "snn", report)
    assert any("group LIF" in n.lower() or "Group-LIF" in n for n in report["notes"])


def test_analyze_rejects_an_empty_loader_and_a_bad_limit(tiny_mlp_spe, random_batches):
    with pytest.raises(ValueError, match="no images were analysed"):
        analyze(tiny_mlp_spe, [])
    with pytest.raises(ValueError, match="limit must be a positive number of images, got 0"):
        analyze(tiny_mlp_spe, random_batches, limit=0)


def test_cli_analyzes_a_training_checkpoint(tmp_path, capsys):
    from spikemlp import checkpoint as ckpt
    from spikemlp.train.config import from_dict, to_dict
    from spikemlp.train.trainer import build_model

    cfg = from_dict(
        {
            "model": "mlp_spe_xt_cifar",
            "data": "synthetic",
            "model_kwargs": {"embed_dim": 6, "depths": [1, 1, 1, 1]},
        }
    )
    model = build_model(cfg, 10)
    ckpt.save_checkpoint(
        tmp_path / "run" / "best",
        ckpt.plain_state_dict(model),
        ckpt.model_metadata(to_dict(cfg), 10, [f"class_{i}" for i in range(10)]),
    )
    out = tmp_path / "analysis"
    argv = ["analyze", "--checkpoint", str(tmp_path / "run"), "--limit", "6", "--batch-size", "3"]
    assert main(argv + ["--out", str(out), "--energy", "int8", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "mlp_spe_xt_cifar on synthetic test: 6 images" in printed and "MFI holds" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["energy"]["name"] == "int8" and report["images"] == 6
    assert (out / "report.md").is_file() and not (out / PLOT_FILES[0]).exists()
    assert "deployment" not in report
    # --deploy: the deployed model against the eval model on the same 6 images, in both reports.
    deployed_out = tmp_path / "deployed"
    assert main(argv + ["--out", str(deployed_out), "--no-plots", "--deploy"]) == 0
    assert "same predictions" in capsys.readouterr().out
    d = json.loads((deployed_out / "report.json").read_text())["deployment"]
    assert d["images"] == 6 and d["same_predictions"] == 6 and d["relative_difference"] < 0.01
    assert d["deployed_images_per_s"] > 0 and d["speedup"] > 0
    assert "## Deployed model (spikemlp.deploy)" in (deployed_out / "report.md").read_text()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["analyze", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["analyze", "--model", "mlp_spe_xt_cifar", "--out", str(tmp_path)]) == 2
    assert "--model needs --data" in capsys.readouterr().err
    argv = [
        "analyze",
        "--model",
        "mlp_spe_xt_cifar",
        "--data",
        "synthetic",
        "--limit",
        "0",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "--limit must be a positive number of images, got 0" in capsys.readouterr().err


def test_dense_macs_agree_with_fvcore():
    """Cross-check against fvcore's FlopCountAnalysis (a dev dependency), module by module.

    Convs and linear layers agree exactly. The H-axis projection of MLP-SPE is a broadcast matmul,
    W_h [N, N] @ x [M, C, N, W], and fvcore's matmul handle counts it as N * N * W, ignoring the batch
    dimensions (M, C) of the second operand; the true count is M * C * N * N * W, so for those modules
    ours is fvcore's times M * C (M = 1 image x 1 step here). SNN-MLP agrees everywhere.
    """
    fvcore_nn = pytest.importorskip("fvcore.nn")
    from spikemlp.layers import AxialProjection

    small = {"mlp_spe_xt_cifar": dict(embed_dim=6), "snn_mlp_xt_cifar": dict(embed_dim=8)}
    for name, kwargs in small.items():
        model = timm.create_model(name, depths=(1, 2, 1, 1), **kwargs).eval()
        ours = macs_per_step(model)
        if hasattr(model, "T"):
            model.T = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fca = fvcore_nn.FlopCountAnalysis(model, torch.zeros(1, 3, 32, 32))
            fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            by_module = fca.by_module_and_operator()
        for layer, macs in ours.items():
            theirs = by_module[layer]
            module = model.get_submodule(layer)
            if isinstance(module, AxialProjection) and module.axis == "h":
                dim = model.get_submodule(layer.rsplit(".", 1)[0]).fuse.out_channels  # C of the block
                assert macs == theirs["matmul"] * dim, layer
            else:
                assert macs == theirs.get("conv", 0) + theirs.get("linear", 0), layer
        if name.startswith("snn"):
            assert sum(ours.values()) == fca.by_operator()["conv"] + fca.by_operator()["linear"]
