"""MLP-SPE with the spike-driven inference path (set_spike_kernels): the same model, faster on the CPU.

In float64 the path must give the dense model's logits (its sums and BN folds differ only in the last
bits, far from any neuron's threshold); it must run only where no gradient is wanted and no hook watches
the layers it replaces, and leave training untouched.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spikemlp
from lively_bn import randomize_bn_lively
from spikemlp.layers import spike_matmul
from spikemlp.models.mlp_spe import MLPSPE

SMALL = dict(img_size=32, patch_size=2, embed_dim=12, depths=(1, 2, 1), num_classes=7, T=3)


@pytest.fixture
def kernel_built():
    reason = spike_matmul.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def kernel_calls(monkeypatch, kernel_built):
    calls = []
    real = spike_matmul.spike_matmul

    def counting(*args, **kwargs):
        calls.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(spike_matmul, "spike_matmul", counting)
    return calls


def lively(**kw) -> MLPSPE:
    torch.manual_seed(0)
    model = MLPSPE(**{**SMALL, **kw}).double()
    return randomize_bn_lively(model, torch.Generator().manual_seed(4)).eval()


@pytest.mark.parametrize(
    "variant", [{}, {"channel_bn": "channel"}, {"spe": False}], ids=["mlp_spe", "channel_bn", "mlp_s"]
)
def test_same_logits_as_the_dense_model_in_float64(variant, kernel_calls):
    model = lively(**variant)
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rates = []
    hooks = [m.register_forward_hook(lambda m, i, o: rates.append(o.mean().item())) for m in model.modules()
             if type(m).__name__ == "LIF"]  # fmt: skip
    with torch.inference_mode():
        dense = model(images)
    for h in hooks:
        h.remove()
    assert min(rates) > 0.01 and max(rates) < 0.9  # neurons fire everywhere: spikes matter to the check
    assert not kernel_calls
    model.set_spike_kernels(True)
    with torch.inference_mode():
        fast = model(images)
    blocks = sum(SMALL["depths"])
    assert len(kernel_calls) == 3 * blocks  # per block: fc1, fc2 and the fuse convolution
    torch.testing.assert_close(fast, dense, rtol=1e-10, atol=1e-10)


def test_float32_agrees_with_the_dense_model(kernel_calls):
    model = lively().float()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        dense = model(images)
        model.set_spike_kernels(True)
        fast = model(images)
    assert kernel_calls
    # float32 sums in another order may flip a neuron sitting at its threshold; the logits stay close.
    assert torch.equal(fast.argmax(1), dense.argmax(1))
    torch.testing.assert_close(fast, dense, rtol=0, atol=0.05)


def test_training_and_gradients_are_untouched(kernel_calls):
    plain = lively().float().train()
    fast = lively(spike_kernels=True).float().train()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    out_plain, out_fast = plain(images), fast(images)
    out_plain.square().sum().backward()
    out_fast.square().sum().backward()
    assert not kernel_calls  # gradients wanted: the layers run as usual
    torch.testing.assert_close(out_fast, out_plain, rtol=0, atol=0)
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=name)


def test_eval_with_autograd_or_hooks_runs_the_layers(kernel_calls):
    model = lively(spike_kernels=True)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    model(images).sum().backward()  # eval mode, but gradients wanted
    assert not kernel_calls and model.stages[0].blocks[0].channel_mix.fc1.weight.grad is not None
    seen = set()
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.register_forward_hook(lambda m, i, o, name=name: seen.add(name))
    with torch.no_grad():
        model(images)
    assert not kernel_calls  # analysis tools hook the synaptic layers: each runs as itself
    assert "stages.0.blocks.0.channel_mix.fc2" in seen and "stages.0.blocks.0.token_mix.fuse" in seen


def test_training_mode_batch_statistics_fall_back(kernel_calls):
    model = lively(spike_kernels=True).train()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert not kernel_calls  # BN normalises with batch statistics: no fixed epilogue


def _block_kinds(model) -> set[str]:
    """The kind of each token and channel block of the model: "kernel" or "dense"."""
    from spikemlp.layers import AxialTokenMixing, ChannelMLP
    from spikemlp.layers.spike_kernel_blocks import SpikeKernelChannelMLP, SpikeKernelTokenMixing

    kernel = (SpikeKernelChannelMLP, SpikeKernelTokenMixing)
    blocks = [m for m in model.modules() if isinstance(m, (AxialTokenMixing, ChannelMLP))]
    assert len(blocks) == 2 * sum(model.depths)
    return {"kernel" if isinstance(m, kernel) else "dense" for m in blocks}


def test_switch_and_timm_argument():
    model = spikemlp.models.create("mlp_spe_xt_cifar", T=1, spike_kernels=True)
    assert model.spike_kernels and _block_kinds(model) == {"kernel"}
    model.set_spike_kernels(False)
    assert not model.spike_kernels and _block_kinds(model) == {"dense"}
    assert not spikemlp.models.create("mlp_spe_xt_cifar", T=1).spike_kernels  # off by default


def test_switching_off_frees_the_packed_weights(kernel_built):
    model = lively()
    model.set_spike_kernels(True)
    with torch.inference_mode():
        model(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    mlp = model.stages[0].blocks[0].channel_mix
    assert mlp._packed[0].wt is not None and mlp._packed[0].table is not None  # fc1: weights and table
    packed = [p for m in model.modules() if hasattr(m, "_packed") for p in m._packed]
    model.set_spike_kernels(False)
    assert packed and all(p.wt is None and p.table is None for p in packed)


def test_unbuildable_kernel_warns_and_runs_dense(monkeypatch):
    from spikemlp.ops import spike_matmul as spike_matmul_op
    from spikemlp.ops._build import NativeLibrary

    broken = NativeLibrary(spike_matmul_op._LIBRARY.source, lambda lib: None)
    broken._error = "the C++ kernel spike_matmul_cpu.cpp could not be built: boom"
    monkeypatch.setattr(spike_matmul_op, "_LIBRARY", broken)
    model = lively()
    with pytest.warns(RuntimeWarning, match="spike kernels requested, but .* could not be built: boom"):
        model.set_spike_kernels(True)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        fast = model(images)  # the dense layers: same logits
        model.set_spike_kernels(False)
        torch.testing.assert_close(fast, model(images), rtol=0, atol=0)


def test_a_model_that_ran_the_kernels_still_copies_and_pickles(kernel_calls, tmp_path):
    import copy
    import pickle

    model = lively(spike_kernels=True)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        before = model(images)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.no_grad():
            torch.testing.assert_close(clone(images), before, rtol=0, atol=0)


def test_the_hidden_neuron_runs_in_the_kernel_unless_observed(monkeypatch, kernel_built):
    # Unobserved, the channel MLP's neuron runs in fc1's epilogue (its layer is never called); with a
    # hook on it (as the firing-rate analysis installs), it runs as itself, and sees the same spikes.
    model = lively()
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    fused = []
    real = spike_matmul.spike_matmul
    monkeypatch.setattr(
        spike_matmul, "spike_matmul", lambda *a, **k: fused.append(k.get("neuron")) or real(*a, **k)
    )
    with torch.inference_mode():
        dense = model(images)
        model.set_spike_kernels(True)
        fast = model(images)
    blocks = sum(SMALL["depths"])
    assert sum(n is not None for n in fused) == blocks
    torch.testing.assert_close(fast, dense, rtol=1e-10, atol=1e-10)
    hidden = model.stages[1].blocks[0].channel_mix.lif
    seen = []
    hidden.register_forward_hook(lambda m, i, o: seen.append(o))
    fused.clear()
    with torch.inference_mode():
        observed = model(images)
    assert len(seen) == 1 and sum(n is not None for n in fused) == blocks - 1
    torch.testing.assert_close(observed, dense, rtol=1e-10, atol=1e-10)
