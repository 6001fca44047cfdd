"""``deploy(model)``: a trained MLP-SPE as the fastest exact inference module this machine runs.

One call instead of three switches (spike kernels, folding, accumulate-only). ``deploy`` copies the model
and, on the copy:

- folds every BatchNorm that folds without enlarging the model: the stem's, the stage encoders' (into
  their convolutions) and the head's (into the classifier). The token and channel blocks' BNs are the
  spike kernel's epilogues (a per-channel or per-token affine on the way out), or are folded into the
  axial maps: the per-token fold of ``mfi.fold`` would copy fc2 once per token (1.49G parameters at 224);
- swaps the token and channel blocks for the deployed blocks (``deployed_blocks``): every layer on
  spikes runs the spike-driven operator ``spikemlp::spike_matmul``, and each neuron that follows such a
  layer runs in that layer's epilogue, residual sum included, so only its spikes are stored;
- packs every weight once (the kernel's layout, kept with the model) and freezes the parameters.

The deployed model predicts what ``model.eval()`` predicts. Its logits are not bit-for-bit the same:
sums in another order round differently, and a membrane that sits at the threshold can then spike on
one side and not the other, so logits agree to about a percent of their scale (``compare`` measures it).
It is inference only: it refuses training mode and inputs that want gradients.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import UserError
from ..layers import spike_matmul
from ..mfi.fold import fold_dense_batch_norms, require_mlp_spe
from ..models.mlp_spe import MLPSPE
from .deployed_blocks import deployed_blocks

__all__ = ["Agreement", "DeployedModel", "compare", "deploy", "deploy_for_command", "measure"]


class DeployedModel(nn.Module):
    """An MLP-SPE deployed for inference (made by :func:`deploy`): ``forward(images)`` gives logits.

    ``model`` is the deployed network (an ``MLPSPE`` with folded BNs and deployed blocks); ``T`` and
    ``num_classes`` are its own. Always in eval mode; gradients are never computed.
    """

    def __init__(self, model: MLPSPE) -> None:
        super().__init__()
        self.model = model
        self.T, self.num_classes = model.T, model.num_classes
        super().train(False)

    def train(self, mode: bool = True) -> DeployedModel:
        if mode:
            raise RuntimeError(
                "a deployed model is for inference only and cannot be put in training mode; train the "
                "original model, then deploy it again with spikemlp.deploy(model.eval())"
            )
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and images.requires_grad:
            raise RuntimeError(
                "a deployed model computes no gradients (its kernels have no backward); pass inputs that "
                "do not require grad, or use the original model for gradients (attacks, saliency, training)"
            )
        with torch.no_grad():
            return self.model(images)

    def forward_steps(self, images: torch.Tensor) -> torch.Tensor:
        """Per-step logits [T, B, num_classes]."""
        with torch.no_grad():
            return self.model.forward_steps(images)


def _check_deployable(model: nn.Module) -> None:
    require_mlp_spe(model, "deploy")
    if model.training:
        raise ValueError(
            "deploy needs a model in eval mode: its BatchNorms are folded at their running statistics, "
            "which training mode would not use; call spikemlp.deploy(model.eval())"
        )
    if not isinstance(model.head, nn.Linear):
        raise ValueError(
            "deploy folds the head's BatchNorm into the classifier, but this model has none (num_classes=0); "
            "deploy the model with its classifier"
        )
    weight = next(model.parameters())
    if weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"deploy builds CPU inference in float32 or float64; the model is {weight.dtype} on "
            f"{weight.device}: call spikemlp.deploy(model.cpu().float().eval())"
        )
    if (reason := spike_matmul.unavailable_reason()) is not None:
        raise RuntimeError(f"deploy runs the spike-driven kernel, but {reason}")


@torch.no_grad()
def deploy(model: nn.Module) -> DeployedModel:
    """The deployed copy of a trained MLP-SPE/MLP-S ``model`` (eval mode, CPU, float32 or float64); the
    model itself is left as it is. See the module documentation for what is changed and why."""
    _check_deployable(model)
    net = copy.deepcopy(model)
    if getattr(net, "spike_kernels", False):
        net.set_spike_kernels(False)  # the dense blocks, which the deployed blocks replace
    for p in net.parameters():
        p.requires_grad_(False)
    fold_dense_batch_norms(net)
    deployed_blocks(net)
    return DeployedModel(net)


def deploy_for_command(model: nn.Module) -> DeployedModel:
    """``deploy(model.eval())``, with a model it cannot deploy (SNN-MLP) reported as the user's error."""
    try:
        return deploy(model.eval())
    except TypeError as err:
        raise UserError(str(err)) from None


@dataclass(frozen=True)
class Agreement:
    """How a deployed model's outputs compare with the eval model's on some images."""

    images: int
    same_predictions: int
    max_logit_difference: float
    logit_scale: float  # the largest |logit| of the eval model

    @property
    def relative_difference(self) -> float:
        return self.max_logit_difference / max(self.logit_scale, 1e-30)

    @classmethod
    def of(cls, out: torch.Tensor, reference: torch.Tensor) -> Agreement:
        """The agreement of logits ``out`` with the eval model's ``reference`` [B, K]."""
        return cls(
            reference.shape[0], int((out.argmax(-1) == reference.argmax(-1)).sum()),
            float((out - reference).abs().max()), float(reference.abs().max()),
        )  # fmt: skip

    def merged(self, other: Agreement) -> Agreement:
        """The agreement over both sets of images."""
        return Agreement(
            self.images + other.images,
            self.same_predictions + other.same_predictions,
            max(self.max_logit_difference, other.max_logit_difference),
            max(self.logit_scale, other.logit_scale),
        )

    def summary(self) -> str:
        return (
            f"deployed vs eval on {self.images} images: {self.same_predictions} same predictions, max logit "
            f"difference {self.max_logit_difference:.3g} ({100 * self.relative_difference:.2f}% of the logit "
            f"scale {self.logit_scale:.3g})"
        )


@torch.no_grad()
def compare(model: nn.Module, deployed: DeployedModel, images: torch.Tensor) -> Agreement:
    """Run ``model`` (in eval mode) and ``deployed`` on ``images`` and measure how they agree."""
    was_training = model.training
    try:
        reference = model.eval()(images)
    finally:
        model.train(was_training)
    return Agreement.of(deployed(images), reference)


@torch.no_grad()
def measure(model: nn.Module, deployed: DeployedModel, batches: Iterable, limit: int | None = None) -> dict:
    """Agreement and speed of ``deployed`` against ``model.eval()`` over (images, labels) ``batches`` (the
    first ``limit`` images): what ``spikemlp eval --deploy`` and ``analyze --deploy`` report."""
    agreement, seconds, seen = None, [0.0, 0.0], 0
    model.eval()
    for images, _ in batches:
        if limit is not None and seen >= limit:
            break
        images = images[: None if limit is None else limit - seen].to(next(model.parameters()).dtype)
        seen += images.shape[0]
        start = time.perf_counter()
        reference = model(images)
        middle = time.perf_counter()
        out = deployed(images)
        seconds[0] += middle - start
        seconds[1] += time.perf_counter() - middle
        batch = Agreement.of(out, reference)
        agreement = batch if agreement is None else agreement.merged(batch)
    if agreement is None:
        raise ValueError("no images to compare the deployed model on")
    return {
        **asdict(agreement),
        "relative_difference": agreement.relative_difference,
        "summary": agreement.summary(),
        "eval_images_per_s": agreement.images / max(seconds[0], 1e-9),
        "deployed_images_per_s": agreement.images / max(seconds[1], 1e-9),
        "speedup": seconds[0] / max(seconds[1], 1e-9),
        "threads": torch.get_num_threads(),
    }
