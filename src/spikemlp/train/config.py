"""Training configuration: one dataclass of every key with its default (the schema), YAML recipes that set
some of them, and command-line overrides of any key.

A recipe in ``configs/`` is a flat YAML mapping of keys from :class:`TrainConfig`, found by name from any
folder (``recipes``); ``spikemlp train`` reads it, applies ``--KEY VALUE`` overrides (values are read as
YAML, then checked against the key's type) and saves the resolved configuration as ``RUN_DIR/config.yaml``,
so every run can be repeated from its folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import recipes
from .config_ranges import range_errors


class ConfigError(ValueError):
    """A recipe or an override names an unknown key or gives a value of the wrong type."""


@dataclass
class TrainConfig:
    """Every setting of a training run. Recipes and ``--KEY VALUE`` override the defaults below."""

    # --- model -------------------------------------------------------------------------------------------
    model: str = "mlp_spe_xt_cifar"  # a timm-registered name (``import spikemlp`` registers ours)
    T: int | None = None  # time steps, passed to the model when set (null: the model's own; SNN-MLP has none)
    img_size: int | None = None  # passed to the model when set (null: the model's default)
    num_classes: int = 0  # 0: the data set's number of classes
    drop_path: float = 0.0  # stochastic depth rate, passed as drop_path_rate when > 0
    model_kwargs: dict = field(default_factory=dict)  # any other model argument (embed_dim, depths, ...)
    pretrained: bool = False  # start from the model's released weights (timm's; SNN-MLP: the authors')
    initial_checkpoint: str | None = None  # start from these weights (a checkpoint or weights file)
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm under DDP
    grad_checkpointing: bool = False  # model.set_grad_checkpointing(True): less memory, more compute
    # torch.compile the training forward and backward (evaluation runs the model as it is). The first step
    # compiles (minutes on a CPU, counted in time_budget); MLP-SPE then trains faster (BENCHMARKS.md).
    compile: bool = False
    dtype: str = "float32"  # float32, or float64 for numerical checks

    # --- data --------------------------------------------------------------------------------------------
    data: str = "cifar10"  # cifar10, cifar100, fashion_mnist, mnist, imagenet, tiny_imagenet, synthetic
    data_dir: str | None = None  # where to look first (then $SPIKEMLP_DATA and the standard places)
    pipeline: str = "auto"  # tensor (batch-wise GPU/CPU augmentation), timm (per-image PIL), auto
    batch_size: int = 128  # per process, per forward pass (global = batch_size * accum * world size)
    eval_batch_size: int = 0  # 0: 2 x batch_size
    workers: int = 4  # DataLoader workers of the timm pipeline
    synthetic_size: int = 1024  # training images of the synthetic data set (test: a quarter)
    # tensor pipeline (in-memory data sets at their native size)
    crop_padding: int = 4  # random crop after zero padding by this many pixels; 0 turns it off
    hflip: float = 0.5  # horizontal flip probability (both pipelines; the tensor one flips if > 0)
    # timm pipeline (ImageNet-style; also CIFAR upsampled to 224 as in the authors' code)
    scale: list = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    ratio: list = field(default_factory=lambda: [3 / 4, 4 / 3])  # RandomResizedCrop aspect range
    interpolation: str = "bicubic"
    auto_augment: str | None = None  # e.g. rand-m9-mstd0.5-inc1 (RandAugment)
    color_jitter: float = 0.0  # timm ignores it when auto_augment is set
    reprob: float = 0.0  # random erasing probability
    remode: str = "pixel"
    recount: int = 1
    crop_pct: float = 0.875  # eval: resize to img_size / crop_pct, then centre crop img_size
    repeated_aug: int = 1  # repeated augmentation: each image this many times per epoch (timm sampler)
    # mixing and targets
    mixup: float = 0.0  # mixup alpha (0: off)
    cutmix: float = 0.0  # CutMix alpha (0: off)
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    mixup_off_epoch: int = 0  # stop mixing from this epoch on (0: never)
    smoothing: float = 0.0  # label smoothing

    # --- optimisation ------------------------------------------------------------------------------------
    opt: str = "sgd"  # sgd (with momentum), nesterov, adamw, lamb, or any other timm optimizer name
    lr: float = 0.1
    lr_base_batch: int = 0  # if > 0, lr is per this many images and scales with the global batch
    momentum: float = 0.9
    weight_decay: float = 0.0
    wd_exclude_bias_norm: bool = False  # no weight decay on biases and norm parameters (1-d tensors)
    clip_grad: float | None = None  # clip the global gradient norm to this value
    accum_steps: int = 1  # gradient accumulation: forward passes per optimizer step
    # PyTorch's fused kernel for Adam, AdamW and SGD: one pass over all parameters per step instead of
    # about ten small ops per tensor (the same update up to rounding)
    opt_fused: bool = True
    epochs: int = 100
    warmup_epochs: float = 0.0
    warmup_lr: float = 1e-6
    min_lr: float = 0.0
    # SNN-MLP: its LIF tau and V_th get their own group (docs/snn_mlp.md#training-recipe)
    lif_lr: float = 1e-4
    lif_weight_decay: float = 0.0
    lif_freeze_epochs: int = 1  # tau and V_th stay fixed for this many epochs
    amp: str = "none"  # none, bf16 or fp16 autocast (CUDA only; ignored with a note on CPU)
    ema: bool = False  # keep an exponential moving average of the weights (timm ModelEmaV3)
    ema_decay: float = 0.9998

    # --- running -----------------------------------------------------------------------------------------
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-exact repeats and resumes
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    threads: int = 0  # torch CPU threads per process (0: PyTorch's default)
    # On a CPU, N processes of one thread each keep the cores busier than one process of N threads, in
    # which Python and the many small ops run serially. Ignored under torchrun, which decides.
    processes: int = 1  # data-parallel processes that spikemlp train starts itself (as torchrun --standalone)
    time_budget: float | None = None  # minutes of wall time for the whole run, final evaluation included
    eval_every: int = 1  # evaluate every this many epochs (and always after the last)
    tta: str = "none"  # test-time augmentation: none, or hflip (mean logits of each image and its mirror)
    checkpoint_every_steps: int = 0  # also save `last` every this many optimizer steps (0: per epoch)
    log_every: int = 20  # optimizer steps between TensorBoard points
    progress: bool = True  # tqdm progress bar per epoch
    max_steps_per_epoch: int = 0  # cut each epoch to this many optimizer steps (0: whole epoch)


# Keys that stand for the same thing, so recipes can use the familiar timm spelling.
ALIASES = {"data_set": "data", "dataset": "data", "drop_path_rate": "drop_path", "time_steps": "T"}


def field_help() -> dict[str, str]:
    """The comment beside each key in the class body above (shown by ``spikemlp train --help``)."""
    lines = inspect.getsource(TrainConfig).splitlines()
    found = (re.match(r"\s+(\w+): [^=]+=.*?#\s*(.*)$", line) for line in lines)
    return {m.group(1): m.group(2) for m in found if m}


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def unknown_key_error(key: str, where: str) -> ConfigError:
    names = field_names()
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key '{key}' in {where}.{hint} Valid keys: {', '.join(names)}")


def _type_name(base: type, optional: bool) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(base, f"a {base.__name__}") + (" or null" if optional else "")


def coerce(key: str, value: Any, where: str = "the configuration") -> Any:
    """Check ``value`` against the type of ``key`` and convert where it is lossless (``1`` -> ``1.0``)."""
    hints = typing.get_type_hints(TrainConfig)
    if key not in hints:
        raise unknown_key_error(key, where)
    tp = hints[key]
    optional = isinstance(tp, types.UnionType) and type(None) in typing.get_args(tp)
    base = [a for a in typing.get_args(tp) if a is not type(None)][0] if optional else tp
    base = typing.get_origin(base) or base
    bad = ConfigError(f"config key '{key}' in {where} expects {_type_name(base, optional)}, got {value!r}")
    if value is None and optional:
        return None
    if value is None or isinstance(value, bool) != (base is bool):  # YAML's true is no number or string
        raise bad
    if base in (bool, int) and isinstance(value, base):
        return value
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if base is float and isinstance(value, (int, float)):
        return float(value)
    if base is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" as a string
            return float(value)
        except ValueError:
            raise bad from None
    if base is str and isinstance(value, (str, int, float)):
        return str(value)
    if (base is list and isinstance(value, (list, tuple))) or (base is dict and isinstance(value, dict)):
        return base(value)
    raise bad


def parse_value(text: str) -> Any:
    """Read a command-line value the way YAML would (``10`` -> int, ``true`` -> bool, ``[1, 2]`` -> list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def from_dict(values: dict[str, Any], where: str = "the configuration", base: TrainConfig | None = None):
    """A :class:`TrainConfig` from ``base`` (or the defaults) with ``values`` applied and checked."""
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    for key, value in values.items():
        key = ALIASES.get(key, key)
        setattr(cfg, key, coerce(key, value, where))
    validate(cfg)
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in the recipe ``path``: a YAML file or a shipped recipe's name (``recipes.find``)."""
    path = recipes.find(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"recipe {path} not found; give a YAML file or a recipe's name (for example cifar10_cpu_speedrun)"
        )
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"recipe {path} must be a mapping of key: value lines, got {type(values).__name__}")
    return values


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The recipe at ``path`` (or the defaults) with ``overrides`` applied on top."""
    cfg = TrainConfig()
    if path is not None:
        cfg = from_dict(load_yaml(path), where=f"recipe {path}", base=cfg)
    if overrides:
        cfg = from_dict(overrides, where="the command line", base=cfg)
    return cfg


# test-time augmentation: none, or hflip (mean logits of the image and its mirror image)
TTA_MODES = ("none", "hflip")

_CHOICES = {
    "pipeline": ("auto", "tensor", "timm"),
    "amp": ("none", "bf16", "fp16"),
    "tta": TTA_MODES,
    "dtype": ("float32", "float64"),
    "mixup_mode": ("batch", "pair", "elem"),
    "remode": ("pixel", "rand", "const"),
    "interpolation": ("bicubic", "bilinear", "nearest", "random"),
}


def validate(cfg: TrainConfig) -> None:
    """Values that have the right type but cannot work."""
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(
                f"config key '{key}' must be one of {', '.join(choices)}, got {getattr(cfg, key)!r}"
            )
    errors = range_errors(dataclasses.asdict(cfg))
    if errors:
        raise ConfigError("; ".join(errors))


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
