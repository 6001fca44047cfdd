"""fold(): every BatchNorm of MLP-SPE/MLP-S folded into weights, biases or thresholds, same logits."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from spikemlp.mfi import FoldedMLPSPE, ThresholdLIF, accumulate_only, bn_affine, fold
from spikemlp.mfi.accumulate import PerTokenLinear
from spikemlp.neurons import LIF


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    "kwargs", [dict(), dict(spe=False), dict(channel_bn="channel")], ids=["mlp_spe", "mlp_s", "channel_bn"]
)
def test_folded_logits_equal_unfolded_in_float64(make_lively, kwargs):
    model = make_lively(**kwargs)
    images = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = model(images)
        folded = fold(model)
        got = folded(images)
    assert isinstance(folded, FoldedMLPSPE) and not folded.training
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert _max_rel(got, expected) < 1e-6
    # The original model is untouched (fold works on a copy).
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_fold_uses_per_token_thresholds_and_weight_copies(make_lively):
    model = make_lively()
    folded = fold(model)
    block = folded.stages[0].blocks[0].channel_mix
    tokens = model.stages[0].blocks[0].channel_mix.num_tokens  # 16 x 16
    assert isinstance(block.lif, ThresholdLIF) and block.lif.threshold.shape == (tokens, 1)
    assert isinstance(block.fc2, PerTokenLinear) and block.fc2.weight.shape == (tokens, 6, 18)
    # Token p's copy of fc2 is a_p W (a_p = gamma_p / sqrt(var_p + eps) of the second per-token BN).
    a, _ = bn_affine(model.stages[0].blocks[0].channel_mix.norm2)
    w = model.stages[0].blocks[0].channel_mix.fc2.weight
    torch.testing.assert_close(block.fc2.weight[5], a[5] * w)


@pytest.mark.parametrize("scale", [2.5, -0.7, 0.0])
def test_threshold_lif_equals_lif_of_affine_input(scale):
    # LIF(a z + d) == ThresholdLIF(sign(a) z + d/|a|, V_th/|a|) spike for spike, for a > 0, a < 0, a = 0.
    torch.manual_seed(1)
    z = torch.randn(6, 50, 8, dtype=torch.float64) * 2
    a = torch.full((8,), scale, dtype=torch.float64)
    a[0] = 1.3
    d = torch.linspace(-0.5, 1.5, 8, dtype=torch.float64)
    lif = LIF()
    expected = lif(a * z + d)
    got = ThresholdLIF.from_lif(lif, a, d)(z)
    assert torch.equal(got, expected)
    assert 0 < float(expected.mean()) < 1


def test_fold_rejects_other_models_with_a_reason():
    snn = timm.create_model("snn_mlp_xt_cifar", embed_dim=8, depths=(1, 1, 1, 1))
    with pytest.raises(TypeError, match="SNN-MLP normalises with GroupNorm"):
        fold(snn)
    with pytest.raises(TypeError, match="fold supports MLP-SPE/MLP-S models"):
        fold(nn.Linear(2, 2))


def test_fold_refuses_a_folded_model_and_accumulate_needs_one(make_lively):
    model = make_lively()
    folded = fold(model)
    with pytest.raises(ValueError, match="already folded"):
        fold(folded)
    headless = make_lively()
    headless.reset_classifier(0)
    with pytest.raises(ValueError, match=r"fold needs the classifier .* \(num_classes=0\)"):
        fold(headless)
    with pytest.raises(TypeError, match=r"call spikemlp.mfi.fold\(model\) first"):
        accumulate_only(model)
