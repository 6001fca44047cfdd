"""spikemlp.deploy: the deployed model predicts what the eval model predicts, on every MLP-SPE variant
and T, on real CIFAR-10 images for a briefly trained model; it refuses training, gradients and what it
cannot deploy; it runs its blocks on the spike kernel (not a dense fallback) and traces under compile.

Logits are compared to a percent of their scale, not bit for bit: the deployed sums run in another order,
which can flip a spike whose membrane sits at the threshold (docs/deployment.md).
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import spikemlp
from lively_bn import randomize_bn_lively
from spikemlp.data import DATASET_INFO, load_split
from spikemlp.deployment import DeployedModel, compare
from spikemlp.deployment.deployed_blocks import DeployedBlock
from spikemlp.layers import spike_matmul
from spikemlp.layers.spike_kernel_blocks import SpikeKernelChannelMLP

VARIANTS = [
    "mlp_spe_t",
    "mlp_spe_s",
    "mlp_s",
    "mlp_spe_b",
    "mlp_spe_t_cifar",
    "mlp_spe_s_cifar",
    "mlp_spe_xt_cifar",
]


@pytest.fixture(autouse=True)
def _kernel_built():
    if (reason := spike_matmul.unavailable_reason()) is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def cifar_test_images(request):
    """The first 64 real CIFAR-10 test images, normalised, and their labels."""
    shared = request.getfixturevalue("shared_data")
    split = load_split("cifar10", "test", data_dir=shared)
    info = DATASET_INFO["cifar10"]
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    return (split.images[:64].float() / 255 - mean) / std, split.labels[:64]


def assert_agrees(model, deployed, images):
    agreement = compare(model, deployed, images)
    assert agreement.same_predictions == agreement.images, agreement.summary()
    assert agreement.relative_difference < 0.01, agreement.summary()
    return agreement


def _lively(name: str, T: int, seed: int = 0):
    torch.manual_seed(seed)
    kwargs = {} if name.endswith("_cifar") else dict(img_size=32)  # ImageNet variants on a 32 x 32 input
    model = timm.create_model(name, T=T, num_classes=10, **kwargs)
    return randomize_bn_lively(model, torch.Generator().manual_seed(seed + 1)).eval()


@pytest.mark.parametrize("T", [1, 2, 4])
@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_predicts_as_the_eval_model(name, T, cifar_test_images):
    """In float64 the deployed arithmetic is the eval model's (no spike sits within rounding of its
    threshold); in float32 the predictions are the same. These models' BNs are drawn at random, which
    makes deep ones chaotic: one flipped spike moves later ones, so their float32 logits are not held to
    a percent here (the trained model's are, below)."""
    model = _lively(name, T)
    images = cifar_test_images[0][:16]
    deployed = spikemlp.deploy(model)
    assert all(type(b) is DeployedBlock for s in deployed.model.stages for b in s.blocks)
    agreement = compare(model, deployed, images)
    assert agreement.same_predictions == agreement.images, agreement.summary()
    model64 = model.double()
    exact = compare(model64, spikemlp.deploy(model64), images.double())
    assert exact.relative_difference < 1e-9, exact.summary()


def _briefly_trained(T: int, images: torch.Tensor, labels: torch.Tensor):
    torch.manual_seed(0)
    model = timm.create_model("mlp_spe_xt_cifar", T=T, embed_dim=24)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for step in range(12):
        batch = slice(32 * (step % 4), 32 * (step % 4 + 1))
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("T", [1, 2, 4])
def test_a_briefly_trained_model_predicts_as_the_eval_model_on_real_cifar10(
    T, shared_data, cifar_test_images
):
    train = load_split("cifar10", "train", data_dir=shared_data)
    info = DATASET_INFO["cifar10"]
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    model = _briefly_trained(T, (train.images[:128].float() / 255 - mean) / std, train.labels[:128])
    images, _ = cifar_test_images
    deployed = spikemlp.deploy(model)
    agreement = assert_agrees(model, deployed, images)
    assert agreement.logit_scale > 0.1  # trained: the logits are not all near zero


def test_deploy_leaves_the_model_as_it_was():
    model = _lively("mlp_spe_xt_cifar", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spikemlp.deploy(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(type(b) is DeployedBlock for b in model.modules())
    model.train()  # the original still trains
    model(torch.randn(2, 3, 32, 32)).sum().backward()


def test_refuses_training_mode_gradients_and_what_it_cannot_deploy():
    model = _lively("mlp_spe_xt_cifar", 2)
    with pytest.raises(ValueError, match=r"eval mode.*spikemlp.deploy\(model.eval\(\)\)"):
        spikemlp.deploy(model.train())
    deployed = spikemlp.deploy(model.eval())
    with pytest.raises(RuntimeError, match="inference only and cannot be put in training mode"):
        deployed.train()
    assert not deployed.eval().training
    with pytest.raises(RuntimeError, match="computes no gradients"):
        deployed(torch.randn(1, 3, 32, 32, requires_grad=True))
    with pytest.raises(TypeError, match="SNN-MLP normalises with GroupNorm.*not MFI"):
        spikemlp.deploy(timm.create_model("snn_mlp_t", img_size=32, num_classes=10).eval())
    with pytest.raises(ValueError, match="float32 or float64"):
        spikemlp.deploy(model.half())


def test_the_deployed_blocks_run_on_the_kernel_and_fall_back_under_hooks(monkeypatch, cifar_test_images):
    model = _lively("mlp_spe_xt_cifar", 2)
    deployed = spikemlp.deploy(model)
    images = cifar_test_images[0][:4]
    calls = []
    real = spike_matmul.spike_matmul
    monkeypatch.setattr(spike_matmul, "spike_matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
    want = deployed(images)
    blocks = sum(len(s.blocks) for s in model.stages)
    assert len(calls) == 3 * blocks  # fuse, fc1, fc2 of every block on the kernel, none dense
    calls.clear()
    fc1 = deployed.model.stages[0].blocks[0].channel_mix.fc1
    handle = fc1.register_forward_hook(lambda m, i, o: None)  # an analysis tool watching a layer
    got = deployed(images)
    handle.remove()
    assert len(calls) == 3 * (blocks - 1)  # that block ran dense
    assert got.argmax(-1).equal(want.argmax(-1))


def test_a_neuron_the_kernel_cannot_run_leaves_the_spike_kernel_blocks(cifar_test_images):
    torch.manual_seed(0)
    model = timm.create_model("mlp_spe_xt_cifar", T=2, embed_dim=24, neuron_kwargs={"learnable_tau": True})
    model = randomize_bn_lively(model, torch.Generator().manual_seed(3)).eval()
    deployed = spikemlp.deploy(model)
    assert isinstance(deployed, DeployedModel)
    assert any(isinstance(m, SpikeKernelChannelMLP) for m in deployed.modules())
    assert_agrees(model, deployed, cifar_test_images[0][:16])


@pytest.mark.slow  # one compilation, about a minute on a CPU
def test_the_deployed_model_runs_under_torch_compile(cifar_test_images):
    deployed = spikemlp.deploy(_lively("mlp_spe_xt_cifar", 2))
    images = cifar_test_images[0][:8]
    torch._dynamo.reset()
    compiled = torch.compile(deployed, fullgraph=True)
    torch.testing.assert_close(compiled(images), deployed(images), rtol=1e-4, atol=1e-4)
