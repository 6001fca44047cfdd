"""Optimizer parameter groups with the trainable LIF time constants and thresholds in a group of their own
(SNN-MLP's recipe, docs/snn_mlp.md#training-recipe: their own learning rate, no weight decay, frozen in
the first epoch); the one builder, behind ``spikemlp.train.optim`` and ``spikemlp.models.snn_mlp``.
"""

from __future__ import annotations

import re

from torch import nn

# SNN-MLP names its group-LIF scalars `tau` and `v_th` (docs/snn_mlp.md#weight-layout); accept the other
# common spellings.
_LIF_SCALAR = re.compile(r"(^|\.)(tau|Vth|v_th|v_threshold)$")


def lif_parameter_names(model: nn.Module) -> set[str]:
    """Names of the trainable LIF time constants and thresholds (SNN-MLP's group LIF): from the model's
    ``lif_parameters()`` (names, ``(name, parameter)`` pairs or parameters), else scalars named tau / V_th."""
    named = dict(model.named_parameters())
    helper = getattr(model, "lif_parameters", None) or getattr(model, "lif_parameter_names", None)
    if callable(helper):
        found = set()
        by_id = {id(p): n for n, p in named.items()}
        for item in helper():
            if isinstance(item, str):
                found.add(item)
            elif isinstance(item, tuple):
                found.add(item[0])
            elif id(item) in by_id:
                found.add(by_id[id(item)])
        return found
    return {n for n, p in named.items() if _LIF_SCALAR.search(n) and p.numel() == 1}


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    lif_lr: float = 1e-4,
    lif_weight_decay: float = 0.0,
    exclude_bias_norm: bool = False,
) -> list[dict]:
    """Optimizer groups of ``model``'s trainable parameters, each with a ``name``:

    - "main": everything but the LIF parameters (``lr``, ``weight_decay``); with ``exclude_bias_norm``
      split into "decay" and "no_decay" (biases, norm parameters and other 1-d tensors, and the names in
      the model's ``no_weight_decay()``, without weight decay);
    - "lif": tau and V_th (``lif_lr``, ``lif_weight_decay``), when the model has trainable ones.

    The authors use two AdamW optimizers with the same betas, eps and schedule, one per group; one
    optimizer with two groups is the same update. Empty groups are left out.
    """
    lif = lif_parameter_names(model)
    no_wd_names = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay, lif_params = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in lif:
            lif_params.append(p)
        elif exclude_bias_norm and (p.ndim <= 1 or name.endswith(".bias") or name in no_wd_names):
            no_decay.append(p)
        else:
            decay.append(p)
    main = "decay" if exclude_bias_norm else "main"
    groups = [
        {"name": main, "params": decay, "weight_decay": weight_decay, "lr": lr},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "lr": lr},
        {"name": "lif", "params": lif_params, "weight_decay": lif_weight_decay, "lr": lif_lr},
    ]
    return [g for g in groups if g["params"]]
