"""A resume's checkpoint checked against the model it is loaded into, before anything is loaded: the weights'
names and shapes, and the optimizer state's groups, parameter counts and per-parameter tensor shapes.

A fused optimizer (AdamW ``fused=True``) given moments of other shapes crashes the process (a segfault, no
message), and an optimizer state with more parameters than the model is accepted without a word; a model
of another architecture fails deep in ``load_state_dict``. Each is one line here naming what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


def check_weights(saved: dict[str, torch.Tensor], model: nn.Module, folder: Path) -> None:
    """CheckpointError naming the first weights whose names or shapes differ from ``model``'s."""
    own = model.state_dict()
    missing, extra = sorted(own.keys() - saved.keys()), sorted(saved.keys() - own.keys())
    differ = [k for k in own if k in saved and _shape(own[k]) != _shape(saved[k])]
    if not (missing or extra or differ):
        return
    parts = [f"{k}: saved {list(_shape(saved[k]))}, this model {list(_shape(own[k]))}" for k in differ[:3]]
    parts += [f"missing {', '.join(missing[:3])}"] if missing else []
    parts += [f"not in this model {', '.join(extra[:3])}"] if extra else []
    raise CheckpointError(
        f"{folder} holds another architecture ({'; '.join(parts)}): resume with the model and model_kwargs "
        "it was trained with"
    )


def check_optimizer(saved: dict[str, Any], optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """CheckpointError when the saved optimizer state cannot belong to ``optimizer``: another number of
    parameter groups or of parameters in a group, or a per-parameter tensor (a moment) of another shape."""
    groups, state = saved.get("param_groups"), saved.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        raise CheckpointError(f"{folder}: the optimizer state has no param_groups/state; it is not PyTorch's")
    own = optimizer.param_groups
    if len(groups) != len(own):
        raise CheckpointError(
            f"{folder}: the optimizer state has {len(groups)} parameter group(s), this optimizer {len(own)} "
            "(another model or optimizer): resume with the model and opt it was trained with"
        )
    for i, (g, mine) in enumerate(zip(groups, own)):
        ids = g.get("params", [])
        if len(ids) != len(mine["params"]):
            raise CheckpointError(
                f"{folder}: the optimizer state's group {i} has {len(ids)} parameters, this model's "
                f"{len(mine['params'])}: resume with the model it was trained with"
            )
        for pid, param in zip(ids, mine["params"]):
            for name, value in state.get(pid, {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and _shape(value) != _shape(param):
                    raise CheckpointError(
                        f"{folder}: the optimizer's {name} for a parameter of shape {list(param.shape)} has "
                        f"shape {list(value.shape)}: the state belongs to another model"
                    )
