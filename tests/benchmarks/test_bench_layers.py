"""benchmarks/bench_layers.py and the firing-rate shift of bench_models.set_firing_batch_norm, on a tiny
model: the rates it measures, the calls it attributes to each layer kind, the plot. No timing is asserted."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

_BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(_BENCHMARKS) not in sys.path:  # bench_layers imports bench_models by name
    sys.path.insert(0, str(_BENCHMARKS))

import bench_layers  # noqa: E402
import bench_models  # noqa: E402

TINY = ("mlp_spe_xt_cifar", 32, 2)  # model, image size, T


@pytest.fixture(scope="module")
def images():
    return bench_models.make_batch(2, 32, 10, "cpu")[0]


def _model(shift: float | None = None):
    model = bench_models.build_spikemlp(*TINY, 10).eval()
    if shift is not None:
        bench_models.set_firing_batch_norm(model, shift)
    return model


def test_shift_zero_keeps_the_benchmark_weights():
    shifted, plain = _model(0.0).state_dict(), _model().state_dict()
    assert all(torch.equal(shifted[k], plain[k]) for k in plain)


def test_a_positive_shift_raises_every_kinds_firing_rate(images):
    low, base, high = (bench_layers.firing_rates(_model(s), images) for s in (-0.5, 0.0, 0.5))
    assert set(base) == set(bench_layers.LAYER_KINDS)
    for kind in bench_layers.LAYER_KINDS:
        assert low[kind] < base[kind] < high[kind], kind
        assert 0.05 <= base[kind] <= 0.35, f"{kind} fires at {base[kind]:.3f} at the benchmark setting"


def test_rates_are_measured_without_leaving_hooks(images):
    model = _model()
    bench_layers.firing_rates(model, images)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def test_timed_layers_attribute_the_kernel_calls_and_restore_everything(images):
    import spikemlp

    deployed = spikemlp.deploy(_model())
    matmul = importlib.import_module("spikemlp.layers.spike_matmul")
    blocks = importlib.import_module("spikemlp.layers.spike_kernel_blocks")
    originals = matmul.spike_matmul, blocks.folded_axial_map
    with bench_layers.timed_layers(deployed.model, deployed=True) as timer:
        with torch.inference_mode():
            deployed(images)
    # xt_cifar: 6 blocks (depths 1, 1, 3, 1), 3 SPE encoders of 5 convolutions; one call per layer
    assert timer.calls == {
        "token_proj_h": 6, "token_proj_w": 6, "token_fuse": 6, "channel_fc1": 6, "channel_fc2": 6,
        "encoder_conv": 15,
    }  # fmt: skip
    assert all(timer.seconds[kind] > 0 for kind in bench_layers.LAYER_KINDS)
    assert (matmul.spike_matmul, blocks.folded_axial_map) == originals
    assert not any("forward" in vars(m) for m in deployed.modules())


def test_dense_timing_includes_the_bns_and_the_hidden_neuron(images):
    model = _model()
    with bench_layers.timed_layers(model, deployed=False) as timer:
        with torch.inference_mode():
            model(images)
    # per block: the map and its BN (two calls) per axis, fuse and fuse_norm, fc1 norm1 lif, fc2 norm2
    assert timer.calls["token_proj_h"] == timer.calls["token_fuse"] == timer.calls["channel_fc2"] == 12
    assert timer.calls["channel_fc1"] == 18
    assert timer.calls["encoder_conv"] == 30
    assert not any("forward" in vars(m) for m in model.modules())


def test_measure_point_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    point = bench_layers.measure_point(*TINY, batch=1, shift=0.0, repeats=1)
    for key in ("firing_rate", "deployed_ms", "dense_ms", "dense_over_deployed"):
        assert set(point[key]) == set(bench_layers.LAYER_KINDS), key
    config = {"model": TINY[0], "img_size": TINY[1], "T": TINY[2], "batch": 1, "points": [point, point]}
    report = {"threads": 1, "configs": [config]}
    path = tmp_path / "layers.png"
    assert bench_layers.plot_layers(report, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "whole forward" in bench_layers.layers_table(report)


def test_command_line_with_plot(tmp_path):
    import json
    import os
    import subprocess

    pytest.importorskip("matplotlib")
    env = {**os.environ, "PYTHONPATH": str(_BENCHMARKS.parent / "src"), "OMP_NUM_THREADS": "1"}
    plot = tmp_path / "layers.png"
    out = subprocess.run(
        [sys.executable, str(_BENCHMARKS / "bench_layers.py"), "--models", "mlp_spe_xt_cifar", "--batch", "1",
         "--repeats", "1", "--threads", "1", "--shifts=-0.3,0.3", "--plot", str(plot)],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    report, _ = json.JSONDecoder().raw_decode(out.stdout)
    (config,) = report["configs"]
    assert [p["shift"] for p in config["points"]] == [-0.3, 0.3]
    assert report["plot"] == str(plot) and plot.stat().st_size > 0
