"""fold() and accumulate-only execution on a real model: mlp_spe_xt_cifar (the smallest registered CIFAR
variant) after a few SGD steps on CIFAR-10, checked on 1,000 CIFAR-10 test images."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

from spikemlp.analysis import ActivityRecorder
from spikemlp.data import TensorBatchLoader, load_split
from spikemlp.mfi import accumulate_only, fold

TEST_IMAGES = 1000


def _briefly_trained(shared_data) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("mlp_spe_xt_cifar")
    # Cumulative BN statistics (momentum None): after a few steps the running statistics are the means
    # over all batches seen, far from their initial identity map, which is what folding must get right.
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.momentum = None
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train = TensorBatchLoader(load_split("cifar10", "train", data_dir=shared_data), 32, shuffle=True, seed=0)
    model.train()
    for step, (images, labels) in enumerate(train):
        loss = nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 2:
            break
    return model.eval()


def _test_images(shared_data) -> torch.Tensor:
    loader = TensorBatchLoader(load_split("cifar10", "test", data_dir=shared_data), 250)
    batches = []
    for images, _ in loader:
        batches.append(images)
        if sum(len(b) for b in batches) >= TEST_IMAGES:
            break
    return torch.cat(batches)[:TEST_IMAGES]


@torch.no_grad()
def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(batch) for batch in images.split(250)])


@pytest.mark.slow
def test_fold_and_accumulate_only_on_cifar10(shared_data):
    model = _briefly_trained(shared_data)
    images = _test_images(shared_data)
    assert images.shape == (TEST_IMAGES, 3, 32, 32)

    # Not vacuous: neurons fire in every stage, and the readout sees spikes.
    with ActivityRecorder(model, T=model.T) as rec, rec.batch(20, images[:20]), torch.no_grad():
        model(images[:20])
    for stage in range(4):
        spikes = sum(
            sum(s.spikes_per_step) for n, s in rec.neurons.items() if n.startswith(f"stages.{stage}.")
        )
        assert spikes > 0, f"no spikes in stage {stage}"

    # float64: folded logits equal the unfolded model's to 1e-6 of the logit scale.
    model64 = copy.deepcopy(model).double()
    images64 = images.double()
    expected = _logits(model64, images64)
    folded64 = fold(model64)
    got = _logits(folded64, images64)
    assert float((got - expected).abs().max()) <= 1e-6 * float(expected.abs().max())

    # float32: rounding may flip a spike, predictions agree on at least 99.9% of the images.
    agree = (_logits(fold(model), images).argmax(-1) == _logits(model, images).argmax(-1)).float().mean()
    assert float(agree) >= 0.999

    # Accumulate-only execution (gather and add, no multiplications) equals the dense folded model.
    accumulated = _logits(accumulate_only(folded64), images64)
    assert float((accumulated - got).abs().max()) <= 1e-9 * float(got.abs().max())
    assert torch.equal(accumulated.argmax(-1), got.argmax(-1))
