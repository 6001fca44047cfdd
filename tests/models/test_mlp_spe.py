"""MLP-SPE / MLP-S models: the parameter and MAC counts of docs/mlp_spe.md#variants, binary spikes, the skip
wiring, gradients, determinism and clear errors.

224 x 224 variants are built on the meta device (shapes only) for counting, and run at img_size=64 for
forward/backward, so the file stays fast.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import spikemlp
from spikemlp.analysis.macs import macs_per_step
from spikemlp.models.mlp_spe import MLPSPE

ALL_VARIANTS = spikemlp.models.list_models("mlp*")
IMAGENET_VARIANTS = ["mlp_spe_t", "mlp_spe_s", "mlp_s", "mlp_spe_b"]
CIFAR_VARIANTS = ["mlp_spe_t_cifar", "mlp_spe_s_cifar", "mlp_spe_xt_cifar"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name, **kw):
    with torch.device("meta"):
        return spikemlp.models.create(name, **kw)


def spec_param_count(d, depths, grid, classes, patch=4, spe=True, alpha=3, in_chans=3):
    """Parameters of docs/mlp_spe.md#network and #variants counted by hand (BN: weight + bias; convs without
    bias)."""
    total = in_chans * d * patch * patch + 2 * d  # stem conv + BN
    for i, depth in enumerate(depths):
        c, n = d * 2**i, grid // 2**i
        if i > 0 and spe:
            cin, node = c // 2, c // 3
            total += 3 * (cin * node * 9 + 2 * node) + 2 * (node * node * 9 + 2 * node)
        elif i > 0:
            total += (c // 2) * c * 4 + 2 * c
        token = 2 * (n * n + n) + 2 * 2 * n + 3 * c * c + 2 * c + (0 if spe else 2 * c)
        channel = c * alpha * c + alpha * c + 2 * n * n + alpha * c * c + c + 2 * n * n
        total += depth * (token + channel)
    c3 = d * 2 ** (len(depths) - 1)
    return total + 2 * c3 + c3 * classes + classes


# --- counts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, classes, expected_m",
    [
        ("mlp_spe_t", 1000, 25.229),
        ("mlp_spe_t", 10, 24.610),
        ("mlp_spe_t", 100, 24.667),
        ("mlp_spe_s", 1000, 37.976),
        ("mlp_spe_s", 10, 37.214),
        ("mlp_s", 1000, 34.507),
        ("mlp_s", 10, 33.746),
    ],
)
def test_parameter_counts_equal_spec(name, classes, expected_m):
    assert round(n_params(meta_model(name, num_classes=classes)) / 1e6, 3) == expected_m


def test_paper_cifar_protocol_is_the_imagenet_model_at_224():
    model = meta_model("mlp_spe_t", img_size=224, num_classes=10)
    assert round(n_params(model) / 1e6, 3) == 24.610
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_parameter_counts_follow_the_architecture_formula(name):
    model = meta_model(name)
    grid = model.img_size[0] // model.patch_size
    expected = spec_param_count(
        model.embed_dim, model.depths, grid, model.num_classes, model.patch_size, spe=model.spe
    )
    assert n_params(model) == expected


def test_mlp_spe_b_is_the_documented_66m_choice():
    model = meta_model("mlp_spe_b")
    assert (model.embed_dim, model.depths) == (108, (2, 10, 24, 2))
    assert round(n_params(model) / 1e6, 1) == 65.6


def _mac_groups(model):
    groups = {"stem": 0, "spe": 0, "token": 0, "channel": 0, "head": 0}
    for name, macs in macs_per_step(model).items():
        if name.startswith("stem."):
            groups["stem"] += macs
        elif ".encoder." in name:
            groups["spe"] += macs
        elif ".token_mix." in name:
            groups["token"] += macs
        elif ".channel_mix." in name:
            groups["channel"] += macs
        else:
            assert name == "head", name
            groups["head"] += macs
    return groups


def test_macs_per_step_equal_spec_for_mlp_spe_t():
    g = _mac_groups(meta_model("mlp_spe_t"))
    assert round(sum(g.values()) / 1e9, 3) == 4.983
    assert {k: round(g[k] / 1e9, 3) for k in ("stem", "spe", "token", "channel")} == {
        "stem": 0.012,
        "spe": 0.372,
        "token": 1.623,
        "channel": 2.976,
    }


@pytest.mark.parametrize("name, expected_g", [("mlp_spe_s", 7.507), ("mlp_s", 7.117)])
def test_macs_per_step_equal_spec(name, expected_g):
    assert round(sum(macs_per_step(meta_model(name)).values()) / 1e9, 3) == expected_g


@pytest.mark.parametrize(
    "name, imagenet",
    [("mlp_spe_t_cifar", "mlp_spe_t"), ("mlp_spe_s_cifar", "mlp_spe_s"), ("mlp_spe_xt_cifar", "mlp_spe_t")],
)
def test_cifar_variants_cost_at_most_a_tenth_of_the_224_protocol(name, imagenet):
    model = meta_model(name)
    assert model.img_size == (32, 32) and model.num_classes == 10
    cifar = sum(macs_per_step(model).values())
    protocol = sum(macs_per_step(meta_model(imagenet, num_classes=10)).values())
    assert cifar <= protocol / 10


def test_meta_device_counts_equal_real_counts():
    """The `spikemlp models` listing counts on the meta device; it must agree with a real model."""
    real = spikemlp.models.create("mlp_spe_xt_cifar")
    assert macs_per_step(real) == macs_per_step(meta_model("mlp_spe_xt_cifar"))
    assert n_params(real) == n_params(meta_model("mlp_spe_xt_cifar"))


# --- behaviour --------------------------------------------------------------------------------------------


def _small_kwargs(name):
    return {} if name in CIFAR_VARIANTS else {"img_size": 64}


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_forward_backward_reaches_every_parameter(name):
    model = spikemlp.models.create(name, T=1, **_small_kwargs(name))
    size = model.img_size[0]
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["mlp_spe_t", "mlp_s"])
def test_every_synaptic_layer_sees_binary_spikes(name):
    """MFI: every conv/linear input is in {0, 1}, except the stem (pixels) and the classifier."""
    model = spikemlp.models.create(name, img_size=64, T=2, num_classes=10)
    seen = {}

    def check(mod, inputs, out, name):
        x = inputs[0].detach()
        seen[name] = bool(((x == 0) | (x == 1)).all()), float(x.mean())

    for n, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(lambda mod, i, o, n=n: check(mod, i, o, n))
    model(torch.randn(2, 3, 64, 64))
    synaptic = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sorted(seen) == sorted(synaptic)  # every layer ran
    assert seen.pop("stem.conv")[0] is False and seen.pop("head")[0] is False
    assert all(binary for binary, _ in seen.values()), [n for n, (b, _) in seen.items() if not b]
    assert any(0 < rate < 1 for _, rate in seen.values())


def _lif(x):
    v, out = torch.zeros_like(x[0]), []
    for xt in x:
        h = v + (xt - v) / 2.0
        s = (h >= 1.0).to(x.dtype)
        v = h * (1.0 - s)
        out.append(s)
    return torch.stack(out)


def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 0.5)


def test_forward_follows_spec_wiring():
    """Re-wire the model's own blocks by the equations of docs/mlp_spe.md#network, with the stem computed
    naively T times."""
    T = 3
    model = MLPSPE(
        img_size=16, patch_size=2, embed_dim=6, depths=(1, 2), num_classes=5, T=T, backend="reference"
    ).double()
    _randomize_bn(model)
    naive_stem_bn = nn.BatchNorm2d(6).double()
    naive_stem_bn.load_state_dict(model.stem.bn.state_dict())
    images = torch.randn(4, 3, 16, 16, dtype=torch.float64)

    logits = model.forward_steps(images)

    # reference: the image repeated T times through conv + BN on the merged [T*B] batch
    x = F.conv2d(images.repeat(T, 1, 1, 1), model.stem.conv.weight, stride=2)
    h = naive_stem_bn(x).unflatten(0, (T, 4))
    for i, stage in enumerate(model.stages):
        if i > 0:
            h = stage.encoder(x)
        x = _lif(h)
        for block in stage.blocks:
            u = block.token_mix(x)
            x = _lif(h + u)
            x = _lif(h + u + block.channel_mix(x))
    feats = model.head_norm(x.flatten(0, 1)).mean((2, 3))
    ref = F.linear(feats, model.head.weight, model.head.bias).unflatten(0, (T, 4))

    torch.testing.assert_close(logits, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.stem.bn.running_var, naive_stem_bn.running_var)
    torch.testing.assert_close(model.stem.bn.running_mean, naive_stem_bn.running_mean)


def test_forward_is_the_mean_of_forward_steps_and_t_can_change():
    model = spikemlp.models.create("mlp_spe_xt_cifar", T=2).eval()
    x = torch.randn(3, 3, 32, 32)
    steps = model.forward_steps(x)
    assert steps.shape == (2, 3, 10)
    torch.testing.assert_close(model(x), steps.mean(0))
    model.T = 5
    assert model.forward_steps(x).shape == (5, 3, 10)


def test_deterministic_for_a_fixed_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = spikemlp.models.create("mlp_spe_xt_cifar", T=2)
        x = torch.randn(2, 3, 32, 32)
        outs.append((model(x), model.state_dict()))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    for k, v in outs[0][1].items():
        assert torch.equal(v, outs[1][1][k]), k


def test_float64_runs_through_the_reference_neuron():
    model = spikemlp.models.create("mlp_spe_xt_cifar", T=2, backend="reference").double()
    out = model(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_grad_checkpointing_changes_nothing_but_memory():
    """Same logits, gradients and BN buffers (the recomputation must not update running stats twice)."""
    kw = dict(img_size=16, patch_size=2, embed_dim=6, depths=(1, 2), num_classes=5, T=2, backend="reference")
    torch.manual_seed(0)
    a = MLPSPE(**kw).double()
    b = MLPSPE(**kw).double()
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    out_a, out_b = a(x), b(x)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)
    for (n, ba), bb in zip(a.named_buffers(), b.buffers()):
        torch.testing.assert_close(ba, bb, msg=n)


def test_timm_api():
    model = timm.create_model("mlp_spe_xt_cifar", num_classes=7, T=2, embed_dim=24, depths=(1, 1, 1, 1))
    assert isinstance(model, MLPSPE) and (model.embed_dim, model.depths) == (24, (1, 1, 1, 1))
    assert model.pretrained_cfg["classifier"] == "head" and model.get_classifier().out_features == 7
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 2, 24 * 8, 2, 2)
    assert set(feats.unique().tolist()) <= {0.0, 1.0}
    assert model.forward_head(feats, pre_logits=True).shape == (2, 24 * 8)
    model.reset_classifier(0)
    assert model(x).shape == (2, 24 * 8)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    assert "mlp_spe_t" in timm.list_models("mlp_spe*")


def test_img_size_override_updates_the_cfg():
    model = meta_model("mlp_spe_t", img_size=64, num_classes=10)
    assert model.pretrained_cfg["input_size"] == (3, 64, 64)
    assert model.stages[0].blocks[0].channel_mix.norm1.num_features == 16 * 16


def test_channel_bn_option():
    model = spikemlp.models.create("mlp_spe_xt_cifar", channel_bn="channel", T=1)
    bn = model.stages[0].blocks[0].channel_mix.norm1
    assert bn.num_features == 48 * 3
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --- errors -----------------------------------------------------------------------------------------------


def test_wrong_image_size_is_a_clear_error():
    model = spikemlp.models.create("mlp_spe_xt_cifar", T=1)
    with pytest.raises(
        ValueError, match=r"expects images \[B, 3, 32, 32\], got \[2, 3, 64, 64\].*img_size=64"
    ):
        model(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="the time axis is added by the model"):
        model(torch.randn(1, 2, 3, 32, 32))


def test_channels_not_divisible_by_three_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"embed_dim=80 gives stage widths \[80, 160, 320, 640\].*multiple of 3"
    ):
        meta_model("mlp_spe_t", embed_dim=80)
    assert n_params(meta_model("mlp_s", embed_dim=80)) > 0  # MLP-S has no SPE cell and no such constraint


def test_img_size_not_divisible_is_a_clear_error():
    with pytest.raises(ValueError, match=r"img_size \(100, 100\) is not divisible by 32"):
        meta_model("mlp_spe_t", img_size=100)


def test_unknown_variant_lists_close_matches():
    with pytest.raises(ValueError, match="unknown model 'mlp_spe_tt'; did you mean mlp_spe_t"):
        spikemlp.models.create("mlp_spe_tt")
    with pytest.raises(ValueError, match="did you mean .*mlp_spe_t_cifar"):
        spikemlp.models.create("mlp_spe_cifar_t")


@pytest.mark.parametrize("recompute", [True, False])
def test_training_memory_savings_change_nothing(monkeypatch, recompute):
    """Fused BN + LIF, bool-saved spikes and recomputed projections give the plain path's results."""
    from spikemlp.neurons import bn_lif

    kw = dict(img_size=16, patch_size=2, embed_dim=6, depths=(1, 2), num_classes=5, T=2)
    torch.manual_seed(0)
    fast = MLPSPE(**kw)
    fast.set_projection_recompute(recompute)
    _randomize_bn(fast)
    plain = MLPSPE(**kw)
    plain.load_state_dict(fast.state_dict())
    plain.compact_spikes = False
    x = torch.randn(3, 3, 16, 16)
    out_fast = fast(x)
    out_fast.square().sum().backward()
    with monkeypatch.context() as m:
        m.setattr(bn_lif, "_fusable", lambda *args: False)
        out_plain = plain(x)
        out_plain.square().sum().backward()
    torch.testing.assert_close(out_fast, out_plain, rtol=0, atol=0)
    for (n, pa), pb in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=0, atol=0, msg=n)
    for (n, ba), bb in zip(fast.named_buffers(), plain.buffers()):
        torch.testing.assert_close(ba, bb, rtol=0, atol=0, msg=n)


def _memory_of_blocks(model) -> list:
    from spikemlp.layers import AxialTokenMixing, ChannelMLP

    return [m.memory for m in model.modules() if isinstance(m, (AxialTokenMixing, ChannelMLP))]


def test_projection_recompute_switch():
    model = spikemlp.models.create("mlp_spe_xt_cifar", T=2)
    blocks = _memory_of_blocks(model)
    assert blocks and all(m.recompute_projection for m in blocks)
    model.set_projection_recompute(False)
    assert not any(m.recompute_projection for m in blocks)
    assert all(m.compact_spikes and m.fused_bn_lif for m in blocks)  # the other savings stay on


def test_memory_saving_false_turns_the_savings_off_with_the_same_results(monkeypatch):
    from spikemlp.neurons import bn_lif

    kw = dict(img_size=16, patch_size=2, embed_dim=6, depths=(1, 2), num_classes=5, T=2)
    torch.manual_seed(0)
    saving = MLPSPE(**kw)
    _randomize_bn(saving)
    fast = MLPSPE(**kw, memory_saving=False)
    fast.load_state_dict(saving.state_dict())
    blocks = _memory_of_blocks(fast)
    assert saving.compact_spikes and not fast.compact_spikes
    assert blocks and not any(m.recompute_projection or m.fused_bn_lif or m.compact_spikes for m in blocks)
    # The memory-saving model runs the fused BN + LIF functions; the other never asks for them.
    fused_calls = []
    for fn in (bn_lif._BatchNormLIF, bn_lif._ProjectionBatchNormLIF):
        monkeypatch.setattr(fn, "apply", lambda *a, real=fn.apply: fused_calls.append(1) or real(*a))
    x = torch.randn(3, 3, 16, 16)
    out_fast = fast(x)
    assert not fused_calls
    out_saving = saving(x)
    assert fused_calls
    out_saving.square().sum().backward()
    out_fast.square().sum().backward()
    torch.testing.assert_close(out_fast, out_saving, rtol=0, atol=0)
    for (n, pa), pb in zip(fast.named_parameters(), saving.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=0, atol=0, msg=n)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(T=2.5), r"T \(time steps\) must be an integer, got 2.5"),
        (dict(T="4"), "T .* must be an integer, got '4'"),
        (dict(T=True), "T .* must be an integer, got True"),
        (dict(T=0), r"T \(time steps\) must be at least 1, got 0"),
        (dict(num_classes=-1), "num_classes must be at least 0, got -1"),
        (dict(num_classes=10.0), "num_classes must be an integer"),
    ],
)
def test_wrong_time_steps_or_classes_are_refused_not_coerced(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spikemlp.models.create("mlp_spe_xt_cifar", **kwargs)
    if "num_classes" in kwargs:
        with pytest.raises(ValueError, match=match):
            spikemlp.models.create("mlp_spe_xt_cifar", T=1).reset_classifier(kwargs["num_classes"])


def test_fashion_mnist_images_get_advice_the_model_accepts():
    """28x28 grayscale images on a CIFAR model: the advised img_size must be one the model can be built at
    (28 is not: its grid cannot halve at every stage)."""
    import re

    small = dict(num_classes=10, T=1, embed_dim=24, depths=(1, 1, 1, 1))
    images = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError) as err:
        timm.create_model("mlp_spe_xt_cifar", **small)(images)
    advice = re.search(r"create the model with img_size=(\d+) and in_chans=(\d+)", str(err.value))
    assert advice and "resizing the images to 32" in str(err.value), err.value
    size, chans = int(advice[1]), int(advice[2])
    assert (size, chans) == (32, 1)
    model = timm.create_model("mlp_spe_xt_cifar", img_size=size, in_chans=chans, **small)
    assert model(F.interpolate(images, size=size)).shape == (2, 10)
