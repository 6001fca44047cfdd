"""Training on a CUDA GPU (skipped without one): autocast in bf16 and in fp16 with the gradient scaler,
torch.compile, and the LIF on its Triton kernel, with the tiny spiking net of the CPU tests."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import train_tiny_models  # noqa: F401  (registers train_tiny_snn)

from spikemlp.train import train
from spikemlp.train.config import from_dict

pytestmark = pytest.mark.cuda
TINY = dict(
    model="train_tiny_snn", T=2, img_size=8, data="synthetic", synthetic_size=512, batch_size=32, epochs=3,
    opt="adamw", lr=0.02, weight_decay=0.0, device="cuda", progress=False, crop_padding=0,
)  # fmt: skip


def _finite(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_training_learns_with_finite_weights(tmp_path, amp):
    result = train(from_dict({**TINY, "amp": amp}), tmp_path / amp)
    rows = list(csv.DictReader(open(tmp_path / amp / "metrics.csv")))
    losses = [float(r["train_loss"]) for r in rows]
    assert result.summary["steps"] == 3 * 512 // 32 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] and result.summary["top1"] > 50.0 and _finite(result.model)
    assert next(result.model.parameters()).is_cuda


def test_compiled_training_on_cuda_is_close_to_eager(tmp_path):
    base = {**TINY, "opt": "sgd", "lr": 0.1, "epochs": 1, "max_steps_per_epoch": 3}
    torch._dynamo.reset()
    compiled = train(from_dict({**base, "compile": True}), tmp_path / "compiled").model
    eager = train(from_dict(base), tmp_path / "eager").model
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)  # fp32, other kernel orders
