"""NaN and infinity in training, caught where the check costs nothing, so that no weight turns NaN silently.

A spiking neuron turns a NaN input into "no spike", so a NaN pixel need not show in the loss while its
gradients (and the BatchNorm statistics) are poisoned. Hence: each batch's pixels are checked together with
the loss (one synchronisation, as before); an optimizer step whose gradients are not finite is skipped, and
``MAX_SKIPPED_IN_A_ROW`` of them stop the run; and a checkpoint is never written with non-finite weights
(``spikemlp.checkpoint.save_checkpoint``), so ``last`` stays the last good one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Steps in a row whose gradients may be non-finite (each skipped) before the run stops: one is an accident
# (an outlier batch), several in a row mean the weights or the learning rate have gone wrong.
MAX_SKIPPED_IN_A_ROW = 3


class NonFiniteInputError(ValueError):
    """A training batch holds NaN or infinite pixels; the message names the batch."""


class NonFiniteGradientError(ValueError):
    """The gradients were not finite for ``MAX_SKIPPED_IN_A_ROW`` optimizer steps in a row."""


def batch_is_bad(images: torch.Tensor) -> torch.Tensor:
    """1.0 when the batch holds a NaN or infinite pixel: a tensor on the batch's device (not synchronised)."""
    return (~torch.isfinite(images).all()).to(torch.float32)


def gradients_finite(parameters) -> bool:
    """Whether every gradient is finite (one norm over them all; DDP ranks hold the same gradients, so they
    agree without communicating)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


class SkippedSteps:
    """Counts optimizer steps skipped in a row for non-finite gradients and says when to stop."""

    def __init__(self) -> None:
        self.in_a_row = 0

    def record(self, finite: bool, step: int, epoch: int, kept: Callable[[], str]) -> str | None:
        """A note for a skipped step (None when ``finite``); NonFiniteGradientError at the limit."""
        self.in_a_row = 0 if finite else self.in_a_row + 1
        if finite:
            return None
        if self.in_a_row >= MAX_SKIPPED_IN_A_ROW:
            first = step - self.in_a_row + 1
            raise NonFiniteGradientError(
                f"gradients were NaN or infinite at steps {first}..{step} (epoch {epoch}), {self.in_a_row} "
                f"in a row; those updates were skipped and training stopped; {kept()}. The likely cause is "
                "exploding gradients: lower lr, add warm-up (warmup_epochs) or clip gradients (clip_grad), "
                "then --resume or start again."
            )
        return f"note: gradients were NaN or infinite at step {step} (epoch {epoch}); that update was skipped"
