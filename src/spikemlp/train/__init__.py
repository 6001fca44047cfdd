"""Training and evaluation: recipes (config), the loop (trainer, run_state, epoch, time_budget, run_log),
distributed set-up and evaluation. Checkpoints are :mod:`spikemlp.checkpoint`'s, re-exported here.

``spikemlp train`` and ``spikemlp eval`` drive this package; from Python::

    from spikemlp.train import load_config, train
    result = train(load_config("configs/cifar10_cpu_speedrun.yaml", {"time_budget": 8}), "runs/speedrun")
    print(result.summary["top1"])
"""

from ..checkpoint import CheckpointError, load_state, load_weights, save_checkpoint
from .config import ConfigError, TrainConfig, load_config
from .evaluate import EvalResult, evaluate
from .trainer import NonFiniteLossError, TrainResult, build_model, model_from_checkpoint, train

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EvalResult",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "evaluate",
    "load_config",
    "load_state",
    "load_weights",
    "model_from_checkpoint",
    "save_checkpoint",
    "train",
]
